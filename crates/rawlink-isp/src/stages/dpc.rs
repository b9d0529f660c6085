//! Defective (hot or dead) pixel correction on the mosaic.
//!
//! Each sample is compared with its 8 same-colour neighbours (two pixels away, which
//! is the same colour for every Bayer pattern) and with its 8 adjacent pixels (other
//! colours). It is defective if it is above the largest of its same-colour neighbours by
//! more than the threshold (or below the smallest), and none of its 8 adjacent pixels
//! stands out from its own same-colour neighbours in the same direction by half that.
//! It is then replaced by the median of its 4 axial same-colour neighbours. A real edge
//! or texture has same-colour neighbours on both sides of the sample's value, and a real
//! highlight reaches the adjacent pixels too, so only isolated one-pixel outliers are
//! touched.

use crate::{FrameContext, RawPlane, RawStage};
use rayon::prelude::*;

/// Defective-pixel correction.
#[derive(Debug, Clone, Copy)]
pub struct DefectivePixels {
    /// Threshold as a fraction of full scale.
    pub threshold: f32,
}

fn reflect(i: isize, n: usize) -> usize {
    // Reflect-101 keeps the CFA parity: -2 -> 2, n+1 -> n-3.
    let n = n as isize;
    let mut i = i;
    if i < 0 {
        i = -i;
    }
    if i >= n {
        i = 2 * (n - 1) - i;
    }
    i.clamp(0, n - 1) as usize
}

fn median4(mut v: [u16; 4]) -> u16 {
    v.sort_unstable();
    ((v[1] as u32 + v[2] as u32) / 2) as u16
}

impl RawStage for DefectivePixels {
    fn name(&self) -> &'static str {
        "dpc"
    }
    fn apply(&self, img: &mut RawPlane, ctx: &mut FrameContext) {
        let (w, h) = (img.width, img.height);
        if w < 5 || h < 5 {
            return;
        }
        // At most full scale, so that `hi + thr` cannot overflow whatever the setting.
        let thr = (self.threshold.min(1.0) * ctx.max_value as f32).max(1.0) as i32;
        let arch = pulp::Arch::new();
        // Every test reads the mosaic as it came in, so the repairs are found first (in
        // parallel, reading only) and written after: no copy of the frame, and defects
        // are rare, so the list is short.
        let src = &img.data;
        let repairs: Vec<(usize, u16)> = (0..h)
            .into_par_iter()
            .with_min_len(crate::rows_per_task(w))
            .map_init(
                || vec![0u8; w],
                |flags, y| {
                    let rows = [-2isize, 0, 2].map(|d| &src[reflect(y as isize + d, h) * w..][..w]);
                    // Fast pass (vectorised): flag the samples outside their same-colour
                    // neighbours' range by more than the threshold; the first and last
                    // two columns (reflected neighbours) always take the full test.
                    arch.dispatch(Outliers {
                        rows,
                        thr,
                        flags: &mut flags[..],
                    });
                    // Flags are rare: skip 32 at a time when none is set (an OR over the
                    // chunk, which vectorises, instead of a test per sample).
                    let mut found = Vec::new();
                    for (k, chunk) in flags.chunks(32).enumerate() {
                        if chunk.iter().fold(0, |a, &f| a | f) == 0 {
                            continue;
                        }
                        for (j, &f) in chunk.iter().enumerate() {
                            let x = k * 32 + j;
                            if f != 0 {
                                if let Some(v) = self.repair(src, w, h, &rows, thr, y, x) {
                                    found.push((y * w + x, v));
                                }
                            }
                        }
                    }
                    found
                },
            )
            .flatten()
            .collect();
        for &(i, v) in &repairs {
            img.data[i] = v;
        }
        let fixed = repairs.len();
        ctx.stats.defective_pixels = fixed as u64;
    }
}

