//! The reference 3×3 sharpen: `5·c − up − down − left − right`, edge-clamped,
//! clamped to `[0, max]`. Images narrower or shorter than 3 pixels pass unchanged.

use crate::stages::sat_u16;
use crate::{FrameContext, RgbImage, RgbStage};
use rayon::prelude::*;

/// Reference sharpen kernel 0,-1,0 / -1,5,-1 / 0,-1,0.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sharpen3x3;

impl RgbStage for Sharpen3x3 {
    fn name(&self) -> &'static str {
        "sharpen"
    }
    fn apply(&self, img: RgbImage, ctx: &mut FrameContext) -> RgbImage {
        let (w, h) = (img.width, img.height);
        if w < 3 || h < 3 {
            return img;
        }
        let maxv = ctx.max_value as i32;
        let mut out = RgbImage::for_overwrite(w, h);
        let arch = pulp::Arch::new();
        // Bands of rows per task, all three planes in one parallel loop: one rayon task
        // per row and plane cost more than the rows' arithmetic at small sizes.
        let rows_per_task = crate::rows_per_task(w);
        let band = rows_per_task * w;
        let [o0, o1, o2] = &mut out.planes;
        let tasks = [(0usize, o0), (1, o1), (2, o2)];
        tasks
            .into_par_iter()
            .flat_map(|(c, dst)| {
                dst.par_chunks_mut(band)
                    .enumerate()
                    .map(move |(k, rows)| (c, k, rows))
            })
            .for_each(|(c, k, rows)| {
                let src = &img.planes[c];
                for (j, out) in rows.chunks_exact_mut(w).enumerate() {
                    let y = k * rows_per_task + j;
                    let mid = &src[y * w..(y + 1) * w];
                    let up = &src[y.saturating_sub(1) * w..][..w];
                    let dn = &src[(y + 1).min(h - 1) * w..][..w];
                    arch.dispatch(CrossRow {
                        up,
                        mid,
                        dn,
                        maxv,
                        out,
                    })
                }
            });
        // The input's planes serve a later frame's output.
        img.recycle();
        out
    }
}

/// One row of the reference sharpen, as a `pulp` kernel: the interior as one loop over
/// shifted slices (no per-pixel edge test), then the two edge pixels, clamped.
struct CrossRow<'a> {
    up: &'a [u16],
    mid: &'a [u16],
    dn: &'a [u16],
    maxv: i32,
    out: &'a mut [u16],
}

impl pulp::WithSimd for CrossRow<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        let Self {
            up,
            mid,
            dn,
            maxv,
            out,
        } = self;
        let w = mid.len();
        let n = w - 2;
        let (c, u, d) = (&mid[1..][..n], &up[1..][..n], &dn[1..][..n]);
        let (l, r) = (&mid[..n], &mid[2..][..n]);
        for (k, o) in out[1..][..n].iter_mut().enumerate() {
            *o = cross(c[k], u[k], d[k], l[k], r[k], maxv);
        }
        out[0] = cross(mid[0], up[0], dn[0], mid[0], mid[1], maxv);
        out[w - 1] = cross(
            mid[w - 1],
            up[w - 1],
            dn[w - 1],
            mid[w - 2],
            mid[w - 1],
            maxv,
        );
    }
}

/// `5·c − u − d − l − r`, clamped to `[0, maxv]`.
#[inline(always)]
fn cross(c: u16, u: u16, d: u16, l: u16, r: u16, maxv: i32) -> u16 {
    let v = 5 * c as i32 - u as i32 - d as i32 - l as i32 - r as i32;
    v.clamp(0, maxv) as u16
}

/// Unsharp mask on luma: `Y' = Y + amount · soft_threshold(Y − blur3×3(Y))`, with the
/// luma change added equally to R, G and B (colours are not sharpened separately,
/// which would exaggerate chroma noise and fringes).
#[derive(Debug, Clone, Copy)]
pub struct Unsharp {
    /// Strength.
    pub amount: f32,
    /// Detail below this fraction of full scale is left alone.
    pub threshold: f32,
}

