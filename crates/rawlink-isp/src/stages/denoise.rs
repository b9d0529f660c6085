//! Fast edge-preserving denoise that treats luma and chroma separately.
//!
//! With `Y = (R + 2G + B)/4`, `Cr = R − Y`, `Cb = B − Y` (and `G = Y − (Cr + Cb)/2`):
//! - luma: a 3×3 range-weighted mean (a small bilateral): neighbours whose luma differs
//!   by much more than `luma_sigma` get almost no weight, so edges stay sharp;
//! - chroma: a 5×5 binomial blur, mixed in by `chroma`. The eye barely resolves chroma
//!   detail, and sensor noise is strongest there after white balance.

use crate::stages::pad::reflect;
use crate::{FrameContext, RgbImage, RgbStage};
use rayon::prelude::*;

/// Luma/chroma denoise.
#[derive(Debug, Clone)]
pub struct LumaChroma {
    /// Range sigma as a fraction of full scale.
    pub luma_sigma: f32,
    /// Chroma blur mix, 0..=1.
    pub chroma: f32,
}

const K5: [f32; 5] = [1.0 / 16.0, 4.0 / 16.0, 6.0 / 16.0, 4.0 / 16.0, 1.0 / 16.0];

/// Separable 5-tap binomial blur (reflect-101 borders). Rows in parallel; the vertical
/// pass runs along whole rows so its inner loop vectorises.
fn blur5(src: &[f32], w: usize, h: usize) -> Vec<f32> {
    let mut tmp = vec![0f32; w * h];
    tmp.par_chunks_mut(w).enumerate().for_each(|(y, out)| {
        let row = &src[y * w..(y + 1) * w];
        for (x, o) in out.iter_mut().enumerate() {
            if x >= 2 && x + 2 < w {
                *o = K5[0] * (row[x - 2] + row[x + 2])
                    + K5[1] * (row[x - 1] + row[x + 1])
                    + K5[2] * row[x];
            } else {
                *o = (0..5)
                    .map(|k| K5[k] * row[reflect(x as isize + k as isize - 2, w)])
                    .sum();
            }
        }
    });
    let mut out = vec![0f32; w * h];
    out.par_chunks_mut(w).enumerate().for_each(|(y, o)| {
        let r = |d: isize| &tmp[reflect(y as isize + d, h) * w..][..w];
        let (a, b, c, d, e) = (r(-2), r(-1), r(0), r(1), r(2));
        for x in 0..w {
            o[x] = K5[0] * (a[x] + e[x]) + K5[1] * (b[x] + d[x]) + K5[2] * c[x];
        }
    });
    out
}

