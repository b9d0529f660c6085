//! The reference joint-RGB bilateral filter, exact to the bit.
//!
//! `out_c = Σ w·p_c / Σ w` over a (2r+1)² window, `w = spatial(dx,dy) · range(|Δrgb|²)`,
//! with `r = ceil(2σs)`, `spatial = expf((dx²+dy²)·(−0.5/σs²))` and
//! `range = expf(d·(−0.5/σr²))` for the integer squared colour distance `d`.
//! Sums are float32, accumulated tap by tap in dy-major, dx-minor order, as the
//! reference does; the quotient is clamped to `[0, max]` and truncated.
//!
//! Exactness and speed: the range weight depends only on the integer distance, so
//! it is a table lookup (the table ends at the first weight that underflows to 0);
//! the spatial weights are a (2r+1)² table. Both tables come from a bit-exact model
//! of glibc's `expf`. Each lane of the inner loop is a different pixel, so
//! vectorising over pixels keeps every pixel's rounding sequence unchanged.

use crate::expf::expf_glibc;
use crate::{FrameContext, RgbImage, RgbStage};
use rayon::prelude::*;

/// Bilateral filter with precomputed weight tables.
#[derive(Debug, Clone)]
pub struct Bilateral {
    radius: usize,
    spatial: Vec<f32>,
    range: Vec<f32>,
}

impl Bilateral {
    /// Tables for spatial sigma `sigma_s` and range sigma `sigma_r` (sample units).
    pub fn new(sigma_s: f32, sigma_r: f32) -> Self {
        let radius = (2.0 * sigma_s).ceil() as usize;
        let s_coeff = -0.5f32 / (sigma_s * sigma_s);
        let r_coeff = -0.5f32 / (sigma_r * sigma_r);
        let r = radius as i32;
        let mut spatial = Vec::new();
        for dy in -r..=r {
            for dx in -r..=r {
                spatial.push(expf_glibc((dx * dx + dy * dy) as f32 * s_coeff));
            }
        }
        let mut range = Vec::new();
        for d in 0u32.. {
            let v = expf_glibc(d as f32 * r_coeff);
            range.push(v);
            if v == 0.0 {
                break;
            }
        }
        Self {
            radius,
            spatial,
            range,
        }
    }

    /// Window radius in pixels.
    pub fn radius(&self) -> usize {
        self.radius
    }

    /// Range-weight table (ends with one 0.0).
    pub fn range_table(&self) -> &[f32] {
        &self.range
    }
}

