//! Frame sources for rawlink: a simulated sensor that reproduces the reference
//! driver (`sim`), a realistic noisy scene (`sim:scene`), a poll()/read() char
//! device (`chardev:PATH`), headerless file replay (`file:GLOB`) and V4L2 cameras
//! (`v4l2:/dev/videoN`, Linux).
//!
//! Sources are blocking and are driven from a dedicated thread:
//!
//! ```
//! use std::sync::atomic::AtomicBool;
//! use rawlink_source::{open, SourceOptions, SourceSpec};
//!
//! let opts = SourceOptions { interval: std::time::Duration::ZERO, ..SourceOptions::default() };
//! let mut src = open(&"sim".parse::<SourceSpec>().unwrap(), &opts).unwrap();
//! let stop = AtomicBool::new(false);
//! let frame = src.next_frame(&stop).unwrap().unwrap();
//! assert_eq!((frame.header.seq, frame.header.width), (1, 640));
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod chardev;
mod file;
mod scene;
mod sim;
pub mod v4l2;

pub use chardev::CharDevSource;
pub use file::FileSource;
pub use scene::SceneSource;
pub use sim::{driver_sample, SimSource};

use rawlink_frame::{BayerPattern, ClockId, Frame, FrameHeader, PixelFormat};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The reference driver's black level at 12 bits (the default of `sim`, `chardev:` and
/// `file:` sources, scaled to their depth).
pub const REFERENCE_BLACK_12: u16 = 64;

/// The reference driver's black level scaled to `bits` (64 at 12 bits, 16 at 10, 1024
/// at 16): what `sim`, `chardev:` and `file:` frames carry unless told otherwise, and so
/// the black level assumed for headerless samples.
pub fn reference_black_level(bits: u8) -> u16 {
    sim::scale_from_12(REFERENCE_BLACK_12, bits)
}

/// Errors from sources.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The `--source` string could not be parsed.
    #[error("bad source spec {0:?}: expected sim, sim:scene, chardev:PATH, file:GLOB or v4l2:/dev/videoN")]
    BadSpec(String),
    /// Options are inconsistent.
    #[error("bad source options: {0}")]
    BadOptions(String),
    /// I/O on a device or file failed.
    #[error("{path}: {error}")]
    Io {
        /// The device or file.
        path: PathBuf,
        /// The OS error.
        /// The OS error (in the message itself, so it is not also a `source`, which
        /// would print it twice in an error chain).
        error: std::io::Error,
    },
    /// A file does not have the size the geometry implies.
    #[error("{path}: {actual} bytes, but {width}x{height} 16-bit samples need {expected}")]
    FileSize {
        /// The file.
        path: PathBuf,
        /// Its size.
        actual: u64,
        /// The size required.
        expected: u64,
        /// Width.
        width: u32,
        /// Height.
        height: u32,
    },
    /// A file or device frame holds a sample above `2^bits - 1`.
    #[error("{path}: sample {value} at byte {offset} does not fit in {bits} bits (--bits)")]
    SampleRange {
        /// The file or device.
        path: PathBuf,
        /// The sample.
        value: u16,
        /// Its byte offset in the file (in the frame, for a device).
        offset: u64,
        /// The declared depth.
        bits: u8,
    },
    /// A V4L2 device error, with the device path and what was being done.
    #[error("{0}")]
    Device(String),
    /// The glob matched nothing or was invalid.
    #[error("file source {0:?} matches no files")]
    NoFiles(String),
    /// Internal consistency error building a frame.
    #[error(transparent)]
    Frame(#[from] rawlink_frame::FrameError),
}

/// The first little-endian `u16` sample of `data` above `max`, as (byte offset, value).
/// The maximum of each block is taken first (a loop that vectorises), so a frame whose
/// samples all fit costs one pass and no per-sample branch.
pub fn first_above(data: &[u8], max: u16) -> Option<(u64, u16)> {
    const BLOCK: usize = 4096;
    data.chunks(BLOCK).enumerate().find_map(|(b, block)| {
        let top = block
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .fold(0u16, u16::max);
        if top <= max {
            return None;
        }
        block
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .enumerate()
            .find(|&(_, v)| v > max)
            .map(|(i, v)| ((b * BLOCK + 2 * i) as u64, v))
    })
}

