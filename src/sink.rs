//! The receiver's output stage: a pool of worker threads that run the ISP, and as many
//! writer threads that write `frame_NNNNNN.{raw,png,json}`. The network task hands frames over through a
//! bounded queue; a `latest` receiver never waits (a full queue drops the frame, counted),
//! a `lossless` one does. Every file is written under a temporary name and linked into
//! place without replacing anything: a crash leaves only complete files under final
//! names, an existing file is never overwritten (a second frame with the same `seq`,
//! from a restarted server, gets `frame_NNNNNN-1.*`), and temporary files left by a
//! killed receiver are removed at the next start.
//!
//! Files of 64 KiB and more are written with `O_DIRECT` by default ([`FileIo::Direct`]):
//! the bytes go from a block-aligned buffer to the device without being copied into the
//! page cache, a copy that at 1080p cost about as much CPU time as the PNG encoding (and
//! recording evicts everything else from the cache). Where the file system refuses
//! direct I/O, the file is written through the page cache instead.

use anyhow::{Context, Result};
use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use rawlink_frame::Frame;
use rawlink_isp::encode::{fast_png_bound, write_png_output_fast_at, write_png_rgb16};
use rawlink_isp::{IspConfig, IspError, Pipeline, PipelineOutput, Profile, RawPlane, RgbImage};
use rawlink_source::now_realtime_ns;
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

/// Settings of the output stage.
#[derive(Debug, Clone)]
pub struct SinkConfig {
    /// Output folder.
    pub out: PathBuf,
    /// ISP configuration (pattern, depth and levels are taken from each frame).
    pub isp: IspConfig,
    /// PNG bit depth, 8 or 16.
    pub png_depth: u8,
    /// Worker threads (ISP, PNG, DNG); as many writer threads put the files on disk.
    pub workers: usize,
    /// Queue depth in frames.
    pub queue: usize,
    /// Suppress per-frame lines.
    pub quiet: bool,
    /// What a disk error (full, read-only, no permission) does.
    pub on_disk_error: DiskErrorPolicy,
    /// Which files to write per frame.
    pub save: SaveSet,
    /// How the files are written.
    pub io: FileIo,
    /// Printed before each per-frame line (the stream, when there are several).
    pub label: String,
}

/// `--io`: how frame files are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FileIo {
    /// Files of 64 KiB and more straight to the device (`O_DIRECT`), bypassing the page
    /// cache; smaller files, and files on a file system without direct I/O or without
    /// unnamed temporary files (`O_TMPFILE`), through the page cache.
    #[default]
    Direct,
    /// Through the page cache.
    Buffered,
}

impl std::str::FromStr for FileIo {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "direct" => Ok(Self::Direct),
            "buffered" => Ok(Self::Buffered),
            _ => Err(format!("expected direct or buffered, got {s:?}")),
        }
    }
}

/// `--save`: the files written per frame (the JSON sidecar always is).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SaveSet {
    /// The exact payload, `frame_NNNNNN.raw`.
    pub raw: bool,
    /// The ISP output, `frame_NNNNNN.png`.
    pub png: bool,
    /// The raw frame as DNG 1.4, `frame_NNNNNN.dng`.
    pub dng: bool,
}

impl std::str::FromStr for SaveSet {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut set = SaveSet {
            raw: false,
            png: false,
            dng: false,
        };
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "raw" => set.raw = true,
                "png" => set.png = true,
                "dng" => set.dng = true,
                other => {
                    return Err(format!(
                        "--save: unknown file type {other:?} (raw, png, dng)"
                    ))
                }
            }
        }
        if !(set.raw || set.png || set.dng) {
            return Err("--save needs at least one of raw, png, dng".into());
        }
        Ok(set)
    }
}

/// `--on-disk-error`: what the receiver does when a file cannot be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DiskErrorPolicy {
    /// Stop receiving, finish, and exit with the error (default: a recorder must not
    /// pretend to record).
    #[default]
    Stop,
    /// Drop that frame's files, count it, and keep going (space may come back).
    Drop,
}

impl std::str::FromStr for DiskErrorPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "stop" => Ok(Self::Stop),
            "drop" => Ok(Self::Drop),
            _ => Err(format!("--on-disk-error must be stop or drop, got {s:?}")),
        }
    }
}

/// One frame to process.
#[derive(Debug)]
pub struct Job {
    /// The frame.
    pub frame: Frame,
    /// When its last byte arrived (realtime ns).
    pub recv_ns: u64,
}

/// What the workers did.
#[derive(Debug, Default, Clone)]
pub struct SinkReport {
    /// Frames fully written.
    pub written: u64,
    /// When the first and the last of them had all their files written.
    pub written_span: Option<(std::time::Instant, std::time::Instant)>,
    /// Frames dropped because the queue was full.
    pub dropped: u64,
    /// Frames that failed (ISP or disk).
    pub errors: u64,
    /// First error, for the summary.
    pub first_error: Option<String>,
    /// Capture → PNG-on-disk latency of the written frames, ms.
    pub latency_ms: crate::receiver::Quantiles,
    /// Frames that failed because of a disk error (included in `errors`).
    pub disk_errors: u64,
    /// Frames received but never written because a disk error had stopped the workers
    /// (those queued then, and those that arrived after).
    pub abandoned: u64,
    /// The disk error that stopped the workers (`--on-disk-error stop`).
    pub fatal: Option<String>,
    /// Temporary files of an earlier, killed run removed at start.
    pub stale_temp_files: u64,
}

/// The worker pool.
pub struct FrameSink {
    tx: Option<Sender<Job>>,
    workers: Vec<JoinHandle<()>>,
    /// The file writers, fed by the workers (joined after them).
    writers: Vec<JoinHandle<()>>,
    /// The report and the stop flag, shared with the threads.
    shared: Shared,
}

