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
use crate::{FrameContext, RawPlane, RawStage};
use rawlink_frame::Channel;
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
fn cell_sums(img: &RawPlane, ctx: &FrameContext, mid: bool) -> ([f64; 3], u64) {
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
        let cell = ctx.pattern.cell();
        let top = ctx.max_value as f32;
        let w = img.width;
        img.data.par_chunks_mut(w).enumerate().for_each(|(y, row)| {
            let k0 = gains[cell[y & 1][0] as usize];
            let k1 = gains[cell[y & 1][1] as usize];
            for pair in row.chunks_mut(2) {
                pair[0] = (pair[0] as f32 * k0 + 0.5).min(top) as u16;
                if let Some(v) = pair.get_mut(1) {
                    *v = (*v as f32 * k1 + 0.5).min(top) as u16;
                }
            }
        });
        ctx.stats.wb_gains = gains.map(|g| g as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rawlink_frame::BayerPattern;

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
