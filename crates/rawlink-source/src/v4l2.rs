//! V4L2 capture (`--source v4l2:/dev/videoN`): Bayer formats, mmap streaming, driver
//! sequence numbers and timestamps, exposure and gain controls.
//!
//! The capture logic ([`V4l2Source`]) talks to a [`Backend`]; the real one
//! ([`DeviceBackend`]) wraps the maintained `v4l` crate, which owns every ioctl and
//! mmap (rawlink itself has no unsafe code). Tests drive the same logic through a fake
//! backend: format negotiation, buffer cycling and sequence-gap counting.

use crate::{now_realtime_ns, FrameSource, SourceError};
use bytes::Bytes;
use rawlink_frame::{ClockId, Frame, FrameHeader, PixelFormat};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

/// V4L2 control ids rawlink reads into frame metadata (from `videodev2.h`).
pub mod cid {
    /// `V4L2_CID_EXPOSURE` (driver units, usually lines).
    pub const EXPOSURE: u32 = 0x0098_0911;
    /// `V4L2_CID_GAIN`.
    pub const GAIN: u32 = 0x0098_0913;
    /// `V4L2_CID_EXPOSURE_ABSOLUTE` (units of 100 µs).
    pub const EXPOSURE_ABSOLUTE: u32 = 0x009a_0902;
    /// `V4L2_CID_ANALOGUE_GAIN`.
    pub const ANALOGUE_GAIN: u32 = 0x009e_0903;
}

/// What `VIDIOC_QUERYCAP` says.
#[derive(Debug, Clone, Default)]
pub struct DeviceInfo {
    /// Driver name, e.g. `vivid`, `unicam`.
    pub driver: String,
    /// Card (device) name.
    pub card: String,
    /// Bus info.
    pub bus: String,
    /// It can capture video (single-planar).
    pub capture: bool,
}

/// One integer control.
#[derive(Debug, Clone, PartialEq)]
pub struct ControlInfo {
    /// V4L2 control id.
    pub id: u32,
    /// Name as the driver gives it, e.g. `Exposure`.
    pub name: String,
    /// Range and default.
    pub min: i64,
    /// Largest value.
    pub max: i64,
    /// Default value.
    pub default: i64,
}

impl ControlInfo {
    /// The name as `--ctrl` takes it: lower case, words joined by `_`.
    pub fn key(&self) -> String {
        control_key(&self.name)
    }
}

fn control_key(name: &str) -> String {
    name.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_ascii_lowercase)
        .collect::<Vec<_>>()
        .join("_")
}

/// The format the driver agreed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    /// Fourcc.
    pub fourcc: [u8; 4],
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Bytes per line.
    pub stride: u32,
}

/// A dequeued buffer's metadata.
#[derive(Debug, Clone, Copy, Default)]
pub struct BufferMeta {
    /// Driver sequence number.
    pub sequence: u32,
    /// Capture time from the driver, ns on `CLOCK_MONOTONIC` (0 if none).
    pub timestamp_ns: u64,
    /// Bytes of image data in the buffer.
    pub bytesused: u32,
}

/// The device operations capture needs; [`DeviceBackend`] is the real one.
pub trait Backend: Send {
    /// Device identity (`VIDIOC_QUERYCAP`); an error means it is not a V4L2 device.
    fn info(&self) -> io::Result<DeviceInfo>;
    /// Fourccs the device can capture, in the driver's order.
    fn formats(&self) -> io::Result<Vec<[u8; 4]>>;
    /// Discrete frame sizes for a fourcc (empty if the driver gives ranges).
    fn sizes(&self, fourcc: [u8; 4]) -> io::Result<Vec<(u32, u32)>>;
    /// Asks for a format; returns what the driver chose.
    fn set_format(&mut self, fourcc: [u8; 4], width: u32, height: u32) -> io::Result<Negotiated>;
    /// Integer controls.
    fn controls(&self) -> io::Result<Vec<ControlInfo>>;
    /// Reads a control.
    fn get_control(&self, id: u32) -> io::Result<i64>;
    /// Sets a control.
    fn set_control(&mut self, id: u32, value: i64) -> io::Result<()>;
    /// Allocates and maps `buffers` buffers, queues them and starts streaming.
    fn start(&mut self, buffers: u32) -> io::Result<()>;
    /// Waits up to `timeout` for a filled buffer, copies it out and gives the buffer
    /// back to the driver. `Ok(None)`: nothing within the timeout.
    fn next(&mut self, timeout: Duration) -> io::Result<Option<(Vec<u8>, BufferMeta)>>;
}

