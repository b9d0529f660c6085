//! rawlink's image signal processor.
//!
//! A [`Pipeline`] is a list of stages typed by the kind of image they handle:
//! raw → raw ([`RawStage`]), raw → RGB ([`DemosaicStage`]) and RGB → RGB
//! ([`RgbStage`]), so it cannot be assembled in the wrong order. The `reference`
//! profile reproduces the reference ISP within ±1 LSB, or bit for bit with
//! `exact` set in [`IspConfig::denoise`].
//!
//! ```
//! use rawlink_frame::BayerPattern;
//! use rawlink_isp::{Pipeline, Profile, RawPlane, IspConfig};
//!
//! let raw = RawPlane::new(16, 16, vec![1000; 256]).unwrap();
//! let cfg = IspConfig::new(Profile::Default, BayerPattern::Rggb, 12);
//! let out = Pipeline::new(&cfg).unwrap().run(raw);
//! let rgb8 = out.to_rgb8();
//! assert_eq!(rgb8.len(), 16 * 16 * 3);
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod config;
pub mod encode;
pub mod expf;
mod pngz;
pub mod stages;

pub use config::{
    ccm_matrix_ok, check_wb_gains, parse_stage_list, DemosaicMethod, DenoiseMethod, IspConfig,
    Profile, SharpenMethod, StageName, ToneCurve, WbMode,
};

use rawlink_frame::BayerPattern;
use rayon::prelude::*;
use std::fmt;
use std::time::{Duration, Instant};

/// Full scale of the default profile's 16-bit working range.
pub const FULL_SCALE: u16 = 65535;

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
    #[error("unknown ISP profile {0:?} (available: default, reference)")]
    UnknownProfile(String),
    /// Parameter out of range.
    #[error("bad ISP parameter: {0}")]
    BadParam(String),
    /// The configuration file cannot be read.
    #[error("cannot read the configuration file {}: {error}", path.display())]
    ConfigRead {
        /// The file.
        path: std::path::PathBuf,
        /// The OS error.
        error: std::io::Error,
    },
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

/// Rows a row-parallel stage hands to one rayon task at least: about 8 K samples, so
/// narrow frames are not split into tasks too small to pay for their scheduling.
pub(crate) fn rows_per_task(width: usize) -> usize {
    (8192 / width.max(1)).max(1)
}

/// An 8-bit conversion table over every code, keyed by (max, rounding bias).
type Rgb8Lut = ((u32, u32), Box<[u8; 1 << 16]>);

thread_local! {
    /// The last 8-bit conversion table built on this thread.
    static RGB8_LUT: std::cell::RefCell<Option<Rgb8Lut>> =
        const { std::cell::RefCell::new(None) };
}

/// `(v · 255 + bias) / 65 535` for a code `v`, in 16-bit arithmetic, for the two
/// rounding biases used: 0 (truncating; `add` 0) and 32 767 (rounding; `add` 128).
/// `255 v + 32 767 = 255 (v + 128) + 127` and `255 · 256 + 127 < 65 535`, so the value is
/// `⌊(v + add) / 257⌋`; the sum saturates at 65 535, whose value (255) is the largest
/// anyway; and `⌊t / 257⌋ = (t − ⌊t / 256⌋) / 256` for every 16-bit `t`. Tested for every
/// code at both biases. Lanes of 16 bits hold twice the samples of the 32 bits that
/// `v · 255 + bias` needs.
#[inline(always)]
fn full_scale_to_8bit(v: u16, add: u16) -> u8 {
    let t = v.saturating_add(add);
    ((t - (t >> 8)) >> 8) as u8
}

/// The `add` of [`full_scale_to_8bit`] for a rounding `bias` at the full 16-bit scale,
/// for the biases it covers (other scales and biases take the per-code table).
fn full_scale_add(max: u32, bias: u32) -> Option<u16> {
    match (max, bias) {
        (65535, 0) => Some(0),
        (65535, 32767) => Some(128),
        _ => None,
    }
}

