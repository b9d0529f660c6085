//! With resynchronisation after every error, the decoder recovers the same messages,
//! after the same number of errors, and consumes the same bytes, whether the input
//! arrives whole or one byte at a time; it never panics and never stalls.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use rawlink_proto::{Decoder, Limits, Message};

fn summarise(m: &Message) -> String {
    match m {
        Message::Frame(f) => format!("frame {:?} {}", f.header, f.payload.len()),
        other => format!("{other:?}"),
    }
}

fn run(chunks: &mut dyn Iterator<Item = Vec<u8>>) -> (Vec<String>, usize, u64, usize) {
    let limits = Limits {
        max_payload: 1 << 20,
        max_dimension: 4096,
    };
    let mut dec = Decoder::with_limits(limits);
    let mut buf = BytesMut::new();
    let (mut out, mut errors, mut skipped) = (Vec::new(), 0usize, 0u64);
    for c in chunks {
        buf.extend_from_slice(&c);
        loop {
            let before = buf.len();
            match dec.decode(&mut buf) {
                Ok(Some(m)) => out.push(summarise(&m)),
                Ok(None) => {
                    skipped += dec.take_skipped();
                    break;
                }
                Err(_) => {
                    errors += 1;
                    let n = dec.resync(&mut buf);
                    skipped += n as u64;
                    // Progress: an error either consumed its message or skipped bytes.
                    assert!(buf.len() < before, "decoder stalled");
                }
            }
            skipped += dec.take_skipped();
        }
    }
    (out, errors, skipped, buf.len())
}

fuzz_target!(|data: &[u8]| {
    let whole = run(&mut std::iter::once(data.to_vec()));
    let split = run(&mut data.iter().map(|b| vec![*b]));
    assert_eq!(whole.0, split.0, "messages differ");
    assert_eq!(whole, split);
});