impl FrameSink {
    /// Creates the output folder and starts the workers.
    pub fn start(cfg: SinkConfig) -> Result<Self> {
        std::fs::create_dir_all(&cfg.out)
            .with_context(|| format!("cannot create output folder {}", cfg.out.display()))?;
        let stale = remove_stale_temp_files(&cfg.out);
        if stale > 0 {
            tracing::warn!(
                "removed {stale} temporary file(s) left in {} by a receiver that was killed",
                cfg.out.display()
            );
        }
        probe_writable(&cfg.out)?;
        let (tx, rx) = bounded::<Job>(cfg.queue.max(1));
        let n = cfg.workers.max(1);
        // Workers compute (ISP, PNG, DNG); writers put the files on disk. A write can
        // wait for the device (direct I/O always does), and a worker that waited there
        // would leave its core idle: at 1920×1080, ~13 % of the two cores in `demo`.
        // As many writers as workers, so a slow device stalls neither more than before.
        // A worker hands its frame straight to a free writer (a queue of `n` frames
        // between them measured the same: `demo` 1080p 55.4 vs 55.0, 640×480 340 vs 338
        // frames/s, 5 alternated rounds), so no more frames wait in memory than needed.
        let (wtx, wrx) = bounded::<Computed>(0);
        let sink = Shared {
            cfg: Arc::new(cfg),
            report: Arc::new(Mutex::new(SinkReport {
                stale_temp_files: stale,
                ..SinkReport::default()
            })),
            stopped: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            png: Arc::new(PngPool::new(n)),
        };
        let writers = (0..n)
            .map(|i| {
                let rx = wrx.clone();
                let sink = sink.clone();
                std::thread::Builder::new()
                    .name(format!("sink-write-{i}"))
                    .spawn(move || writer(rx, sink))
                    .context("starting a sink writer")
            })
            .collect::<Result<Vec<_>>>()?;
        let workers = (0..n)
            .map(|i| {
                let rx = rx.clone();
                let tx = wtx.clone();
                let sink = sink.clone();
                std::thread::Builder::new()
                    .name(format!("sink-{i}"))
                    .spawn(move || worker(rx, tx, sink))
                    .context("starting a sink worker")
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            tx: Some(tx),
            workers,
            writers,
            shared: sink,
        })
    }

    /// The disk error that stopped the workers, if one did (`--on-disk-error stop`).
    pub fn fatal(&self) -> Option<String> {
        if !self.shared.stopped() {
            return None;
        }
        lock(&self.shared.report).fatal.clone()
    }

    /// Hands a frame to the workers without waiting. Returns false if it was dropped.
    pub fn submit(&self, job: Job) -> bool {
        let Some(tx) = &self.tx else { return false };
        match tx.try_send(job) {
            Ok(()) => true,
            Err(TrySendError::Full(j)) | Err(TrySendError::Disconnected(j)) => {
                tracing::warn!(seq = j.frame.header.seq, "worker queue full: frame dropped");
                lock(&self.shared.report).dropped += 1;
                metrics::counter!("rawlink_receiver_local_drops_total").increment(1);
                false
            }
        }
    }

    /// Hands a frame to the workers, waiting while their queue is full (lossless
    /// receivers: the wait propagates to the server as TCP back-pressure). Returns false
    /// only if the workers are gone.
    /// A frame refused because the workers have stopped counts as `abandoned`, as the
    /// frames they found queued do.
    pub async fn submit_wait(&self, mut job: Job) -> bool {
        let abandon = || {
            self.shared.abandon();
            false
        };
        let Some(tx) = &self.tx else {
            return abandon();
        };
        loop {
            if self.shared.stopped() {
                return abandon();
            }
            match tx.try_send(job) {
                Ok(()) => return true,
                Err(TrySendError::Full(j)) => {
                    job = j;
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                }
                Err(TrySendError::Disconnected(_)) => return abandon(),
            }
        }
    }

    /// Waits for queued frames to be written and returns the report.
    pub fn finish(mut self) -> SinkReport {
        self.tx.take();
        // The workers' exit closes the writers' queue; the writers finish it.
        for w in self
            .workers
            .drain(..)
            .chain(std::mem::take(&mut self.writers))
        {
            let _ = w.join();
        }
        let r = lock(&self.shared.report).clone();
        r
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn probe_writable(dir: &Path) -> Result<()> {
    let probe = dir.join(format!(".rawlink-probe-{}", std::process::id()));
    std::fs::write(&probe, b"")
        .with_context(|| format!("output folder {} is not writable", dir.display()))?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}

/// The folder (created if missing) and file name of an output path.
pub fn split_output(path: &Path) -> Result<(PathBuf, String)> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("cannot create output folder {}", dir.display()))?;
    let name = path
        .file_name()
        .ok_or_else(|| anyhow::anyhow!("--output {} has no file name", path.display()))?
        .to_string_lossy()
        .into_owned();
    Ok((dir, name))
}

/// Prefix and suffix of temporary files: `.NAME.PID.rawlink-tmp`.
const TEMP_SUFFIX: &str = ".rawlink-tmp";

fn temp_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!(".{name}.{}{TEMP_SUFFIX}", std::process::id()))
}

/// Removes temporary files of processes that no longer run; returns how many.
fn remove_stale_temp_files(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut n = 0;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(stem) = name.strip_suffix(TEMP_SUFFIX) else {
            continue;
        };
        let Some(pid) = stem.rsplit('.').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        let alive = pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists();
        if !alive && std::fs::remove_file(e.path()).is_ok() {
            n += 1;
        }
    }
    n
}

fn write_temp(tmp: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::File::create(tmp)?;
    f.write_all(bytes)?;
    f.flush()?;
    Ok(())
}

/// Writes `bytes` to `dir/name` through a temporary file and a rename, so a crash
/// never leaves a partial file under the final name. Replaces an existing file (the
/// user named it, as in `rawlink isp -o`).
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<PathBuf> {
    let tmp = temp_path(dir, name);
    let dst = dir.join(name);
    let res = write_temp(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, &dst));
    if let Err(e) = res {
        let _ = std::fs::remove_file(&tmp);
        return Err(DiskError::new(e, &dst).into());
    }
    Ok(dst)
}

/// Writes `bytes` to `dir/name` through a temporary file, then links it into place
/// only if no file of that name exists (atomic: a crash never leaves a partial file
/// under the final name, and nothing is ever overwritten).
pub fn write_new(dir: &Path, name: &str, bytes: &[u8], io: FileIo) -> Result<PathBuf, DiskError> {
    let dst = dir.join(name);
    match write_unnamed(dir, &dst, bytes, io) {
        Ok(true) => return Ok(dst),
        Ok(false) => {}
        Err(e) => return Err(DiskError::new(e, &dst)),
    }
    write_named(dir, name, bytes)
}

/// [`write_new`] through a named temporary file and a hard link (where unnamed files
/// are not available).
fn write_named(dir: &Path, name: &str, bytes: &[u8]) -> Result<PathBuf, DiskError> {
    let tmp = temp_path(dir, name);
    let dst = dir.join(name);
    let res = write_temp(&tmp, bytes).and_then(|()| std::fs::hard_link(&tmp, &dst));
    let _ = std::fs::remove_file(&tmp);
    res.map_err(|e| DiskError::new(e, &dst))?;
    Ok(dst)
}

