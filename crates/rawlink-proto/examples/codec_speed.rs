//! Compression ratio and single-core speed of the CFA-LZ4 codec and the bit packer on
//! `sim:scene` frames: `cargo run --release -p rawlink-proto --example codec_speed [WxH]`.

use rawlink_frame::{pack_frame, unpack_frame, Frame};
use rawlink_proto::compress::{compress, decompress};
use rawlink_source::{FrameSource, SceneSource, SourceOptions};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

fn median_gbps(bytes: usize, mut f: impl FnMut()) -> f64 {
    let mut v: Vec<f64> = (0..9)
        .map(|_| {
            let t = Instant::now();
            f();
            bytes as f64 / t.elapsed().as_secs_f64() / 1e9
        })
        .collect();
    v.sort_by(|a, b| a.total_cmp(b));
    v[4]
}

fn main() {
    let size = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "1920x1080".into());
    let (w, h) = size.split_once('x').expect("WxH");
    let (w, h): (u32, u32) = (w.parse().unwrap(), h.parse().unwrap());
    let opts = SourceOptions {
        width: w,
        height: h,
        interval: std::time::Duration::ZERO,
        ..Default::default()
    };
    let mut src = SceneSource::new(&opts).unwrap();
    let frame: Frame = src.next_frame(&AtomicBool::new(false)).unwrap().unwrap();
    let raw = frame.payload.clone();
    let c = compress(&raw, w as usize, h as usize);
    println!("sim:scene {w}x{h} 12-bit, {} bytes", raw.len());
    println!("cfa-lz4: ratio {:.3}", raw.len() as f64 / c.len() as f64);
    println!(
        "cfa-lz4: encode {:.2} GB/s (input bytes, one core, median of 9)",
        median_gbps(raw.len(), || {
            std::hint::black_box(compress(&raw, w as usize, h as usize));
        })
    );
    println!(
        "cfa-lz4: decode {:.2} GB/s (output bytes)",
        median_gbps(raw.len(), || {
            std::hint::black_box(decompress(&c, w as usize, raw.len()).unwrap());
        })
    );
    let p = pack_frame(&frame).unwrap();
    println!(
        "pack12: ratio {:.3}",
        raw.len() as f64 / p.payload.len() as f64
    );
    println!(
        "pack12: pack {:.2} GB/s",
        median_gbps(raw.len(), || {
            std::hint::black_box(pack_frame(&frame).unwrap());
        })
    );
    println!(
        "pack12: unpack {:.2} GB/s",
        median_gbps(raw.len(), || {
            std::hint::black_box(unpack_frame(p.clone()).unwrap());
        })
    );
}