/// Runs `f` with the table of 8-bit values of every code for the scale `m` and rounding
/// `bias` (one division per possible code instead of one per sample: the 8-bit value
/// depends on the code alone). The 64 KiB table (65 536 divisions, ~0.1 ms) is kept per
/// thread for the next frame with the same scale.
fn with_rgb8_lut<T>(m: u32, bias: u32, f: impl FnOnce(&[u8; 1 << 16]) -> T) -> T {
    RGB8_LUT.with(|cache| {
        let mut cache = cache.borrow_mut();
        let lut = match &mut *cache {
            Some((key, lut)) if *key == (m, bias) => lut,
            slot => {
                let mut lut = Box::new([0u8; 1 << 16]);
                // Codes above the scale (a sample above its stated depth that no stage
                // clamped) are white, not wrapped around to dark.
                for (v, e) in lut.iter_mut().enumerate() {
                    *e = (((v as u32).min(m) * 255 + bias) / m) as u8;
                }
                &mut slot.insert(((m, bias), lut)).1
            }
        };
        // A table of exactly 2^16 entries: a u16 index needs no bounds check.
        f(lut)
    })
}

/// An image's rows as interleaved 8-bit RGB, made one at a time for the PNG coder: the
/// same values as [`PipelineOutput::to_rgb8_into`], without the whole 8-bit frame.
pub(crate) struct Rgb8Rows<'a> {
    planes: [&'a [u16]; 3],
    width: usize,
    height: usize,
    /// How the rows are made: arithmetic at the full 16-bit scale (the `add` of
    /// [`full_scale_to_8bit`]), else the per-code table.
    conv: Rgb8Conv<'a>,
}

/// How codes become 8-bit values.
#[derive(Clone, Copy)]
enum Rgb8Conv<'a> {
    /// [`full_scale_to_8bit`] with this `add`.
    Full(u16),
    /// A table over every code.
    Lut(&'a [u8; 1 << 16]),
}

impl pngz::FillRow for Rgb8Rows<'_> {
    fn rows(&self) -> usize {
        self.height
    }

    fn row_len(&self) -> usize {
        3 * self.width
    }

    #[inline(always)]
    fn fill<S: pulp::Simd>(&self, simd: S, y: usize, row: &mut [u8]) {
        let k = y * self.width;
        let rgb = self.planes.map(|p| &p[k..k + self.width]);
        pulp::WithSimd::with_simd(
            Rgb8Run {
                rgb,
                conv: self.conv,
                out: row,
            },
            simd,
        )
    }
}

/// Runs `f` with the conversion to 8 bits for the scale `m` and rounding `bias`:
/// arithmetic where [`full_scale_add`] covers them, else the per-code table.
fn with_rgb8_conv<T>(m: u32, bias: u32, f: impl FnOnce(Rgb8Conv<'_>) -> T) -> T {
    match full_scale_add(m, bias) {
        Some(add) => f(Rgb8Conv::Full(add)),
        None => with_rgb8_lut(m, bias, |lut| f(Rgb8Conv::Lut(lut))),
    }
}

/// A run of planes of 16-bit working codes to interleaved 8-bit RGB, as a `pulp`
/// kernel.
struct Rgb8Run<'a> {
    rgb: [&'a [u16]; 3],
    conv: Rgb8Conv<'a>,
    out: &'a mut [u8],
}

impl pulp::WithSimd for Rgb8Run<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        let Self {
            rgb: [r, g, b],
            conv,
            out,
        } = self;
        let pixels = out.chunks_exact_mut(3).zip(r).zip(g).zip(b);
        match conv {
            Rgb8Conv::Full(add) => {
                for (((px, &r), &g), &b) in pixels {
                    px[0] = full_scale_to_8bit(r, add);
                    px[1] = full_scale_to_8bit(g, add);
                    px[2] = full_scale_to_8bit(b, add);
                }
            }
            Rgb8Conv::Lut(lut) => {
                for (((px, &r), &g), &b) in pixels {
                    px[0] = lut[r as usize];
                    px[1] = lut[g as usize];
                    px[2] = lut[b as usize];
                }
            }
        }
    }
}