/// [`write_new`] through an unnamed file (`O_TMPFILE`), linked into place once written:
/// one directory operation per file instead of three (create, link and unlink of a
/// named temporary), which also holds the directory's lock a third as often when two
/// writers write at once. Ok(false) where the file system or kernel has no unnamed
/// files (or `/proc` is missing): the caller then uses a named temporary.
fn write_unnamed(dir: &Path, dst: &Path, bytes: &[u8], io: FileIo) -> std::io::Result<bool> {
    use nix::errno::Errno;
    use nix::fcntl::OFlag;
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let open = |flags: OFlag| {
        std::fs::OpenOptions::new()
            .write(true)
            .mode(0o666)
            .custom_flags((OFlag::O_TMPFILE | flags).bits())
            .open(dir)
    };
    let mut direct = io == FileIo::Direct && bytes.len() >= DIRECT_MIN;
    let mut opened = open(if direct {
        OFlag::O_DIRECT
    } else {
        OFlag::empty()
    });
    if direct
        && opened
            .as_ref()
            .is_err_and(|e| e.raw_os_error() == Some(Errno::EINVAL as i32))
    {
        // No direct I/O here (or no unnamed files: the plain open tells which).
        direct = false;
        opened = open(OFlag::empty());
    }
    let mut f = match opened {
        Ok(f) => f,
        Err(e)
            if matches!(
                e.raw_os_error().map(Errno::from_raw),
                Some(Errno::EOPNOTSUPP | Errno::EISDIR | Errno::EINVAL)
            ) && dir.is_dir() =>
        {
            return Ok(false)
        }
        Err(e) => return Err(e),
    };
    if direct {
        write_direct(&mut f, bytes)?;
    } else {
        f.write_all(bytes)?;
    }
    let proc_path = PathBuf::from(format!("/proc/self/fd/{}", f.as_raw_fd()));
    match nix::unistd::linkat(
        None,
        proc_path.as_path(),
        None,
        dst,
        nix::fcntl::AtFlags::AT_SYMLINK_FOLLOW,
    ) {
        Ok(()) => Ok(true),
        Err(Errno::ENOENT) if !Path::new("/proc/self/fd").exists() => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// A file could not be written.
#[derive(Debug)]
pub struct DiskError {
    /// The file.
    pub path: String,
    /// Plain-words cause.
    pub what: String,
    /// The I/O error.
    pub kind: std::io::ErrorKind,
}

impl std::fmt::Display for DiskError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "disk error writing {}: {}", self.path, self.what)
    }
}

impl std::error::Error for DiskError {}

impl DiskError {
    fn new(e: std::io::Error, path: &Path) -> Self {
        let what = match e.raw_os_error() {
            Some(28) => format!("the disk is full ({e})"),
            Some(122) => format!("the disk quota is exhausted ({e})"),
            Some(30) => format!("the file system is read-only ({e})"),
            Some(13) | Some(1) => format!("permission denied ({e})"),
            _ => e.to_string(),
        };
        Self {
            path: path.display().to_string(),
            what,
            kind: e.kind(),
        }
    }
}

type PipelineKey = (rawlink_frame::BayerPattern, u8, u16, u16);

/// Encodes a pipeline output as an 8- or 16-bit PNG with text metadata.
pub fn encode_png(
    out: &mut PipelineOutput,
    depth: u8,
    text: &[(&str, String)],
) -> Result<Vec<u8>, IspError> {
    encode_png_in(out, depth, text, None).map(PngFile::into_vec)
}

/// An encoded PNG file, `buf[range]`. A sink worker's files start on a block boundary,
/// so a direct write sends them from where they are, and their buffer goes back to the
/// sink's pool when the file is dropped (after it is written).
pub(crate) struct PngFile {
    buf: Vec<u8>,
    range: std::ops::Range<usize>,
    pool: Option<Arc<PngPool>>,
}

/// The sink's spare PNG buffers, shared by its workers and handed back by its writers.
pub(crate) struct PngPool {
    spare: Mutex<Vec<Vec<u8>>>,
    /// Most buffers kept: as many as can be in use at once (per worker, a file being
    /// coded, one waiting for a writer and one being written).
    max: usize,
}

impl PngPool {
    /// A pool for `workers` workers.
    fn new(workers: usize) -> Self {
        Self {
            spare: Mutex::new(Vec::new()),
            max: 3 * workers.max(1),
        }
    }

    /// A spare buffer with room for `room` bytes reserved (not touched), or a new one.
    /// A spare much larger than that (from larger frames earlier) is freed rather than
    /// kept for good.
    fn take(&self, room: usize) -> Vec<u8> {
        let mut spare = lock(&self.spare);
        while let Some(mut buf) = spare.pop() {
            if buf.capacity() <= 4 * room.max(1 << 16) {
                buf.reserve(room.saturating_sub(buf.len()));
                return buf;
            }
        }
        Vec::with_capacity(room)
    }

    /// Keeps `buf` for a later [`PngPool::take`], unless the pool is full.
    fn give(&self, buf: Vec<u8>) {
        let mut spare = lock(&self.spare);
        if spare.len() < self.max {
            spare.push(buf);
        }
    }
}

impl std::fmt::Debug for PngPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} spare PNG buffers", lock(&self.spare).len())
    }
}

impl PngFile {
    /// The file's bytes as a vector of their own.
    fn into_vec(mut self) -> Vec<u8> {
        let mut v = std::mem::take(&mut self.buf);
        v.truncate(self.range.end);
        v.drain(..self.range.start);
        v
    }
}

impl std::ops::Deref for PngFile {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.buf[self.range.clone()]
    }
}

impl Drop for PngFile {
    fn drop(&mut self) {
        if let Some(pool) = &self.pool {
            pool.give(std::mem::take(&mut self.buf));
        }
    }
}

/// Buffers a sink worker reuses from frame to frame: the encoded files (the sink's pool,
/// which the writers hand them back to), and (through
/// [`rawlink_isp::RgbImage::recycle_planes`]) the ISP's output planes. A stream of
/// frames then runs in memory that is already mapped: measured at 640×480, fresh
/// frame-sized buffers cost ~500 page faults and a zero-fill per frame.
#[derive(Debug)]
pub(crate) struct EncodeScratch {
    png: Arc<PngPool>,
}

