//! The CFA-LZ4 decoder never panics and never returns a size other than asked for;
//! anything it accepts re-encodes and decodes to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rawlink_proto::compress::{compress, decompress};

fuzz_target!(|input: (u8, u8, &[u8])| {
    let (w, h, data) = input;
    let (w, h) = (w as usize % 64 + 1, h as usize % 16 + 1);
    if let Ok(out) = decompress(data, w, w * h * 2) {
        assert_eq!(out.len(), w * h * 2);
        let again = decompress(&compress(&out, w, h), w, out.len()).unwrap();
        assert_eq!(again, out);
    }
});
