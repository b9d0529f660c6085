//! Pipeline stages, grouped by the kind of image they take and give.
//!
//! Kernels index rows explicitly (`row[x - 1]`, `row[x + 1]`): clearer for stencils
//! than iterator chains, and bounds checks hoist out of the loops.
#![allow(clippy::needless_range_loop)]

pub mod awb;
pub mod bilateral;
pub mod blc;
pub mod color;
pub mod demosaic;
pub mod denoise;
pub mod dpc;
pub mod gamma;
pub mod lsc;
pub mod malvar;
pub mod pad;
pub mod rcd;
pub mod sharpen;
pub mod wb;

/// The value of a float that holds a whole number in `[0, 2^23)`, as an index: adding
/// 2^23 puts the number in the low mantissa bits, so the conversion is a bit cast.
/// Rust's float-to-integer `as` saturates (and maps NaN to 0), which compiles to a
/// scalar compare-and-select per sample; this vectorises.
#[inline(always)]
pub(crate) fn whole_to_index(v: f32) -> usize {
    ((v + 8_388_608.0).to_bits() - 0x4B00_0000) as usize
}

/// `v as u16` for a finite `v` (clamped to `0..=65535`, then truncated), in a form that
/// vectorises (see [`whole_to_index`]); equal to `as` for every finite value (tested).
#[inline(always)]
pub(crate) fn sat_u16(v: f32) -> u16 {
    whole_to_index(v.clamp(0.0, 65535.0).floor()) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sat_u16_equals_as_for_finite_values() {
        // Every multiple of 1/16 from −16 to 65 552, then wide and awkward values.
        for k in -256i32..=(65_552 * 16) {
            let v = k as f32 / 16.0;
            assert_eq!(sat_u16(v), v as u16, "{v}");
        }
        let awkward = [
            -0.0,
            f32::MIN_POSITIVE,
            0.49999997,
            0.5,
            65534.996,
            65535.0,
            65535.5,
            65535.996,
            65536.0,
            1e9,
            -1e9,
            f32::MAX,
            f32::MIN,
        ];
        for v in awkward {
            assert_eq!(sat_u16(v), v as u16, "{v}");
        }
    }

    #[test]
    fn whole_to_index_of_whole_numbers() {
        for n in (0..1 << 23).step_by(997).chain([1, 2, (1 << 23) - 1]) {
            assert_eq!(whole_to_index(n as f32), n);
        }
    }
}
