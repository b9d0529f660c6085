//! Malvar-He-Cutler (2004) gradient-corrected linear demosaic.
//!
//! Bilinear interpolation plus a Laplacian correction from the site's own colour,
//! with the paper's 5×5 kernels (×1/8):
//!
//! - G at R/B: `[0 0 -1 0 0; 0 0 2 0 0; -1 2 4 2 -1; 0 0 2 0 0; 0 0 -1 0 0]`
//! - R/B at G, the colour in the same row: `[0 0 ½ 0 0; 0 -1 0 -1 0; -1 4 5 4 -1; 0 -1 0 -1 0; 0 0 ½ 0 0]`
//! - R/B at G, the colour in the same column: the transpose
//! - B at R and R at B: `[0 0 -3/2 0 0; 0 2 0 2 0; -3/2 0 6 0 -3/2; 0 2 0 2 0; 0 0 -3/2 0 0]`
//!
//! Integer arithmetic (×16), clamped to the code range. Borders use reflect-101
//! padding, which keeps the CFA parity. Rows are split by column parity, so no inner
//! loop branches on the site colour.

use crate::stages::pad::padded_rows;
use crate::{FrameContext, RawPlane, RgbImage};
use rawlink_frame::{BayerPattern, Channel};
use rayon::prelude::*;

/// Malvar-He-Cutler demosaic of `raw` (codes up to `max`).
pub fn demosaic_malvar(raw: &RawPlane, pattern: BayerPattern, max: u16) -> RgbImage {
    let (w, h) = (raw.width, raw.height);
    let mut out = RgbImage::new(w, h);
    let cell = pattern.cell();
    let top = max as i32;
    out.par_rows_mut().for_each_init(
        || vec![0i32; 5 * (w + 4)],
        |scratch, (y, [r, g, b])| {
            let rows = padded_rows::<2>(raw, y, scratch);
            let [m2, m1, c0, p1, p2] = rows;
            let planes: [&mut [u16]; 3] = [r, g, b];
            let clamp = |v: i32| ((v + 8) >> 4).clamp(0, top) as u16;
            for q in 0..2 {
                let site = cell[y & 1][q];
                let xs = (q..w).step_by(2);
                match site {
                    Channel::G => {
                        let hc = cell[y & 1][1 - q] as usize;
                        let vc = cell[1 - (y & 1)][q] as usize;
                        for x in xs {
                            let c = x + 2;
                            let cv = c0[c];
                            let diag = m1[c - 1] + m1[c + 1] + p1[c - 1] + p1[c + 1];
                            let hsum = 10 * cv + 8 * (c0[c - 1] + c0[c + 1])
                                - 2 * diag
                                - 2 * (c0[c - 2] + c0[c + 2])
                                + (m2[c] + p2[c]);
                            let vsum =
                                10 * cv + 8 * (m1[c] + p1[c]) - 2 * diag - 2 * (m2[c] + p2[c])
                                    + (c0[c - 2] + c0[c + 2]);
                            planes[1][x] = cv as u16;
                            planes[hc][x] = clamp(hsum);
                            planes[vc][x] = clamp(vsum);
                        }
                    }
                    _ => {
                        let sc = site as usize;
                        let oc = 2 - sc;
                        for x in xs {
                            let c = x + 2;
                            let cv = c0[c];
                            let far = c0[c - 2] + c0[c + 2] + m2[c] + p2[c];
                            let gsum =
                                8 * cv + 4 * (c0[c - 1] + c0[c + 1] + m1[c] + p1[c]) - 2 * far;
                            let osum = 12 * cv
                                + 4 * (m1[c - 1] + m1[c + 1] + p1[c - 1] + p1[c + 1])
                                - 3 * far;
                            planes[sc][x] = cv as u16;
                            planes[1][x] = clamp(gsum);
                            planes[oc][x] = clamp(osum);
                        }
                    }
                }
            }
        },
    );
    out
}

/// The Malvar stage.
#[derive(Debug, Clone, Copy, Default)]
pub struct Malvar;

impl crate::DemosaicStage for Malvar {
    fn name(&self) -> &'static str {
        "demosaic"
    }
    fn apply(&self, raw: &RawPlane, ctx: &mut FrameContext) -> RgbImage {
        demosaic_malvar(raw, ctx.pattern, ctx.max_value)
    }
}
