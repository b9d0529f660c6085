//! Ratio-corrected, direction-weighted demosaic (the RCD family; after the ideas of
//! Luis Sanz Rodríguez's "Ratio Corrected Demosaicing"), written from its published
//! description:
//!
//! 1. **Direction.** At every pixel, vertical and horizontal activity
//!    (`Σ (|∂| + |∂²|)²` along each axis over 3 samples) give `vh = V/(V+H)`: near 1 on
//!    a vertical-varying (horizontal) edge, so interpolate horizontally there.
//! 2. **Green at R/B sites.** Four one-sided estimates (N, S, W, E): the neighbouring
//!    green scaled by the ratio of a low-pass "luminance" at the centre and at the
//!    same-colour sample beyond it. Each axis blends its two sides by inverse gradients;
//!    the axes are blended by `vh` (or by the mean of the diagonal neighbours' `vh` when
//!    that is more decided).
//! 3. **R at B and B at R.** Colour differences (C − G) at the four diagonal neighbours,
//!    blended the same way along the two diagonals, with a diagonal direction map.
//! 4. **R and B at green sites.** Colour differences at the four axial neighbours (all
//!    now known), blended with the step-1 direction.
//!
//! Works in `f32` on full planes with reflect-101 padding (CFA parity is kept).

use crate::stages::pad::reflect;
use crate::{FrameContext, RawPlane, RgbImage};
use rawlink_frame::{BayerPattern, Channel};
use rayon::prelude::*;

const B: usize = 6;
const EPS: f32 = 1e-5;

struct Padded {
    w: usize,
    h: usize,
    pw: usize,
}

impl Padded {
    #[inline(always)]
    fn at(&self, y: usize, x: usize) -> usize {
        (y + B) * self.pw + x + B
    }
}

