//! Criterion benchmarks of the ISP kernels and whole profiles on a `sim:scene`-like
//! frame. `cargo bench -p rawlink-isp`; `rawlink bench` gives the per-size table.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rawlink_frame::BayerPattern;
use rawlink_isp::encode::{
    write_png_output_fast_at, write_png_rgb8, write_png_rgb8_fast_at, PngSpeed,
};
use rawlink_isp::stages::{awb, bilateral, demosaic, denoise, gamma, malvar, rcd, sharpen};
use rawlink_isp::{FrameContext, IspConfig, Pipeline, Profile, RawPlane, RgbStage};

/// A deterministic noisy mosaic with edges (no dependency on the source crate).
fn mosaic(w: usize, h: usize) -> RawPlane {
    let mut s = 0x1234_5678u32;
    let data = (0..w * h)
        .map(|i| {
            let (x, y) = (i % w, i / w);
            s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let base = if (x / 16 + y / 16) % 2 == 0 {
                800
            } else {
                3000
            };
            (base + (x * 3 + y) % 200 + (s >> 26) as usize) as u16
        })
        .collect();
    RawPlane::new(w, h, data).unwrap()
}

fn kernels(c: &mut Criterion) {
    let (w, h) = (640, 480);
    let raw = mosaic(w, h);
    let mut g = c.benchmark_group("demosaic_640x480");
    g.throughput(Throughput::Elements((w * h) as u64));
    g.bench_function("bilinear", |b| {
        b.iter(|| demosaic::demosaic_bilinear(&raw, BayerPattern::Rggb))
    });
    g.bench_function("malvar", |b| {
        b.iter(|| malvar::demosaic_malvar(&raw, BayerPattern::Rggb, 4095))
    });
    g.bench_function("rcd", |b| {
        b.iter(|| rcd::demosaic_rcd(&raw, BayerPattern::Rggb, 4095))
    });
    // With a tone curve folded into the output, as the default profile runs it.
    let curve = gamma::GammaLut::new(2.4, 4095);
    g.bench_function("rcd_tone", |b| {
        b.iter(|| rcd::demosaic_rcd_mapped(&raw, BayerPattern::Rggb, 4095, Some(curve.map())))
    });
    g.finish();

    let rgb = demosaic::demosaic_bilinear(&raw, BayerPattern::Rggb);
    // The reference bilateral: computed weights (the default, ±1 LSB) and table weights
    // (bit-exact).
    let mut g = c.benchmark_group("bilateral_640x480");
    g.throughput(Throughput::Elements((w * h) as u64));
    g.sample_size(10);
    for (name, exact) in [("fast", false), ("bit_exact", true)] {
        let bil = bilateral::Bilateral::new(2.0, 30.0).bit_exact(exact);
        g.bench_function(name, |b| {
            b.iter(|| {
                bil.apply(
                    rgb.clone(),
                    &mut FrameContext::new(BayerPattern::Rggb, 4095),
                )
            })
        });
    }
    g.finish();

    // The RGB stages of both profiles, each on a fresh copy of one demosaicked frame.
    let ctx = || FrameContext::new(BayerPattern::Rggb, 4095);
    let mut g = c.benchmark_group("rgb_stages_640x480");
    g.throughput(Throughput::Elements((w * h) as u64));
    let gray = awb::GrayWorld::default();
    g.bench_function("gray_world", |b| {
        b.iter(|| gray.apply(rgb.clone(), &mut ctx()))
    });
    // The reference profile's: the gamma table folded into the gains' table.
    let gray_gamma = awb::GrayWorld {
        then: Some(gamma::GammaLut::new(2.2, 4095).map().clone()),
    };
    g.bench_function("gray_world_gamma", |b| {
        b.iter(|| gray_gamma.apply(rgb.clone(), &mut ctx()))
    });
    let lc = denoise::LumaChroma {
        luma_sigma: 0.02,
        chroma: 0.5,
    };
    g.bench_function("luma_chroma_denoise", |b| {
        b.iter(|| lc.apply(rgb.clone(), &mut ctx()))
    });
    let us = sharpen::Unsharp {
        amount: 0.6,
        threshold: 0.0,
    };
    g.bench_function("unsharp", |b| b.iter(|| us.apply(rgb.clone(), &mut ctx())));
    // The default profile's: the mask run on the denoise's rows as they come.
    let fused = denoise::DenoiseSharpen {
        denoise: lc.clone(),
        sharpen: us,
    };
    g.bench_function("denoise_then_unsharp_fused", |b| {
        b.iter(|| fused.apply(rgb.clone(), &mut ctx()))
    });
    g.bench_function("sharpen_3x3", |b| {
        b.iter(|| sharpen::Sharpen3x3.apply(rgb.clone(), &mut ctx()))
    });
    g.bench_function("to_rgb8", |b| b.iter(|| rgb.to_rgb8(4095)));
    g.finish();
}