impl RgbStage for Unsharp {
    fn name(&self) -> &'static str {
        "sharpen"
    }
    fn apply(&self, mut img: RgbImage, ctx: &mut FrameContext) -> RgbImage {
        let (w, h) = (img.width, img.height);
        if w < 3 || h < 3 || self.amount == 0.0 {
            return img;
        }
        let top = ctx.max_value as f32;
        let thr = self.threshold * top;
        let arch = pulp::Arch::new();
        let luma_of =
            |planes: [&[u16]; 3], out: &mut [f32]| arch.dispatch(LumaRow { src: planes, out });
        // Band-wise and in place, without a full-frame luma plane: each band needs the
        // luma of the row above and below it, which the neighbouring bands overwrite, so
        // those are computed first (clamped to the edge, as the filter is).
        let bands = h.div_ceil(BAND);
        let mut halo = vec![0f32; bands * 2 * w];
        halo.par_chunks_mut(2 * w)
            .enumerate()
            .for_each(|(k, rows)| {
                let (y0, y1) = (k * BAND, ((k + 1) * BAND).min(h));
                let (above, below) = rows.split_at_mut(w);
                for (y, out) in [(y0.saturating_sub(1), above), (y1.min(h - 1), below)] {
                    luma_of([0, 1, 2].map(|c| &img.planes[c][y * w..][..w]), out);
                }
            });
        let [pr, pg, pb] = &mut img.planes;
        pr.par_chunks_mut(BAND * w)
            .zip(pg.par_chunks_mut(BAND * w))
            .zip(pb.par_chunks_mut(BAND * w))
            .zip(halo.par_chunks(2 * w))
            .for_each_init(
                || vec![0f32; (BAND + 2) * w],
                |luma, (((r, g), b), halo)| {
                    let n = r.len() / w;
                    // Luma rows: the one above, the band's own (read before any is
                    // written), the one below.
                    luma[..w].copy_from_slice(&halo[..w]);
                    for i in 0..n {
                        let rows = [&r[i * w..][..w], &g[i * w..][..w], &b[i * w..][..w]];
                        luma_of(rows, &mut luma[(i + 1) * w..][..w]);
                    }
                    luma[(n + 1) * w..(n + 2) * w].copy_from_slice(&halo[w..]);
                    for i in 0..n {
                        arch.dispatch(UnsharpRow {
                            stage: self,
                            thr,
                            top,
                            up: &luma[i * w..][..w],
                            mid: &luma[(i + 1) * w..][..w],
                            dn: &luma[(i + 2) * w..][..w],
                            rgb: [
                                &mut r[i * w..][..w],
                                &mut g[i * w..][..w],
                                &mut b[i * w..][..w],
                            ],
                        })
                    }
                },
            );
        img
    }
}

/// Rows per band of the unsharp mask.
const BAND: usize = 32;

/// `Y = (R + 2G + B) / 4` of one row, as a `pulp` kernel.
pub(crate) struct LumaRow<'a> {
    pub(crate) src: [&'a [u16]; 3],
    pub(crate) out: &'a mut [f32],
}

impl pulp::WithSimd for LumaRow<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        self.run()
    }
}

impl LumaRow<'_> {
    /// The row's luma (inlined into the caller's dispatched kernel, if any).
    #[inline(always)]
    pub(crate) fn run(self) {
        let [r, g, b] = self.src;
        let n = self.out.len();
        let (r, g, b) = (&r[..n], &g[..n], &b[..n]);
        for (i, o) in self.out.iter_mut().enumerate() {
            *o = 0.25 * (r[i] as f32 + 2.0 * g[i] as f32 + b[i] as f32);
        }
    }
}