/// The image rows of a padded plane, in parallel: `(y, padded row)` for `y` in `0..h`.
fn interior_rows<'a>(
    p: &'a mut [f32],
    g: &Padded,
) -> impl IndexedParallelIterator<Item = (usize, &'a mut [f32])> + 'a {
    p[B * g.pw..(B + g.h) * g.pw]
        .par_chunks_mut(g.pw)
        .enumerate()
}

/// Fills the border of a padded plane by reflect-101 from its interior.
fn refill_border(p: &mut [f32], g: &Padded) {
    let (w, h, pw) = (g.w, g.h, g.pw);
    // Left and right margins of the interior rows.
    for py in B..h + B {
        let row = py * pw;
        for px in (0..B).chain(w + B..w + 2 * B) {
            p[row + px] = p[row + reflect(px as isize - B as isize, w) + B];
        }
    }
    // Whole rows above and below, copied from their (now complete) mirror rows.
    for py in (0..B).chain(h + B..h + 2 * B) {
        let sy = reflect(py as isize - B as isize, h) + B;
        p.copy_within(sy * pw..(sy + 1) * pw, py * pw);
    }
}

/// Rows each strip outputs, and the extra rows of context computed above and below it.
/// Every output pixel depends on source rows at most ~20 away through the passes, so
/// with 24 halo rows strip results equal full-frame results exactly (tested).
const STRIP_ROWS: usize = 256;
const HALO_ROWS: usize = 24;

/// RCD-style demosaic of `raw` (codes up to `max`), processed in horizontal strips in
/// parallel: each strip's working planes stay small (cache-resident) and memory no
/// longer grows with the frame.
pub fn demosaic_rcd(raw: &RawPlane, pattern: BayerPattern, max: u16) -> RgbImage {
    let (w, h) = (raw.width, raw.height);
    if h <= STRIP_ROWS + 2 * HALO_ROWS {
        return rcd_full(raw, pattern, max);
    }
    let starts: Vec<usize> = (0..h).step_by(STRIP_ROWS).collect();
    let strips: Vec<(usize, RgbImage)> = starts
        .par_iter()
        .map(|&y0| {
            let y1 = (y0 + STRIP_ROWS).min(h);
            // Both bounds even, so the sub-image keeps the CFA phase.
            let s0 = y0.saturating_sub(HALO_ROWS);
            let s1 = (y1 + HALO_ROWS).min(h);
            let sub = RawPlane {
                width: w,
                height: s1 - s0,
                data: raw.data[s0 * w..s1 * w].to_vec(),
            };
            (y0 - s0, rcd_full(&sub, pattern, max))
        })
        .collect();
    let mut out = RgbImage::new(w, h);
    for (&y0, (skip, img)) in starts.iter().zip(strips) {
        let rows = (y0 + STRIP_ROWS).min(h) - y0;
        for c in 0..3 {
            out.planes[c][y0 * w..(y0 + rows) * w]
                .copy_from_slice(&img.planes[c][skip * w..(skip + rows) * w]);
        }
    }
    out
}

/// The whole-frame algorithm (also used per strip).
fn rcd_full(raw: &RawPlane, pattern: BayerPattern, max: u16) -> RgbImage {
    let (w, h) = (raw.width, raw.height);
    if w < 8 || h < 8 {
        return crate::stages::malvar::demosaic_malvar(raw, pattern, max);
    }
    let g = Padded {
        w,
        h,
        pw: w + 2 * B,
    };
    let n = g.pw * (h + 2 * B);
    let pw = g.pw;
    let scale = 1.0 / max.max(1) as f32;
    let cell = pattern.cell();
    // Column parity of the green sites in row y; the other parity is R or B.
    let green_col = |y: usize| if cell[y & 1][0] == Channel::G { 0 } else { 1 };

    // CFA, normalised and padded.
    let mut cfa = vec![0f32; n];
    cfa.par_chunks_mut(pw).enumerate().for_each(|(py, row)| {
        let sy = reflect(py as isize - B as isize, h);
        let src = &raw.data[sy * w..(sy + 1) * w];
        for (px, d) in row.iter_mut().enumerate() {
            *d = src[reflect(px as isize - B as isize, w)] as f32 * scale;
        }
    });
    let c = &cfa;

    // Step 1: vertical/horizontal direction at every pixel (interior ± 1): squared
    // activities per pixel first (interior ± 2), then their 3×3 sums.
    let mut dv2 = vec![0f32; n];
    let mut dh2 = vec![0f32; n];
    dv2.par_chunks_mut(pw)
        .zip(dh2.par_chunks_mut(pw))
        .enumerate()
        .for_each(|(py, (vrow, hrow))| {
            if py < B - 2 || py > h + B + 1 {
                return;
            }
            for px in B - 2..w + B + 2 {
                let i = py * pw + px;
                let dv = (c[i - pw] - c[i + pw]).abs()
                    + (2.0 * c[i] - c[i - 2 * pw] - c[i + 2 * pw]).abs();
                let dh = (c[i - 1] - c[i + 1]).abs() + (2.0 * c[i] - c[i - 2] - c[i + 2]).abs();
                vrow[px] = dv * dv;
                hrow[px] = dh * dh;
            }
        });
    let box3 = |p: &[f32], i: usize| {
        p[i - pw - 1]
            + p[i - pw]
            + p[i - pw + 1]
            + p[i - 1]
            + p[i]
            + p[i + 1]
            + p[i + pw - 1]
            + p[i + pw]
            + p[i + pw + 1]
    };
    let mut vh = vec![0.5f32; n];
    vh.par_chunks_mut(pw).enumerate().for_each(|(py, vrow)| {
        if py < B - 1 || py > h + B {
            return;
        }
        for px in B - 1..w + B + 1 {
            let i = py * pw + px;
            let v = EPS + box3(&dv2, i);
            let hh = EPS + box3(&dh2, i);
            vrow[px] = v / (v + hh);
        }
    });
    drop((dv2, dh2));
    let vh = &vh;
    let disc = |map: &[f32], i: usize| {
        let central = map[i];
        let neigh = 0.25 * (map[i - pw - 1] + map[i - pw + 1] + map[i + pw - 1] + map[i + pw + 1]);
        if (0.5 - central).abs() < (0.5 - neigh).abs() {
            neigh
        } else {
            central
        }
    };

    // Step 2: green everywhere.
    let mut gp = vec![0f32; n];
    interior_rows(&mut gp, &g).for_each(|(y, row)| {
        let gq = green_col(y);
        for x in (gq..w).step_by(2) {
            row[x + B] = c[g.at(y, x)];
        }
        for x in (1 - gq..w).step_by(2) {
            let i = g.at(y, x);
            let s = |k: isize| (i as isize + k) as usize;
            let grad = |d: isize| {
                EPS + (c[s(-d)] - c[s(d)]).abs()
                    + (c[i] - c[s(-2 * d)]).abs()
                    + (c[s(-d)] - c[s(-3 * d)]).abs()
                    + (c[s(-2 * d)] - c[s(-4 * d)]).abs()
            };
            let est = |d: isize| c[s(-d)] + 0.5 * (c[i] - c[s(-2 * d)]);
            let (pwi, one) = (pw as isize, 1isize);
            let (ng, sg, wg, eg) = (grad(pwi), grad(-pwi), grad(one), grad(-one));
            let v = (sg * est(pwi) + ng * est(-pwi)) / (ng + sg);
            let hz = (eg * est(one) + wg * est(-one)) / (wg + eg);
            let d = disc(vh, i);
            row[x + B] = (hz * d + v * (1.0 - d)).clamp(0.0, 1.0);
        }
    });
    refill_border(&mut gp, &g);
    let gp = &gp;

    // Step 3: R at B sites and B at R sites, along the diagonals.
    let mut pq = vec![0.5f32; n];
    pq.par_chunks_mut(pw).enumerate().for_each(|(py, row)| {
        if py < B - 1 || py > h + B {
            return;
        }
        for px in B - 1..w + B + 1 {
            let i = py * pw + px;
            let dp = |i: usize| {
                (c[i - pw - 1] - c[i + pw + 1]).abs()
                    + (2.0 * c[i] - c[i - 2 * pw - 2] - c[i + 2 * pw + 2]).abs()
            };
            let dq = |i: usize| {
                (c[i - pw + 1] - c[i + pw - 1]).abs()
                    + (2.0 * c[i] - c[i - 2 * pw + 2] - c[i + 2 * pw - 2]).abs()
            };
            let p = dp(i - pw - 1).powi(2) + dp(i).powi(2) + dp(i + pw + 1).powi(2) + EPS;
            let q = dq(i - pw + 1).powi(2) + dq(i).powi(2) + dq(i + pw - 1).powi(2) + EPS;
            row[px] = p / (p + q);
        }
    });
    let pq = &pq;
    let mut rp = vec![0f32; n];
    let mut bp = vec![0f32; n];
    rp.par_chunks_mut(pw)
        .zip(bp.par_chunks_mut(pw))
        .enumerate()
        .for_each(|(py, (rrow, brow))| {
            if py < B || py >= h + B {
                return;
            }
            let y = py - B;
            let gq = green_col(y);
            let site = cell[y & 1][1 - gq];
            for x in (1 - gq..w).step_by(2) {
                let i = g.at(y, x);
                let s = |k: isize| (i as isize + k) as usize;
                let grad = |d: isize| {
                    EPS + (c[s(-d)] - c[s(d)]).abs()
                        + (c[s(-d)] - c[s(-3 * d)]).abs()
                        + (gp[i] - gp[s(-2 * d)]).abs()
                };
                let est = |d: isize| c[s(-d)] - gp[s(-d)];
                let (nw, ne) = (pw as isize + 1, pw as isize - 1);
                let (g_nw, g_se, g_ne, g_sw) = (grad(nw), grad(-nw), grad(ne), grad(-ne));
                let p_est = (g_se * est(nw) + g_nw * est(-nw)) / (g_nw + g_se);
                let q_est = (g_sw * est(ne) + g_ne * est(-ne)) / (g_ne + g_sw);
                let d = disc(pq, i);
                let other = (gp[i] + p_est * (1.0 - d) + q_est * d).clamp(0.0, 1.0);
                if site == Channel::R {
                    rrow[x + B] = c[i];
                    brow[x + B] = other;
                } else {
                    brow[x + B] = c[i];
                    rrow[x + B] = other;
                }
            }
        });
    refill_border(&mut rp, &g);
    refill_border(&mut bp, &g);

    // Step 4: R and B at green sites, from colour differences at the axial neighbours.
    let pwi = pw as isize;
    let axis = |p: &[f32], gpl: &[f32], i: usize, d: isize| {
        let s = |k: isize| (i as isize + k) as usize;
        let grad = |d: isize| {
            EPS + (p[s(-d)] - p[s(d)]).abs()
                + (gpl[i] - gpl[s(-2 * d)]).abs()
                + (p[s(-d)] - p[s(-3 * d)]).abs()
        };
        let est = |d: isize| p[s(-d)] - gpl[s(-d)];
        let (ga, gb) = (grad(d), grad(-d));
        (gb * est(d) + ga * est(-d)) / (ga + gb)
    };
    let fill_green_sites = |src: &[f32], gpl: &[f32]| -> Vec<f32> {
        let mut out = src.to_vec();
        interior_rows(&mut out, &g).for_each(|(y, row)| {
            for x in (green_col(y)..w).step_by(2) {
                let i = g.at(y, x);
                let dsc = disc(vh, i);
                let v = gpl[i] + axis(src, gpl, i, 1) * dsc + axis(src, gpl, i, pwi) * (1.0 - dsc);
                row[x + B] = v.clamp(0.0, 1.0);
            }
        });
        out
    };
    let mut rf = fill_green_sites(&rp, gp);
    let mut bf = fill_green_sites(&bp, gp);
    refill_border(&mut rf, &g);
    refill_border(&mut bf, &g);

    // Step 5: refine green at R/B sites from the (now complete) colour differences of
    // its axial neighbours, along the same direction.
    let mut g2 = gp.to_vec();
    interior_rows(&mut g2, &g).for_each(|(y, row)| {
        let gq = green_col(y);
        let site = cell[y & 1][1 - gq];
        for x in (1 - gq..w).step_by(2) {
            let i = g.at(y, x);
            let own = if site == Channel::R { &rf } else { &bf };
            // axis() gives (own - G) differences; G = own - difference.
            let dsc = disc(vh, i);
            let d = axis(own, gp, i, 1) * dsc + axis(own, gp, i, pwi) * (1.0 - dsc);
            row[x + B] = (c[i] - d).clamp(0.0, 1.0);
        }
    });
    refill_border(&mut g2, &g);
    let rf = fill_green_sites(&rf, &g2);
    let bf = fill_green_sites(&bf, &g2);

    let mut out = RgbImage::new(w, h);
    let top = max as f32;
    out.par_rows_mut().for_each(|(y, [orow, grow, brow])| {
        for x in 0..w {
            let i = g.at(y, x);
            orow[x] = (rf[i] * top).round() as u16;
            grow[x] = (g2[i] * top).round() as u16;
            brow[x] = (bf[i] * top).round() as u16;
        }
    });
    out
}

/// The RCD stage.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rcd;

impl crate::DemosaicStage for Rcd {
    fn name(&self) -> &'static str {
        "demosaic"
    }
    fn apply(&self, raw: &RawPlane, ctx: &mut FrameContext) -> RgbImage {
        demosaic_rcd(raw, ctx.pattern, ctx.max_value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// FNV-1a over the output codes.
    fn digest(img: &RgbImage) -> u64 {
        let mut h = 0xcbf2_9ce4_8422_2325u64;
        for p in &img.planes {
            for &v in p {
                for b in v.to_le_bytes() {
                    h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
                }
            }
        }
        h
    }

    /// Golden lock, tolerance zero: the kernels' speed work must not change a single code.
    /// The digests were taken from the whole-plane, index-per-tap formulation.
    #[test]
    fn output_is_unchanged_bit_for_bit() {
        let (w, h) = (203usize, 157usize);
        let mut s = 11u32;
        let data = (0..w * h)
            .map(|i| {
                s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                let (x, y) = (i % w, i / w);
                let scene = if (x / 16 + y / 16) % 2 == 0 {
                    600
                } else {
                    3000
                } + x * 4;
                (scene + (s >> 24) as usize).min(4095) as u16
            })
            .collect();
        let raw = RawPlane::new(w, h, data).unwrap();
        let got: Vec<u64> = BayerPattern::ALL
            .iter()
            .map(|&p| digest(&rcd_full(&raw, p, 4095)))
            .collect();
        assert_eq!(got, GOLDEN, "{got:#x?}");
    }

    const GOLDEN: [u64; 4] = [
        0x1376_4d24_fe71_5691,
        0xdc5e_588a_754a_dc95,
        0x3329_8459_3c55_684e,
        0x5a96_761c_ac62_586e,
    ];

    #[test]
    fn strips_equal_the_whole_frame() {
        for (w, h) in [(97usize, 700usize), (64, 610)] {
            let mut s = 7u32;
            let data = (0..w * h)
                .map(|i| {
                    s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    let edge = if (i % w) * 3 + (i / w) * 2 > 180 {
                        3000
                    } else {
                        500
                    };
                    (edge + (s >> 22) as usize) as u16
                })
                .collect();
            let raw = RawPlane::new(w, h, data).unwrap();
            for p in BayerPattern::ALL {
                assert_eq!(
                    demosaic_rcd(&raw, p, 4095),
                    rcd_full(&raw, p, 4095),
                    "{w}x{h} {p}"
                );
            }
        }
    }
}
