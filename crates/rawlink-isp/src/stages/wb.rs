//! White balance on the mosaic (default profile).
//!
//! Statistics come from the frame itself, per 2×2 CFA cell (R, mean of the two G, B):
//! - `grayworld`: gains make the channel means equal;
//! - `robust`: the same, over cells whose three values all lie in unclipped mid-tones
//!   (2 %–90 % of full scale), so highlights, clipped areas and deep shadow do not pull
//!   the estimate; falls back to gray world when fewer than 1 % of cells qualify.
//!
//! Auto gains are normalised so that green is 1 and no gain is below 1 (clipped white
//! stays white). Manual and metadata gains are applied as given.

use crate::config::WbMode;
use crate::stages::blc::NormCode;
use crate::stages::sat_u16;
use crate::{FrameContext, RawPlane, RawStage};
use rawlink_frame::BayerPattern;
use rayon::prelude::*;

/// White-balance stage.
#[derive(Debug, Clone, Copy)]
pub struct WhiteBalance {
    /// Mode.
    pub mode: WbMode,
    /// Gains for manual mode.
    pub gains: Option<[f32; 3]>,
}

/// Sums of (R, G, B) over 2×2 cells, and the cell count; `mid` restricts to mid-tones.
/// Sums of the per-cell R, mean G and B over the cells (all, or with `mid` only those
/// whose three values are unclipped mid-tones), and the number of cells summed.
///
/// The sums are exact: samples are integers, a cell's green mean a multiple of ½, and
/// no sum reaches 2⁵³, so they are accumulated as integers (R, G1 + G2, B) in any order
/// and converted at the end: the same values as summing the cells' `f32` values in
/// `f64` one by one. The cell layout is a compile-time parameter of the row loop
/// ([`row_sums`]), so no sample is tested for its colour.
///
/// With a normalisation deferred to the demosaic ([`crate::Deferred`]), each sample is
/// normalised as it is read: the sums are those of the normalised mosaic.
fn cell_sums(img: &RawPlane, ctx: &FrameContext, mid: bool) -> ([f64; 3], u64) {
    let (w, h) = (img.width, img.height);
    let lo = 0.02 * ctx.max_value as f32;
    let hi = 0.90 * ctx.max_value as f32;
    // Each cell position's colour, for its normalisation.
    let cell = ctx.pattern.cell();
    let norm = ctx
        .deferred
        .map(|d| [cell[0][0], cell[0][1], cell[1][0], cell[1][1]].map(|c| d.norm[c as usize]));
    let row: RowSums = match ctx.pattern {
        BayerPattern::Rggb => row_sums::<0, 1, 2, 3>,
        BayerPattern::Bggr => row_sums::<3, 1, 2, 0>,
        BayerPattern::Grbg => row_sums::<1, 0, 3, 2>,
        BayerPattern::Gbrg => row_sums::<2, 0, 3, 1>,
    };
    let [r, g2, b, n] = (0..h / 2)
        .into_par_iter()
        .map(|cy| {
            let r0 = &img.data[2 * cy * w..][..w];
            let r1 = &img.data[(2 * cy + 1) * w..][..w];
            row(r0, r1, lo, hi, mid, norm)
        })
        .reduce(
            || [0; 4],
            |a, b| [a[0] + b[0], a[1] + b[1], a[2] + b[2], a[3] + b[3]],
        );
    ([r as f64, g2 as f64 * 0.5, b as f64], n)
}

/// A [`row_sums`] instance: two mosaic rows, the mid-tone bounds, whether to apply them,
/// and the normalisation of each cell position's samples, if deferred.
type RowSums = fn(&[u16], &[u16], f32, f32, bool, Option<[NormCode; 4]>) -> [u64; 4];