/// V4L2 options from the command line.
#[derive(Debug, Clone, Default)]
pub struct V4l2Options {
    /// `--format`: the fourcc to capture (default: the deepest Bayer format offered).
    pub format: Option<[u8; 4]>,
    /// `--ctrl name=value`, applied in order before streaming.
    pub ctrls: Vec<(String, i64)>,
    /// mmap buffers (`--buffers`).
    pub buffers: u32,
}

/// Captures Bayer frames from a V4L2 device.
pub struct V4l2Source<B: Backend> {
    backend: B,
    path: PathBuf,
    info: DeviceInfo,
    template: FrameHeader,
    fourcc: [u8; 4],
    started: bool,
    buffers: u32,
    last_sequence: Option<u32>,
    dropped: u64,
    exposure: Option<(u32, bool)>,
    gain: Option<(u32, i64)>,
}

/// The Bayer fourcc to use: `wanted` if the device offers it, else the deepest Bayer
/// format offered (packed before unpacked at the same depth: fewer bytes to move).
pub fn choose_format(offered: &[[u8; 4]], wanted: Option<[u8; 4]>) -> Result<[u8; 4], String> {
    let bayer: Vec<([u8; 4], PixelFormat)> = offered
        .iter()
        .filter_map(|cc| PixelFormat::from_fourcc(*cc).map(|f| (*cc, f)))
        .collect();
    let names = |v: &[[u8; 4]]| {
        v.iter()
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if let Some(w) = wanted {
        if PixelFormat::from_fourcc(w).is_none() {
            return Err(format!(
                "{} is not a Bayer format rawlink reads",
                String::from_utf8_lossy(&w)
            ));
        }
        if bayer.iter().any(|(cc, _)| *cc == w) {
            return Ok(w);
        }
        return Err(format!(
            "the device does not offer {}; it offers: {}",
            String::from_utf8_lossy(&w),
            names(offered)
        ));
    }
    bayer
        .iter()
        .max_by_key(|(_, f)| (f.bits, f.packing != rawlink_frame::Packing::U16Le))
        .map(|(cc, _)| *cc)
        .ok_or_else(|| format!("no Bayer format offered; it offers: {}", names(offered)))
}

fn io_err(path: &Path, what: &str, e: io::Error) -> SourceError {
    let hint = match e.raw_os_error() {
        Some(16) => " (the device is busy: another program is capturing from it)",
        Some(2) => " (no such device)",
        Some(13) => " (permission denied: is the user in the video group?)",
        Some(25) => " (not a V4L2 device)",
        _ => "",
    };
    SourceError::Device(format!("{}: {what}: {e}{hint}", path.display()))
}

impl<B: Backend> V4l2Source<B> {
    /// Negotiates a Bayer format of about `width`×`height` and applies the controls.
    pub fn new(
        mut backend: B,
        path: &Path,
        width: u32,
        height: u32,
        opts: &V4l2Options,
    ) -> Result<Self, SourceError> {
        let info = backend
            .info()
            .map_err(|e| io_err(path, "not a V4L2 device (VIDIOC_QUERYCAP)", e))?;
        if !info.capture {
            return Err(SourceError::BadOptions(format!(
                "{} ({}) cannot capture video",
                path.display(),
                info.card
            )));
        }
        let offered = backend
            .formats()
            .map_err(|e| io_err(path, "listing formats", e))?;
        let fourcc = choose_format(&offered, opts.format).map_err(|m| {
            SourceError::BadOptions(format!("{} ({}): {m}", path.display(), info.card))
        })?;
        let n = backend
            .set_format(fourcc, width, height)
            .map_err(|e| io_err(path, "setting the format", e))?;
        if n.fourcc != fourcc {
            return Err(SourceError::BadOptions(format!(
                "{}: asked for {}, the driver chose {}",
                path.display(),
                String::from_utf8_lossy(&fourcc),
                String::from_utf8_lossy(&n.fourcc)
            )));
        }
        if (n.width, n.height) != (width, height) {
            tracing::info!(
                "{}: the driver chose {}x{} (asked for {width}x{height})",
                path.display(),
                n.width,
                n.height
            );
        }
        let format = PixelFormat::from_fourcc(fourcc).expect("chosen from Bayer formats");
        let mut template = FrameHeader::new(0, n.width, n.height, format);
        if n.stride >= template.stride {
            template.stride = n.stride;
        }
        template.validate()?;
        let controls = backend
            .controls()
            .map_err(|e| io_err(path, "listing controls", e))?;
        for (name, value) in &opts.ctrls {
            let key = control_key(name);
            let c = controls.iter().find(|c| c.key() == key).ok_or_else(|| {
                SourceError::BadOptions(format!(
                    "{}: no control {name:?}; controls: {}",
                    path.display(),
                    controls
                        .iter()
                        .map(|c| c.key())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?;
            if !(c.min..=c.max).contains(value) {
                return Err(SourceError::BadOptions(format!(
                    "{}: {} must be in {}..={}, got {value}",
                    path.display(),
                    c.key(),
                    c.min,
                    c.max
                )));
            }
            backend
                .set_control(c.id, *value)
                .map_err(|e| io_err(path, &format!("setting {}", c.key()), e))?;
        }
        let has = |id: u32| controls.iter().find(|c| c.id == id);
        let exposure = has(cid::EXPOSURE_ABSOLUTE)
            .map(|c| (c.id, true))
            .or_else(|| has(cid::EXPOSURE).map(|c| (c.id, false)));
        let gain = has(cid::ANALOGUE_GAIN)
            .or_else(|| has(cid::GAIN))
            .map(|c| (c.id, c.default.max(1)));
        Ok(Self {
            backend,
            path: path.to_path_buf(),
            info,
            template,
            fourcc,
            started: false,
            buffers: opts.buffers.max(2),
            last_sequence: None,
            dropped: 0,
            exposure,
            gain,
        })
    }

    /// Overrides the black and white levels of every frame (the driver reports none:
    /// black 0 and white `2^bits - 1` otherwise); checked against the negotiated depth.
    pub fn with_levels(
        mut self,
        black: Option<u16>,
        white: Option<u16>,
    ) -> Result<Self, SourceError> {
        crate::apply_levels(&mut self.template, black, white)?;
        Ok(self)
    }

    /// Frames the driver dropped (gaps in its sequence numbers) so far.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Fills exposure (µs) and gain from the device's controls, where it has them.
    fn read_controls(&self, h: &mut FrameHeader) {
        if let Some((id, absolute)) = self.exposure {
            if let Ok(v) = self.backend.get_control(id) {
                // EXPOSURE_ABSOLUTE is in 100 µs units; plain EXPOSURE is driver units.
                h.exposure_us = if absolute { v.saturating_mul(100) } else { v }
                    .clamp(0, u32::MAX as i64) as u32;
            }
        }
        if let Some((id, unity)) = self.gain {
            if let Ok(v) = self.backend.get_control(id) {
                h.analog_gain = v as f32 / unity as f32;
            }
        }
    }
}

impl<B: Backend> FrameSource for V4l2Source<B> {
    fn describe(&self) -> String {
        format!(
            "v4l2 {} ({}, {}) {}x{} {}",
            self.path.display(),
            self.info.card,
            self.info.driver,
            self.template.width,
            self.template.height,
            String::from_utf8_lossy(&self.fourcc)
        )
    }

    fn stream_header(&self) -> FrameHeader {
        self.template
    }

    fn interval(&self) -> Duration {
        Duration::ZERO
    }

    fn next_frame(&mut self, stop: &AtomicBool) -> Result<Option<Frame>, SourceError> {
        if !self.started {
            self.backend
                .start(self.buffers)
                .map_err(|e| io_err(&self.path, "starting the stream", e))?;
            self.started = true;
        }
        loop {
            if stop.load(std::sync::atomic::Ordering::Relaxed) {
                return Ok(None);
            }
            let Some((data, meta)) = self
                .backend
                .next(Duration::from_millis(200))
                .map_err(|e| io_err(&self.path, "capturing", e))?
            else {
                continue;
            };
            if let Some(last) = self.last_sequence {
                let gap = meta.sequence.wrapping_sub(last).wrapping_sub(1);
                if gap > 0 && gap < u32::MAX / 2 {
                    self.dropped += gap as u64;
                    tracing::warn!(
                        "{}: the driver dropped {gap} frame(s) before sequence {}",
                        self.path.display(),
                        meta.sequence
                    );
                }
            }
            self.last_sequence = Some(meta.sequence);
            let mut h = self.template;
            // Our seq follows the driver's, so its drops show as gaps downstream too.
            h.seq = meta.sequence as u64 + 1;
            h.clock = ClockId::Realtime;
            h.timestamp_ns = if meta.timestamp_ns > 0 {
                // Driver timestamps are CLOCK_MONOTONIC: move them to realtime.
                let mono_now = crate::monotonic_ns();
                now_realtime_ns().saturating_sub(mono_now.saturating_sub(meta.timestamp_ns))
            } else {
                now_realtime_ns()
            };
            self.read_controls(&mut h);
            let need = h.payload_len() as usize;
            if data.len() < need || (meta.bytesused as usize) < need {
                tracing::warn!(
                    "{}: short buffer ({} of {need} bytes) at sequence {}: skipped",
                    self.path.display(),
                    meta.bytesused.min(data.len() as u32),
                    meta.sequence
                );
                continue;
            }
            let mut data = data;
            data.truncate(need);
            return Ok(Some(Frame::new(h, Bytes::from(data))?));
        }
    }
}

/// The real device, through the `v4l` crate.
#[cfg(target_os = "linux")]
pub struct DeviceBackend {
    dev: v4l::Device,
    stream: Option<v4l::io::mmap::Stream<'static>>,
    /// The next `next` is the stream's first.
    first: bool,
}

#[cfg(target_os = "linux")]
impl DeviceBackend {
    /// Opens a device node.
    pub fn open(path: &Path) -> Result<Self, SourceError> {
        let dev = v4l::Device::with_path(path).map_err(|e| io_err(path, "opening", e))?;
        Ok(Self {
            dev,
            stream: None,
            first: false,
        })
    }
}

#[cfg(target_os = "linux")]
impl Backend for DeviceBackend {
    fn info(&self) -> io::Result<DeviceInfo> {
        let c = self.dev.query_caps()?;
        Ok(DeviceInfo {
            driver: c.driver,
            card: c.card,
            bus: c.bus,
            capture: c
                .capabilities
                .contains(v4l::capability::Flags::VIDEO_CAPTURE),
        })
    }

    fn formats(&self) -> io::Result<Vec<[u8; 4]>> {
        use v4l::video::Capture;
        Ok(self
            .dev
            .enum_formats()?
            .into_iter()
            .map(|d| d.fourcc.repr)
            .collect())
    }

    fn sizes(&self, fourcc: [u8; 4]) -> io::Result<Vec<(u32, u32)>> {
        use v4l::video::Capture;
        let sizes = self.dev.enum_framesizes(v4l::FourCC::new(&fourcc))?;
        Ok(sizes
            .into_iter()
            .flat_map(|s| match s.size {
                v4l::framesize::FrameSizeEnum::Discrete(d) => vec![(d.width, d.height)],
                v4l::framesize::FrameSizeEnum::Stepwise(s) => {
                    vec![(s.min_width, s.min_height), (s.max_width, s.max_height)]
                }
            })
            .collect())
    }

    fn set_format(&mut self, fourcc: [u8; 4], width: u32, height: u32) -> io::Result<Negotiated> {
        use v4l::video::Capture;
        let mut f = self.dev.format()?;
        f.fourcc = v4l::FourCC::new(&fourcc);
        f.width = width;
        f.height = height;
        let f = self.dev.set_format(&f)?;
        Ok(Negotiated {
            fourcc: f.fourcc.repr,
            width: f.width,
            height: f.height,
            stride: f.stride,
        })
    }

    fn controls(&self) -> io::Result<Vec<ControlInfo>> {
        use v4l::control::Type;
        Ok(self
            .dev
            .query_controls()?
            .into_iter()
            .filter(|d| {
                matches!(
                    d.typ,
                    Type::Integer | Type::Integer64 | Type::Boolean | Type::Menu
                )
            })
            .map(|d| ControlInfo {
                id: d.id,
                name: d.name,
                min: d.minimum,
                max: d.maximum,
                default: d.default,
            })
            .collect())
    }

    fn get_control(&self, id: u32) -> io::Result<i64> {
        match self.dev.control(id)?.value {
            v4l::control::Value::Integer(v) => Ok(v),
            v4l::control::Value::Boolean(b) => Ok(b as i64),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "not an integer control",
            )),
        }
    }

    fn set_control(&mut self, id: u32, value: i64) -> io::Result<()> {
        self.dev.set_control(v4l::Control {
            id,
            value: v4l::control::Value::Integer(value),
        })
    }

    fn start(&mut self, buffers: u32) -> io::Result<()> {
        let mut s = v4l::io::mmap::Stream::with_buffers(
            &self.dev,
            v4l::buffer::Type::VideoCapture,
            buffers,
        )?;
        // The first `next` queues every buffer and starts streaming; it must not time
        // out (a retried `next` would queue a buffer twice), so it gets a generous limit.
        s.set_timeout(Duration::from_secs(10));
        self.stream = Some(s);
        self.first = true;
        Ok(())
    }

    fn next(&mut self, timeout: Duration) -> io::Result<Option<(Vec<u8>, BufferMeta)>> {
        use v4l::io::traits::CaptureStream;
        let Some(s) = self.stream.as_mut() else {
            return Err(io::Error::other("stream not started"));
        };
        if !std::mem::take(&mut self.first) {
            // Wait for a filled buffer ourselves, so that `next` (which re-queues the
            // previous buffer before it dequeues) only runs when one is ready.
            let pollin = nix::poll::PollFlags::POLLIN.bits();
            if s.handle().poll(pollin, timeout.as_millis() as i32)? == 0 {
                return Ok(None);
            }
        }
        let (buf, meta) = match s.next() {
            Ok(x) => x,
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no frame from the camera within 10 s of starting",
                ))
            }
            Err(e) => return Err(e),
        };
        let ts = meta.timestamp;
        let ns = ts.sec.max(0) as u64 * 1_000_000_000 + ts.usec.max(0) as u64 * 1000;
        let used = (meta.bytesused as usize).min(buf.len());
        Ok(Some((
            buf[..used].to_vec(),
            BufferMeta {
                sequence: meta.sequence,
                timestamp_ns: ns,
                bytesused: meta.bytesused,
            },
        )))
    }
}

