//! Reflect-101 padding helpers shared by the demosaic kernels. Reflect-101
//! (`-k → k`) keeps the CFA parity, so padded samples have the right colour.

#[cfg(test)]
use crate::RawPlane;

/// Index `i` reflected into `0..n` (reflect-101, folded as often as needed).
pub fn reflect(i: isize, n: usize) -> usize {
    if n == 1 {
        return 0;
    }
    let period = 2 * (n as isize - 1);
    let mut i = i.rem_euclid(period);
    if i >= n as isize {
        i = period - i;
    }
    i as usize
}

/// Fills `scratch` with the 2R+1 rows around `y`, each padded by R samples on both
/// sides, as `i32`, and returns them top to bottom. Only the tests' per-pixel Malvar
/// oracle pads this way now (a `reflect` per sample).
#[cfg(test)]
pub fn padded_rows<'a, const R: usize>(
    raw: &RawPlane,
    y: usize,
    scratch: &'a mut [i32],
) -> [&'a [i32]; 5] {
    let (w, h) = (raw.width, raw.height);
    let pw = w + 2 * R;
    for (k, dst) in scratch.chunks_exact_mut(pw).take(2 * R + 1).enumerate() {
        let sy = reflect(y as isize + k as isize - R as isize, h);
        let src = &raw.data[sy * w..(sy + 1) * w];
        for (px, d) in dst.iter_mut().enumerate() {
            *d = src[reflect(px as isize - R as isize, w)] as i32;
        }
    }
    let mut it = scratch.chunks_exact(pw);
    std::array::from_fn(|_| it.next().unwrap_or(&[]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reflect_101_keeps_parity() {
        assert_eq!(reflect(-1, 5), 1);
        assert_eq!(reflect(-2, 5), 2);
        assert_eq!(reflect(5, 5), 3);
        assert_eq!(reflect(6, 5), 2);
        assert_eq!(reflect(3, 5), 3);
        assert_eq!(reflect(-3, 2), 1);
        assert_eq!(reflect(7, 1), 0);
        for i in -10..20isize {
            assert_eq!(reflect(i, 6) as isize % 2, i.rem_euclid(2), "{i}");
        }
    }
}
