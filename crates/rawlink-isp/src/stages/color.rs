//! Colour correction (3×3 matrix with saturation folded in) and the tone curve.

use crate::config::{ToneConfig, ToneCurve};
use crate::stages::sat_u16;
use crate::{FrameContext, RgbImage, RgbStage};
use rayon::prelude::*;

/// Rec. 709 luma weights, used for saturation.
const LUMA: [f32; 3] = [0.2126, 0.7152, 0.0722];

/// 3×3 colour-correction matrix applied to linear RGB.
#[derive(Debug, Clone, Copy)]
pub struct ColorMatrix {
    m: [[f32; 3]; 3],
}

impl ColorMatrix {
    /// `matrix` then saturation `sat` (a linear blend with luma) as one matrix.
    pub fn new(matrix: [[f32; 3]; 3], sat: f32) -> Self {
        let mut s = [[0f32; 3]; 3];
        for (r, row) in s.iter_mut().enumerate() {
            for (c, v) in row.iter_mut().enumerate() {
                *v = (1.0 - sat) * LUMA[c] + if r == c { sat } else { 0.0 };
            }
        }
        let mut m = [[0f32; 3]; 3];
        for r in 0..3 {
            for c in 0..3 {
                m[r][c] = (0..3).map(|k| s[r][k] * matrix[k][c]).sum();
            }
        }
        Self { m }
    }

    /// True if the matrix is the identity (the stage is then skipped).
    pub fn is_identity(&self) -> bool {
        (0..3).all(|r| (0..3).all(|c| (self.m[r][c] - if r == c { 1.0 } else { 0.0 }).abs() < 1e-6))
    }
}

impl RgbStage for ColorMatrix {
    fn name(&self) -> &'static str {
        "ccm"
    }
    fn apply(&self, mut img: RgbImage, ctx: &mut FrameContext) -> RgbImage {
        if self.is_identity() {
            return img;
        }
        let top = ctx.max_value as f32;
        let m = self.m;
        let arch = pulp::Arch::new();
        img.par_rows_mut()
            .for_each(|(_, rgb)| arch.dispatch(CcmRow { m, top, rgb }));
        img
    }
}

/// One row through the matrix, rounded and clamped, as a `pulp` kernel.
struct CcmRow<'a> {
    m: [[f32; 3]; 3],
    top: f32,
    rgb: [&'a mut [u16]; 3],
}

impl pulp::WithSimd for CcmRow<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        let Self { m, top, rgb } = self;
        let [r, g, b] = rgb;
        for x in 0..r.len() {
            let v = [r[x] as f32, g[x] as f32, b[x] as f32];
            let [o0, o1, o2] = m.map(|row| {
                sat_u16((row[0] * v[0] + row[1] * v[1] + row[2] * v[2] + 0.5).clamp(0.0, top))
            });
            (r[x], g[x], b[x]) = (o0, o1, o2);
        }
    }
}

/// A tone curve as a lookup table over every code.
#[derive(Debug, Clone)]
pub struct ToneLut {
    map: crate::stages::gamma::CodeMap,
}

impl ToneLut {
    /// Builds the table for codes `0..=max`.
    pub fn new(cfg: &ToneConfig, max: u16) -> Self {
        let m = max as f64;
        let contrast = cfg.contrast as f64;
        let lut = (0..=max as u32)
            .map(|i| {
                let x = i as f64 / m;
                let y = match cfg.curve {
                    ToneCurve::Srgb => {
                        if x <= 0.003_130_8 {
                            12.92 * x
                        } else {
                            1.055 * x.powf(1.0 / 2.4) - 0.055
                        }
                    }
                    ToneCurve::Gamma => x.powf(1.0 / cfg.gamma as f64),
                    ToneCurve::Linear => x,
                };
                // S-curve: darker shadows, brighter highlights, monotonic for c ≤ 1.
                let y = y - contrast * y * (1.0 - y) * (1.0 - 2.0 * y);
                (y.clamp(0.0, 1.0) * m).round() as u16
            })
            .collect::<Vec<u16>>();
        Self {
            map: crate::stages::gamma::CodeMap::new(&lut),
        }
    }

    /// The table.
    pub fn table(&self) -> &[u16] {
        self.map.table()
    }

    /// The table over every `u16` code.
    pub fn map(&self) -> &crate::stages::gamma::CodeMap {
        &self.map
    }
}

impl RgbStage for ToneLut {
    fn name(&self) -> &'static str {
        "tone"
    }
    fn apply(&self, mut img: RgbImage, _ctx: &mut FrameContext) -> RgbImage {
        self.map.apply(&mut img);
        img
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn srgb_lut_matches_the_standard() {
        let t = ToneLut::new(&ToneConfig::default(), 65535);
        assert_eq!(t.table()[0], 0);
        assert_eq!(t.table()[65535], 65535);
        // 18 % grey encodes to ~0.4614 in sRGB.
        let v = t.table()[(0.18f64 * 65535.0) as usize] as f64 / 65535.0;
        assert!((v - 0.4614).abs() < 0.001, "{v}");
    }

    #[test]
    fn saturation_zero_gives_grey_and_identity_is_skipped() {
        let m = ColorMatrix::new([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], 0.0);
        let mut img = RgbImage::new(1, 1);
        img.planes = [vec![1000], vec![2000], vec![3000]];
        let mut ctx = FrameContext::new(rawlink_frame::BayerPattern::Rggb, 65535);
        let out = m.apply(img, &mut ctx);
        let y = out.planes[0][0];
        assert!(out.planes.iter().all(|p| p[0] == y), "{:?}", out.planes);
        assert!(
            ColorMatrix::new([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], 1.0)
                .is_identity()
        );
    }
}