/// Plane buffers handed back by [`RgbImage::recycle`], for [`RgbImage::for_overwrite`].
static SPARE_PLANES: std::sync::Mutex<Vec<Vec<u16>>> = std::sync::Mutex::new(Vec::new());
/// Spare planes kept at most (two frames' worth).
const SPARE_PLANES_MAX: usize = 6;

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

    /// An image whose samples are unspecified, for a producer that writes every one:
    /// its planes are buffers an earlier frame handed back with [`RgbImage::recycle`]
    /// where there are any, used without clearing, so a stream of frames does not
    /// fault in and zero fresh memory for every frame. (Debug builds fill recycled
    /// planes with `0xFFFF`, so a sample the producer missed shows in tests.)
    pub fn for_overwrite(width: usize, height: usize) -> Self {
        let n = width * height;
        let mut spare = SPARE_PLANES.lock().unwrap_or_else(|e| e.into_inner());
        // The smallest spare that fits, so that large buffers stay for large frames.
        let mut plane = || match spare
            .iter()
            .enumerate()
            .filter(|(_, p)| p.capacity() >= n)
            .min_by_key(|(_, p)| p.capacity())
            .map(|(i, _)| i)
        {
            Some(i) => {
                let mut p = spare.swap_remove(i);
                if cfg!(debug_assertions) {
                    p.clear();
                }
                p.resize(n, u16::MAX);
                p.truncate(n);
                p
            }
            None => vec![0; n],
        };
        let planes = [plane(), plane(), plane()];
        Self {
            width,
            height,
            planes,
        }
    }

    /// Hands the planes back for reuse by a later [`RgbImage::for_overwrite`] in this
    /// process (the newest few frames' worth are kept; older ones are freed). For callers that
    /// process frame after frame; a one-shot caller simply drops the image.
    pub fn recycle(self) {
        Self::recycle_planes(self.planes);
    }

    /// [`RgbImage::recycle`] for planes already taken out of an image.
    pub fn recycle_planes(planes: [Vec<u16>; 3]) {
        let mut spare = SPARE_PLANES.lock().unwrap_or_else(|e| e.into_inner());
        for p in planes.into_iter().filter(|p| p.capacity() > 0) {
            // The newest are kept: they are the likeliest to be in cache.
            if spare.len() >= SPARE_PLANES_MAX {
                spare.remove(0);
            }
            spare.push(p);
        }
    }

    /// The image turned for display by an EXIF/TIFF `Orientation` (1–8; a DNG's tag
    /// 274), which says where the stored image's first row and column belong:
    /// 1 as stored, 2 mirrored left–right, 3 turned 180°, 4 mirrored top–bottom,
    /// 5 transposed, 6 turned 90° clockwise, 7 transposed across the other diagonal,
    /// 8 turned 90° anticlockwise. 5–8 swap width and height. Any other value is `None`.
    /// Each plane is rebuilt in turn (one plane of extra memory), in 64-pixel blocks so
    /// that the turned cases read and write whole cache lines.
    pub fn oriented(self, orientation: u16) -> Option<Self> {
        if !(1..=8).contains(&orientation) {
            return None;
        }
        let (w, h) = (self.width, self.height);
        if orientation == 1 || w == 0 || h == 0 {
            return Some(self);
        }
        let swap = orientation >= 5;
        let (ow, oh) = if swap { (h, w) } else { (w, h) };
        // Where output pixel (x, y) comes from: stored column and row.
        let source = move |x: usize, y: usize| -> (usize, usize) {
            match orientation {
                2 => (w - 1 - x, y),
                3 => (w - 1 - x, h - 1 - y),
                4 => (x, h - 1 - y),
                5 => (y, x),
                6 => (y, h - 1 - x),
                7 => (w - 1 - y, h - 1 - x),
                _ => (w - 1 - y, x), // 8
            }
        };
        const B: usize = 64;
        let planes = self.planes.map(|src| {
            let mut dst = vec![0u16; ow * oh];
            dst.par_chunks_mut(ow * B)
                .enumerate()
                .for_each(|(band, rows)| {
                    let y0 = band * B;
                    let n = rows.len() / ow;
                    for x0 in (0..ow).step_by(B) {
                        for dy in 0..n {
                            let row = &mut rows[dy * ow..(dy + 1) * ow];
                            for (x, d) in row.iter_mut().enumerate().skip(x0).take(B) {
                                let (sx, sy) = source(x, y0 + dy);
                                *d = src[sy * w + sx];
                            }
                        }
                    }
                });
            dst
        });
        Some(Self {
            width: ow,
            height: oh,
            planes,
        })
    }

    /// The image's rows in parallel, as `(y, [r, g, b])` row slices: the traversal
    /// every row-wise RGB kernel shares.
    pub fn par_rows_mut(
        &mut self,
    ) -> impl IndexedParallelIterator<Item = (usize, [&mut [u16]; 3])> + '_ {
        let w = self.width.max(1);
        let [r, g, b] = &mut self.planes;
        r.par_chunks_mut(w)
            .zip(g.par_chunks_mut(w))
            .zip(b.par_chunks_mut(w))
            .with_min_len(rows_per_task(w))
            .map(|((r, g), b)| [r, g, b])
            .enumerate()
    }

    /// Interleaved 8-bit RGB, each code mapped as `v * 255 / max_value` (truncating,
    /// as the reference does).
    pub fn to_rgb8(&self, max_value: u16) -> Vec<u8> {
        self.to_rgb8_with(max_value, 0)
    }

    /// Interleaved 8-bit RGB, each code mapped to the nearest of 256 levels.
    pub fn to_rgb8_rounded(&self, max_value: u16) -> Vec<u8> {
        self.to_rgb8_with(max_value, max_value.max(1) as u32 / 2)
    }

    fn to_rgb8_with(&self, max_value: u16, bias: u32) -> Vec<u8> {
        let mut out = Vec::new();
        self.to_rgb8_into(max_value, bias, &mut out);
        out
    }

    /// Interleaved 8-bit RGB into `out` (resized to fit; its old contents are all
    /// overwritten, so a buffer reused frame after frame needs no clearing).
    fn to_rgb8_into(&self, max_value: u16, bias: u32, out: &mut Vec<u8>) {
        let m = max_value.max(1) as u32;
        let n = self.width * self.height;
        out.resize(n * 3, 0);
        out.truncate(n * 3);
        let [r, g, b] = &self.planes;
        // At the 16-bit working range (the default profile) the division by 65 535 is
        // exact as shifts and adds, which vectorise; other scales take the table.
        let arch = pulp::Arch::new();
        with_rgb8_conv(m, bias, |conv| {
            out.par_chunks_mut(3 * 4096)
                .enumerate()
                .for_each(|(k, chunk)| {
                    let base = k * 4096;
                    let len = chunk.len() / 3;
                    let rgb = [&r[base..][..len], &g[base..][..len], &b[base..][..len]];
                    arch.dispatch(Rgb8Run {
                        rgb,
                        conv,
                        out: chunk,
                    });
                });
        });
    }

    /// Interleaved 16-bit RGB scaled to the full `0..=65535` range.
    pub fn to_rgb16(&self, max_value: u16) -> Vec<u16> {
        let m = max_value.max(1) as u32;
        let n = self.width * self.height;
        let mut out = Vec::with_capacity(n * 3);
        for j in 0..n {
            for p in &self.planes {
                out.push((((p[j] as u32).min(m) * 65535 + m / 2) / m) as u16);
            }
        }
        out
    }
}