/// Which source to open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSpec {
    /// The reference driver's test pattern.
    Sim,
    /// A rendered, noisy scene.
    SimScene,
    /// A poll()/read() character device or FIFO.
    CharDev(PathBuf),
    /// Headerless `.raw` files matching a glob, replayed in name order.
    File(String),
    /// A V4L2 camera, e.g. `v4l2:/dev/video0`.
    V4l2(PathBuf),
}

impl FromStr for SourceSpec {
    type Err = SourceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || SourceError::BadSpec(s.to_string());
        match s.split_once(':') {
            None if s == "sim" => Ok(Self::Sim),
            Some(("sim", "scene")) => Ok(Self::SimScene),
            Some(("chardev", p)) if !p.is_empty() => Ok(Self::CharDev(PathBuf::from(p))),
            Some(("file", g)) if !g.is_empty() => Ok(Self::File(g.to_string())),
            Some(("v4l2", p)) if !p.is_empty() => Ok(Self::V4l2(PathBuf::from(p))),
            _ => Err(bad()),
        }
    }
}

impl std::fmt::Display for SourceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sim => f.write_str("sim"),
            Self::SimScene => f.write_str("sim:scene"),
            Self::CharDev(p) => write!(f, "chardev:{}", p.display()),
            Self::File(g) => write!(f, "file:{g}"),
            Self::V4l2(p) => write!(f, "v4l2:{}", p.display()),
        }
    }
}

/// Geometry and pacing shared by all sources.
#[derive(Debug, Clone)]
pub struct SourceOptions {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// CFA pattern.
    pub pattern: BayerPattern,
    /// Bit depth, 8..=16.
    pub bits: u8,
    /// Time between frames for paced sources (sim, scene, file); zero = as fast as
    /// possible. Kept to the nanosecond (`--fps 700` is 1.428571 ms, not 1 ms).
    pub interval: Duration,
    /// Replay files in a loop (file source).
    pub looped: bool,
    /// V4L2 capture options.
    pub v4l2: v4l2::V4l2Options,
    /// Black level written into every frame's header, overriding the source's own
    /// (sim and chardev/file: the reference driver's 64 at 12 bits, scaled to `bits`;
    /// sim:scene: 256 at 12 bits, and the scene is rendered on it; v4l2: 0).
    pub black_level: Option<u16>,
    /// White level written into every frame's header (default `2^bits - 1`).
    pub white_level: Option<u16>,
}

impl Default for SourceOptions {
    fn default() -> Self {
        Self {
            width: 640,
            height: 480,
            pattern: BayerPattern::Rggb,
            bits: 12,
            interval: Duration::from_millis(2000),
            looped: false,
            v4l2: v4l2::V4l2Options::default(),
            black_level: None,
            white_level: None,
        }
    }
}

impl SourceOptions {
    /// The pixel format, validated.
    pub fn format(&self) -> Result<PixelFormat, SourceError> {
        Ok(PixelFormat::unpacked(self.pattern, self.bits)?)
    }

    /// A header template for frames of these options.
    pub fn header_template(&self) -> Result<FrameHeader, SourceError> {
        let h = FrameHeader::new(0, self.width, self.height, self.format()?);
        h.validate()?;
        Ok(h)
    }

    /// [`header_template`](Self::header_template) with the source's default black
    /// level `default_black_12` (in 12-bit units, scaled to `bits`), then the
    /// `black_level`/`white_level` overrides, checked.
    pub(crate) fn leveled_template(
        &self,
        default_black_12: u16,
    ) -> Result<FrameHeader, SourceError> {
        let mut h = self.header_template()?;
        h.black_level = sim::scale_from_12(default_black_12, self.bits);
        apply_levels(&mut h, self.black_level, self.white_level)?;
        Ok(h)
    }
}