/// One format of a device.
#[derive(Debug, Clone)]
pub struct FormatListing {
    /// Fourcc.
    pub fourcc: [u8; 4],
    /// A Bayer format rawlink reads.
    pub bayer: bool,
    /// Frame sizes (discrete sizes, or the smallest and largest of a range).
    pub sizes: Vec<(u32, u32)>,
}

/// One device as `rawlink devices` lists it.
#[derive(Debug, Clone)]
pub struct DeviceListing {
    /// Device node.
    pub path: PathBuf,
    /// Identity.
    pub info: DeviceInfo,
    /// Formats, with their sizes, and whether rawlink reads them (Bayer).
    pub formats: Vec<FormatListing>,
    /// Controls with their current values.
    pub controls: Vec<(ControlInfo, Option<i64>)>,
}

/// Describes one device through a backend.
pub fn describe_device(path: &Path, b: &dyn Backend) -> io::Result<DeviceListing> {
    b.info()?;
    let formats = b
        .formats()?
        .into_iter()
        .map(|cc| {
            let sizes = b.sizes(cc).unwrap_or_default();
            FormatListing {
                fourcc: cc,
                bayer: PixelFormat::from_fourcc(cc).is_some(),
                sizes,
            }
        })
        .collect();
    let controls = b
        .controls()
        .unwrap_or_default()
        .into_iter()
        .map(|c| {
            let v = b.get_control(c.id).ok();
            (c, v)
        })
        .collect();
    let info = b.info()?;
    Ok(DeviceListing {
        path: path.to_path_buf(),
        info,
        formats,
        controls,
    })
}

