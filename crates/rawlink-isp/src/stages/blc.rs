//! Black-level correction: `max(v - black, 0)`.

use crate::{FrameContext, RawPlane, RawStage};
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