/// Sets the given black and white levels in `h` (those that are `Some`) and checks
/// that `black < white <= 2^bits - 1`.
pub fn apply_levels(
    h: &mut FrameHeader,
    black: Option<u16>,
    white: Option<u16>,
) -> Result<(), SourceError> {
    let max = h.format.max_value();
    if let Some(w) = white {
        if w > max {
            return Err(SourceError::BadOptions(format!(
                "white level {w} does not fit in {} bits (at most {max})",
                h.format.bits
            )));
        }
        h.white_level = w;
    }
    if let Some(b) = black {
        h.black_level = b;
    }
    if h.black_level >= h.white_level {
        return Err(SourceError::BadOptions(format!(
            "black level {} must be below the white level {}",
            h.black_level, h.white_level
        )));
    }
    Ok(())
}

/// A blocking producer of frames.
pub trait FrameSource: Send {
    /// Description for logs and the stream-start message.
    fn describe(&self) -> String;
    /// Header every frame of this stream will share (seq 0, no timestamp).
    fn stream_header(&self) -> FrameHeader;
    /// Nominal interval between frames, if the source is paced.
    fn interval(&self) -> Duration;
    /// True if frames arrive in real time and cannot wait (a sensor); false if the
    /// consumer can pace the source (file replay).
    fn is_live(&self) -> bool {
        true
    }
    /// Blocks until the next frame, the end of the stream (`Ok(None)`) or `stop` is set
    /// (also `Ok(None)`).
    fn next_frame(&mut self, stop: &AtomicBool) -> Result<Option<Frame>, SourceError>;
}

/// Opens the source named by `spec`.
pub fn open(spec: &SourceSpec, opts: &SourceOptions) -> Result<Box<dyn FrameSource>, SourceError> {
    Ok(match spec {
        SourceSpec::Sim => Box::new(SimSource::new(opts)?),
        SourceSpec::SimScene => Box::new(SceneSource::new(opts)?),
        SourceSpec::CharDev(p) => Box::new(CharDevSource::open(p, opts)?),
        SourceSpec::File(g) => Box::new(FileSource::new(g, opts)?),
        #[cfg(target_os = "linux")]
        SourceSpec::V4l2(p) => Box::new(
            v4l2::V4l2Source::new(
                v4l2::DeviceBackend::open(p)?,
                p,
                opts.width,
                opts.height,
                &opts.v4l2,
            )?
            .with_levels(opts.black_level, opts.white_level)?,
        ),
        #[cfg(not(target_os = "linux"))]
        SourceSpec::V4l2(_) => {
            return Err(SourceError::BadSpec("V4L2 needs Linux".into()));
        }
    })
}

/// `CLOCK_MONOTONIC` in ns (the clock V4L2 drivers stamp buffers with).
pub fn monotonic_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}

/// Current `CLOCK_REALTIME` in nanoseconds since the Unix epoch.
pub fn now_realtime_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Stamps a header with the capture time.
pub(crate) fn stamp(mut h: FrameHeader, seq: u64) -> FrameHeader {
    h.seq = seq;
    h.timestamp_ns = now_realtime_ns();
    h.clock = ClockId::Realtime;
    h
}

/// Deadline-based pacing that does not drift and wakes early when stopped.
#[derive(Debug)]
pub(crate) struct Pacer {
    interval: Duration,
    next: Option<Instant>,
}

impl Pacer {
    pub(crate) fn new(interval: Duration) -> Self {
        Self {
            interval,
            next: None,
        }
    }

