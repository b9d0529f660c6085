//! Bilinear demosaic with edge clamping, for all four Bayer patterns.
//!
//! At a red or blue site, green is the mean of the 4 neighbours (`cross`) and the
//! other colour the mean of the 4 diagonals (`diag`). At a green site, the colour
//! that shares its row is the mean of left and right (`horiz`), the other the mean of
//! up and down (`vert`). Means are integer sums with truncating division; neighbours
//! outside the frame are replaced by the nearest edge sample.
//!
//! Traversal: one output row at a time (rows in parallel). Each row is split by
//! column parity, so the colour of every site in an inner loop is known before the
//! loop starts: no per-pixel branch on the CFA colour.

use crate::{DemosaicStage, FrameContext, RawPlane, RgbImage};
use rawlink_frame::{BayerPattern, Channel};
use rayon::prelude::*;

/// Bilinear demosaic (the reference ISP's, generalised to every pattern).
#[derive(Debug, Clone, Copy, Default)]
pub struct Bilinear;

/// Builds row `y` of the raw image padded by one sample on each side (edge clamped).
fn padded_row(raw: &RawPlane, y: usize, out: &mut [u32]) {
    let w = raw.width;
    let row = &raw.data[y * w..(y + 1) * w];
    out[0] = row[0] as u32;
    for (o, &v) in out[1..=w].iter_mut().zip(row) {
        *o = v as u32;
    }
    out[w + 1] = row[w - 1] as u32;
}

impl DemosaicStage for Bilinear {
    fn name(&self) -> &'static str {
        "demosaic"
    }
    fn apply(&self, raw: &RawPlane, ctx: &mut FrameContext) -> RgbImage {
        demosaic_bilinear(raw, ctx.pattern)
    }
}

/// Bilinear demosaic of `raw` with CFA `pattern`.
pub fn demosaic_bilinear(raw: &RawPlane, pattern: BayerPattern) -> RgbImage {
    let (w, h) = (raw.width, raw.height);
    let mut out = RgbImage::new(w, h);
    let cell = pattern.cell();
    out.par_rows_mut().for_each_init(
        || vec![0u32; 3 * (w + 2)],
        |scratch, (y, [r, g, b])| {
            let (up, rest) = scratch.split_at_mut(w + 2);
            let (mid, dn) = rest.split_at_mut(w + 2);
            padded_row(raw, y.saturating_sub(1), up);
            padded_row(raw, y, mid);
            padded_row(raw, (y + 1).min(h - 1), dn);
            let mut planes = [r, g, b];
            for q in 0..2 {
                let site = cell[y & 1][q];
                match site {
                    Channel::G => {
                        // Colour sharing the row, and colour sharing the column.
                        let hc = cell[y & 1][1 - q] as usize;
                        let vc = cell[1 - (y & 1)][q] as usize;
                        let [p0, p1, p2] = &mut planes;
                        let (gp, hp, vp) = pick3(p0, p1, p2, 1, hc, vc);
                        for x in (q..w).step_by(2) {
                            let c = x + 1;
                            gp[x] = mid[c] as u16;
                            hp[x] = ((mid[c - 1] + mid[c + 1]) / 2) as u16;
                            vp[x] = ((up[c] + dn[c]) / 2) as u16;
                        }
                    }
                    _ => {
                        let sc = site as usize;
                        let oc = 2 - sc; // the other of R (0) and B (2)
                        let [p0, p1, p2] = &mut planes;
                        let (sp, gp, op) = pick3(p0, p1, p2, sc, 1, oc);
                        for x in (q..w).step_by(2) {
                            let c = x + 1;
                            sp[x] = mid[c] as u16;
                            gp[x] = ((mid[c - 1] + mid[c + 1] + up[c] + dn[c]) / 4) as u16;
                            op[x] = ((up[c - 1] + up[c + 1] + dn[c - 1] + dn[c + 1]) / 4) as u16;
                        }
                    }
                }
            }
        },
    );
    out
}

/// Mutable references to three distinct planes chosen by index.
fn pick3<'a>(
    p0: &'a mut [u16],
    p1: &'a mut [u16],
    p2: &'a mut [u16],
    a: usize,
    b: usize,
    c: usize,
) -> (&'a mut [u16], &'a mut [u16], &'a mut [u16]) {
    debug_assert!(a != b && b != c && a != c);
    let mut slots = [Some(p0), Some(p1), Some(p2)];
    (
        slots[a].take().expect("distinct"),
        slots[b].take().expect("distinct"),
        slots[c].take().expect("distinct"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_field_stays_flat_for_every_pattern() {
        for p in BayerPattern::ALL {
            // A grey scene seen through the CFA with R=100, G=200, B=300.
            let (w, h) = (10, 8);
            let data = (0..h)
                .flat_map(|y| {
                    (0..w).map(move |x| match p.channel_at(y, x) {
                        Channel::R => 100,
                        Channel::G => 200,
                        Channel::B => 300,
                    })
                })
                .collect();
            let raw = RawPlane::new(w, h, data).unwrap();
            let rgb = demosaic_bilinear(&raw, p);
            for (c, want) in [100u16, 200, 300].iter().enumerate() {
                // Edge clamping mixes colours on the border; the interior is exact.
                for y in 1..h - 1 {
                    for x in 1..w - 1 {
                        assert_eq!(rgb.planes[c][y * w + x], *want, "{p} c{c} ({y},{x})");
                    }
                }
            }
        }
    }
}