impl DefectivePixels {
    /// The full test of the sample at (`y`, `x`) (`rows`: rows `y - 2, y, y + 2`,
    /// reflected); the replacement value when it is an isolated outlier.
    #[allow(clippy::too_many_arguments)]
    fn repair(
        &self,
        src: &[u16],
        w: usize,
        h: usize,
        rows: &[&[u16]; 3],
        thr: i32,
        y: usize,
        x: usize,
    ) -> Option<u16> {
        let xs = [-2isize, 0, 2].map(|d| reflect(x as isize + d, w));
        let c = rows[1][x] as i32;
        let mut lo = i32::MAX;
        let mut hi = i32::MIN;
        for (ry, row) in rows.iter().enumerate() {
            for (rx, &xx) in xs.iter().enumerate() {
                if ry == 1 && rx == 1 {
                    continue;
                }
                let v = row[xx] as i32;
                lo = lo.min(v);
                hi = hi.max(v);
            }
        }
        let hot = c > hi + thr;
        let dead = c < lo - thr;
        if !(hot || dead) {
            return None;
        }
        // Cross-colour confirmation: a real highlight or speck reaches the
        // adjacent pixels too (optics spread light over several pixels), so
        // they stand out from their own same-colour neighbours in the same
        // direction; next to a defect they do not.
        let elev = |yy: isize, xx: isize| -> i32 {
            let at =
                |dy: isize, dx: isize| src[reflect(yy + dy, h) * w + reflect(xx + dx, w)] as i32;
            let m = median4([at(-2, 0), at(2, 0), at(0, -2), at(0, 2)].map(|v| v as u16));
            at(0, 0) - m as i32
        };
        let (yi, xi) = (y as isize, x as isize);
        let spread = [
            (-1, -1),
            (-1, 0),
            (-1, 1),
            (0, -1),
            (0, 1),
            (1, -1),
            (1, 0),
            (1, 1),
        ]
        .iter()
        .any(|&(dy, dx)| {
            let e = elev(yi + dy, xi + dx);
            if hot {
                e > thr / 2
            } else {
                e < -thr / 2
            }
        });
        if spread {
            return None;
        }
        Some(median4([
            rows[0][x],
            rows[2][x],
            rows[1][xs[0]],
            rows[1][xs[2]],
        ]))
    }
}

/// The fast pass of one row, as a `pulp` kernel: `flags[x]` is 1 where the sample is
/// outside the range of its 8 same-colour neighbours by more than `thr` (interior
/// columns), and 1 in the first and last two columns.
struct Outliers<'a> {
    rows: [&'a [u16]; 3],
    thr: i32,
    flags: &'a mut [u8],
}

impl pulp::WithSimd for Outliers<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        let Self { rows, thr, flags } = self;
        let w = flags.len();
        let [a, b, c] = rows.map(|r| &r[..w]);
        flags.fill(1);
        let thr = thr.clamp(0, u16::MAX as i32) as u16;
        // Blocks of `BLOCK` samples, the last one moved back to end at `w − 2` (it
        // recomputes some flags, to the same values): a block is a fixed-length loop,
        // one or two vectors, so a short row has no scalar remainder loop (at 640
        // columns that remainder was a noticeable share of the row).
        if w < BLOCK + 4 {
            for x in 2..w - 2 {
                flags[x] = outlier(a, b, c, x, thr);
            }
            return;
        }
        let mut next = 2;
        loop {
            let x0 = next.min(w - 2 - BLOCK);
            next += BLOCK;
            let (a, b, c) = (
                &a[x0 - 2..][..BLOCK + 4],
                &b[x0 - 2..][..BLOCK + 4],
                &c[x0 - 2..][..BLOCK + 4],
            );
            let out = &mut flags[x0..][..BLOCK];
            for i in 0..BLOCK {
                out[i] = outlier(a, b, c, i + 2, thr);
            }
            if x0 == w - 2 - BLOCK {
                break;
            }
        }
    }
}

/// Samples per block of [`Outliers`].
const BLOCK: usize = 64;

