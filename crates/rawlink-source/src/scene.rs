//! `sim:scene`: a rendered scene seen through a simulated sensor, so that every ISP
//! stage has real work to do: colour content (a colour chart, hue gradients, a Siemens
//! star, a grey ramp with clipped highlights), a black-level offset, per-channel sensor
//! gains (raw data is green-heavy, as on real sensors), and shot plus read noise.
//!
//! The scene is rendered once; each frame pans it by two columns and draws fresh noise
//! from a seed derived from the sequence number, so frames are reproducible.

use crate::{stamp, FrameSource, Pacer, SourceError, SourceOptions};
use bytes::Bytes;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rawlink_frame::{Channel, Frame, FrameHeader};
use std::f32::consts::PI;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

/// Per-channel sensor response relative to green (R, G, B).
pub const SCENE_SENSOR_GAINS: [f32; 3] = [0.52, 1.0, 0.71];
/// Black level of the scene at 12 bits.
pub const SCENE_BLACK_12: u16 = 256;

/// Rendered scene plus sensor model.
#[derive(Debug)]
pub struct SceneSource {
    template: FrameHeader,
    /// Noise-free signal above black, in sample units, row-major mosaic.
    clean: Vec<f32>,
    /// Standard normal samples.
    gauss: Vec<f32>,
    read_sigma: f32,
    shot_k: f32,
    pacer: Pacer,
    interval: Duration,
    seq: u64,
}

/// Classic 24-patch colour chart, sRGB 8-bit, row by row.
const CHART: [[u8; 3]; 24] = [
    [115, 82, 68],
    [194, 150, 130],
    [98, 122, 157],
    [87, 108, 67],
    [133, 128, 177],
    [103, 189, 170],
    [214, 126, 44],
    [80, 91, 166],
    [193, 90, 99],
    [94, 60, 108],
    [157, 188, 64],
    [224, 163, 46],
    [56, 61, 150],
    [70, 148, 73],
    [175, 54, 60],
    [231, 199, 31],
    [187, 86, 149],
    [8, 133, 161],
    [243, 243, 242],
    [200, 200, 200],
    [160, 160, 160],
    [122, 122, 121],
    [85, 85, 85],
    [52, 52, 52],
];

fn srgb_to_linear(v: f32) -> f32 {
    if v <= 0.04045 {
        v / 12.92
    } else {
        ((v + 0.055) / 1.055).powf(2.4)
    }
}

/// Linear-light RGB of the scene at normalised coordinates (`u` across, `v` down).
pub fn scene_rgb(u: f32, v: f32, aspect: f32) -> [f32; 3] {
    // Colour chart, top left.
    if (0.04..0.52).contains(&u) && (0.05..0.47).contains(&v) {
        let cu = ((u - 0.04) / 0.48 * 6.0) as usize;
        let cv = ((v - 0.05) / 0.42 * 4.0) as usize;
        let fu = (u - 0.04) / 0.48 * 6.0 - cu as f32;
        let fv = (v - 0.05) / 0.42 * 4.0 - cv as f32;
        if (0.08..0.92).contains(&fu) && (0.08..0.92).contains(&fv) {
            let c = CHART[cv.min(3) * 6 + cu.min(5)];
            return c.map(|x| srgb_to_linear(x as f32 / 255.0));
        }
        return [0.02, 0.02, 0.02];
    }
    // Siemens star, top right.
    let (cx, cy, r) = (0.76, 0.28, 0.2);
    let dx = (u - cx) * aspect;
    let dy = v - cy;
    let d = (dx * dx + dy * dy).sqrt();
    if d < r {
        let a = dy.atan2(dx);
        let on = (a * 16.0).sin() > 0.0;
        let l = if on { 0.75 } else { 0.04 };
        return [l, l * 0.95, l * 0.9];
    }
    // Grey ramp with clipped highlights, bottom.
    if v > 0.86 {
        let l = (u * 1.3).min(1.3);
        return [l, l, l];
    }
    // Hue gradient with a vertical luminance ramp elsewhere, plus fine diagonal lines.
    let lum = 0.08 + 0.6 * (1.0 - v);
    let lines = if ((u * 40.0 + v * 40.0) * PI).sin() > 0.92 {
        0.5
    } else {
        1.0
    };
    let h = 2.0 * PI * u;
    [
        lum * lines * (0.55 + 0.45 * h.sin()),
        lum * lines * (0.55 + 0.45 * (h + 2.1).sin()),
        lum * lines * (0.55 + 0.45 * (h + 4.2).sin()),
    ]
}