/// Statistics gathered while a frame is processed.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FrameStats {
    /// Per-channel means seen by the reference AWB (after demosaic), R, G, B.
    pub channel_means: [f64; 3],
    /// White-balance gains applied, R, G, B.
    pub wb_gains: [f64; 3],
    /// Samples replaced by defective-pixel correction.
    pub defective_pixels: u64,
}

/// Per-frame metadata the stages may use.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FrameMeta {
    /// White-balance gains recorded with the frame (R, G, B), for `wb.mode = metadata`.
    pub wb_gains: Option<[f32; 3]>,
}

/// Per-frame state shared by the stages.
#[derive(Debug, Clone)]
pub struct FrameContext {
    /// CFA pattern of the input.
    pub pattern: BayerPattern,
    /// Largest code of the current data (`2^bits - 1`, or 65535 once normalised).
    pub max_value: u16,
    /// Metadata of the frame.
    pub meta: FrameMeta,
    /// Statistics filled in by the stages.
    pub stats: FrameStats,
    /// Per-sample work left to the demosaic's input loop (see
    /// [`stages::blc::Normalize::deferred`]): the mosaic is still in raw codes.
    pub(crate) deferred: Option<Deferred>,
}

/// The normalisation and white-balance gains still to apply to the mosaic's samples,
/// per colour (R, G, B): `gain(norm(v))`, as [`stages::blc::Normalize`] and
/// [`stages::wb::WhiteBalance`] would have written them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Deferred {
    pub(crate) norm: [stages::blc::NormCode; 3],
    pub(crate) gains: [f32; 3],
}

