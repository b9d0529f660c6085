//! Lens-shading correction: multiplies the mosaic by a smooth gain map, either a
//! parametric radial falloff `1 + k·(r/r_corner)²` or a grid from a file stretched over
//! the frame with bilinear interpolation.

use crate::{FrameContext, IspError, RawPlane, RawStage};
use rayon::prelude::*;
use std::path::Path;

/// Gain map source.
#[derive(Debug, Clone)]
pub enum GainMap {
    /// `1 + strength · (r / r_corner)²`.
    Radial(f32),
    /// A rows × cols grid of gains.
    Grid {
        /// Rows of gains.
        rows: usize,
        /// Columns of gains.
        cols: usize,
        /// Row-major gains.
        gains: Vec<f32>,
    },
}

impl GainMap {
    /// Reads a whitespace-separated grid: one grid row per line, `#` comments allowed.
    pub fn from_file(path: &Path) -> Result<Self, IspError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| IspError::BadParam(format!("LSC map {}: {e}", path.display())))?;
        let mut gains = Vec::new();
        let mut rows = 0;
        let mut cols = 0;
        for line in text
            .lines()
            .map(|l| l.split('#').next().unwrap_or("").trim())
        {
            if line.is_empty() {
                continue;
            }
            let row: Vec<f32> = line
                .split_whitespace()
                .map(|t| t.parse::<f32>())
                .collect::<Result<_, _>>()
                .map_err(|e| IspError::BadParam(format!("LSC map {}: {e}", path.display())))?;
            if cols != 0 && row.len() != cols {
                return Err(IspError::BadParam(format!(
                    "LSC map {}: row {} has {} values, expected {cols}",
                    path.display(),
                    rows + 1,
                    row.len()
                )));
            }
            cols = row.len();
            rows += 1;
            gains.extend(row);
        }
        if rows < 2
            || cols < 2
            || gains
                .iter()
                .any(|g| !(g.is_finite() && *g > 0.0 && *g < 16.0))
        {
            return Err(IspError::BadParam(format!(
                "LSC map {}: need at least a 2x2 grid of gains in (0, 16)",
                path.display()
            )));
        }
        Ok(Self::Grid { rows, cols, gains })
    }

    fn gain(&self, x: f32, y: f32, w: usize, h: usize) -> f32 {
        match self {
            Self::Radial(k) => {
                let (cx, cy) = ((w as f32 - 1.0) / 2.0, (h as f32 - 1.0) / 2.0);
                let r2 = (x - cx).powi(2) + (y - cy).powi(2);
                let rc2 = (cx * cx + cy * cy).max(1.0);
                1.0 + k * r2 / rc2
            }
            Self::Grid { rows, cols, gains } => {
                let gx = x / (w.max(2) - 1) as f32 * (*cols - 1) as f32;
                let gy = y / (h.max(2) - 1) as f32 * (*rows - 1) as f32;
                let (x0, y0) = ((gx as usize).min(cols - 2), (gy as usize).min(rows - 2));
                let (fx, fy) = (gx - x0 as f32, gy - y0 as f32);
                let g = |r: usize, c: usize| gains[r * cols + c];
                let top = g(y0, x0) * (1.0 - fx) + g(y0, x0 + 1) * fx;
                let bot = g(y0 + 1, x0) * (1.0 - fx) + g(y0 + 1, x0 + 1) * fx;
                top * (1.0 - fy) + bot * fy
            }
        }
    }
}

/// Lens-shading correction stage.
#[derive(Debug, Clone)]
pub struct LensShading {
    /// The gain map.
    pub map: GainMap,
}

impl RawStage for LensShading {
    fn name(&self) -> &'static str {
        "lsc"
    }
    fn apply(&self, img: &mut RawPlane, ctx: &mut FrameContext) {
        let (w, h) = (img.width, img.height);
        let top = ctx.max_value as f32;
        img.data.par_chunks_mut(w).enumerate().for_each(|(y, row)| {
            for (x, v) in row.iter_mut().enumerate() {
                let g = self.map.gain(x as f32, y as f32, w, h);
                *v = (*v as f32 * g).round().clamp(0.0, top) as u16;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rawlink_frame::BayerPattern;

    #[test]
    fn radial_falloff_is_corrected() {
        let (w, h) = (41, 31);
        let map = GainMap::Radial(0.5);
        // A flat field darkened by the inverse of the map.
        let data = (0..w * h)
            .map(|i| (20000.0 / map.gain((i % w) as f32, (i / w) as f32, w, h)) as u16)
            .collect();
        let mut img = RawPlane::new(w, h, data).unwrap();
        LensShading { map }.apply(&mut img, &mut FrameContext::new(BayerPattern::Rggb, 65535));
        assert!(img.data.iter().all(|&v| (v as i32 - 20000).abs() <= 2));
    }

    #[test]
    fn grid_file_parsed_and_checked() {
        let d = std::env::temp_dir().join(format!("lsc-{}.txt", std::process::id()));
        std::fs::write(&d, "# gains\n1.0 2.0\n1.0 2.0\n").unwrap();
        let m = GainMap::from_file(&d).unwrap();
        assert!((m.gain(99.0, 0.0, 100, 10) - 2.0).abs() < 1e-6);
        std::fs::write(&d, "1.0 2.0\n1.0\n").unwrap();
        assert!(GainMap::from_file(&d).is_err());
        std::fs::remove_file(d).ok();
    }
}