impl RgbStage for LumaChroma {
    fn name(&self) -> &'static str {
        "denoise"
    }
    fn apply(&self, mut img: RgbImage, ctx: &mut FrameContext) -> RgbImage {
        let (w, h) = (img.width, img.height);
        let top = ctx.max_value as f32;
        let n = w * h;
        let [pr, pg, pb] = &img.planes;
        let mut y = vec![0f32; n];
        let mut cr = vec![0f32; n];
        let mut cb = vec![0f32; n];
        y.par_chunks_mut(w)
            .zip(cr.par_chunks_mut(w))
            .zip(cb.par_chunks_mut(w))
            .enumerate()
            .for_each(|(row, ((yy, rr), bb))| {
                for x in 0..w {
                    let i = row * w + x;
                    let (r, g, b) = (pr[i] as f32, pg[i] as f32, pb[i] as f32);
                    let l = 0.25 * (r + 2.0 * g + b);
                    yy[x] = l;
                    rr[x] = r - l;
                    bb[x] = b - l;
                }
            });
        // Luma: 3×3 range-weighted mean.
        let sigma = (self.luma_sigma * top).max(1e-3);
        let inv = -0.5 / (sigma * sigma);
        // Range weights by |Δluma| in steps of 4 codes, out to where they vanish.
        let steps = ((6.0 * sigma / 4.0) as usize + 2).min(16384);
        let range: Vec<f32> = (0..steps)
            .map(|k| {
                let d = k as f32 * 4.0;
                (d * d * inv).exp()
            })
            .collect();
        let last = steps - 1;
        let mut y2 = vec![0f32; n];
        if self.luma_sigma > 0.0 {
            y2.par_chunks_mut(w).enumerate().for_each(|(row, out)| {
                let rows = [-1isize, 0, 1].map(|d| &y[reflect(row as isize + d, h) * w..][..w]);
                for x in 0..w {
                    let c = rows[1][x];
                    let xs = [reflect(x as isize - 1, w), x, reflect(x as isize + 1, w)];
                    let (mut s, mut sw) = (0.0f32, 0.0f32);
                    for (ry, r) in rows.iter().enumerate() {
                        for (rx, &xx) in xs.iter().enumerate() {
                            let sp = [1.0, 2.0, 1.0][ry] * [1.0, 2.0, 1.0][rx];
                            let d = (r[xx] - c).abs() as usize >> 2;
                            let wgt = sp * range[d.min(last)];
                            s += wgt * r[xx];
                            sw += wgt;
                        }
                    }
                    out[x] = s / sw;
                }
            });
        } else {
            y2.copy_from_slice(&y);
        }
        // Chroma: 5×5 binomial, mixed in.
        let k = self.chroma;
        let blur = |p: &[f32]| blur5(p, w, h);
        let (cr2, cb2) = if k > 0.0 {
            (blur(&cr), blur(&cb))
        } else {
            (cr.clone(), cb.clone())
        };
        img.par_rows_mut().for_each(|(row, [r, g, b])| {
            for x in 0..w {
                let i = row * w + x;
                let l = y2[i];
                let c_r = cr[i] + k * (cr2[i] - cr[i]);
                let c_b = cb[i] + k * (cb2[i] - cb[i]);
                r[x] = (l + c_r + 0.5).clamp(0.0, top) as u16;
                b[x] = (l + c_b + 0.5).clamp(0.0, top) as u16;
                g[x] = (l - 0.5 * (c_r + c_b) + 0.5).clamp(0.0, top) as u16;
            }
        });
        img
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rawlink_frame::BayerPattern;

    fn noisy_edge() -> RgbImage {
        let (w, h) = (32, 32);
        let mut img = RgbImage::new(w, h);
        let mut s = 1u32;
        for i in 0..w * h {
            let base = if i % w < 16 { 10000.0 } else { 40000.0 };
            for p in img.planes.iter_mut() {
                s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                let n = ((s >> 16) as f32 / 65536.0 - 0.5) * 600.0;
                p[i] = (base + n) as u16;
            }
        }
        img
    }

    fn std_dev(v: &[u16], w: usize, cols: std::ops::Range<usize>) -> f32 {
        let vals: Vec<f32> = v
            .iter()
            .enumerate()
            .filter(|(i, _)| cols.contains(&(i % w)))
            .map(|(_, &x)| x as f32)
            .collect();
        let m = vals.iter().sum::<f32>() / vals.len() as f32;
        (vals.iter().map(|x| (x - m).powi(2)).sum::<f32>() / vals.len() as f32).sqrt()
    }

    #[test]
    fn reduces_noise_and_keeps_the_edge() {
        let img = noisy_edge();
        let before = std_dev(&img.planes[0], 32, 2..14);
        let mut ctx = FrameContext::new(BayerPattern::Rggb, 65535);
        let out = LumaChroma {
            luma_sigma: 0.02,
            chroma: 1.0,
        }
        .apply(img, &mut ctx);
        let after = std_dev(&out.planes[0], 32, 2..14);
        assert!(after < 0.7 * before, "noise {before} -> {after}");
        // The step between columns 15 and 16 stays a step.
        let row = 16 * 32;
        assert!(out.planes[1][row + 14] < 12000 && out.planes[1][row + 17] > 38000);
    }
}