fn profiles(c: &mut Criterion) {
    let mut g = c.benchmark_group("profile");
    g.sample_size(10);
    for &(w, h) in &[(640usize, 480usize), (1920, 1080)] {
        let raw = mosaic(w, h);
        g.throughput(Throughput::Elements((w * h) as u64));
        for profile in [Profile::Reference, Profile::Default] {
            let mut cfg = IspConfig::new(profile, BayerPattern::Rggb, 12);
            cfg.set_black_level(64);
            let p = Pipeline::new(&cfg).unwrap();
            g.bench_with_input(
                BenchmarkId::new(profile.to_string(), format!("{w}x{h}")),
                &raw,
                |b, raw| b.iter(|| p.run(raw.clone()).to_rgb8()),
            );
        }
    }
    g.finish();
}

/// PNG encoding of 8-bit RGB: `PngSpeed::Fast` (this crate's coder) against the `png`
/// crate's own fast mode (fdeflate, `Up` filter), which it replaced, on the default
/// profile's output of the bench mosaic and on a photograph of the test set.
fn png_encode(c: &mut Criterion) {
    let mut cfg = IspConfig::new(Profile::Default, BayerPattern::Rggb, 12);
    cfg.set_black_level(64);
    let output = Pipeline::new(&cfg).unwrap().run(mosaic(640, 480));
    let frame = output.to_rgb8();
    let photo = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/data/photos/coffee.png"
    );
    let mut dec = png::Decoder::new(std::fs::File::open(photo).unwrap())
        .read_info()
        .unwrap();
    let mut pixels = vec![0; dec.output_buffer_size()];
    let info = dec.next_frame(&mut pixels).unwrap();
    pixels.truncate(info.buffer_size());
    let images = [
        ("frame_640x480", 640, 480, frame),
        ("coffee", info.width as usize, info.height as usize, pixels),
    ];
    let mut g = c.benchmark_group("png_rgb8");
    for (name, w, h, rgb) in &images {
        g.throughput(Throughput::Bytes(rgb.len() as u64));
        g.bench_function(BenchmarkId::new("rawlink_fast", name), |b| {
            let mut out = Vec::new();
            b.iter(|| {
                out.clear();
                write_png_rgb8(&mut out, *w, *h, rgb, &[], PngSpeed::Fast).unwrap();
            })
        });
        g.bench_function(BenchmarkId::new("png_crate_fdeflate", name), |b| {
            let mut out = Vec::new();
            b.iter(|| {
                out.clear();
                let mut e = png::Encoder::new(&mut out, *w as u32, *h as u32);
                e.set_color(png::ColorType::Rgb);
                e.set_depth(png::BitDepth::Eight);
                e.set_compression(png::Compression::Fast);
                e.set_filter(png::FilterType::Up);
                let mut wr = e.write_header().unwrap();
                wr.write_image_data(rgb).unwrap();
            })
        });
    }
    g.finish();
    // The receiver's way, from the pipeline's planes: each 8-bit row made as it is
    // coded, against the whole 8-bit frame made first and then coded.
    let mut g = c.benchmark_group("png_output");
    g.throughput(Throughput::Elements(640 * 480));
    g.bench_function("rows_as_coded/frame_640x480", |b| {
        let mut out = Vec::new();
        b.iter(|| write_png_output_fast_at(&mut out, 0, &output, &[]).unwrap())
    });
    g.bench_function("to_rgb8_then_coded/frame_640x480", |b| {
        let (mut out, mut rgb) = (Vec::new(), Vec::new());
        b.iter(|| {
            output.to_rgb8_into(&mut rgb);
            write_png_rgb8_fast_at(&mut out, 0, 640, 480, &rgb, &[]).unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, kernels, profiles, png_encode);
criterion_main!(benches);
