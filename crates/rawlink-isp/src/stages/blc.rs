//! Black-level correction.
//!
//! [`BlackLevel`] is the reference's: one level, `max(v − black, 0)`, codes unchanged.
//! [`Normalize`] is the default profile's: a per-colour black level and a white level,
//! mapping black to 0 and white to full scale 65535 (the 16-bit working range of every
//! later stage). It is a lookup table per CFA site, built once per configuration.

use crate::stages::gamma::CodeMap;
use crate::{FrameContext, RawPlane, RawStage, FULL_SCALE};
use rawlink_frame::{BayerPattern, Channel};
use rayon::prelude::*;

/// Subtracts a single black level from every sample, clamping at 0.
#[derive(Debug, Clone, Copy)]
pub struct BlackLevel {
    /// Level to subtract, in sample units.
    pub black: u16,
}

impl RawStage for BlackLevel {
    fn name(&self) -> &'static str {
        "blc"
    }
    fn apply(&self, img: &mut RawPlane, _ctx: &mut FrameContext) {
        let b = self.black;
        img.data
            .par_chunks_mut(64 * 1024)
            .for_each(|c| c.iter_mut().for_each(|v| *v = v.saturating_sub(b)));
    }
}

/// Per-colour black level and white level, normalised to 16-bit full scale.
#[derive(Debug, Clone)]
pub struct Normalize {
    /// Table per CFA site, indexed `[row & 1][col & 1]`, over codes `0..=max_code`
    /// (codes above take the last entry).
    luts: [[CodeMap; 2]; 2],
}

impl Normalize {
    /// Builds the tables. `black` is per colour (R, G, B); codes above `max_code` clip.
    pub fn new(pattern: BayerPattern, black: [u16; 3], white: u16, max_code: u16) -> Self {
        let lut = |c: Channel| -> CodeMap {
            let b = black[c as usize] as f64;
            let range = (white as f64 - b).max(1.0);
            let lut = (0..=max_code as u32)
                .map(|v| {
                    (((v as f64 - b) / range) * FULL_SCALE as f64)
                        .round()
                        .clamp(0.0, FULL_SCALE as f64) as u16
                })
                .collect::<Vec<u16>>();
            CodeMap::new(&lut)
        };
        let cell = pattern.cell();
        Self {
            luts: [
                [lut(cell[0][0]), lut(cell[0][1])],
                [lut(cell[1][0]), lut(cell[1][1])],
            ],
        }
    }
}

impl RawStage for Normalize {
    fn name(&self) -> &'static str {
        "blc"
    }
    fn apply(&self, img: &mut RawPlane, ctx: &mut FrameContext) {
        let w = img.width;
        img.data
            .par_chunks_mut(w)
            .with_min_len(crate::rows_per_task(w))
            .enumerate()
            .for_each(|(y, row)| {
                let [l0, l1] = &self.luts[y & 1];
                let mut pairs = row.chunks_exact_mut(2);
                for pair in &mut pairs {
                    pair[0] = l0.get(pair[0]);
                    pair[1] = l1.get(pair[1]);
                }
                if let [v] = pairs.into_remainder() {
                    *v = l0.get(*v);
                }
            });
        ctx.max_value = FULL_SCALE;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_black_to_zero_and_white_to_full_scale_per_colour() {
        let n = Normalize::new(BayerPattern::Rggb, [100, 200, 300], 4000, 4095);
        let mut img = RawPlane::new(2, 2, vec![100, 200, 200, 300]).unwrap();
        let mut ctx = FrameContext::new(BayerPattern::Rggb, 4095);
        n.apply(&mut img, &mut ctx);
        assert_eq!(img.data, vec![0, 0, 0, 0]);
        let mut img = RawPlane::new(2, 2, vec![4000, 4000, 4095, 50]).unwrap();
        n.apply(&mut img, &mut ctx);
        assert_eq!(img.data, vec![65535, 65535, 65535, 0]);
        assert_eq!(ctx.max_value, 65535);
    }
}