impl SceneSource {
    /// Renders the scene for the given geometry.
    pub fn new(opts: &SourceOptions) -> Result<Self, SourceError> {
        // The scene is rendered on its black and white levels (overridable).
        let mut template = opts.leveled_template(SCENE_BLACK_12)?;
        let bits = opts.bits;
        let black = template.black_level;
        template.exposure_us = 8_000;
        template.analog_gain = 2.0;
        let (w, h) = (opts.width as usize, opts.height as usize);
        let range = (template.white_level - black) as f32;
        let cell = opts.pattern.cell();
        let aspect = w as f32 / h as f32;
        let mut clean = vec![0f32; w * h];
        for (i, row) in clean.chunks_exact_mut(w).enumerate() {
            let v = (i as f32 + 0.5) / h as f32;
            for (j, px) in row.iter_mut().enumerate() {
                let u = (j as f32 + 0.5) / w as f32;
                let rgb = scene_rgb(u, v, aspect);
                let c = match cell[i & 1][j & 1] {
                    Channel::R => 0,
                    Channel::G => 1,
                    Channel::B => 2,
                };
                *px = rgb[c] * SCENE_SENSOR_GAINS[c] * 0.85 * range;
            }
        }
        let mut rng = SmallRng::seed_from_u64(0x5ce7e);
        let gauss = (0..65536)
            .map(|_| {
                // Box-Muller.
                let u1: f32 = rng.gen_range(f32::EPSILON..1.0);
                let u2: f32 = rng.gen();
                (-2.0 * u1.ln()).sqrt() * (2.0 * PI * u2).cos()
            })
            .collect();
        let scale = (1u32 << bits) as f32 / 4096.0;
        let interval = opts.interval;
        Ok(Self {
            template,
            clean,
            gauss,
            read_sigma: 2.5 * scale,
            shot_k: 0.35 * scale,
            pacer: Pacer::new(interval),
            interval,
            seq: 0,
        })
    }

    /// Renders frame `n` (noise seeded by `n`).
    pub fn render(&self, n: u64) -> Vec<u8> {
        let (w, h) = (self.template.width as usize, self.template.height as usize);
        let black = self.template.black_level as f32;
        let white = self.template.white_level as f32;
        // Pan by two columns a frame, keeping CFA parity; only when the width is even.
        let shift = if w % 2 == 0 { (2 * n as usize) % w } else { 0 };
        let mut rng = SmallRng::seed_from_u64(n.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let mut out = vec![0u8; w * h * 2];
        for (i, row) in out.chunks_exact_mut(w * 2).enumerate() {
            let src = &self.clean[i * w..(i + 1) * w];
            for (j, px) in row.chunks_exact_mut(2).enumerate() {
                let s = src[(j + shift) % w];
                let sigma = (self.read_sigma * self.read_sigma + self.shot_k * s).sqrt();
                let g = self.gauss[(rng.gen::<u32>() >> 16) as usize];
                let v = (black + s + sigma * g).round().clamp(0.0, white);
                px.copy_from_slice(&(v as u16).to_le_bytes());
            }
        }
        out
    }
}

impl FrameSource for SceneSource {
    fn describe(&self) -> String {
        format!(
            "sim:scene {}x{} {}",
            self.template.width, self.template.height, self.template.format
        )
    }
    fn stream_header(&self) -> FrameHeader {
        self.template
    }
    fn interval(&self) -> Duration {
        self.interval
    }
    fn next_frame(&mut self, stop: &AtomicBool) -> Result<Option<Frame>, SourceError> {
        if !self.pacer.wait(stop) {
            return Ok(None);
        }
        self.seq += 1;
        let payload = self.render(self.seq);
        Ok(Some(Frame::new(
            stamp(self.template, self.seq),
            Bytes::from(payload),
        )?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rawlink_frame::BayerPattern;

    fn opts(pattern: BayerPattern) -> SourceOptions {
        SourceOptions {
            width: 64,
            height: 48,
            pattern,
            interval: Duration::ZERO,
            ..Default::default()
        }
    }

    #[test]
    fn has_black_offset_noise_and_channel_imbalance() {
        let s = SceneSource::new(&opts(BayerPattern::Rggb)).unwrap();
        let a = s.render(1);
        let b = s.render(2);
        assert_ne!(a, b, "frames differ");
        assert_eq!(a, s.render(1), "frames are reproducible");
        let px: Vec<u16> = a
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        let min = *px.iter().min().unwrap();
        assert!(min > 200 && min < 300, "black offset ~256, min {min}");
        // Mean of green sites well above mean of red sites (sensor gains).
        let (mut r, mut g, mut nr, mut ng) = (0u64, 0u64, 0u64, 0u64);
        for i in 0..48 {
            for j in 0..64 {
                let v = px[i * 64 + j] as u64;
                match (i & 1, j & 1) {
                    (0, 0) => {
                        r += v;
                        nr += 1
                    }
                    (0, 1) | (1, 0) => {
                        g += v;
                        ng += 1
                    }
                    _ => {}
                }
            }
        }
        assert!(g / ng > r / nr + 100, "green {} red {}", g / ng, r / nr);
    }
}