/// One row of the unsharp mask, as a `pulp` kernel (compiled for AVX2/NEON too, picked
/// at run time). The interior is one branch-free loop; the first and last columns clamp
/// their neighbours to the edge.
pub(crate) struct UnsharpRow<'a> {
    pub(crate) stage: &'a Unsharp,
    /// Threshold in codes.
    pub(crate) thr: f32,
    pub(crate) top: f32,
    /// Luma of the rows above, of this row and below (edge rows clamped).
    pub(crate) up: &'a [f32],
    pub(crate) mid: &'a [f32],
    pub(crate) dn: &'a [f32],
    /// The row's R, G, B, sharpened in place.
    pub(crate) rgb: [&'a mut [u16]; 3],
}

impl pulp::WithSimd for UnsharpRow<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        self.run()
    }
}

impl<'a> UnsharpRow<'a> {
    /// The row's unsharp mask (inlined into the caller's dispatched kernel, if any).
    #[inline(always)]
    pub(crate) fn run(self) {
        let Self {
            stage,
            thr,
            top,
            up,
            mid,
            dn,
            rgb: [r, g, b],
        } = self;
        let w = mid.len();
        let (up, dn, r, g, b) = (&up[..w], &dn[..w], &mut r[..w], &mut g[..w], &mut b[..w]);
        // The interior over equal-length slices of the taps (left, centre, right of each
        // row), so that the loop has no index arithmetic and vectorises.
        let n = w.saturating_sub(2);
        let taps = |row: &'a [f32]| [&row[..n], &row[1..][..n], &row[2..][..n]];
        let (u, m, d) = (taps(up), taps(mid), taps(dn));
        let amount = stage.amount;
        let (ri, gi, bi) = (&mut r[1..][..n], &mut g[1..][..n], &mut b[1..][..n]);
        for i in 0..n {
            let dl = unsharp_delta(
                amount,
                thr,
                [u[0][i], u[1][i], u[2][i]],
                [m[0][i], m[1][i], m[2][i]],
                [d[0][i], d[1][i], d[2][i]],
            );
            ri[i] = add_delta(ri[i], dl, top);
            gi[i] = add_delta(gi[i], dl, top);
            bi[i] = add_delta(bi[i], dl, top);
        }
        for (x, l, rr) in [(0, 0, 1), (w - 1, w - 2, w - 1)] {
            let dl = sharpen_delta(stage.amount, thr, up, mid, dn, x, l, rr);
            r[x] = add_delta(r[x], dl, top);
            g[x] = add_delta(g[x], dl, top);
            b[x] = add_delta(b[x], dl, top);
        }
    }
}

/// The unsharp mask's luma change at column `x` (neighbours `l`, `rr`).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn sharpen_delta(
    amount: f32,
    thr: f32,
    up: &[f32],
    mid: &[f32],
    dn: &[f32],
    x: usize,
    l: usize,
    rr: usize,
) -> f32 {
    unsharp_delta(
        amount,
        thr,
        [up[l], up[x], up[rr]],
        [mid[l], mid[x], mid[rr]],
        [dn[l], dn[x], dn[rr]],
    )
}

/// The unsharp mask's luma change from the luma left, at and right of the pixel in the
/// rows above (`u`), its own (`m`) and below (`d`).
#[inline(always)]
fn unsharp_delta(amount: f32, thr: f32, u: [f32; 3], m: [f32; 3], d: [f32; 3]) -> f32 {
    let blur =
        (4.0 * m[1] + 2.0 * (m[0] + m[2] + u[1] + d[1]) + (u[0] + u[2] + d[0] + d[2])) / 16.0;
    let diff = m[1] - blur;
    amount * (diff.signum() * (diff.abs() - thr).max(0.0))
}