/// One output row of the bilateral filter, as a `pulp` kernel.
struct RowKernel<'a> {
    filter: &'a Bilateral,
    padded: [&'a [f32]; 3],
    pw: usize,
    y: usize,
    top: f32,
    buf: &'a mut [f32],
    out: [&'a mut [u16]; 3],
}

impl pulp::WithSimd for RowKernel<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        let Self {
            filter,
            padded,
            pw,
            y,
            top,
            buf,
            out,
        } = self;
        let [q0, q1, q2] = out;
        let w = q0.len();
        let r = filter.radius;
        let range = &filter.range[..];
        let last = (range.len() - 1) as f32;
        buf.fill(0.0);
        let (a0, rest) = buf.split_at_mut(w);
        let (a1, rest) = rest.split_at_mut(w);
        let (a2, rest) = rest.split_at_mut(w);
        let (aw, rest) = rest.split_at_mut(w);
        let (dist, wgt) = rest.split_at_mut(w);
        let c0 = &padded[0][(y + r) * pw + r..][..w];
        let c1 = &padded[1][(y + r) * pw + r..][..w];
        let c2 = &padded[2][(y + r) * pw + r..][..w];
        let mut tap = 0;
        for ty in 0..=2 * r {
            for tx in 0..=2 * r {
                let sw = filter.spatial[tap];
                tap += 1;
                let off = (y + ty) * pw + tx;
                let n0 = &padded[0][off..off + w];
                let n1 = &padded[1][off..off + w];
                let n2 = &padded[2][off..off + w];
                // Pass 1 (vectorises): squared colour distance, clamped to the table's
                // last (zero) entry. Squares of code differences are exact in f32 below
                // 2^24, and so is their sum wherever it is below the clamp; anything
                // larger clamps either way.
                for x in 0..w {
                    let d0 = n0[x] - c0[x];
                    let d1 = n1[x] - c1[x];
                    let d2 = n2[x] - c2[x];
                    dist[x] = (d0 * d0 + d1 * d1 + d2 * d2).min(last);
                }
                // Pass 2: table lookups (a gather).
                for x in 0..w {
                    // u32 first: the same index (below the table length), and a conversion
                    // that vectorises, where f32 to usize does not.
                    wgt[x] = range[dist[x] as u32 as usize] * sw;
                }
                // Pass 3 (vectorises): accumulate tap by tap in the reference's order,
                // multiply then add (no fused multiply-add).
                for x in 0..w {
                    let wv = wgt[x];
                    a0[x] += wv * n0[x];
                    a1[x] += wv * n1[x];
                    a2[x] += wv * n2[x];
                    aw[x] += wv;
                }
            }
        }
        for (q, a) in [(q0, &*a0), (q1, &*a1), (q2, &*a2)] {
            for x in 0..w {
                q[x] = (a[x] / aw[x]).clamp(0.0, top) as u16;
            }
        }
    }
}

impl RgbStage for Bilateral {
    fn name(&self) -> &'static str {
        "denoise"
    }
    fn apply(&self, img: RgbImage, ctx: &mut FrameContext) -> RgbImage {
        let (w, h) = (img.width, img.height);
        let r = self.radius;
        let pw = w + 2 * r;
        // Edge-padded float planes, so taps need no bounds logic and no conversions.
        // Codes are below 2^16, so they are exact in f32.
        let padded: Vec<Vec<f32>> = img
            .planes
            .par_iter()
            .map(|p| {
                let mut out = vec![0f32; pw * (h + 2 * r)];
                for py in 0..h + 2 * r {
                    let sy = py.saturating_sub(r).min(h - 1);
                    let src = &p[sy * w..(sy + 1) * w];
                    let dst = &mut out[py * pw..(py + 1) * pw];
                    dst[..r].fill(src[0] as f32);
                    for (d, &v) in dst[r..r + w].iter_mut().zip(src) {
                        *d = v as f32;
                    }
                    dst[r + w..].fill(src[w - 1] as f32);
                }
                out
            })
            .collect();
        drop(img);
        let top = ctx.max_value as f32;
        let mut out = RgbImage::new(w, h);
        // Runtime dispatch: the row kernel is compiled for AVX2/AVX-512 too and the best
        // is picked at run time. Contraction into fused multiply-add stays off, so the
        // results are the same on every path.
        let arch = pulp::Arch::new();
        out.par_rows_mut().for_each_init(
            || vec![0f32; 6 * w],
            |buf, (y, [q0, q1, q2])| {
                arch.dispatch(RowKernel {
                    filter: self,
                    padded: [&padded[0], &padded[1], &padded[2]],
                    pw,
                    y,
                    top,
                    buf,
                    out: [q0, q1, q2],
                })
            },
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_match_reference_shape() {
        let b = Bilateral::new(2.0, 30.0);
        assert_eq!(b.radius(), 4);
        assert_eq!(b.spatial.len(), 81);
        assert_eq!(b.spatial[40], 1.0);
        let t = b.range_table();
        assert_eq!(t[0], 1.0);
        assert_eq!(*t.last().unwrap(), 0.0);
        assert!(t[t.len() - 2] > 0.0);
        // expf underflows to 0 just below -103.97, i.e. d ≈ 187 150 at σr = 30.
        assert!((186_000..188_500).contains(&t.len()), "{}", t.len());
    }
}
