//! Black-level correction.
//!
//! [`BlackLevel`] is the reference's: one level, `max(v − black, 0)`, codes unchanged.
//! [`Normalize`] is the default profile's: a per-colour black level and a white level,
//! mapping black to 0 and white to full scale 65535 (the 16-bit working range of every
//! later stage). It is a lookup table per CFA site, built once per configuration from
//! an `f32` formula (`NormCode`); in the default pipeline with RCD the formula itself
//! is applied as the samples are read ([`Normalize::deferred`]).

use crate::stages::gamma::CodeMap;
use crate::stages::whole_to_index;
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
    /// (codes above take the last entry); none when the stage is deferred (the data is
    /// left as it is and the formula handed to the demosaic: [`Normalize::deferred`]).
    luts: Option<[[CodeMap; 2]; 2]>,
    /// The formula of the tables, per colour (R, G, B).
    norm: [NormCode; 3],
    /// The stage's name: `blc`, or `normalize` when the stage list leaves black-level
    /// correction out and only the scaling to the working range runs.
    name: &'static str,
}

/// One colour's normalisation: `(min(v, max_code) − black) · k + ½`, with
/// `k = 65535 / (white − black)`, clamped to `0..=65535` and truncated, in `f32`. The
/// tables of [`Normalize`] are built from it, and the demosaic's input loop and the
/// white balance's statistics evaluate it per sample when the stage is deferred: the
/// same `f32` operations in the same order, so the same codes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct NormCode {
    max_code: u16,
    black: f32,
    k: f32,
}

impl NormCode {
    fn new(max_code: u16, black: u16, white: u16) -> Self {
        let range = (white as i32 - black as i32).max(1);
        Self {
            max_code,
            black: black as f32,
            k: FULL_SCALE as f32 / range as f32,
        }
    }

    /// The normalised code of `v`, as a float (a whole number in `0..=65535`).
    #[inline(always)]
    pub(crate) fn code_f32(self, v: u16) -> f32 {
        let x = (v.min(self.max_code) as f32 - self.black) * self.k + 0.5;
        x.clamp(0.0, FULL_SCALE as f32).floor()
    }

    /// The normalised code of `v`.
    #[inline(always)]
    pub(crate) fn code(self, v: u16) -> u16 {
        whole_to_index(self.code_f32(v)) as u16
    }
}

impl Normalize {
    /// Builds the tables. `black` is per colour (R, G, B); codes above `max_code` clip.
    pub fn new(pattern: BayerPattern, black: [u16; 3], white: u16, max_code: u16) -> Self {
        let norm = Self::formula(black, white, max_code);
        let lut = |c: Channel| -> CodeMap {
            let n = norm[c as usize];
            CodeMap::new(&(0..=max_code).map(|v| n.code(v)).collect::<Vec<u16>>())
        };
        let cell = pattern.cell();
        Self {
            luts: Some([
                [lut(cell[0][0]), lut(cell[0][1])],
                [lut(cell[1][0]), lut(cell[1][1])],
            ]),
            norm,
            name: "blc",
        }
    }

    /// The same stage named `normalize`: for a pipeline without `blc` in its stage
    /// list, where it only scales the codes to the working range (black 0).
    pub fn without_blc(self) -> Self {
        Self {
            name: "normalize",
            ..self
        }
    }

    /// The stage with the normalisation left to the demosaic (no tables are built): it
    /// only records the formula in the frame context, and the white balance's statistics
    /// and the demosaic (RCD's input loop, Malvar's row split) apply it to each sample as
    /// they read it, so the mosaic is neither rewritten here nor by the white balance.
    /// Only for a pipeline whose next stages are white balance (or none) and RCD or
    /// Malvar.
    pub fn deferred(black: [u16; 3], white: u16, max_code: u16) -> Self {
        Self {
            luts: None,
            norm: Self::formula(black, white, max_code),
            name: "blc",
        }
    }

    /// The formula per colour (R, G, B).
    fn formula(black: [u16; 3], white: u16, max_code: u16) -> [NormCode; 3] {
        [Channel::R, Channel::G, Channel::B]
            .map(|c| NormCode::new(max_code, black[c as usize], white))
    }
}

impl RawStage for Normalize {
    fn name(&self) -> &'static str {
        self.name
    }
    fn apply(&self, img: &mut RawPlane, ctx: &mut FrameContext) {
        let Some(luts) = &self.luts else {
            ctx.deferred = Some(crate::Deferred {
                norm: self.norm,
                gains: [1.0; 3],
            });
            ctx.max_value = FULL_SCALE;
            return;
        };
        let w = img.width;
        img.data
            .par_chunks_mut(w)
            .with_min_len(crate::rows_per_task(w))
            .enumerate()
            .for_each(|(y, row)| {
                let [l0, l1] = &luts[y & 1];
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
