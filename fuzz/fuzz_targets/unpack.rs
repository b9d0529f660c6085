//! Bit unpacking then packing gives back the packed bytes' samples exactly, for every
//! depth and for the MIPI CSI-2 layouts; no panic on any input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rawlink_frame::{mipi_group, pack_row, pack_row_mipi, unpack_row, unpack_row_mipi, Packing};

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
    if mipi_group(bits).is_some() {
        let need = Packing::Mipi.row_bytes(w as u32, bits) as usize;
        if data.len() < need {
            return;
        }
        let mut samples = vec![0u16; w];
        unpack_row_mipi(&data[..need], bits, &mut samples).unwrap();
        let mut packed = vec![0u8; need];
        pack_row_mipi(&samples, bits, &mut packed).unwrap();
        let mut again = vec![0u16; w];
        unpack_row_mipi(&packed, bits, &mut again).unwrap();
        assert_eq!(again, samples);
    }
});
