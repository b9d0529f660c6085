//! The receiver's output stage: a pool of worker threads that run the ISP and write
//! `frame_NNNNNN.{raw,png,json}`. The network task hands frames over through a
//! bounded queue and never waits: when the queue is full the frame is dropped and
//! counted. Every file is written under a temporary name and renamed into place.

use anyhow::{Context, Result};
use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use rawlink_frame::Frame;
use rawlink_isp::encode::{write_png_rgb16, write_png_rgb8, PngSpeed};
use rawlink_isp::{IspConfig, IspError, Pipeline, PipelineOutput, Profile, RawPlane};
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
    /// Worker threads.
    pub workers: usize,
    /// Queue depth in frames.
    pub queue: usize,
    /// Suppress per-frame lines.
    pub quiet: bool,
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
    /// Frames dropped because the queue was full.
    pub dropped: u64,
    /// Frames that failed (ISP or disk).
    pub errors: u64,
    /// First error, for the summary.
    pub first_error: Option<String>,
    /// Capture → PNG-on-disk latency of each written frame, ms.
    pub latency_ms: Vec<f64>,
    /// ISP + encode time of each written frame, ms.
    pub processing_ms: Vec<f64>,
}

/// The worker pool.
pub struct FrameSink {
    tx: Option<Sender<Job>>,
    workers: Vec<JoinHandle<()>>,
    report: Arc<Mutex<SinkReport>>,
}

impl FrameSink {
    /// Creates the output folder and starts the workers.
    pub fn start(cfg: SinkConfig) -> Result<Self> {
        std::fs::create_dir_all(&cfg.out)
            .with_context(|| format!("cannot create output folder {}", cfg.out.display()))?;
        probe_writable(&cfg.out)?;
        let (tx, rx) = bounded::<Job>(cfg.queue.max(1));
        let report = Arc::new(Mutex::new(SinkReport::default()));
        let cfg = Arc::new(cfg);
        let workers = (0..cfg.workers.max(1))
            .map(|i| {
                let rx = rx.clone();
                let report = report.clone();
                let cfg = cfg.clone();
                std::thread::Builder::new()
                    .name(format!("sink-{i}"))
                    .spawn(move || worker(rx, cfg, report))
                    .context("starting a sink worker")
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            tx: Some(tx),
            workers,
            report,
        })
    }

    /// Hands a frame to the workers without waiting. Returns false if it was dropped.
    pub fn submit(&self, job: Job) -> bool {
        let Some(tx) = &self.tx else { return false };
        match tx.try_send(job) {
            Ok(()) => true,
            Err(TrySendError::Full(j)) | Err(TrySendError::Disconnected(j)) => {
                tracing::warn!(seq = j.frame.header.seq, "worker queue full: frame dropped");
                lock(&self.report).dropped += 1;
                metrics::counter!("rawlink_receiver_local_drops_total").increment(1);
                false
            }
        }
    }

    /// Hands a frame to the workers, waiting while their queue is full (lossless
    /// receivers: the wait propagates to the server as TCP back-pressure). Returns false
    /// only if the workers are gone.
    pub async fn submit_wait(&self, mut job: Job) -> bool {
        let Some(tx) = &self.tx else { return false };
        loop {
            match tx.try_send(job) {
                Ok(()) => return true,
                Err(TrySendError::Full(j)) => {
                    job = j;
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                }
                Err(TrySendError::Disconnected(_)) => return false,
            }
        }
    }

    /// Waits for queued frames to be written and returns the report.
    pub fn finish(mut self) -> SinkReport {
        self.tx.take();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        let r = lock(&self.report).clone();
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

/// Writes `bytes` to `dir/name` through a temporary file and a rename, so a crash
/// never leaves a partial file under the final name.
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<PathBuf> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let dst = dir.join(name);
    let res = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.flush()?;
        std::fs::rename(&tmp, &dst)
    })();
    if let Err(e) = res {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("writing {}", dst.display()));
    }
    Ok(dst)
}

type PipelineKey = (rawlink_frame::BayerPattern, u8, u16, u16);