/// Whether `b[x]` lies outside its 8 same-colour neighbours' range by more than `thr`,
/// in `u16` lanes (twice as many per vector as `i32`): `v > hi + thr` is `v > hi ⊕ thr`
/// with a saturating add (past 65 535 no code is above it), and `v < lo − thr` likewise
/// with a saturating subtraction.
#[inline(always)]
fn outlier(a: &[u16], b: &[u16], c: &[u16], x: usize, thr: u16) -> u8 {
    let (n0, n1, n2, n3) = (a[x - 2], a[x], a[x + 2], b[x - 2]);
    let (n4, n5, n6, n7) = (b[x + 2], c[x - 2], c[x], c[x + 2]);
    let lo = n0.min(n1).min(n2).min(n3).min(n4).min(n5).min(n6).min(n7);
    let hi = n0.max(n1).max(n2).max(n3).max(n4).max(n5).max(n6).max(n7);
    let v = b[x];
    u8::from((v > hi.saturating_add(thr)) | (v < lo.saturating_sub(thr)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rawlink_frame::BayerPattern;

    fn ctx() -> FrameContext {
        FrameContext::new(BayerPattern::Rggb, 4095)
    }

    #[test]
    fn hot_and_dead_pixels_are_replaced_and_a_ramp_is_untouched() {
        let (w, h) = (20, 16);
        let data: Vec<u16> = (0..w * h).map(|i| (1000 + (i % w) * 20) as u16).collect();
        let mut img = RawPlane::new(w, h, data.clone()).unwrap();
        let mut c = ctx();
        DefectivePixels { threshold: 0.1 }.apply(&mut img, &mut c);
        assert_eq!(img.data, data, "a clean ramp is unchanged");
        img.data[5 * w + 7] = 4095;
        img.data[10 * w + 12] = 0;
        DefectivePixels { threshold: 0.1 }.apply(&mut img, &mut c);
        assert_eq!(c.stats.defective_pixels, 2);
        assert_eq!(img.data, data);
    }

    /// A threshold above full scale (possible through the library, not the checked
    /// configuration) repairs nothing: it used to overflow the edge columns' test, which
    /// then flagged every pixel there.
    #[test]
    fn a_threshold_past_full_scale_repairs_nothing() {
        let (w, h) = (24, 16);
        let data: Vec<u16> = (0..w * h).map(|i| ((i * 7919) % 4096) as u16).collect();
        let mut img = RawPlane::new(w, h, data.clone()).unwrap();
        let mut c = ctx();
        DefectivePixels { threshold: 6e5 }.apply(&mut img, &mut c);
        assert_eq!(c.stats.defective_pixels, 0);
        assert_eq!(img.data, data);
    }

    /// Defects on both sides of the 32-sample chunks the flag scan skips by, and in the
    /// last, partial chunk of a row.
    #[test]
    fn defects_at_chunk_edges_are_found() {
        let (w, h) = (70, 12);
        let data: Vec<u16> = (0..w * h).map(|i| (1000 + (i % w) * 5) as u16).collect();
        let mut img = RawPlane::new(w, h, data.clone()).unwrap();
        let at = [(3, 31), (4, 32), (6, 63), (7, 64), (8, 66)];
        for (k, &(y, x)) in at.iter().enumerate() {
            img.data[y * w + x] = if k % 2 == 0 { 4095 } else { 0 };
        }
        let mut c = ctx();
        DefectivePixels { threshold: 0.1 }.apply(&mut img, &mut c);
        assert_eq!(c.stats.defective_pixels, at.len() as u64);
        assert_eq!(img.data, data);
    }

    /// The fast pass's `u16` lanes flag exactly what the `i32` comparison does, with
    /// codes at both ends of the range and thresholds up to and past full scale (where
    /// the saturating arithmetic stands in for the sums that leave `u16`), on rows
    /// too short for a block, of exactly one block, and of several blocks with the last
    /// one moved back.
    #[test]
    fn outlier_flags_equal_the_wide_comparison() {
        for w in [5, 67, BLOCK + 4, BLOCK + 5, 3 * BLOCK + 27] {
            outlier_flags_at_width(w);
        }
    }

    fn outlier_flags_at_width(w: usize) {
        let mut s = 5u32;
        let mut row = || -> Vec<u16> {
            (0..w)
                .map(|_| {
                    s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    match s >> 29 {
                        0 => 0,
                        1 => 65535,
                        _ => (s >> 16) as u16,
                    }
                })
                .collect()
        };
        for _ in 0..50 {
            let rows = [row(), row(), row()];
            for thr in [1, 2, 300, 40_000, 65_534, 65_535, 70_000] {
                let mut flags = vec![9u8; w];
                pulp::Arch::new().dispatch(Outliers {
                    rows: [&rows[0], &rows[1], &rows[2]],
                    thr,
                    flags: &mut flags,
                });
                let [a, b, c] = &rows;
                for x in 0..w {
                    let want = if x < 2 || x >= w - 2 {
                        true
                    } else {
                        let n = [
                            a[x - 2],
                            a[x],
                            a[x + 2],
                            b[x - 2],
                            b[x + 2],
                            c[x - 2],
                            c[x],
                            c[x + 2],
                        ]
                        .map(i32::from);
                        let (lo, hi) = (*n.iter().min().unwrap(), *n.iter().max().unwrap());
                        let v = b[x] as i32;
                        v > hi + thr || v < lo - thr
                    };
                    assert_eq!(flags[x] == 1, want, "width {w}, x {x}, thr {thr}");
                }
            }
        }
    }
}