impl Deferred {
    /// The code `v` of a sample of colour `c` becomes (top: the working range's).
    #[inline(always)]
    pub(crate) fn code(&self, c: usize, v: u16) -> u16 {
        stages::wb::gain(self.norm[c].code(v), self.gains[c], FULL_SCALE as f32)
    }
}

impl FrameContext {
    /// A context for data of `pattern` with codes up to `max_value`.
    pub fn new(pattern: BayerPattern, max_value: u16) -> Self {
        Self {
            pattern,
            max_value,
            meta: FrameMeta::default(),
            stats: FrameStats::default(),
            deferred: None,
        }
    }
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

/// Result of one run.
#[derive(Debug, Clone)]
pub struct PipelineOutput {
    /// The processed image, codes in `0..=max_value`.
    pub image: RgbImage,
    /// Largest code of `image`.
    pub max_value: u16,
    /// Whether 8-bit output rounds (default profile) or truncates (reference).
    pub round_8bit: bool,
    /// Wall time per stage, in pipeline order.
    pub timings: Vec<(&'static str, Duration)>,
    /// Statistics.
    pub stats: FrameStats,
}

impl PipelineOutput {
    /// Interleaved 8-bit RGB: the reference's truncating `v·255/max`, or rounded.
    pub fn to_rgb8(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.to_rgb8_into(&mut out);
        out
    }

    /// [`PipelineOutput::to_rgb8`] into a buffer that may be reused from frame to frame.
    pub fn to_rgb8_into(&self, out: &mut Vec<u8>) {
        self.image
            .to_rgb8_into(self.max_value, self.rgb8_bias(), out)
    }

    /// The rounding bias of the 8-bit conversion.
    fn rgb8_bias(&self) -> u32 {
        if self.round_8bit {
            self.max_value.max(1) as u32 / 2
        } else {
            0
        }
    }