/// [`encode_png`]; with `scratch`, the file is coded into a buffer from its pool, at a
/// block boundary, and the planes are handed back to the ISP for the next frame instead
/// of being freed.
fn encode_png_in(
    out: &mut PipelineOutput,
    depth: u8,
    text: &[(&str, String)],
    scratch: Option<&mut EncodeScratch>,
) -> Result<PngFile, IspError> {
    let mut text = text.to_vec();
    text.insert(
        0,
        ("Software", format!("rawlink {}", env!("CARGO_PKG_VERSION"))),
    );
    let (w, h) = (out.image.width, out.image.height);
    // The planes are released once coded, so a frame is never held three times over:
    // handed back to the ISP for the next frame where a worker reuses buffers, freed
    // otherwise.
    let reuse = scratch.is_some();
    let release = |out: &mut PipelineOutput| {
        let planes = std::mem::take(&mut out.image.planes);
        if reuse {
            RgbImage::recycle_planes(planes);
        }
    };
    if depth == 16 {
        let rgb = out.to_rgb16();
        release(out);
        let mut png = Vec::new();
        write_png_rgb16(&mut png, w, h, &rgb, &text)?;
        return Ok(PngFile {
            range: 0..png.len(),
            buf: png,
            pool: None,
        });
    }
    // 8-bit: coded in place, each row made from the planes as it is coded (no 8-bit
    // frame); a worker's file goes into a pooled buffer at a block boundary. Room for the
    // largest file is reserved first (address space only: the pages past the file are
    // never touched), so the buffer is never moved off that boundary.
    let room = fast_png_bound(w, h, &text) + DIRECT_BLOCK;
    let (mut buf, pool) = match scratch {
        Some(sc) => (sc.png.take(room), Some(sc.png.clone())),
        None => (Vec::with_capacity(room), None),
    };
    let at = match pool {
        Some(_) => (DIRECT_BLOCK - buf.as_ptr() as usize % DIRECT_BLOCK) % DIRECT_BLOCK,
        None => 0,
    };
    let end = write_png_output_fast_at(&mut buf, at, out, &text);
    release(out);
    Ok(PngFile {
        range: at..end?,
        buf,
        pool,
    })
}

/// The pipeline configuration for a frame: the base configuration with the frame's
/// format and, unless configured, its black and white levels.
pub(crate) fn frame_config(base: &IspConfig, h: &rawlink_frame::FrameHeader) -> IspConfig {
    let mut c = base.clone();
    c.pattern = h.format.pattern;
    c.bits = h.format.bits;
    if c.blc.black.is_none() {
        c.set_black_level(h.black_level);
    }
    if c.blc.white.is_none() && c.profile == Profile::Default && h.white_level > h.black_level {
        c.blc.white = Some(h.white_level.min(h.format.max_value()));
    }
    c
}

/// What the workers and the writers share.
#[derive(Clone)]
struct Shared {
    cfg: Arc<SinkConfig>,
    report: Arc<Mutex<SinkReport>>,
    stopped: Arc<std::sync::atomic::AtomicBool>,
    /// The workers' spare PNG buffers.
    png: Arc<PngPool>,
}

