//! The reference 3×3 sharpen: `5·c − up − down − left − right`, edge-clamped,
//! clamped to `[0, max]`. Images narrower or shorter than 3 pixels pass unchanged.

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
        let mut out = RgbImage::new(w, h);
        for (src, dst) in img.planes.iter().zip(out.planes.iter_mut()) {
            dst.par_chunks_mut(w).enumerate().for_each(|(y, orow)| {
                let row = &src[y * w..(y + 1) * w];
                let up = &src[y.saturating_sub(1) * w..][..w];
                let dn = &src[(y + 1).min(h - 1) * w..][..w];
                for x in 0..w {
                    let l = row[x.saturating_sub(1)] as i32;
                    let r = row[(x + 1).min(w - 1)] as i32;
                    let v = 5 * row[x] as i32 - up[x] as i32 - dn[x] as i32 - l - r;
                    orow[x] = v.clamp(0, maxv) as u16;
                }
            });
        }
        out
    }
}