/// A code plus a luma change, rounded and clamped to `[0, top]`.
#[inline(always)]
fn add_delta(v: u16, delta: f32, top: f32) -> u16 {
    sat_u16((v as f32 + delta + 0.5).clamp(0.0, top))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rawlink_frame::BayerPattern;

    /// The previous formulation (clamped neighbour indices per pixel, one full pass),
    /// which the dispatched row kernel must equal bit for bit.
    fn unsharp_oracle(st: &Unsharp, mut img: RgbImage, top: f32) -> RgbImage {
        let (w, h) = (img.width, img.height);
        let thr = st.threshold * top;
        let luma: Vec<f32> = (0..w * h)
            .map(|i| {
                0.25 * (img.planes[0][i] as f32
                    + 2.0 * img.planes[1][i] as f32
                    + img.planes[2][i] as f32)
            })
            .collect();
        for y in 0..h {
            let up = &luma[y.saturating_sub(1) * w..][..w];
            let mid = &luma[y * w..][..w];
            let dn = &luma[(y + 1).min(h - 1) * w..][..w];
            for x in 0..w {
                let (l, rr) = (x.saturating_sub(1), (x + 1).min(w - 1));
                let blur = (4.0 * mid[x]
                    + 2.0 * (mid[l] + mid[rr] + up[x] + dn[x])
                    + (up[l] + up[rr] + dn[l] + dn[rr]))
                    / 16.0;
                let d = mid[x] - blur;
                let delta = st.amount * (d.signum() * (d.abs() - thr).max(0.0));
                for p in img.planes.iter_mut() {
                    let v = &mut p[y * w + x];
                    *v = (*v as f32 + delta + 0.5).clamp(0.0, top) as u16;
                }
            }
        }
        img
    }

    /// The banded, parallel cross kernel against the formula with clamped neighbour
    /// indices per pixel: heights that are not multiples of the band, bands of one row
    /// and the 3-pixel minimum, on 12-bit noise (clamping at both ends).
    #[test]
    fn cross_sharpen_equals_the_per_pixel_formula() {
        let mut s = 9u32;
        // Bands of 8 K samples: one band, 16 rows and one, 8 + 8 + 5 rows.
        for (w, h) in [(3usize, 3usize), (37, 41), (512, 17), (1024, 21)] {
            let mut img = RgbImage::new(w, h);
            for p in img.planes.iter_mut() {
                for v in p.iter_mut() {
                    s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    *v = (s >> 20) as u16;
                }
            }
            let mut want = img.clone();
            for (src, dst) in img.planes.iter().zip(want.planes.iter_mut()) {
                for y in 0..h {
                    for x in 0..w {
                        let at = |yy: usize, xx: usize| src[yy * w + xx] as i32;
                        let v = 5 * at(y, x)
                            - at(y.saturating_sub(1), x)
                            - at((y + 1).min(h - 1), x)
                            - at(y, x.saturating_sub(1))
                            - at(y, (x + 1).min(w - 1));
                        dst[y * w + x] = v.clamp(0, 4095) as u16;
                    }
                }
            }
            let mut ctx = FrameContext::new(BayerPattern::Rggb, 4095);
            assert_eq!(Sharpen3x3.apply(img, &mut ctx), want, "{w}x{h}");
        }
    }

    #[test]
    fn unsharp_rows_equal_the_per_pixel_formulation() {
        let mut s = 5u32;
        for (w, h) in [
            (3usize, 3usize),
            (4, 9),
            (37, 21),
            (64, 5),
            (19, 70),
            (8, 65),
            (5, 33),
        ] {
            let mut img = RgbImage::new(w, h);
            for p in img.planes.iter_mut() {
                for v in p.iter_mut() {
                    s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    *v = (s >> 16) as u16;
                }
            }
            for (amount, threshold) in [(0.6f32, 0.002f32), (1.5, 0.0)] {
                let st = Unsharp { amount, threshold };
                let mut ctx = FrameContext::new(BayerPattern::Rggb, 65535);
                let want = unsharp_oracle(&st, img.clone(), 65535.0);
                assert_eq!(st.apply(img.clone(), &mut ctx), want, "{w}x{h} {amount}");
            }
        }
    }
}