    /// Waits for the next tick; the first tick is immediate. Returns false if stopped.
    pub(crate) fn wait(&mut self, stop: &AtomicBool) -> bool {
        let now = Instant::now();
        let due = *self.next.get_or_insert(now);
        loop {
            if stop.load(Ordering::Relaxed) {
                return false;
            }
            let now = Instant::now();
            if now >= due {
                break;
            }
            std::thread::sleep((due - now).min(Duration::from_millis(20)));
        }
        // If we fell behind by more than one interval, do not try to catch up in a burst.
        // An interval too long for an Instant (`--interval-ms` near u64::MAX) is a year.
        let next = due
            .checked_add(self.interval)
            .unwrap_or_else(|| due + Duration::from_secs(365 * 86_400));
        self.next = Some(if next < Instant::now() {
            Instant::now()
        } else {
            next
        });
        true
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    proptest! {
        /// Any `--source` text is parsed or refused, never a panic; what is accepted
        /// prints back as the same text.
        #[test]
        fn source_specs_parse_or_fail_and_round_trip(s in "(sim|chardev|file|v4l2|x)?(:[a-z/*é.]{0,12})?") {
            if let Ok(spec) = s.parse::<SourceSpec>() {
                prop_assert_eq!(spec.to_string(), s);
            }
        }

        /// The block-wise scan finds the same first sample above the maximum as a plain
        /// one, on any bytes (odd lengths: the last byte is not a sample).
        #[test]
        fn first_above_equals_a_plain_scan(
            data in proptest::collection::vec(any::<u8>(), 0..20000),
            max in any::<u16>(),
        ) {
            let want = data
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .enumerate()
                .find(|&(_, v)| v > max)
                .map(|(i, v)| (2 * i as u64, v));
            prop_assert_eq!(first_above(&data, max), want);
        }
    }

    use super::*;

    #[test]
    fn spec_parsing() {
        assert_eq!("sim".parse::<SourceSpec>().unwrap(), SourceSpec::Sim);
        assert_eq!(
            "sim:scene".parse::<SourceSpec>().unwrap(),
            SourceSpec::SimScene
        );
        assert_eq!(
            "chardev:/dev/camera".parse::<SourceSpec>().unwrap(),
            SourceSpec::CharDev("/dev/camera".into())
        );
        assert_eq!(
            "file:caps/*.raw".parse::<SourceSpec>().unwrap(),
            SourceSpec::File("caps/*.raw".into())
        );
        for bad in [
            "",
            "sim:",
            "sim:foo",
            "v4l3:/dev/video0",
            "chardev:",
            "file:",
        ] {
            assert!(bad.parse::<SourceSpec>().is_err(), "{bad}");
        }
        assert_eq!(SourceSpec::SimScene.to_string(), "sim:scene");
    }

    #[test]
    fn pacer_keeps_sub_millisecond_intervals() {
        // 50 ticks 300 µs apart take at least 49 intervals: an interval rounded to
        // whole milliseconds (0 ms) would take none.
        let stop = AtomicBool::new(false);
        let mut p = Pacer::new(Duration::from_micros(300));
        let t = Instant::now();
        for _ in 0..50 {
            assert!(p.wait(&stop));
        }
        assert!(
            t.elapsed() >= Duration::from_micros(300 * 49),
            "{:?}",
            t.elapsed()
        );
        // An interval too long for an Instant does not panic.
        let mut p = Pacer::new(Duration::MAX);
        assert!(p.wait(&stop));
    }

    #[test]
    fn levels_are_checked_against_the_depth() {
        let opts = SourceOptions {
            bits: 12,
            ..Default::default()
        };
        let h = opts.leveled_template(REFERENCE_BLACK_12).unwrap();
        assert_eq!((h.black_level, h.white_level), (64, 4095));
        let h = SourceOptions {
            bits: 16,
            ..opts.clone()
        }
        .leveled_template(REFERENCE_BLACK_12)
        .unwrap();
        assert_eq!((h.black_level, h.white_level), (1024, 65535));
        for (b, w, want) in [
            (
                Some(4095),
                None,
                "black level 4095 must be below the white level 4095",
            ),
            (
                None,
                Some(4096),
                "white level 4096 does not fit in 12 bits (at most 4095)",
            ),
            (
                None,
                Some(64),
                "black level 64 must be below the white level 64",
            ),
        ] {
            let o = SourceOptions {
                black_level: b,
                white_level: w,
                ..opts.clone()
            };
            let e = o
                .leveled_template(REFERENCE_BLACK_12)
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{e}");
        }
    }

    #[test]
    fn pacer_is_stoppable() {
        let stop = AtomicBool::new(false);
        let mut p = Pacer::new(Duration::from_secs(3600));
        assert!(p.wait(&stop), "first tick is immediate");
        stop.store(true, Ordering::Relaxed);
        let t = Instant::now();
        assert!(!p.wait(&stop));
        assert!(t.elapsed() < Duration::from_secs(1));
    }
}
