//! Gray-world auto white balance, as the reference ISP does it.
//!
//! Channel means are taken in double precision (each floored at 1.0), the gain of a
//! channel is `largest mean / channel mean`, and scaled values are capped at the
//! maximum code and truncated.

use crate::{FrameContext, RgbImage, RgbStage};
use rayon::prelude::*;

/// Reference gray-world AWB.
#[derive(Debug, Clone, Copy, Default)]
pub struct GrayWorld;

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
        let maxval = ctx.max_value as f64;
        let mut gains = [1.0f64; 3];
        for (c, plane) in img.planes.iter_mut().enumerate() {
            let gain = reference / means[c];
            gains[c] = gain;
            plane.par_chunks_mut(64 * 1024).for_each(|chunk| {
                for v in chunk {
                    *v = (*v as f64 * gain).min(maxval) as u16;
                }
            });
        }
        ctx.stats.channel_means = [means[0], means[1], means[2]];
        ctx.stats.wb_gains = gains;
        img
    }
}
