//! The frame decoder gives the same messages and the same kind of first error whether
//! the input arrives whole or one byte at a time, and never panics. Covers every message kind,
//! including the client hello, notices and compressed frames.
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

fn run(chunks: &mut dyn Iterator<Item = Vec<u8>>) -> (Vec<String>, Option<String>) {
    let limits = Limits {
        max_payload: 1 << 20,
        max_dimension: 4096,
    };
    let mut dec = Decoder::with_limits(limits);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for c in chunks {
        buf.extend_from_slice(&c);
        loop {
            match dec.decode(&mut buf) {
                Ok(Some(m)) => out.push(summarise(&m)),
                Ok(None) => break,
                // The kind of error must agree; its detail may not (a bad magic found
                // after 2 bytes names 2 bytes, after 4 names 4).
                Err(e) => {
                    let kind = format!("{e:?}");
                    let kind = kind.split([' ', '(', '{']).next().unwrap_or("").to_string();
                    return (out, Some(kind));
                }
            }
        }
    }
    (out, None)
}

fuzz_target!(|data: &[u8]| {
    let whole = run(&mut std::iter::once(data.to_vec()));
    let split = run(&mut data.iter().map(|b| vec![*b]));
    assert_eq!(whole, split);
});
