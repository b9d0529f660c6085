//! Gamma through a lookup table: `lut[i] = trunc((i/max)^(1/γ) · max)`.

use crate::{FrameContext, RgbImage, RgbStage};
use rayon::prelude::*;

/// Power-law gamma applied with a truncating LUT over the full code range.
#[derive(Debug, Clone)]
pub struct GammaLut {
    map: CodeMap,
}

impl GammaLut {
    /// Builds the LUT for codes `0..=max_value`.
    pub fn new(gamma: f64, max_value: u16) -> Self {
        let inv = 1.0 / gamma;
        let m = max_value as f64;
        let lut = (0..=max_value as u32)
            .map(|i| ((i as f64 / m).powf(inv) * m) as u16)
            .collect::<Vec<u16>>();
        Self {
            map: CodeMap::new(&lut),
        }
    }

    /// The table.
    pub fn table(&self) -> &[u16] {
        self.map.table()
    }

    /// The table as a map over every code.
    pub fn map(&self) -> &CodeMap {
        &self.map
    }
}

impl RgbStage for GammaLut {
    fn name(&self) -> &'static str {
        "tone"
    }
    fn apply(&self, mut img: RgbImage, _ctx: &mut FrameContext) -> RgbImage {
        self.map.apply(&mut img);
        img
    }
}

/// A per-code table over every `u16` code: a curve's table padded with its last entry
/// (codes past the curve's end take it, as a clamped lookup would), so a lookup needs
/// neither a clamp nor a bounds check.
#[derive(Clone)]
pub struct CodeMap {
    map: Box<[u16; 1 << 16]>,
    /// Entries of the curve's own table.
    len: usize,
}

impl std::fmt::Debug for CodeMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CodeMap")
    }
}

impl CodeMap {
    /// The map of `lut` (at least one entry; entries past 2^16 are never reached).
    pub fn new(lut: &[u16]) -> Self {
        let last = lut.last().copied().unwrap_or(0);
        let mut map = Box::new([last; 1 << 16]);
        let len = lut.len().min(1 << 16);
        map[..len].copy_from_slice(&lut[..len]);
        Self { map, len }
    }

    /// Makes this the map of `lut` in place (the buffer is reused; the padding is
    /// written only where the curve's length or its last entry changed).
    pub fn refill(&mut self, lut: &[u16]) {
        self.refill_with(lut.len(), |v| lut[v]);
    }

    /// [`CodeMap::refill`] with the curve's `len` entries (at most 2^16 are used) given
    /// by `entry`, written straight into the map (no table in between).
    pub fn refill_with(&mut self, len: usize, entry: impl Fn(usize) -> u16) {
        let len = len.min(1 << 16);
        for (v, m) in self.map[..len].iter_mut().enumerate() {
            *m = entry(v);
        }
        let last = len.checked_sub(1).map_or(0, |i| self.map[i]);
        if len < self.len || self.map.get(len).is_some_and(|&p| p != last) {
            self.map[len..].fill(last);
        }
        self.len = len;
    }

    /// The curve's own table (without the padding).
    pub fn table(&self) -> &[u16] {
        &self.map[..self.len]
    }

    /// The code `v` maps to.
    #[inline(always)]
    pub fn get(&self, v: u16) -> u16 {
        self.map[v as usize]
    }

    /// Maps every code of `row` in place.
    #[inline]
    pub fn apply_row(&self, row: &mut [u16]) {
        for v in row {
            *v = self.map[*v as usize];
        }
    }

    /// Maps every code of every plane, in parallel chunks.
    pub fn apply(&self, img: &mut RgbImage) {
        for plane in img.planes.iter_mut() {
            plane
                .par_chunks_mut(64 * 1024)
                .for_each(|chunk| self.apply_row(chunk));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_map_clamps_past_the_table() {
        let m = CodeMap::new(&[5, 7, 9]);
        assert_eq!(
            [m.get(0), m.get(1), m.get(2), m.get(3), m.get(65535)],
            [5, 7, 9, 9, 9]
        );
        assert_eq!(m.table(), [5, 7, 9]);
        // Refilled in place: longer, then shorter with a different last entry.
        let mut r = m.clone();
        r.refill(&[1, 2, 3, 4]);
        assert_eq!([r.get(3), r.get(4), r.get(65535)], [4, 4, 4]);
        r.refill(&[8, 6]);
        assert_eq!([r.get(1), r.get(2), r.get(3), r.get(65535)], [6, 6, 6, 6]);
        assert_eq!(r.table(), [8, 6]);
        let mut img = RgbImage::new(2, 1);
        img.planes = [vec![0, 2], vec![1, 40000], vec![3, 1]];
        m.apply(&mut img);
        assert_eq!(img.planes, [vec![5, 9], vec![7, 9], vec![9, 7]]);
    }

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
