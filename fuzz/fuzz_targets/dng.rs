//! The DNG reader never panics on any bytes, and what it accepts it can write back and
//! read again to the same samples and metadata.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rawlink_dng::{read_dng, write_dng};

fuzz_target!(|data: &[u8]| {
    let Ok(img) = read_dng(data) else { return };
    let Ok(again) = write_dng(&img.meta, &img.samples) else {
        return;
    };
    let back = read_dng(&again).expect("a DNG we wrote must read back");
    assert_eq!(back.samples, img.samples);
    assert_eq!(back.meta.pattern, img.meta.pattern);
    assert_eq!(
        (back.meta.width, back.meta.height),
        (img.meta.width, img.meta.height)
    );
});