impl Shared {
    fn stopped(&self) -> bool {
        self.stopped.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Counts a frame that the stopped sink will not write.
    fn abandon(&self) {
        lock(&self.report).abandoned += 1;
    }

    /// Records the outcome of frame `seq`: written (with its capture → PNG latency), or
    /// an error; a disk error stops the sink under `--on-disk-error stop`.
    fn record(&self, seq: u64, result: Result<Option<f64>>) {
        use std::sync::atomic::Ordering;
        match result {
            Ok(latency) => {
                let mut r = lock(&self.report);
                r.written += 1;
                let now = std::time::Instant::now();
                r.written_span = Some((r.written_span.map_or(now, |(first, _)| first), now));
                r.latency_ms.extend(latency);
            }
            Err(e) => {
                let disk = e.downcast_ref::<DiskError>().is_some();
                let msg = format!("frame {seq}: {e:#}");
                let mut r = lock(&self.report);
                r.errors += 1;
                r.first_error.get_or_insert(msg.clone());
                if disk {
                    r.disk_errors += 1;
                    metrics::counter!("rawlink_receiver_disk_errors_total").increment(1);
                    if self.cfg.on_disk_error == DiskErrorPolicy::Stop {
                        if !self.stopped.swap(true, Ordering::SeqCst) {
                            tracing::error!("{msg}; stopping (--on-disk-error stop)");
                            r.fatal = Some(format!("stopped by a disk error: {msg}"));
                        }
                        return;
                    }
                    tracing::error!("{msg}; frame dropped (--on-disk-error drop)");
                } else {
                    tracing::error!("{msg}");
                }
            }
        }
    }
}

/// A frame whose images are made, on its way to a writer.
struct Computed {
    job: Job,
    /// The PNG (when one is saved), or why it could not be made.
    isp: Result<Option<IspResult>>,
    /// The DNG, when one is saved (always made here, so the writer only writes).
    dng: Option<Result<Vec<u8>>>,
    /// Time spent making them.
    busy: std::time::Duration,
}

fn worker(rx: Receiver<Job>, tx: Sender<Computed>, sink: Shared) {
    let cfg = &sink.cfg;
    let mut pipelines: HashMap<PipelineKey, Pipeline> = HashMap::new();
    let mut scratch = EncodeScratch {
        png: sink.png.clone(),
    };
    // A one-thread pool for frames that have others queued behind them: then every
    // worker runs a whole frame on one thread, in parallel with the others, with no
    // fork-join inside the frame. A frame with none behind it uses every thread (the
    // lowest latency).
    let solo = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .thread_name(|_| "sink-isp".into())
        .build()
        .ok();
    while let Ok(job) = rx.recv() {
        if sink.stopped() {
            sink.abandon();
            continue;
        }
        let backlog = !rx.is_empty();
        let seq = job.frame.header.seq;
        let run = || compute(job, cfg, &mut pipelines, &mut scratch);
        let result = match &solo {
            Some(pool) if backlog => pool.install(run),
            _ => run(),
        };
        match result {
            Ok(c) => {
                // Fails only if every writer has died (a panic): the frame is lost, and
                // says so.
                if tx.send(c).is_err() {
                    sink.record(seq, Err(anyhow::anyhow!("no file writer is left")));
                }
            }
            Err(e) => sink.record(seq, Err(e)),
        }
    }
}

fn writer(rx: Receiver<Computed>, sink: Shared) {
    while let Ok(c) = rx.recv() {
        if sink.stopped() {
            sink.abandon();
            continue;
        }
        let seq = c.job.frame.header.seq;
        sink.record(seq, write_frame(c, &sink.cfg));
    }
}

/// Makes a frame's images: its PNG, and its DNG when one is saved. An error here means
/// the frame has nothing to save.
fn compute(
    job: Job,
    cfg: &SinkConfig,
    pipelines: &mut HashMap<PipelineKey, Pipeline>,
    scratch: &mut EncodeScratch,
) -> Result<Computed> {
    let t0 = Instant::now();
    // A frame the ISP cannot process (say, a header whose levels leave no range) still
    // has its other files saved; the error is reported once they are written.
    let isp = match cfg.save.png.then(|| run_isp(&job, cfg, pipelines, scratch)) {
        Some(Err(e)) if !(cfg.save.raw || cfg.save.dng) => return Err(e),
        Some(result) => result.map(Some),
        None => Ok(None),
    };
    let done = isp.as_ref().ok().and_then(Option::as_ref);
    // A DNG without a PNG still carries the white balance the ISP would use.
    let wb = match done {
        Some(i) => Some(i.wb_gains),
        None if cfg.save.dng && !cfg.save.png => wb_only(&job, cfg, pipelines).ok().flatten(),
        None => None,
    };
    let dng = cfg.save.dng.then(|| dng_bytes(&job, cfg, wb));
    Ok(Computed {
        job,
        isp,
        dng,
        busy: t0.elapsed(),
    })
}

/// Writes a frame's files; returns its capture → PNG-on-disk latency.
fn write_frame(c: Computed, cfg: &SinkConfig) -> Result<Option<f64>> {
    let t0 = Instant::now();
    let Computed {
        job,
        isp,
        mut dng,
        busy,
    } = c;
    let done = isp.as_ref().ok().and_then(Option::as_ref);
    // The first file written claims the frame's name.
    // Borrowed where the bytes exist already (the payload, the encoded PNG): no
    // frame-sized copy just to name the file.
    let dng_first;
    let (first_ext, first_bytes): (&str, &[u8]) = if cfg.save.raw {
        ("raw", &job.frame.payload)
    } else if cfg.save.dng {
        dng_first = dng
            .take()
            .context("internal error: the worker made no DNG")??;
        ("dng", &dng_first)
    } else {
        ("png", done.map(|i| &i.png[..]).unwrap_or_default())
    };
    let (stem, claimed) = claim_stem(
        &cfg.out,
        job.frame.header.seq,
        first_ext,
        first_bytes,
        cfg.io,
    )?;
    let mut written = vec![claimed];
    let res = finish_frame(
        &job,
        cfg,
        isp,
        dng,
        (busy, t0),
        &stem,
        first_ext,
        &mut written,
    );
    if let Err(e) = &res {
        if e.downcast_ref::<DiskError>().is_some() {
            // A frame's files appear whole or not at all: no orphan .raw without its
            // .png and .json after a disk error.
            for p in written {
                let _ = std::fs::remove_file(p);
            }
        }
    }
    res
}

/// The ISP's output for a frame, encoded.
struct IspResult {
    png: PngFile,
    wb_gains: [f64; 3],
    json: serde_json::Value,
}

/// The frame's pipeline (built once per pattern, depth and levels) and its mosaic.
fn pipeline_and_plane<'p>(
    job: &Job,
    cfg: &SinkConfig,
    pipelines: &'p mut HashMap<PipelineKey, Pipeline>,
) -> Result<(&'p Pipeline, RawPlane)> {
    let h = &job.frame.header;
    let key = (
        h.format.pattern,
        h.format.bits,
        h.black_level,
        h.white_level,
    );
    let pipeline = match pipelines.entry(key) {
        std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
        std::collections::hash_map::Entry::Vacant(e) => {
            e.insert(Pipeline::new(&frame_config(&cfg.isp, h)).context("ISP configuration")?)
        }
    };
    let raw = job.frame.raw().context("frame payload")?;
    let plane = RawPlane::new(raw.width(), raw.height(), raw.to_vec())?;
    Ok((pipeline, plane))
}

/// The white-balance gains the ISP would use for the frame, without making an image.
fn wb_only(
    job: &Job,
    cfg: &SinkConfig,
    pipelines: &mut HashMap<PipelineKey, Pipeline>,
) -> Result<Option<[f64; 3]>> {
    let (pipeline, plane) = pipeline_and_plane(job, cfg, pipelines)?;
    Ok(pipeline.wb_gains(plane, Default::default()))
}

fn run_isp(
    job: &Job,
    cfg: &SinkConfig,
    pipelines: &mut HashMap<PipelineKey, Pipeline>,
    scratch: &mut EncodeScratch,
) -> Result<IspResult> {
    let h = &job.frame.header;
    let (pipeline, plane) = pipeline_and_plane(job, cfg, pipelines)?;
    let mut out = pipeline.run(plane);
    let png = encode_png_in(
        &mut out,
        cfg.png_depth,
        &[
            ("rawlink.seq", h.seq.to_string()),
            ("rawlink.timestamp_ns", h.timestamp_ns.to_string()),
            ("rawlink.exposure_us", h.exposure_us.to_string()),
            ("rawlink.analog_gain", h.analog_gain.to_string()),
        ],
        Some(scratch),
    )?;
    let stages: serde_json::Map<String, serde_json::Value> = out
        .timings
        .iter()
        .map(|(n, d)| (n.to_string(), serde_json::json!(d.as_secs_f64() * 1e3)))
        .collect();
    let wb_gains = out.stats.wb_gains.map(f64::from);
    Ok(IspResult {
        png,
        wb_gains,
        json: serde_json::json!({
            "profile": cfg.isp.profile.to_string(),
            "stages": pipeline.stage_names(),
            "stages_ms": stages,
            "wb_gains": out.stats.wb_gains,
        }),
    })
}

/// The frame as a DNG; `wb_gains` (from the ISP) give AsShotNeutral.
fn dng_bytes(job: &Job, cfg: &SinkConfig, wb_gains: Option<[f64; 3]>) -> Result<Vec<u8>> {
    dng_of(&job.frame, job.recv_ns, &cfg.isp, wb_gains)
}