/// One row of cells: `[Σ R, Σ (G1 + G2), Σ B, cells]`. `R`, `G1`, `G2` and `B` are the
/// sites' positions in the cell, `dy * 2 + dx`, the greens in scan order. Dispatched at
/// run time (AVX2 where present), see [`RowSumsKernel`].
fn row_sums<const R: usize, const G1: usize, const G2: usize, const B: usize>(
    r0: &[u16],
    r1: &[u16],
    lo: f32,
    hi: f32,
    mid: bool,
    norm: Option<[NormCode; 4]>,
) -> [u64; 4] {
    let arch = pulp::Arch::new();
    match norm {
        None => arch.dispatch(RowSumsKernel::<R, G1, G2, B, _> {
            r0,
            r1,
            lo,
            hi,
            mid,
            map: AsIs,
        }),
        Some(n) => arch.dispatch(RowSumsKernel::<R, G1, G2, B, _> {
            r0,
            r1,
            lo,
            hi,
            mid,
            map: n,
        }),
    }
}

/// How [`RowSumsKernel`] reads a cell's four samples (by position in the cell).
trait CellMap: Copy {
    fn map(self, i: usize, v: u16) -> u16;
}

/// The samples as they are.
#[derive(Clone, Copy)]
struct AsIs;

impl CellMap for AsIs {
    #[inline(always)]
    fn map(self, _i: usize, v: u16) -> u16 {
        v
    }
}

impl CellMap for [NormCode; 4] {
    #[inline(always)]
    fn map(self, i: usize, v: u16) -> u16 {
        self[i].code(v)
    }
}

/// Cells summed per `u32` accumulator before it is added to the `u64` totals: 16 384
/// cells of at most 2 × 65 535 stay below 2^32. `u32` lanes vectorise; `u64` sums and
/// the multiply by the keep flag did not.
const CELLS_PER_U32: usize = 16_384;

/// [`row_sums`] as a `pulp` kernel.
struct RowSumsKernel<
    'a,
    const R: usize,
    const G1: usize,
    const G2: usize,
    const B: usize,
    M: CellMap,
> {
    r0: &'a [u16],
    r1: &'a [u16],
    lo: f32,
    hi: f32,
    mid: bool,
    map: M,
}

impl<const R: usize, const G1: usize, const G2: usize, const B: usize, M: CellMap> pulp::WithSimd
    for RowSumsKernel<'_, R, G1, G2, B, M>
{
    type Output = [u64; 4];

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) -> [u64; 4] {
        let Self {
            r0,
            r1,
            lo,
            hi,
            mid,
            map,
        } = self;
        let inside = |x: f32| (x >= lo) & (x <= hi);
        let mut acc = [0u64; 4];
        let n = r0.len().min(r1.len()) / 2 * 2;
        for (c0, c1) in r0[..n]
            .chunks(2 * CELLS_PER_U32)
            .zip(r1[..n].chunks(2 * CELLS_PER_U32))
        {
            let mut a = [0u32; 4];
            for (p0, p1) in c0.chunks_exact(2).zip(c1.chunks_exact(2)) {
                let cell = [
                    map.map(0, p0[0]),
                    map.map(1, p0[1]),
                    map.map(2, p1[0]),
                    map.map(3, p1[1]),
                ];
                let (r, g1, g2, b) = (cell[R], cell[G1], cell[G2], cell[B]);
                let g = 0.5 * g1 as f32 + 0.5 * g2 as f32;
                let keep = !mid | (inside(r as f32) & inside(g) & inside(b as f32));
                // All ones or zero: the kept cell's values, or nothing.
                let m = u32::from(keep).wrapping_neg();
                a[0] += r as u32 & m;
                a[1] += (g1 as u32 + g2 as u32) & m;
                a[2] += b as u32 & m;
                a[3] += u32::from(keep);
            }
            for (t, v) in acc.iter_mut().zip(a) {
                *t += v as u64;
            }
        }
        acc
    }
}

fn gains_from(s: [f64; 3]) -> [f32; 3] {
    let g = s[1].max(1e-9);
    let mut k = [g / s[0].max(1e-9), 1.0, g / s[2].max(1e-9)];
    let m = k.iter().cloned().fold(f64::MAX, f64::min);
    if m < 1.0 {
        k.iter_mut().for_each(|x| *x /= m);
    }
    k.map(|x| x.clamp(1.0 / 64.0, 64.0) as f32)
}

