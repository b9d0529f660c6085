//! Bit unpacking then packing gives back the packed bytes' samples exactly, for every
//! depth; no panic on any input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rawlink_frame::{pack_row, unpack_row};

fuzz_target!(|input: (u8, u8, &[u8])| {
    let (bits, w, data) = input;
    let bits = 8 + bits % 9;
    let w = w as usize % 80 + 1;
    let need = (w * bits as usize).div_ceil(8);
    if data.len() < need {
        return;
    }
    let mut samples = vec![0u16; w];
    unpack_row(&data[..need], bits, &mut samples);
    let mut packed = vec![0u8; need];
    pack_row(&samples, bits, &mut packed);
    let mut again = vec![0u16; w];
    unpack_row(&packed, bits, &mut again);
    assert_eq!(again, samples);
});