/// `frame` as a DNG; `wb_gains` (from the ISP) give AsShotNeutral, `isp` the colour
/// matrix; `recv_ns` stands in for a capture time on a clock other than real time.
pub(crate) fn dng_of(
    frame: &rawlink_frame::Frame,
    recv_ns: u64,
    isp: &IspConfig,
    wb_gains: Option<[f64; 3]>,
) -> Result<Vec<u8>> {
    let h = &frame.header;
    let raw = frame.raw().context("frame payload")?;
    let neutral = match wb_gains {
        Some([r, g, b]) if r > 0.0 && g > 0.0 && b > 0.0 => [g / r, 1.0, g / b],
        _ => [1.0; 3],
    };
    let meta = rawlink_dng::DngMeta {
        width: h.width,
        height: h.height,
        pattern: h.format.pattern,
        bits: h.format.bits,
        black_level: h.black_level,
        // A header without a usable white level (0, or not above black) means the
        // format's largest code, as the ISP reads it.
        white_level: if h.white_level > h.black_level {
            h.white_level.min(h.format.max_value())
        } else {
            h.format.max_value()
        },
        as_shot_neutral: neutral,
        color_matrix: crate::dng_color_matrix(isp),
        timestamp_ns: if h.clock == rawlink_frame::ClockId::Realtime {
            h.timestamp_ns
        } else {
            recv_ns
        },
        exposure_us: h.exposure_us,
        analog_gain: h.analog_gain,
        model: "rawlink".into(),
        description: format!("seq={}", h.seq),
        orientation: 1,
    };
    Ok(rawlink_dng::write_dng(&meta, &raw.to_vec())?)
}

/// Writes `frame_SEQ.EXT` (or `frame_SEQ-N.EXT` if a frame with this seq was already
/// saved, e.g. before the server restarted) without replacing any file; returns the
/// stem. No file of the chosen stem exists in any of the frame's extensions.
fn claim_stem(
    dir: &Path,
    seq: u64,
    ext: &str,
    bytes: &[u8],
    io: FileIo,
) -> Result<(String, PathBuf)> {
    for n in 0..10_000u32 {
        let stem = if n == 0 {
            format!("frame_{seq:06}")
        } else {
            format!("frame_{seq:06}-{n}")
        };
        if ["raw", "png", "dng", "json"]
            .iter()
            .any(|e| *e != ext && dir.join(format!("{stem}.{e}")).exists())
        {
            continue;
        }
        match write_new(dir, &format!("{stem}.{ext}"), bytes, io) {
            Ok(p) => {
                if n > 0 {
                    // Said once per process at info level (a restarted server renames
                    // every frame it sends again), then at debug level.
                    static SAID: std::sync::atomic::AtomicBool =
                        std::sync::atomic::AtomicBool::new(false);
                    if SAID.swap(true, std::sync::atomic::Ordering::Relaxed) {
                        tracing::debug!("frame_{seq:06} exists already: saving this one as {stem}");
                    } else {
                        tracing::info!("frame_{seq:06} exists already: saving this one as {stem} (frames whose names are taken get the next free suffix; further ones are logged at debug level)");
                    }
                }
                return Ok((stem, p));
            }
            Err(e) if e.kind == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e.into()),
        }
    }
    anyhow::bail!("no free file name for frame {seq} in {}", dir.display())
}

/// Writes the frame's other files and its JSON. `dng`: the DNG, when one is saved and
/// was not the first file. `busy`: the time spent computing the frame, and when its
/// writing began. Returns the capture → done latency (on this host's clock only).
#[allow(clippy::too_many_arguments)]
fn finish_frame(
    job: &Job,
    cfg: &SinkConfig,
    isp: Result<Option<IspResult>>,
    dng: Option<Result<Vec<u8>>>,
    busy: (std::time::Duration, Instant),
    stem: &str,
    first_ext: &str,
    written: &mut Vec<PathBuf>,
) -> Result<Option<f64>> {
    let h = &job.frame.header;
    let mut files = serde_json::Map::new();
    files.insert(first_ext.into(), format!("{stem}.{first_ext}").into());
    // Files of this frame that could not be made (not disk errors: those end the frame):
    // named in its JSON, and reported as the frame's error after it is written.
    let mut problems: Vec<String> = Vec::new();
    let isp = isp.unwrap_or_else(|e| {
        problems.push(format!("no PNG: {e:#}"));
        None
    });
    let mut isp_json = serde_json::Value::Null;
    if let Some(i) = isp {
        if first_ext != "png" {
            let png_name = format!("{stem}.png");
            written.push(write_new(&cfg.out, &png_name, &i.png, cfg.io)?);
            files.insert("png".into(), png_name.into());
        }
        isp_json = i.json;
    }
    if let Some(dng) = dng.filter(|_| first_ext != "dng") {
        match dng {
            Ok(bytes) => {
                let dng_name = format!("{stem}.dng");
                written.push(write_new(&cfg.out, &dng_name, &bytes, cfg.io)?);
                files.insert("dng".into(), dng_name.into());
            }
            Err(e) => problems.push(format!("no DNG: {e:#}")),
        }
    }
    let processing_ms = (busy.0 + busy.1.elapsed()).as_secs_f64() * 1e3;
    let done_ns = now_realtime_ns();
    // Latencies only from a capture time on this host's clock (a legacy frame has none;
    // a monotonic one is another host's, or another boot's, clock).
    let since_capture = |t_ns: u64| {
        (h.clock == rawlink_frame::ClockId::Realtime)
            .then(|| t_ns.saturating_sub(h.timestamp_ns) as f64 / 1e6)
    };
    let latency_ms = since_capture(done_ns);
    let receive_latency_ms = since_capture(job.recv_ns);
    let json_name = format!("{stem}.json");
    files.insert("json".into(), json_name.clone().into());
    let meta = serde_json::json!({
        "seq": h.seq,
        "timestamp_ns": h.timestamp_ns,
        "clock": h.clock,
        "width": h.width,
        "height": h.height,
        "stride": h.stride,
        "pattern": h.format.pattern,
        "bits": h.format.bits,
        "packing": h.format.packing,
        "exposure_us": h.exposure_us,
        "analog_gain": h.analog_gain,
        "black_level": h.black_level,
        "white_level": h.white_level,
        "payload_bytes": job.frame.payload.len(),
        "payload_crc32c": job
            .frame
            .payload_crc32c
            .unwrap_or_else(|| rawlink_frame::crc32c(&job.frame.payload)),
        "receive_time_ns": job.recv_ns,
        "capture_to_receive_ms": receive_latency_ms,
        "processing_ms": processing_ms,
        // Only where a PNG was written.
        "capture_to_png_ms": latency_ms.filter(|_| files.contains_key("png")),
        "isp": isp_json,
        "files": files,
        "errors": problems,
    });
    let mut text = serde_json::to_vec_pretty(&meta)?;
    text.push(b'\n');
    written.push(write_new(&cfg.out, &json_name, &text, cfg.io)?);
    if !problems.is_empty() {
        anyhow::bail!(
            "{} (its other files are kept as {stem}.*)",
            problems.join("; ")
        );
    }
    if !cfg.quiet {
        println!(
            "{}frame seq={} bytes={} latency={} isp={:.1}ms files={stem}.{{{}}}",
            cfg.label,
            h.seq,
            job.frame.payload.len(),
            latency_ms.map_or("-".into(), |l| format!("{l:.1}ms")),
            processing_ms,
            files.keys().cloned().collect::<Vec<_>>().join(",")
        );
    }
    Ok(latency_ms)
}