impl WhiteBalance {
    /// The gains this stage would apply to `img`.
    pub fn estimate(&self, img: &RawPlane, ctx: &FrameContext) -> [f32; 3] {
        match self.mode {
            WbMode::Manual => self.gains.unwrap_or([1.0; 3]),
            WbMode::Metadata if ctx.meta.wb_gains.is_some() => {
                ctx.meta.wb_gains.unwrap_or([1.0; 3])
            }
            WbMode::Grayworld => gains_from(cell_sums(img, ctx, false).0),
            WbMode::Robust | WbMode::Metadata => {
                let (s, n) = cell_sums(img, ctx, true);
                let cells = ((img.width / 2) * (img.height / 2)).max(1) as u64;
                if n * 100 >= cells {
                    gains_from(s)
                } else {
                    gains_from(cell_sums(img, ctx, false).0)
                }
            }
        }
    }
}

impl RawStage for WhiteBalance {
    fn name(&self) -> &'static str {
        "wb"
    }
    fn apply(&self, img: &mut RawPlane, ctx: &mut FrameContext) {
        let gains = self.estimate(img, ctx);
        ctx.stats.wb_gains = gains.map(|g| g as f64);
        // The normalisation is left to the demosaic's input loop: so are the gains.
        if let Some(d) = ctx.deferred.as_mut() {
            d.gains = gains;
            return;
        }
        let cell = ctx.pattern.cell();
        let top = ctx.max_value as f32;
        let w = img.width;
        let arch = pulp::Arch::new();
        img.data
            .par_chunks_mut(w)
            .with_min_len(crate::rows_per_task(w))
            .enumerate()
            .for_each(|(y, row)| {
                let k = [0, 1].map(|i| gains[cell[y & 1][i] as usize]);
                arch.dispatch(GainRow { row, k, top });
            });
    }
}

/// One mosaic row times its two sites' gains, rounded and clamped to `top`, as a
/// `pulp` kernel (so the conversion back to codes vectorises with the CPU's rounding
/// instructions).
struct GainRow<'a> {
    row: &'a mut [u16],
    k: [f32; 2],
    top: f32,
}

impl pulp::WithSimd for GainRow<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        let Self { row, k, top } = self;
        let mut pairs = row.chunks_exact_mut(2);
        for pair in &mut pairs {
            pair[0] = gain(pair[0], k[0], top);
            pair[1] = gain(pair[1], k[1], top);
        }
        if let [last] = pairs.into_remainder() {
            *last = gain(*last, k[0], top);
        }
    }
}