/// Lists `/dev/video*` capture devices (errors per device are returned beside them).
#[cfg(target_os = "linux")]
pub fn list_devices() -> Vec<Result<DeviceListing, SourceError>> {
    let mut paths: Vec<PathBuf> = glob::glob("/dev/video*")
        .map(|g| g.flatten().collect())
        .unwrap_or_default();
    paths.sort();
    paths
        .into_iter()
        .map(|p| {
            let b = DeviceBackend::open(&p)?;
            describe_device(&p, &b).map_err(|e| io_err(&p, "querying", e))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::sync::atomic::AtomicBool;

    /// A fake driver: formats and sizes, format negotiation that clamps to its largest
    /// size, N buffers that must be cycled, and a scripted sequence with drops.
    struct Fake {
        formats: Vec<[u8; 4]>,
        max: (u32, u32),
        format: Option<Negotiated>,
        controls: Vec<ControlInfo>,
        values: std::collections::HashMap<u32, i64>,
        buffers: Option<Vec<bool>>, // queued?
        held: Option<usize>,
        sequences: VecDeque<u32>,
        dequeued: Vec<usize>,
        busy: bool,
    }

    impl Fake {
        fn new(formats: &[&[u8; 4]]) -> Self {
            Fake {
                formats: formats.iter().map(|f| **f).collect(),
                max: (64, 32),
                format: None,
                controls: vec![
                    ControlInfo {
                        id: cid::EXPOSURE_ABSOLUTE,
                        name: "Exposure Time, Absolute".into(),
                        min: 1,
                        max: 10_000,
                        default: 100,
                    },
                    ControlInfo {
                        id: cid::ANALOGUE_GAIN,
                        name: "Analogue Gain".into(),
                        min: 16,
                        max: 256,
                        default: 16,
                    },
                ],
                values: [(cid::EXPOSURE_ABSOLUTE, 100), (cid::ANALOGUE_GAIN, 16)].into(),
                buffers: None,
                held: None,
                sequences: VecDeque::new(),
                dequeued: Vec::new(),
                busy: false,
            }
        }
    }

    impl Backend for Fake {
        fn info(&self) -> io::Result<DeviceInfo> {
            Ok(DeviceInfo {
                driver: "fake".into(),
                card: "Fake Cam".into(),
                bus: "test".into(),
                capture: true,
            })
        }
        fn formats(&self) -> io::Result<Vec<[u8; 4]>> {
            Ok(self.formats.clone())
        }
        fn sizes(&self, _: [u8; 4]) -> io::Result<Vec<(u32, u32)>> {
            Ok(vec![(32, 16), self.max])
        }
        fn set_format(&mut self, fourcc: [u8; 4], w: u32, h: u32) -> io::Result<Negotiated> {
            if self.busy {
                return Err(io::Error::from_raw_os_error(16));
            }
            let (w, h) = (w.min(self.max.0), h.min(self.max.1));
            let f = PixelFormat::from_fourcc(fourcc).unwrap();
            let stride = f.packing.row_bytes(w, f.bits) as u32 + 16; // padded lines
            let n = Negotiated {
                fourcc,
                width: w,
                height: h,
                stride,
            };
            self.format = Some(n);
            Ok(n)
        }
        fn controls(&self) -> io::Result<Vec<ControlInfo>> {
            Ok(self.controls.clone())
        }
        fn get_control(&self, id: u32) -> io::Result<i64> {
            self.values
                .get(&id)
                .copied()
                .ok_or_else(|| io::Error::from_raw_os_error(22))
        }
        fn set_control(&mut self, id: u32, v: i64) -> io::Result<()> {
            self.values.insert(id, v);
            Ok(())
        }
        fn start(&mut self, n: u32) -> io::Result<()> {
            self.buffers = Some(vec![true; n as usize]);
            Ok(())
        }
        fn next(&mut self, _: Duration) -> io::Result<Option<(Vec<u8>, BufferMeta)>> {
            let bufs = self.buffers.as_mut().expect("started");
            // Like the v4l crate: the buffer handed out last time is queued again now.
            if let Some(h) = self.held.take() {
                bufs[h] = true;
            }
            let Some(seq) = self.sequences.pop_front() else {
                return Ok(None);
            };
            // The driver fills the queued buffers round robin.
            let idx = seq as usize % bufs.len();
            assert!(
                bufs[idx],
                "buffer {idx} filled while the application still held it"
            );
            bufs[idx] = false;
            self.held = Some(idx);
            self.dequeued.push(idx);
            let n = self.format.unwrap();
            let mut data = vec![0u8; (n.stride * n.height) as usize];
            data[0] = seq as u8;
            Ok(Some((
                data.clone(),
                BufferMeta {
                    sequence: seq,
                    timestamp_ns: 1,
                    bytesused: data.len() as u32,
                },
            )))
        }
    }

    fn opts() -> V4l2Options {
        V4l2Options {
            buffers: 4,
            ..Default::default()
        }
    }

    #[test]
    fn negotiates_the_deepest_bayer_format_and_clamped_size() {
        let fake = Fake::new(&[b"YUYV", b"BA81", b"pRAA", b"RG10", b"RG12", b"MJPG"]);
        let s = V4l2Source::new(fake, Path::new("/dev/fake"), 640, 480, &opts()).unwrap();
        assert_eq!(&s.fourcc, b"RG12");
        let h = s.stream_header();
        assert_eq!((h.width, h.height, h.stride), (64, 32, 64 * 2 + 16));
        assert_eq!(h.format.bits, 12);
        // Packed is preferred over unpacked at the same depth.
        let fake = Fake::new(&[b"RG10", b"pRAA"]);
        let s = V4l2Source::new(fake, Path::new("/dev/fake"), 64, 32, &opts()).unwrap();
        assert_eq!(&s.fourcc, b"pRAA");
        assert_eq!(
            s.stream_header().format.packing,
            rawlink_frame::Packing::Mipi
        );
        // --format picks; a format the device lacks, or a non-Bayer one, is a clear error.
        let mut o = opts();
        o.format = Some(*b"RG10");
        let s = V4l2Source::new(
            Fake::new(&[b"RG10", b"RG12"]),
            Path::new("/dev/fake"),
            64,
            32,
            &o,
        )
        .unwrap();
        assert_eq!(&s.fourcc, b"RG10");
        o.format = Some(*b"BG12");
        let e = V4l2Source::new(
            Fake::new(&[b"RG10", b"RG12"]),
            Path::new("/dev/fake"),
            64,
            32,
            &o,
        )
        .err()
        .unwrap();
        assert!(
            e.to_string()
                .contains("does not offer BG12; it offers: RG10, RG12"),
            "{e}"
        );
    }

    #[test]
    fn no_bayer_format_and_busy_devices_are_clear_errors() {
        let e = V4l2Source::new(
            Fake::new(&[b"YUYV", b"MJPG"]),
            Path::new("/dev/video7"),
            64,
            32,
            &opts(),
        )
        .err()
        .unwrap();
        assert_eq!(e.to_string(), "bad source options: /dev/video7 (Fake Cam): no Bayer format offered; it offers: YUYV, MJPG");
        let mut f = Fake::new(&[b"RG12"]);
        f.busy = true;
        let e = V4l2Source::new(f, Path::new("/dev/video7"), 64, 32, &opts())
            .err()
            .unwrap();
        assert!(e.to_string().contains("the device is busy"), "{e}");
    }

    #[test]
    fn buffers_cycle_sequence_gaps_are_counted_and_controls_fill_metadata() {
        let mut fake = Fake::new(&[b"RG12"]);
        fake.sequences = [0, 1, 2, 5, 6, 7, 8, 9, 10, 14].into();
        let mut o = opts();
        o.ctrls = vec![
            ("exposure_time_absolute".into(), 250),
            ("Analogue-Gain".into(), 32),
        ];
        let mut s = V4l2Source::new(fake, Path::new("/dev/fake"), 64, 32, &o).unwrap();
        let stop = AtomicBool::new(false);
        let mut seqs = Vec::new();
        for _ in 0..10 {
            let f = s.next_frame(&stop).unwrap().unwrap();
            assert_eq!(
                f.payload.len(),
                (f.header.stride * f.header.height) as usize
            );
            assert_eq!(f.header.exposure_us, 25_000);
            assert_eq!(f.header.analog_gain, 2.0);
            assert_eq!(f.payload[0] as u64 + 1, f.header.seq);
            seqs.push(f.header.seq);
        }
        assert_eq!(seqs, [1, 2, 3, 6, 7, 8, 9, 10, 11, 15]);
        assert_eq!(s.dropped(), 2 + 3);
        // Every one of the 4 buffers was used, round robin.
        assert_eq!(s.backend.dequeued[..4], [0, 1, 2, 1]);
        let mut used = s.backend.dequeued.clone();
        used.sort();
        used.dedup();
        assert_eq!(used, [0, 1, 2, 3]);
        // Stopping returns no frame.
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        assert!(s.next_frame(&stop).unwrap().is_none());
    }

    #[test]
    fn unknown_or_out_of_range_controls_are_refused() {
        let mut o = opts();
        o.ctrls = vec![("focus".into(), 1)];
        let e = V4l2Source::new(Fake::new(&[b"RG12"]), Path::new("/dev/fake"), 64, 32, &o)
            .err()
            .unwrap();
        assert!(
            e.to_string()
                .contains("no control \"focus\"; controls: exposure_time_absolute, analogue_gain"),
            "{e}"
        );
        o.ctrls = vec![("analogue_gain".into(), 1000)];
        let e = V4l2Source::new(Fake::new(&[b"RG12"]), Path::new("/dev/fake"), 64, 32, &o)
            .err()
            .unwrap();
        assert!(
            e.to_string()
                .contains("analogue_gain must be in 16..=256, got 1000"),
            "{e}"
        );
    }

    #[test]
    fn describe_lists_formats_sizes_and_controls() {
        let d = describe_device(Path::new("/dev/fake"), &Fake::new(&[b"YUYV", b"pRCC"])).unwrap();
        assert_eq!(d.formats.len(), 2);
        assert!(!d.formats[0].bayer && d.formats[1].bayer);
        assert_eq!(d.formats[1].sizes, [(32, 16), (64, 32)]);
        assert_eq!(d.controls[0].1, Some(100));
        assert_eq!(d.info.card, "Fake Cam");
    }
}