/// Smallest file written with direct I/O. A direct write waits for the device, but in a
/// writer thread, not in a worker (the ISP goes on meanwhile), so it pays from a few
/// tens of KB: at 640×480 (600 KB RAW, ~300 KB PNG per frame) `demo` writes ~11 % more
/// frames per second with this threshold than with the former 1 MiB one, which sent
/// those files through the page cache (5 alternated runs, medians 296 → 328),
/// and each frame's capture → PNG latency grows by about the device's round trip (~1 ms
/// at 10 frames/s); `--io buffered` keeps the lower latency. The JSON (~1 KB) is always
/// buffered: a whole block padded and cut back for it would cost more than its copy.
const DIRECT_MIN: usize = 1 << 16;

/// Block size for direct I/O: buffer address, file offset and length are multiples of
/// it (4 KiB covers devices with 512-byte and 4 KiB logical blocks).
const DIRECT_BLOCK: usize = 4096;
// The decoder places the payloads that are written directly on block boundaries.
const _: () = assert!(
    rawlink_proto::PAYLOAD_ALIGN.is_multiple_of(DIRECT_BLOCK)
        && rawlink_proto::ALIGN_PAYLOAD_MIN <= DIRECT_MIN
);

thread_local! {
    /// Each writer's block-aligned staging buffer for direct writes, kept between files
    /// (a fresh one per file would be mapped and zeroed by the kernel every time).
    static DIRECT_STAGE: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Writes `bytes` to `f`, opened with `O_DIRECT` and empty, in whole blocks, then cuts
/// the file back to its length. Where `bytes` starts on a block boundary (the received
/// payloads and the encoded PNGs are placed so), its whole blocks are written from
/// where they are and only the last partial block is copied, padded with zeros, into a
/// block-aligned buffer; otherwise all of it is copied there first. If the device
/// refuses the direct write (`EINVAL`: an alignment it does not accept), `O_DIRECT` is
/// cleared on the file and the bytes are written through the page cache.
fn write_direct(f: &mut std::fs::File, bytes: &[u8]) -> std::io::Result<()> {
    let aligned = bytes.as_ptr().align_offset(DIRECT_BLOCK) == 0;
    // The part written in place: every whole block, when `bytes` is aligned.
    let direct = if aligned {
        bytes.len() / DIRECT_BLOCK * DIRECT_BLOCK
    } else {
        0
    };
    let rest = &bytes[direct..];
    let padded = rest.len().div_ceil(DIRECT_BLOCK) * DIRECT_BLOCK;
    let res = f.write_all(&bytes[..direct]).and_then(|()| {
        DIRECT_STAGE.with(|stage| {
            let mut stage = stage.borrow_mut();
            if stage.len() < padded + DIRECT_BLOCK {
                stage.resize(padded + DIRECT_BLOCK, 0);
            }
            let at = stage.as_ptr().align_offset(DIRECT_BLOCK);
            let buf = &mut stage[at..at + padded];
            buf[..rest.len()].copy_from_slice(rest);
            buf[rest.len()..].fill(0);
            f.write_all(buf)
        })
    });
    match res {
        Ok(()) => f.set_len(bytes.len() as u64),
        Err(e) if e.raw_os_error() == Some(nix::errno::Errno::EINVAL as i32) => {
            rewrite_buffered(f, bytes)
        }
        Err(e) => Err(e),
    }
}

/// Clears `O_DIRECT` on `f` and replaces its contents with `bytes` through the page
/// cache.
fn rewrite_buffered(f: &mut std::fs::File, bytes: &[u8]) -> std::io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    use std::io::{Seek, SeekFrom};
    use std::os::fd::AsRawFd;
    let fd = f.as_raw_fd();
    let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
    fcntl(fd, FcntlArg::F_SETFL(flags - OFlag::O_DIRECT))?;
    f.set_len(0)?;
    f.seek(SeekFrom::Start(0))?;
    f.write_all(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pooled_pngs_are_the_same_files_on_block_boundaries() {
        let mut cfg = IspConfig::new(Profile::Default, rawlink_frame::BayerPattern::Rggb, 12);
        cfg.set_black_level(64);
        let p = Pipeline::new(&cfg).unwrap();
        let raw = |k: usize| {
            let data = (0..64 * 48).map(|i| ((i * 37 + k) % 4000 + 64) as u16);
            RawPlane::new(64, 48, data.collect()).unwrap()
        };
        let pool = Arc::new(PngPool::new(1));
        let mut sc = EncodeScratch { png: pool.clone() };
        let mut first = None;
        for k in 0..3 {
            let want = encode_png(&mut p.run(raw(k)), 8, &[]).unwrap();
            let got = encode_png_in(&mut p.run(raw(k)), 8, &[], Some(&mut sc)).unwrap();
            assert!(*got == want[..], "frame {k}");
            assert_eq!(got.as_ptr() as usize % DIRECT_BLOCK, 0, "frame {k}");
            // Written, dropped: its buffer goes back, and the next file reuses it.
            let buf = got.buf.as_ptr();
            assert_eq!(*first.get_or_insert(buf), buf, "frame {k}");
            drop(got);
            assert_eq!(lock(&pool.spare).len(), 1);
        }
        // A spare far larger than a frame needs (from larger frames) is freed, not used.
        lock(&pool.spare)[0] = Vec::with_capacity(64 << 20);
        let b = pool.take(1000);
        assert!(b.capacity() < 1 << 20 && lock(&pool.spare).is_empty());
    }

    #[test]
    fn atomic_write_leaves_no_temp_file() {
        let d = tempfile::tempdir().unwrap();
        write_atomic(d.path(), "a.bin", b"hello").unwrap();
        assert_eq!(std::fs::read(d.path().join("a.bin")).unwrap(), b"hello");
        let names: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        // A missing folder is a clear error, not a silent success.
        let err = write_atomic(&d.path().join("missing"), "a.bin", b"x").unwrap_err();
        assert!(format!("{err:#}").contains("missing/a.bin"), "{err:#}");
    }

    #[test]
    fn write_new_never_replaces() {
        // Both ways: through an unnamed file (where the file system has them, as here)
        // and through a named temporary.
        type Write = fn(&Path, &str, &[u8]) -> Result<PathBuf, DiskError>;
        for (how, write) in [
            (
                "direct",
                (|d, n, b| write_new(d, n, b, FileIo::Direct)) as Write,
            ),
            ("buffered", |d, n, b| write_new(d, n, b, FileIo::Buffered)),
            ("named", write_named),
        ] {
            let d = tempfile::tempdir().unwrap();
            write(d.path(), "a.bin", b"first").unwrap();
            let e = write(d.path(), "a.bin", b"second").unwrap_err();
            assert_eq!(e.kind, std::io::ErrorKind::AlreadyExists, "{how}");
            assert_eq!(std::fs::read(d.path().join("a.bin")).unwrap(), b"first");
            let names: Vec<_> = std::fs::read_dir(d.path()).unwrap().collect();
            assert_eq!(names.len(), 1, "{how}: no temporary file left behind");
        }
    }

    #[test]
    fn unnamed_files_are_linked_whole() {
        let d = tempfile::tempdir().unwrap();
        let dst = d.path().join("b.bin");
        if !write_unnamed(d.path(), &dst, b"payload", FileIo::Buffered).unwrap() {
            eprintln!("note: no unnamed files on this file system; write_named is used");
            assert!(!dst.exists());
            return;
        }
        assert_eq!(std::fs::read(&dst).unwrap(), b"payload");
        let e = write_unnamed(d.path(), &dst, b"other", FileIo::Buffered).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&dst).unwrap(), b"payload");
    }

    #[test]
    fn direct_writes_keep_every_length_exact() {
        // Lengths around the block size, empty, and several blocks plus a tail: each
        // file holds exactly its bytes (the padding to whole blocks is cut off).
        let d = tempfile::tempdir().unwrap();
        let m = DIRECT_MIN;
        for (k, len) in [0usize, 1, 4097, m - 1, m, m + 1, m + 4095, 3 * m + 4096]
            .into_iter()
            .enumerate()
        {
            let data: Vec<u8> = (0..len).map(|i| (i * 31 + k) as u8).collect();
            // The same bytes starting on a block boundary (whole blocks written in
            // place) and one byte past it (all copied).
            let mut room = vec![0u8; len + 2 * DIRECT_BLOCK];
            let at = room.as_ptr().align_offset(DIRECT_BLOCK);
            for (how, off) in [("aligned", at), ("unaligned", at + 1)] {
                room[off..off + len].copy_from_slice(&data);
                let bytes = &room[off..off + len];
                assert_eq!(bytes.as_ptr().align_offset(DIRECT_BLOCK) == 0, off == at);
                let name = format!("f{k}-{how}.bin");
                write_new(d.path(), &name, bytes, FileIo::Direct).unwrap();
                let back = std::fs::read(d.path().join(&name)).unwrap();
                assert!(back == data, "{len} bytes, {how}");
                // The direct path itself, on a file of any length.
                let mut f = tempfile::tempfile_in(d.path()).unwrap();
                write_direct(&mut f, bytes).unwrap();
                let mut back = Vec::new();
                std::io::Seek::rewind(&mut f).unwrap();
                std::io::Read::read_to_end(&mut f, &mut back).unwrap();
                assert!(back == data, "{len} bytes, {how}, direct path");
            }
        }
        assert!("direct".parse::<FileIo>() == Ok(FileIo::Direct));
        assert!("buffered".parse::<FileIo>() == Ok(FileIo::Buffered));
        assert!("mmap"
            .parse::<FileIo>()
            .unwrap_err()
            .contains("direct or buffered"));
    }

    #[test]
    fn the_buffered_fallback_clears_o_direct() {
        use std::os::unix::fs::OpenOptionsExt;
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.bin");
        let f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(nix::fcntl::OFlag::O_DIRECT.bits())
            .open(&p);
        let Ok(mut f) = f else {
            eprintln!("note: no direct I/O on this file system; fallback not exercised");
            return;
        };
        // Unaligned (on the heap at no particular address, 5 bytes): with O_DIRECT still
        // set the kernel would refuse it.
        let bytes = b"hello".to_vec();
        f.write_all(b"old contents, longer").ok();
        rewrite_buffered(&mut f, &bytes).unwrap();
        drop(f);
        assert_eq!(std::fs::read(&p).unwrap(), b"hello");
    }

    #[test]
    fn claim_stem_takes_the_next_free_suffix() {
        let d = tempfile::tempdir().unwrap();
        let (a, _) = claim_stem(d.path(), 7, "raw", b"a", FileIo::Direct).unwrap();
        let (b, _) = claim_stem(d.path(), 7, "raw", b"b", FileIo::Direct).unwrap();
        // A stem whose .png exists (its .raw deleted by hand) is not reused either.
        std::fs::write(d.path().join("frame_000007-2.png"), b"x").unwrap();
        let (c, _) = claim_stem(d.path(), 7, "raw", b"c", FileIo::Direct).unwrap();
        assert_eq!(
            (a.as_str(), b.as_str(), c.as_str()),
            ("frame_000007", "frame_000007-1", "frame_000007-3")
        );
        assert_eq!(
            std::fs::read(d.path().join("frame_000007.raw")).unwrap(),
            b"a"
        );
    }

    #[test]
    fn only_dead_processes_temp_files_are_removed() {
        let d = tempfile::tempdir().unwrap();
        let dead = d.path().join(".frame_000001.raw.4294967.rawlink-tmp");
        let mine = temp_path(d.path(), "frame_000002.raw");
        let other = d.path().join(".notes.tmp");
        for p in [&dead, &mine, &other] {
            std::fs::write(p, b"x").unwrap();
        }
        assert_eq!(remove_stale_temp_files(d.path()), 1);
        assert!(!dead.exists() && mine.exists() && other.exists());
    }

    #[test]
    fn disk_errors_name_the_cause() {
        let p = Path::new("/x/frame.png");
        let full = DiskError::new(std::io::Error::from_raw_os_error(28), p).to_string();
        assert!(
            full.starts_with("disk error writing /x/frame.png: the disk is full"),
            "{full}"
        );
        let ro = DiskError::new(std::io::Error::from_raw_os_error(30), p).to_string();
        assert!(ro.contains("read-only"), "{ro}");
        let acc = DiskError::new(std::io::Error::from_raw_os_error(13), p).to_string();
        assert!(acc.contains("permission denied"), "{acc}");
    }
}
