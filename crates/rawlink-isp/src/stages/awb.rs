//! Gray-world auto white balance, as the reference ISP does it.
//!
//! Channel means are taken in double precision (each floored at 1.0), the gain of a
//! channel is `largest mean / channel mean`, and scaled values are capped at the
//! maximum code and truncated.
//!
//! The gains are at least 1 (the largest mean over a channel's), so every code from
//! the maximum up maps to the maximum: the scaling is a per-code table over the codes
//! `0..=max` ([`CodeMap`], padded with its last entry), built once per frame and applied
//! in one pass. A per-code curve that follows (the reference gamma) can be folded into
//! the same table, saving its pass.

use crate::stages::gamma::CodeMap;
use crate::{FrameContext, RgbImage, RgbStage};
use rayon::prelude::*;

thread_local! {
    /// The last per-code map this thread built, for the next frame to refill.
    static MAP: std::cell::RefCell<Option<CodeMap>> = const { std::cell::RefCell::new(None) };
}

/// Reference gray-world AWB.
#[derive(Debug, Clone, Default)]
pub struct GrayWorld {
    /// A per-code curve applied to the balanced codes in the same pass (the
    /// pipeline's next stage, folded in).
    pub then: Option<CodeMap>,
}

/// Sum of one plane, exact.
pub fn plane_sum(p: &[u16]) -> u64 {
    p.par_chunks(64 * 1024)
        .map(|c| c.iter().map(|&v| v as u64).sum::<u64>())
        .sum()
}

impl RgbStage for GrayWorld {
    fn name(&self) -> &'static str {
        "wb"
    }
    fn apply(&self, mut img: RgbImage, ctx: &mut FrameContext) -> RgbImage {
        let count = (img.width * img.height) as f64;
        let means: Vec<f64> = img
            .planes
            .iter()
            .map(|p| (plane_sum(p) as f64 / count).max(1.0))
            .collect();
        let reference = means.iter().cloned().fold(f64::MIN, f64::max);
        let max = ctx.max_value;
        let maxval = max as f64;
        let mut gains = [1.0f64; 3];
        for (c, plane) in img.planes.iter_mut().enumerate() {
            let gain = reference / means[c];
            gains[c] = gain;
            let entry = |v: usize| {
                let b = (v as f64 * gain).min(maxval) as u16;
                self.then.as_ref().map_or(b, |m| m.get(b))
            };
            // The 2^16-entry map is kept per thread and refilled in place, not allocated
            // per frame.
            let mut map = MAP
                .with(|m| m.borrow_mut().take())
                .unwrap_or_else(|| CodeMap::new(&[0]));
            map.refill_with(max as usize + 1, entry);
            plane
                .par_chunks_mut(64 * 1024)
                .for_each(|chunk| map.apply_row(chunk));
            MAP.with(|m| *m.borrow_mut() = Some(map));
        }
        ctx.stats.channel_means = [means[0], means[1], means[2]];
        ctx.stats.wb_gains = gains;
        img
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The per-code tables give what the per-sample formula gives, for codes past the
    /// maximum too, with and without a folded curve.
    #[test]
    fn tables_equal_the_per_sample_formula() {
        let (w, h, max) = (7usize, 5usize, 4095u16);
        let mut img = RgbImage::new(w, h);
        let mut s = 11u32;
        for (c, p) in img.planes.iter_mut().enumerate() {
            for v in p.iter_mut() {
                s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                // Mostly in range, some codes above the maximum (unclamped input).
                *v = ((s >> 16) % (1500 + 1500 * c as u32)) as u16;
            }
            p[0] = 60_000;
        }
        let curve: Vec<u16> = (0..=max).map(|v| v / 3 + 7).collect();
        for then in [None, Some(CodeMap::new(&curve))] {
            let mut ctx = FrameContext::new(rawlink_frame::BayerPattern::Rggb, max);
            let out = GrayWorld { then: then.clone() }.apply(img.clone(), &mut ctx);
            for c in 0..3 {
                let gain = ctx.stats.wb_gains[c];
                assert!(gain >= 1.0);
                for (i, &v) in img.planes[c].iter().enumerate() {
                    let b = (v as f64 * gain).min(max as f64) as u16;
                    let want = then.as_ref().map_or(b, |m| m.get(b));
                    assert_eq!(out.planes[c][i], want, "channel {c} sample {i} code {v}");
                }
            }
        }
    }
}
