//! rawlink's image signal processor.
//!
//! A [`Pipeline`] is a list of stages typed by the kind of image they handle:
//! raw → raw ([`RawStage`]), raw → RGB ([`DemosaicStage`]) and RGB → RGB
//! ([`RgbStage`]), so it cannot be assembled in the wrong order. The `reference`
//! profile reproduces the reference ISP bit for bit.
//!
//! ```
//! use rawlink_frame::BayerPattern;
//! use rawlink_isp::{Pipeline, Profile, RawPlane, IspConfig};
//!
//! let raw = RawPlane::new(4, 4, vec![1000; 16]).unwrap();
//! let cfg = IspConfig::new(Profile::Reference, BayerPattern::Rggb, 12);
//! let out = Pipeline::new(&cfg).run(raw);
//! let rgb8 = out.image.to_rgb8(4095);
//! assert_eq!(rgb8.len(), 4 * 4 * 3);
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod encode;
pub mod expf;
pub mod stages;

use rawlink_frame::BayerPattern;
use rayon::prelude::*;
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

/// Errors from the ISP and its encoders.
#[derive(Debug, thiserror::Error)]
pub enum IspError {
    /// Input size does not match the geometry.
    #[error("input is {actual} bytes but {width}x{height} 16-bit samples need {expected} bytes")]
    SizeMismatch {
        /// Bytes present.
        actual: usize,
        /// Bytes required.
        expected: usize,
        /// Width.
        width: usize,
        /// Height.
        height: usize,
    },
    /// Zero or too large geometry.
    #[error("invalid geometry {width}x{height}")]
    BadGeometry {
        /// Width.
        width: usize,
        /// Height.
        height: usize,
    },
    /// Unknown profile name.
    #[error("unknown ISP profile {0:?} (available: reference)")]
    UnknownProfile(String),
    /// Parameter out of range.
    #[error("bad ISP parameter: {0}")]
    BadParam(String),
    /// PNG encoding failed.
    #[error("PNG encoding failed: {0}")]
    Png(#[from] png::EncodingError),
}

/// A Bayer mosaic, one `u16` per sample, row-major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawPlane {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// `width * height` samples.
    pub data: Vec<u16>,
}

impl RawPlane {
    /// Wraps samples, checking the length.
    pub fn new(width: usize, height: usize, data: Vec<u16>) -> Result<Self, IspError> {
        if width == 0 || height == 0 {
            return Err(IspError::BadGeometry { width, height });
        }
        let expected = width
            .checked_mul(height)
            .ok_or(IspError::BadGeometry { width, height })?;
        if data.len() != expected {
            return Err(IspError::SizeMismatch {
                actual: data.len() * 2,
                expected: expected * 2,
                width,
                height,
            });
        }
        Ok(Self {
            width,
            height,
            data,
        })
    }

    /// Decodes headerless little-endian `u16` bytes; the size must match exactly.
    pub fn from_le_bytes(width: usize, height: usize, bytes: &[u8]) -> Result<Self, IspError> {
        let expected = width
            .checked_mul(height)
            .and_then(|n| n.checked_mul(2))
            .ok_or(IspError::BadGeometry { width, height })?;
        if width == 0 || height == 0 {
            return Err(IspError::BadGeometry { width, height });
        }
        if bytes.len() != expected {
            return Err(IspError::SizeMismatch {
                actual: bytes.len(),
                expected,
                width,
                height,
            });
        }
        let data = bytes
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        Ok(Self {
            width,
            height,
            data,
        })
    }
}

/// A planar RGB image of `u16` codes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgbImage {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// R, G and B planes, each `width * height`, row-major.
    pub planes: [Vec<u16>; 3],
}

impl RgbImage {
    /// A black image.
    pub fn new(width: usize, height: usize) -> Self {
        let n = width * height;
        Self {
            width,
            height,
            planes: [vec![0; n], vec![0; n], vec![0; n]],
        }
    }

    /// Interleaved 8-bit RGB, each code mapped as `v * 255 / max_value`.
    pub fn to_rgb8(&self, max_value: u16) -> Vec<u8> {
        let m = max_value.max(1) as u32;
        let n = self.width * self.height;
        let mut out = vec![0u8; n * 3];
        let [r, g, b] = &self.planes;
        out.par_chunks_mut(3 * 4096)
            .enumerate()
            .for_each(|(k, chunk)| {
                let base = k * 4096;
                for (i, px) in chunk.chunks_exact_mut(3).enumerate() {
                    let j = base + i;
                    px[0] = (r[j] as u32 * 255 / m) as u8;
                    px[1] = (g[j] as u32 * 255 / m) as u8;
                    px[2] = (b[j] as u32 * 255 / m) as u8;
                }
            });
        out
    }

    /// Interleaved 16-bit RGB scaled to the full `0..=65535` range.
    pub fn to_rgb16(&self, max_value: u16) -> Vec<u16> {
        let m = max_value.max(1) as u32;
        let n = self.width * self.height;
        let mut out = Vec::with_capacity(n * 3);
        for j in 0..n {
            for p in &self.planes {
                out.push(((p[j] as u32 * 65535 + m / 2) / m) as u16);
            }
        }
        out
    }
}

/// Statistics gathered while a frame is processed.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FrameStats {
    /// Per-channel means seen by AWB (after demosaic), R, G, B.
    pub channel_means: [f64; 3],
    /// White-balance gains applied, R, G, B.
    pub wb_gains: [f64; 3],
}