    /// Runs `f` with the image's rows as 8-bit RGB, made one at a time (the values of
    /// [`PipelineOutput::to_rgb8`]). The planes must hold the image (a row past their
    /// end panics when it is made).
    pub(crate) fn with_rgb8_rows<T>(&self, f: impl FnOnce(&Rgb8Rows<'_>) -> T) -> T {
        let (w, h) = (self.image.width, self.image.height);
        let [r, g, b] = &self.image.planes;
        let (m, bias) = (self.max_value.max(1) as u32, self.rgb8_bias());
        let planes: [&[u16]; 3] = [r, g, b];
        with_rgb8_conv(m, bias, |conv| {
            f(&Rgb8Rows {
                planes,
                width: w,
                height: h,
                conv,
            })
        })
    }

    /// Interleaved 16-bit RGB, full range.
    pub fn to_rgb16(&self) -> Vec<u16> {
        self.image.to_rgb16(self.max_value)
    }
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
            .field("profile", &self.config.profile)
            .field("stages", &self.stage_names())
            .finish()
    }
}

/// The reference bilateral applied to 16-bit data by quantising to 12 bits, so its
/// weight tables keep their reference size (`denoise.method = "bilateral"` in the
/// default profile).
struct Bilateral16(stages::bilateral::Bilateral);

impl RgbStage for Bilateral16 {
    fn name(&self) -> &'static str {
        "denoise"
    }
    fn apply(&self, mut img: RgbImage, ctx: &mut FrameContext) -> RgbImage {
        let shift = 16 - 12;
        img.planes
            .iter_mut()
            .for_each(|p| p.iter_mut().for_each(|v| *v >>= shift));
        let saved = ctx.max_value;
        ctx.max_value = 4095;
        let mut out = self.0.apply(img, ctx);
        ctx.max_value = saved;
        out.planes
            .iter_mut()
            .for_each(|p| p.iter_mut().for_each(|v| *v = (*v << shift) | (*v >> 8)));
        out
    }
}

/// A stage whose work an earlier stage does (the tone curve, folded into RCD's output;
/// the unsharp mask, fused into the luma/chroma denoise).
/// It stays in the stage list and the timings, where its time is near zero and counted
/// in the stage that does the work.
struct Folded(&'static str);

impl RgbStage for Folded {
    fn name(&self) -> &'static str {
        self.0
    }
    fn apply(&self, img: RgbImage, _ctx: &mut FrameContext) -> RgbImage {
        img
    }
}

impl Pipeline {
    /// Builds the stages `config` selects. Lookup tables are built here, once.
    pub fn new(config: &IspConfig) -> Result<Self, IspError> {
        config.validate()?;
        let active = config.active_stages();
        let on = |s: StageName| active.contains(&s);
        let max = config.max_value();
        let mut raw_stages: Vec<Box<dyn RawStage>> = Vec::new();
        let mut rgb_stages: Vec<Box<dyn RgbStage>> = Vec::new();
        let demosaic: Box<dyn DemosaicStage>;
        match config.profile {
            Profile::Reference => {
                if on(StageName::Blc) {
                    let black = config.blc.black.map(|b| b[0]).unwrap_or(64);
                    raw_stages.push(Box::new(stages::blc::BlackLevel { black }));
                }
                demosaic = Box::new(stages::demosaic::Bilinear::default());
                let gamma = on(StageName::Tone).then(|| stages::gamma::GammaLut::new(2.2, max));
                if on(StageName::Wb) {
                    // The gamma table is folded into the white balance's per-code tables:
                    // one pass over the image less. `tone` stays in the timings (~0 ms).
                    rgb_stages.push(Box::new(stages::awb::GrayWorld {
                        then: gamma.as_ref().map(|g| g.map().clone()),
                    }));
                    if gamma.is_some() {
                        rgb_stages.push(Box::new(Folded("tone")));
                    }
                } else if let Some(g) = gamma {
                    rgb_stages.push(Box::new(g));
                }
                if on(StageName::Denoise) {
                    // Below 12 bits one code of the bilateral can become more than one
                    // 8-bit code after the sharpen, so the ±1 bar needs the exact path.
                    rgb_stages.push(Box::new(
                        stages::bilateral::Bilateral::new(2.0, 30.0)
                            .bit_exact(config.denoise.exact || config.bits < 12),
                    ));
                }
                if on(StageName::Sharpen) {
                    rgb_stages.push(Box::new(stages::sharpen::Sharpen3x3));
                }
            }
            Profile::Default => {
                if on(StageName::Dpc) {
                    raw_stages.push(Box::new(stages::dpc::DefectivePixels {
                        threshold: config.dpc.threshold,
                    }));
                }
                // Always normalise to the 16-bit working range; with blc off, black is 0.
                let (black, white) = if on(StageName::Blc) {
                    (
                        config.blc.black.unwrap_or([0; 3]),
                        config.blc.white.unwrap_or(max),
                    )
                } else {
                    ([0; 3], max)
                };
                // RCD's input loop and Malvar's row split normalise and white-balance
                // each sample as they read it (the white balance's statistics normalise
                // as they read too): two passes over the mosaic less. Not with lens
                // shading in between.
                let defer = matches!(
                    config.demosaic.method,
                    DemosaicMethod::Rcd | DemosaicMethod::Malvar
                ) && !on(StageName::Lsc);
                let normalize = if defer {
                    stages::blc::Normalize::deferred(black, white, max)
                } else {
                    stages::blc::Normalize::new(config.pattern, black, white, max)
                };
                raw_stages.push(Box::new(if on(StageName::Blc) {
                    normalize
                } else {
                    normalize.without_blc()
                }));
                if on(StageName::Lsc) {
                    let map = match &config.lsc.map {
                        Some(p) => stages::lsc::GainMap::from_file(p)?,
                        None => stages::lsc::GainMap::Radial(config.lsc.strength),
                    };
                    raw_stages.push(Box::new(stages::lsc::LensShading { map }));
                }
                if on(StageName::Wb) {
                    raw_stages.push(Box::new(stages::wb::WhiteBalance {
                        mode: config.wb.mode,
                        gains: config.wb.gains,
                    }));
                }
                let ccm = on(StageName::Ccm).then(|| {
                    stages::color::ColorMatrix::new(config.ccm.matrix, config.ccm.saturation)
                });
                let tone = on(StageName::Tone)
                    .then(|| stages::color::ToneLut::new(&config.tone, FULL_SCALE));
                // The demosaic maps its output rows through the tone curve as it writes
                // them when no colour matrix runs in between: one pass over the image
                // less.
                let fold = ccm.as_ref().is_none_or(|m| m.is_identity());
                let curve = tone.as_ref().filter(|_| fold).map(|t| t.map().clone());
                demosaic = match config.demosaic.method {
                    DemosaicMethod::Bilinear => Box::new(stages::demosaic::Bilinear { curve }),
                    DemosaicMethod::Malvar => Box::new(stages::malvar::Malvar { curve }),
                    DemosaicMethod::Rcd => Box::new(stages::rcd::Rcd { curve }),
                };
                if let Some(m) = ccm {
                    rgb_stages.push(Box::new(m));
                }
                match tone {
                    Some(_) if fold => rgb_stages.push(Box::new(Folded("tone"))),
                    Some(t) => rgb_stages.push(Box::new(t)),
                    None => {}
                }
                let denoise = on(StageName::Denoise).then_some(config.denoise.method);
                let sharpen = on(StageName::Sharpen).then_some(config.sharpen.method);
                let lumachroma = stages::denoise::LumaChroma {
                    luma_sigma: config.denoise.luma_sigma,
                    chroma: config.denoise.chroma,
                };
                let unsharp = stages::sharpen::Unsharp {
                    amount: config.sharpen.amount,
                    threshold: config.sharpen.threshold,
                };
                match denoise {
                    // The unsharp mask runs on the denoised rows as they come: the
                    // denoised frame is never written out and read back. `sharpen`
                    // stays in the stage list and the timings (~0 ms, its time counted
                    // in `denoise`).
                    Some(DenoiseMethod::Lumachroma) if sharpen == Some(SharpenMethod::Unsharp) => {
                        rgb_stages.push(Box::new(stages::denoise::DenoiseSharpen {
                            denoise: lumachroma,
                            sharpen: unsharp,
                        }));
                        rgb_stages.push(Box::new(Folded("sharpen")));
                    }
                    _ => {
                        match denoise {
                            Some(DenoiseMethod::Lumachroma) => {
                                rgb_stages.push(Box::new(lumachroma))
                            }
                            Some(DenoiseMethod::Bilateral) => {
                                rgb_stages.push(Box::new(Bilateral16(
                                    stages::bilateral::Bilateral::new(2.0, 30.0)
                                        .bit_exact(config.denoise.exact),
                                )))
                            }
                            None => {}
                        }
                        match sharpen {
                            Some(SharpenMethod::Unsharp) => rgb_stages.push(Box::new(unsharp)),
                            Some(SharpenMethod::Kernel3x3) => {
                                rgb_stages.push(Box::new(stages::sharpen::Sharpen3x3))
                            }
                            None => {}
                        }
                    }
                }
            }
        }
        Ok(Self {
            config: config.clone(),
            raw_stages,
            demosaic,
            rgb_stages,
        })
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

    /// The white-balance gains (R, G, B) this pipeline would apply to `raw`, for a
    /// DNG's AsShotNeutral when no image is wanted: where the white balance works on
    /// the mosaic (the default profile) only the stages up to it run; otherwise (the
    /// reference profile's gray world, after the demosaic) the whole pipeline does.
    /// `None` when no white balance runs.
    pub fn wb_gains(&self, mut raw: RawPlane, meta: FrameMeta) -> Option<[f64; 3]> {
        if let Some(last) = self.raw_stages.iter().position(|s| s.name() == "wb") {
            let mut ctx = FrameContext::new(self.config.pattern, self.config.max_value());
            ctx.meta = meta;
            for s in &self.raw_stages[..=last] {
                s.apply(&mut raw, &mut ctx);
            }
            return Some(ctx.stats.wb_gains);
        }
        self.rgb_stages
            .iter()
            .any(|s| s.name() == "wb")
            .then(|| self.run_with_meta(raw, meta).stats.wb_gains)
    }

    /// Runs every stage on `raw`.
    pub fn run(&self, raw: RawPlane) -> PipelineOutput {
        self.run_with_meta(raw, FrameMeta::default())
    }

    /// Runs every stage on `raw`, with the frame's metadata.
    pub fn run_with_meta(&self, mut raw: RawPlane, meta: FrameMeta) -> PipelineOutput {
        let mut ctx = FrameContext::new(self.config.pattern, self.config.max_value());
        ctx.meta = meta;
        let mut timings = Vec::with_capacity(10);
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
            max_value: ctx.max_value,
            round_8bit: self.config.profile != Profile::Reference,
            timings,
            stats: ctx.stats,
        }
    }
}

#[cfg(test)]
mod tests;