/// A code times a gain, rounded, at most `top`.
#[inline(always)]
pub(crate) fn gain(v: u16, k: f32, top: f32) -> u16 {
    sat_u16((v as f32 * k + 0.5).min(top))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rawlink_frame::Channel;

    fn grey_mosaic(p: BayerPattern, k: [f32; 3], clip_frac: f32) -> RawPlane {
        let (w, h) = (64, 48);
        let data = (0..h)
            .flat_map(|y| {
                (0..w).map(move |x| {
                    // A clipped highlight saturates every channel.
                    if (x as f32) < clip_frac * w as f32 {
                        return 65535;
                    }
                    let c = p.channel_at(y, x) as usize;
                    (20000.0 * k[c]) as u16
                })
            })
            .collect();
        RawPlane::new(w, h, data).unwrap()
    }

    #[test]
    fn robust_ignores_clipped_highlights_where_grayworld_does_not() {
        for p in BayerPattern::ALL {
            let img = grey_mosaic(p, [0.5, 1.0, 0.8], 0.3);
            let ctx = FrameContext::new(p, 65535);
            let robust = WhiteBalance {
                mode: WbMode::Robust,
                gains: None,
            }
            .estimate(&img, &ctx);
            assert!(
                (robust[0] - 2.0).abs() < 0.01 && (robust[2] - 1.25).abs() < 0.01,
                "{p}: {robust:?}"
            );
            let gw = WhiteBalance {
                mode: WbMode::Grayworld,
                gains: None,
            }
            .estimate(&img, &ctx);
            assert!(
                (gw[0] - 2.0).abs() > 0.1,
                "gray world is pulled by the clipped area: {gw:?}"
            );
        }
    }

    /// The previous formulation, a branch on the site's colour per sample: the oracle.
    fn cell_sums_oracle(img: &RawPlane, ctx: &FrameContext, mid: bool) -> ([f64; 3], u64) {
        let (w, h) = (img.width, img.height);
        let cell = ctx.pattern.cell();
        let lo = 0.02 * ctx.max_value as f32;
        let hi = 0.90 * ctx.max_value as f32;
        (0..h / 2)
            .into_par_iter()
            .map(|cy| {
                let r0 = &img.data[2 * cy * w..][..w];
                let r1 = &img.data[(2 * cy + 1) * w..][..w];
                let mut s = [0f64; 3];
                let mut n = 0u64;
                for cx in 0..w / 2 {
                    let mut v = [0f32; 3];
                    for (dy, row) in [r0, r1].iter().enumerate() {
                        for dx in 0..2 {
                            let c = cell[dy][dx] as usize;
                            let x = row[2 * cx + dx] as f32;
                            v[c] += if c == Channel::G as usize { 0.5 * x } else { x };
                        }
                    }
                    if mid && !v.iter().all(|&x| x >= lo && x <= hi) {
                        continue;
                    }
                    for c in 0..3 {
                        s[c] += v[c] as f64;
                    }
                    n += 1;
                }
                (s, n)
            })
            .reduce(
                || ([0.0; 3], 0),
                |a, b| {
                    (
                        [a.0[0] + b.0[0], a.0[1] + b.0[1], a.0[2] + b.0[2]],
                        a.1 + b.1,
                    )
                },
            )
    }

    /// Gray-world gains from channel sums, normalised to G = 1 and min gain 1.

    #[test]
    fn cell_sums_equal_the_per_sample_formulation() {
        let mut seed = 3u32;
        for (w, h) in [(64usize, 48usize), (33, 17), (2, 2), (5, 9)] {
            let data = (0..w * h)
                .map(|_| {
                    seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    (seed >> 16) as u16
                })
                .collect();
            let img = RawPlane::new(w, h, data).unwrap();
            for p in BayerPattern::ALL {
                let ctx = FrameContext::new(p, 65535);
                for mid in [false, true] {
                    assert_eq!(
                        cell_sums(&img, &ctx, mid),
                        cell_sums_oracle(&img, &ctx, mid),
                        "{w}x{h} {p} mid {mid}"
                    );
                }
            }
        }
    }

    /// A row pair wider than one `u32` accumulator's share, at full scale: without the
    /// flush to `u64` every 16 384 cells the green sum would overflow.
    #[test]
    fn wide_full_scale_rows_do_not_overflow() {
        let w = 4 * CELLS_PER_U32 + 6;
        let img = RawPlane::new(w, 2, vec![65535; 2 * w]).unwrap();
        let ctx = FrameContext::new(BayerPattern::Rggb, 65535);
        let got = cell_sums(&img, &ctx, false);
        assert_eq!(got, cell_sums_oracle(&img, &ctx, false));
        assert_eq!(got.1, (w / 2) as u64);
        assert_eq!(got.0[1], 65535.0 * (w / 2) as f64);
    }

    #[test]
    fn odd_widths_scale_the_last_sample_with_its_sites_gain() {
        let img = RawPlane::new(3, 2, vec![100; 6]).unwrap();
        let mut ctx = FrameContext::new(BayerPattern::Rggb, 65535);
        let mut out = img.clone();
        WhiteBalance {
            mode: WbMode::Manual,
            gains: Some([2.0, 1.0, 3.0]),
        }
        .apply(&mut out, &mut ctx);
        // R G R / G B G
        assert_eq!(out.data, vec![200, 100, 200, 100, 300, 100]);
    }

    #[test]
    fn manual_gains_applied_per_site() {
        let mut img = grey_mosaic(BayerPattern::Grbg, [1.0; 3], 0.0);
        let mut ctx = FrameContext::new(BayerPattern::Grbg, 65535);
        WhiteBalance {
            mode: WbMode::Manual,
            gains: Some([2.0, 1.0, 3.0]),
        }
        .apply(&mut img, &mut ctx);
        assert_eq!(img.data[0], 20000); // G
        assert_eq!(img.data[1], 40000); // R
        assert_eq!(img.data[64], 60000); // B
    }
}