/// Per-frame state shared by the stages.
#[derive(Debug, Clone)]
pub struct FrameContext {
    /// CFA pattern of the input.
    pub pattern: BayerPattern,
    /// Largest code, `2^bits - 1`.
    pub max_value: u16,
    /// Statistics filled in by the stages.
    pub stats: FrameStats,
}

/// A stage on the Bayer mosaic, in place.
pub trait RawStage: Send + Sync {
    /// Short name for timings.
    fn name(&self) -> &'static str;
    /// Processes the mosaic.
    fn apply(&self, img: &mut RawPlane, ctx: &mut FrameContext);
}

/// The raw → RGB stage.
pub trait DemosaicStage: Send + Sync {
    /// Short name for timings.
    fn name(&self) -> &'static str;
    /// Reconstructs full RGB.
    fn apply(&self, raw: &RawPlane, ctx: &mut FrameContext) -> RgbImage;
}

/// A stage on RGB; it may reuse its input's buffers or return new ones.
pub trait RgbStage: Send + Sync {
    /// Short name for timings.
    fn name(&self) -> &'static str;
    /// Processes the image.
    fn apply(&self, img: RgbImage, ctx: &mut FrameContext) -> RgbImage;
}

/// Named sets of stages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// The reference ISP's six stages, bit-exact.
    Reference,
}

impl FromStr for Profile {
    type Err = IspError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "reference" => Ok(Self::Reference),
            _ => Err(IspError::UnknownProfile(s.to_string())),
        }
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Reference => "reference",
        })
    }
}

/// What the pipeline needs to know about its input.
#[derive(Debug, Clone, Copy)]
pub struct IspConfig {
    /// Stage set.
    pub profile: Profile,
    /// CFA pattern.
    pub pattern: BayerPattern,
    /// Bit depth, 8..=16.
    pub bits: u8,
    /// Black level in sample units (the reference uses 64).
    pub black_level: u16,
}

impl IspConfig {
    /// Defaults for a profile: the reference's black level is 64.
    pub fn new(profile: Profile, pattern: BayerPattern, bits: u8) -> Self {
        Self {
            profile,
            pattern,
            bits,
            black_level: 64,
        }
    }

    /// Largest code for the bit depth.
    pub fn max_value(&self) -> u16 {
        ((1u32 << self.bits.clamp(1, 16)) - 1) as u16
    }

    /// Checks the parameters.
    pub fn validate(&self) -> Result<(), IspError> {
        if !(8..=16).contains(&self.bits) {
            return Err(IspError::BadParam(format!(
                "bit depth {} is not in 8..=16",
                self.bits
            )));
        }
        Ok(())
    }
}

/// Result of one run.
#[derive(Debug, Clone)]
pub struct PipelineOutput {
    /// The processed image, codes in `0..=max_value`.
    pub image: RgbImage,
    /// Wall time per stage, in pipeline order.
    pub timings: Vec<(&'static str, Duration)>,
    /// Statistics.
    pub stats: FrameStats,
}

/// An ordered set of stages built from a configuration.
pub struct Pipeline {
    config: IspConfig,
    raw_stages: Vec<Box<dyn RawStage>>,
    demosaic: Box<dyn DemosaicStage>,
    rgb_stages: Vec<Box<dyn RgbStage>>,
}

impl fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pipeline")
            .field("config", &self.config)
            .field("stages", &self.stage_names())
            .finish()
    }
}

impl Pipeline {
    /// Builds the stages of `config.profile`. Lookup tables are built here, once.
    pub fn new(config: &IspConfig) -> Self {
        let max = config.max_value();
        match config.profile {
            Profile::Reference => Self {
                config: *config,
                raw_stages: vec![Box::new(stages::blc::BlackLevel {
                    black: config.black_level,
                })],
                demosaic: Box::new(stages::demosaic::Bilinear),
                rgb_stages: vec![
                    Box::new(stages::awb::GrayWorld),
                    Box::new(stages::gamma::GammaLut::new(2.2, max)),
                    Box::new(stages::bilateral::Bilateral::new(2.0, 30.0)),
                    Box::new(stages::sharpen::Sharpen3x3),
                ],
            },
        }
    }

    /// The configuration this pipeline was built for.
    pub fn config(&self) -> &IspConfig {
        &self.config
    }

    /// Stage names in execution order.
    pub fn stage_names(&self) -> Vec<&'static str> {
        self.raw_stages
            .iter()
            .map(|s| s.name())
            .chain(std::iter::once(self.demosaic.name()))
            .chain(self.rgb_stages.iter().map(|s| s.name()))
            .collect()
    }

    /// Runs every stage on `raw`.
    pub fn run(&self, mut raw: RawPlane) -> PipelineOutput {
        let mut ctx = FrameContext {
            pattern: self.config.pattern,
            max_value: self.config.max_value(),
            stats: FrameStats::default(),
        };
        let mut timings = Vec::with_capacity(8);
        for s in &self.raw_stages {
            let t = Instant::now();
            s.apply(&mut raw, &mut ctx);
            timings.push((s.name(), t.elapsed()));
        }
        let t = Instant::now();
        let mut img = self.demosaic.apply(&raw, &mut ctx);
        timings.push((self.demosaic.name(), t.elapsed()));
        drop(raw);
        for s in &self.rgb_stages {
            let t = Instant::now();
            img = s.apply(img, &mut ctx);
            timings.push((s.name(), t.elapsed()));
        }
        PipelineOutput {
            image: img,
            timings,
            stats: ctx.stats,
        }
    }
}

#[cfg(test)]
mod tests;
