//! `rawlink receive`: connect, decode, validate, and hand frames to the sink.

use crate::sink::{FrameSink, Job, SinkConfig, SinkReport};
use anyhow::{bail, Context, Result};
use bytes::BytesMut;
use rawlink_frame::{ClockId, Frame, FrameHeader};
use rawlink_proto::{ClientHello, Decoder, Encoder, EndOfStream, LegacyDecoder, Limits, Message};
use rawlink_source::now_realtime_ns;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn, Instrument};

/// Receiver settings (already validated).
#[derive(Debug, Clone)]
pub struct ReceiveConfig {
    /// `HOST:PORT` of the server.
    pub connect: String,
    /// Bare frames instead of protocol v1.
    pub legacy: bool,
    /// Header used for legacy frames (geometry, format, black level).
    pub legacy_template: FrameHeader,
    /// Stop after this many frames.
    pub frames: Option<u64>,
    /// How long to retry the first connection.
    pub connect_timeout: Duration,
    /// Decoder limits.
    pub limits: Limits,
    /// Output stage; `None` = `--sink null` (validate and count only).
    pub sink: Option<SinkConfig>,
    /// Delivery options sent to the server in the hello (not in legacy mode).
    pub hello: ClientHello,
    /// Period of the one-line statistics log (zero: off).
    pub stats_interval: Duration,
}

/// What the receiver did.
#[derive(Debug, Default)]
pub struct ReceiveSummary {
    /// Frames received whole and valid.
    pub frames: u64,
    /// Payload bytes of those frames.
    pub bytes: u64,
    /// From the first frame's arrival to the end.
    pub seconds: f64,
    /// The end-of-stream message, if one arrived.
    pub end: Option<EndOfStream>,
    /// Why the stream failed, if it did.
    pub error: Option<String>,
    /// Output stage report.
    pub sink: SinkReport,
    /// True if a signal stopped the receiver.
    pub interrupted: bool,
    /// Frames the server reported dropping for this client.
    pub server_drops: u64,
    /// Frames missing from the sequence (gaps in `seq`), whatever the cause.
    pub missing: u64,
    /// Capture → receive latency of each frame, ms.
    pub receive_latency_ms: Vec<f64>,
}

impl ReceiveSummary {
    /// The one-line summary printed at the end.
    pub fn line(&self) -> String {
        let fps = if self.seconds > 0.0 {
            self.frames as f64 / self.seconds
        } else {
            0.0
        };
        let (p50, p99) = percentiles(&self.sink.latency_ms);
        let (r50, r99) = percentiles(&self.receive_latency_ms);
        format!(
            "summary: frames={} bytes={} seconds={:.2} fps={:.1} MB/s={:.1} written={} drops={} errors={} latency_ms_p50={:.1} latency_ms_p99={:.1} recv_latency_ms_p50={:.2} recv_latency_ms_p99={:.2} server_drops={} missing={}",
            self.frames,
            self.bytes,
            self.seconds,
            fps,
            if self.seconds > 0.0 { self.bytes as f64 / self.seconds / 1e6 } else { 0.0 },
            self.sink.written,
            self.sink.dropped,
            self.sink.errors + self.error.is_some() as u64,
            p50,
            p99,
            r50,
            r99,
            self.server_drops,
            self.missing
        )
    }
}

