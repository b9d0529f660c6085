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

/// Unsharp mask on luma: `Y' = Y + amount · soft_threshold(Y − blur3×3(Y))`, with the
/// luma change added equally to R, G and B (colours are not sharpened separately,
/// which would exaggerate chroma noise and fringes).
#[derive(Debug, Clone, Copy)]
pub struct Unsharp {
    /// Strength.
    pub amount: f32,
    /// Detail below this fraction of full scale is left alone.
    pub threshold: f32,
}

impl RgbStage for Unsharp {
    fn name(&self) -> &'static str {
        "sharpen"
    }
    fn apply(&self, mut img: RgbImage, ctx: &mut FrameContext) -> RgbImage {
        let (w, h) = (img.width, img.height);
        if w < 3 || h < 3 || self.amount == 0.0 {
            return img;
        }
        let top = ctx.max_value as f32;
        let thr = self.threshold * top;
        let luma: Vec<f32> = (0..w * h)
            .into_par_iter()
            .map(|i| {
                0.25 * (img.planes[0][i] as f32
                    + 2.0 * img.planes[1][i] as f32
                    + img.planes[2][i] as f32)
            })
            .collect();
        img.par_rows_mut().for_each(|(y, [r, g, b])| {
            let up = &luma[y.saturating_sub(1) * w..][..w];
            let mid = &luma[y * w..][..w];
            let dn = &luma[(y + 1).min(h - 1) * w..][..w];
            for x in 0..w {
                let (l, rr) = (x.saturating_sub(1), (x + 1).min(w - 1));
                let blur = (4.0 * mid[x]
                    + 2.0 * (mid[l] + mid[rr] + up[x] + dn[x])
                    + (up[l] + up[rr] + dn[l] + dn[rr]))
                    / 16.0;
                let d = mid[x] - blur;
                let soft = d.signum() * (d.abs() - thr).max(0.0);
                let delta = self.amount * soft;
                let add = |v: &mut u16| *v = (*v as f32 + delta + 0.5).clamp(0.0, top) as u16;
                add(&mut r[x]);
                add(&mut g[x]);
                add(&mut b[x]);
            }
        });
        img
    }
}
