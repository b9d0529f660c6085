//! Gamma through a lookup table: `lut[i] = trunc((i/max)^(1/γ) · max)`.

use crate::{FrameContext, RgbImage, RgbStage};
use rayon::prelude::*;

/// Power-law gamma applied with a truncating LUT over the full code range.
#[derive(Debug, Clone)]
pub struct GammaLut {
    lut: Vec<u16>,
}

impl GammaLut {
    /// Builds the LUT for codes `0..=max_value`.
    pub fn new(gamma: f64, max_value: u16) -> Self {
        let inv = 1.0 / gamma;
        let m = max_value as f64;
        let lut = (0..=max_value as u32)
            .map(|i| ((i as f64 / m).powf(inv) * m) as u16)
            .collect();
        Self { lut }
    }

    /// The table.
    pub fn table(&self) -> &[u16] {
        &self.lut
    }
}

impl RgbStage for GammaLut {
    fn name(&self) -> &'static str {
        "tone"
    }
    fn apply(&self, mut img: RgbImage, _ctx: &mut FrameContext) -> RgbImage {
        apply_lut(&mut img, &self.lut);
        img
    }
}

/// Maps every code of every plane through `lut` (codes past its end take the last
/// entry), in parallel chunks.
pub(crate) fn apply_lut(img: &mut RgbImage, lut: &[u16]) {
    let last = lut.len() - 1;
    for plane in img.planes.iter_mut() {
        plane.par_chunks_mut(64 * 1024).for_each(|chunk| {
            for v in chunk {
                *v = lut[(*v as usize).min(last)];
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lut_endpoints_and_monotonic() {
        let g = GammaLut::new(2.2, 4095);
        let t = g.table();
        assert_eq!(t.len(), 4096);
        assert_eq!(t[0], 0);
        assert_eq!(t[4095], 4095);
        assert!(t.windows(2).all(|w| w[0] <= w[1]));
        // (64/4095)^(1/2.2) * 4095 = 618.4…, truncated.
        assert_eq!(t[64], 618);
    }
}