/// Encodes a pipeline output as an 8- or 16-bit PNG with text metadata.
pub fn encode_png(
    out: &PipelineOutput,
    depth: u8,
    text: &[(&str, String)],
) -> Result<Vec<u8>, IspError> {
    let mut text = text.to_vec();
    text.insert(
        0,
        ("Software", format!("rawlink {}", env!("CARGO_PKG_VERSION"))),
    );
    let mut png = Vec::new();
    let (w, h) = (out.image.width, out.image.height);
    if depth == 16 {
        write_png_rgb16(&mut png, w, h, &out.to_rgb16(), &text)?;
    } else {
        write_png_rgb8(&mut png, w, h, &out.to_rgb8(), &text, PngSpeed::Fast)?;
    }
    Ok(png)
}

/// The pipeline configuration for a frame: the base configuration with the frame's
/// format and, unless configured, its black and white levels.
fn frame_config(base: &IspConfig, h: &rawlink_frame::FrameHeader) -> IspConfig {
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

fn worker(rx: Receiver<Job>, cfg: Arc<SinkConfig>, report: Arc<Mutex<SinkReport>>) {
    let mut pipelines: HashMap<PipelineKey, Pipeline> = HashMap::new();
    for job in rx {
        let seq = job.frame.header.seq;
        match process(&job, &cfg, &mut pipelines) {
            Ok((latency, processing)) => {
                let mut r = lock(&report);
                r.written += 1;
                r.latency_ms.push(latency);
                r.processing_ms.push(processing);
            }
            Err(e) => {
                let msg = format!("frame {seq}: {e:#}");
                tracing::error!("{msg}");
                let mut r = lock(&report);
                r.errors += 1;
                r.first_error.get_or_insert(msg);
            }
        }
    }
}

fn process(
    job: &Job,
    cfg: &SinkConfig,
    pipelines: &mut HashMap<PipelineKey, Pipeline>,
) -> Result<(f64, f64)> {
    let h = &job.frame.header;
    let stem = format!("frame_{:06}", h.seq);
    let raw_name = format!("{stem}.raw");
    write_atomic(&cfg.out, &raw_name, &job.frame.payload)?;

    let t0 = Instant::now();
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
    let out = pipeline.run(plane);
    let png = encode_png(
        &out,
        cfg.png_depth,
        &[
            ("rawlink.seq", h.seq.to_string()),
            ("rawlink.timestamp_ns", h.timestamp_ns.to_string()),
            ("rawlink.exposure_us", h.exposure_us.to_string()),
            ("rawlink.analog_gain", h.analog_gain.to_string()),
        ],
    )?;
    let processing_ms = t0.elapsed().as_secs_f64() * 1e3;
    let png_name = format!("{stem}.png");
    write_atomic(&cfg.out, &png_name, &png)?;
    let done_ns = now_realtime_ns();
    let latency_ms = done_ns.saturating_sub(h.timestamp_ns) as f64 / 1e6;
    let receive_latency_ms = job.recv_ns.saturating_sub(h.timestamp_ns) as f64 / 1e6;

    let stages: serde_json::Map<String, serde_json::Value> = out
        .timings
        .iter()
        .map(|(n, d)| (n.to_string(), serde_json::json!(d.as_secs_f64() * 1e3)))
        .collect();
    let json_name = format!("{stem}.json");
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
        "receive_time_ns": job.recv_ns,
        "capture_to_receive_ms": receive_latency_ms,
        "processing_ms": processing_ms,
        "capture_to_png_ms": latency_ms,
        "isp": {
            "profile": cfg.isp.profile.to_string(),
            "stages": pipeline.stage_names(),
            "stages_ms": stages,
            "wb_gains": out.stats.wb_gains,
        },
        "files": { "raw": raw_name, "png": png_name, "json": json_name },
    });
    let mut text = serde_json::to_vec_pretty(&meta)?;
    text.push(b'\n');
    write_atomic(&cfg.out, &json_name, &text)?;
    if !cfg.quiet {
        println!(
            "frame seq={} bytes={} latency={:.1}ms isp={:.1}ms files={stem}.{{raw,png,json}}",
            h.seq,
            job.frame.payload.len(),
            latency_ms,
            processing_ms
        );
    }
    Ok((latency_ms, processing_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
