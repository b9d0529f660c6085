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

impl RgbStage for Bilateral {
    fn name(&self) -> &'static str {
        "denoise"
    }
    fn apply(&self, img: RgbImage, ctx: &mut FrameContext) -> RgbImage {
        let (w, h) = (img.width, img.height);
        let r = self.radius;
        let pw = w + 2 * r;
        // Edge-padded planes, so taps need no bounds logic.
        let padded: Vec<Vec<u16>> = img
            .planes
            .iter()
            .map(|p| {
                let mut out = vec![0u16; pw * (h + 2 * r)];
                for py in 0..h + 2 * r {
                    let sy = py.saturating_sub(r).min(h - 1);
                    let src = &p[sy * w..(sy + 1) * w];
                    let dst = &mut out[py * pw..(py + 1) * pw];
                    dst[..r].fill(src[0]);
                    dst[r..r + w].copy_from_slice(src);
                    dst[r + w..].fill(src[w - 1]);
                }
                out
            })
            .collect();
        let top = ctx.max_value as f32;
        let last = (self.range.len() - 1) as u32;
        let mut out = RgbImage::new(w, h);
        let [o0, o1, o2] = &mut out.planes;
        o0.par_chunks_mut(w)
            .zip(o1.par_chunks_mut(w))
            .zip(o2.par_chunks_mut(w))
            .enumerate()
            .for_each_init(
                || vec![0f32; 4 * w],
                |acc, (y, ((q0, q1), q2))| {
                    acc.fill(0.0);
                    let (a0, rest) = acc.split_at_mut(w);
                    let (a1, rest) = rest.split_at_mut(w);
                    let (a2, aw) = rest.split_at_mut(w);
                    let centre: Vec<&[u16]> =
                        padded.iter().map(|p| &p[(y + r) * pw + r..][..w]).collect();
                    let (c0, c1, c2) = (centre[0], centre[1], centre[2]);
                    let mut tap = 0;
                    for ty in 0..=2 * r {
                        for tx in 0..=2 * r {
                            let sw = self.spatial[tap];
                            tap += 1;
                            let off = (y + ty) * pw + tx;
                            let n0 = &padded[0][off..off + w];
                            let n1 = &padded[1][off..off + w];
                            let n2 = &padded[2][off..off + w];
                            for x in 0..w {
                                let d0 = (n0[x] as i32 - c0[x] as i32).unsigned_abs();
                                let d1 = (n1[x] as i32 - c1[x] as i32).unsigned_abs();
                                let d2 = (n2[x] as i32 - c2[x] as i32).unsigned_abs();
                                let dist = (d0 * d0)
                                    .saturating_add(d1 * d1)
                                    .saturating_add(d2 * d2)
                                    .min(last);
                                let wgt = self.range[dist as usize] * sw;
                                a0[x] += wgt * n0[x] as f32;
                                a1[x] += wgt * n1[x] as f32;
                                a2[x] += wgt * n2[x] as f32;
                                aw[x] += wgt;
                            }
                        }
                    }
                    for (q, a) in [(q0, &*a0), (q1, &*a1), (q2, &*a2)] {
                        for x in 0..w {
                            q[x] = (a[x] / aw[x]).clamp(0.0, top) as u16;
                        }
                    }
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