/// Median and 99th percentile (nearest rank); zeros for an empty sample.
pub fn percentiles(v: &[f64]) -> (f64, f64) {
    if v.is_empty() {
        return (0.0, 0.0);
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let rank = |q: f64| s[((q * s.len() as f64).ceil() as usize).clamp(1, s.len()) - 1];
    (rank(0.5), rank(0.99))
}

async fn connect_with_retry(addr: &str, timeout: Duration) -> Result<TcpStream> {
    let start = Instant::now();
    let mut delay = Duration::from_millis(50);
    loop {
        match TcpStream::connect(addr).await {
            Ok(s) => return Ok(s),
            Err(e) if start.elapsed() + delay < timeout => {
                tracing::debug!("connect to {addr} failed ({e}); retrying in {delay:?}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(1));
            }
            Err(e) => {
                return Err(e).with_context(|| {
                    format!(
                        "cannot connect to {addr} (tried for {:.1} s)",
                        timeout.as_secs_f64()
                    )
                })
            }
        }
    }
}

/// Receives one stream. Returns `Err` only if nothing could be set up (output
/// folder, connection); stream faults are reported in the summary, after every
/// frame already received has been written.
pub async fn receive(cfg: ReceiveConfig, shutdown: CancellationToken) -> Result<ReceiveSummary> {
    let sink = match &cfg.sink {
        Some(s) => Some(FrameSink::start(s.clone())?),
        None => None,
    };
    let mut sock = match connect_with_retry(&cfg.connect, cfg.connect_timeout).await {
        Ok(s) => s,
        Err(e) => {
            sink.map(FrameSink::finish);
            return Err(e);
        }
    };
    if !cfg.legacy {
        let hello = Encoder::encode_parts(&Message::ClientHello(cfg.hello.clone()));
        let mut bytes = hello.header.to_vec();
        bytes.extend_from_slice(&hello.payload);
        if let Err(e) = sock.write_all(&bytes).await {
            sink.map(FrameSink::finish);
            return Err(e).context("sending the client hello");
        }
    }
    crate::netio::tune_stream_socket(&sock);
    let peer = sock
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| cfg.connect.clone());
    info!(%peer, legacy = cfg.legacy, "connected");
    let mut summary = ReceiveSummary::default();
    let span = tracing::info_span!("conn", %peer);
    let res = read_loop(&mut sock, &cfg, sink.as_ref(), &mut summary, &shutdown)
        .instrument(span)
        .await;
    if let Err(e) = res {
        summary.error = Some(format!("{e:#}"));
    }
    if let Some(sink) = sink {
        summary.sink = sink.finish();
    }
    Ok(summary)
}

async fn read_loop(
    sock: &mut TcpStream,
    cfg: &ReceiveConfig,
    sink: Option<&FrameSink>,
    summary: &mut ReceiveSummary,
    shutdown: &CancellationToken,
) -> Result<()> {
    let mut buf = BytesMut::with_capacity(256 * 1024);
    let mut decoder = Decoder::with_limits(cfg.limits);
    let mut legacy = LegacyDecoder::new(cfg.legacy_template.payload_len() as usize);
    let mut first: Option<Instant> = None;
    let mut legacy_seq = 0u64;
    let mut last_seq: Option<u64> = None;
    let mut deliver = |frame: Frame, summary: &mut ReceiveSummary| {
        let now = Instant::now();
        let recv_ns = now_realtime_ns();
        let t0 = *first.get_or_insert(now);
        summary.frames += 1;
        summary.bytes += frame.payload.len() as u64;
        summary.seconds = now.duration_since(t0).as_secs_f64();
        metrics::counter!("rawlink_receiver_frames_total").increment(1);
        metrics::counter!("rawlink_receiver_bytes_total").increment(frame.payload.len() as u64);
        let seq = frame.header.seq;
        if let Some(last) = last_seq {
            if seq > last + 1 {
                summary.missing += seq - last - 1;
                metrics::counter!("rawlink_receiver_missing_frames_total")
                    .increment(seq - last - 1);
                tracing::debug!(
                    "sequence gap: {} frame(s) missing before seq {seq}",
                    seq - last - 1
                );
            }
        }
        last_seq = Some(seq);
        if frame.header.clock == ClockId::Realtime {
            let lat_ns = recv_ns.saturating_sub(frame.header.timestamp_ns);
            summary.receive_latency_ms.push(lat_ns as f64 / 1e6);
            metrics::histogram!("rawlink_receiver_capture_to_receive_seconds")
                .record(lat_ns as f64 / 1e9);
        }
        sink.map(|_| Job { frame, recv_ns })
    };
    let lossless = cfg.hello.policy == rawlink_proto::Policy::Lossless;
    let submit = |job: Option<Job>| async move {
        if let (Some(sink), Some(job)) = (sink, job) {
            if lossless {
                // A recorder waits for its workers rather than dropping.
                sink.submit_wait(job).await;
            } else {
                sink.submit(job);
            }
        }
    };
    let mut stats_at = Instant::now();
    let mut stats_frames = 0u64;
    let mut stats_bytes = 0u64;
    loop {
        if !cfg.stats_interval.is_zero() && stats_at.elapsed() >= cfg.stats_interval {
            let dt = stats_at.elapsed().as_secs_f64();
            let (p50, p99) = percentiles(&summary.receive_latency_ms);
            info!(
                "stats: frames={} fps={:.1} MB/s={:.1} server_drops={} missing={} recv_latency_ms_p50={p50:.2} p99={p99:.2}",
                summary.frames,
                (summary.frames - stats_frames) as f64 / dt,
                (summary.bytes - stats_bytes) as f64 / dt / 1e6,
                summary.server_drops,
                summary.missing
            );
            (stats_at, stats_frames, stats_bytes) = (Instant::now(), summary.frames, summary.bytes);
        }
        // Decode everything buffered.
        loop {
            if cfg.frames.is_some_and(|n| summary.frames >= n) {
                info!("received the requested {} frames", summary.frames);
                return Ok(());
            }
            if cfg.legacy {
                match legacy.decode(&mut buf) {
                    Some(payload) => {
                        legacy_seq += 1;
                        let mut h = cfg.legacy_template;
                        h.seq = legacy_seq;
                        h.timestamp_ns = now_realtime_ns();
                        h.clock = ClockId::Realtime;
                        let job = deliver(Frame::new(h, payload)?, summary);
                        submit(job).await;
                    }
                    None => break,
                }
            } else {
                let decoded = decoder.decode(&mut buf).inspect_err(|e| {
                    metrics::counter!("rawlink_receiver_errors_total", "kind" => crate::monitor::error_kind(e))
                        .increment(1);
                })?;
                match decoded {
                    Some(Message::Frame(f)) => {
                        // Packed on the wire: back to 16-bit containers, exactly.
                        let f = rawlink_frame::unpack_frame(f)?;
                        let job = deliver(f, summary);
                        submit(job).await;
                    }
                    Some(Message::StreamStart(info)) => info!(
                        source = %info.source,
                        server = %info.server,
                        "stream: {}x{} {} black {} white {}",
                        info.header.width,
                        info.header.height,
                        info.header.format,
                        info.header.black_level,
                        info.header.white_level
                    ),
                    Some(Message::Heartbeat) => {}
                    Some(Message::Notice(n)) => {
                        summary.server_drops += n.dropped;
                        metrics::counter!("rawlink_receiver_server_drops_total")
                            .increment(n.dropped);
                        warn!(
                            "server dropped {} frame(s) for this client ({}), seq {}..={}",
                            n.dropped, n.reason, n.first_seq, n.last_seq
                        );
                    }
                    Some(Message::ClientHello(_)) => {
                        bail!("protocol error: the server sent a client hello")
                    }
                    Some(Message::EndOfStream(end)) => {
                        let clean = end.reason.is_clean();
                        info!(reason = ?end.reason, last_seq = end.last_seq, "end of stream: {}", end.message);
                        let msg =
                            format!("server ended the stream: {:?}: {}", end.reason, end.message);
                        summary.end = Some(end);
                        if clean {
                            return Ok(());
                        }
                        bail!(msg);
                    }
                    None => break,
                }
            }
        }
        let n = tokio::select! {
            r = sock.read_buf(&mut buf) => r.context("reading from the server")?,
            _ = shutdown.cancelled() => {
                warn!("interrupted: finishing frames already received");
                summary.interrupted = true;
                return Ok(());
            }
        };
        if n == 0 {
            if cfg.legacy {
                legacy.finish(&buf)?;
                info!("server closed the connection at a frame boundary");
                return Ok(());
            }
            decoder.decode_eof(&mut buf).inspect_err(|e| {
                metrics::counter!("rawlink_receiver_errors_total", "kind" => crate::monitor::error_kind(e))
                    .increment(1);
            })?;
            bail!("server closed the connection without an end-of-stream message");
        }
    }
}
