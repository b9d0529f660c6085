//! `rawlink receive`: connect, decode, validate, and hand frames to the sink.
//!
//! One receiver follows one server across connections: a fault (the connection
//! closes mid-stream, resets, or goes silent past `--peer-timeout`) is followed by a
//! reconnect with exponential backoff and jitter, and the sequence gap across it is
//! reported. Corrupt bytes do not cost the connection: the decoder scans forward to
//! the next valid header. Only a clean end (an end-of-stream message, or in legacy
//! mode a close at a frame boundary), a signal, `--frames`, or a fatal error (wrong
//! protocol, refused credentials, a bad certificate, a disk error under
//! `--on-disk-error stop`) ends it.

use crate::netio::BoxConn;
use crate::sink::{FrameSink, Job, SinkConfig, SinkReport};
use anyhow::{anyhow, Result};
use bytes::BytesMut;
use rawlink_frame::{ClockId, Frame, FrameHeader};
use rawlink_proto::{
    ClientHello, Decoder, Encoder, EndOfStream, EndReason, LegacyDecoder, Limits, Message,
    ProtoError,
};
use rawlink_source::now_realtime_ns;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn, Instrument};

/// TLS settings of a receiver.
#[derive(Clone)]
pub struct ClientTls {
    /// The rustls connector (trust anchors or `--tls-insecure`).
    pub connector: tokio_rustls::TlsConnector,
    /// Name checked against the server's certificate.
    pub server_name: rustls_pki_types::ServerName<'static>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ClientTls({:?})", self.server_name)
    }
}

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
    /// Reconnect after a fault (otherwise exit with the error).
    pub reconnect: bool,
    /// Give up reconnecting after this long without a connection (`None`: never).
    pub reconnect_timeout: Option<Duration>,
    /// Longest delay between reconnect attempts.
    pub reconnect_max_delay: Duration,
    /// A connection that delivers nothing (not even a heartbeat) for this long is dead.
    pub peer_timeout: Option<Duration>,
    /// Period of the heartbeats this receiver sends (v1 only).
    pub heartbeat: Duration,
    /// TLS, if asked for.
    pub tls: Option<ClientTls>,
    /// Decoder limits.
    pub limits: Limits,
    /// Output stage; `None` = `--sink null` (validate and count only).
    pub sink: Option<SinkConfig>,
    /// Delivery options sent to the server in the hello (not in legacy mode).
    pub hello: ClientHello,
    /// Period of the one-line statistics log (zero: off).
    pub stats_interval: Duration,
    /// The live view's stream, if `--http` is on.
    pub live: Option<Arc<crate::live::Stream>>,
}

/// What the receiver did.
#[derive(Debug, Default)]
pub struct ReceiveSummary {
    /// Frames received whole and valid.
    pub frames: u64,
    /// Payload bytes of those frames.
    pub bytes: u64,
    /// From the first frame's arrival to the last's.
    pub seconds: f64,
    /// The end-of-stream message, if one arrived.
    pub end: Option<EndOfStream>,
    /// Why the receiver failed, if it did.
    pub error: Option<String>,
    /// Output stage report.
    pub sink: SinkReport,
    /// True if a signal stopped the receiver.
    pub interrupted: bool,
    /// Frames the server reported dropping for this client.
    pub server_drops: u64,
    /// Frames missing from the sequence (gaps in `seq`), whatever the cause.
    pub missing: u64,
    /// Capture → receive latency of the frames, ms.
    pub receive_latency_ms: Quantiles,
    /// Connections re-established after a fault.
    pub reconnects: u64,
    /// Messages rejected for a header or payload CRC mismatch.
    pub crc_errors: u64,
    /// Other rejected messages (bad fields, limits, undecodable payloads).
    pub protocol_errors: u64,
    /// Times the decoder skipped corrupt bytes to find the next header.
    pub resyncs: u64,
    /// Bytes skipped by those resynchronisations.
    pub skipped_bytes: u64,
    /// Incomplete messages discarded when a connection failed mid-message.
    pub partial_frames: u64,
    /// The first rejected message's error, for the exit status when nothing got through.
    pub first_rejection: Option<String>,
}

impl ReceiveSummary {
    /// Frames written per second, over written − 1 intervals from the first frame's files
    /// being written to the last's (as `fps` is over arrivals): the rate the receiver
    /// sustains to disk, which `fps` overstates while its queue fills. 0 with fewer than
    /// two frames written (`--sink null` writes none).
    pub fn disk_fps(&self) -> f64 {
        match self.sink.written_span {
            Some((first, last)) if self.sink.written > 1 && last > first => {
                (self.sink.written - 1) as f64 / (last - first).as_secs_f64()
            }
            _ => 0.0,
        }
    }

    /// The one-line summary printed at the end.
    pub fn line(&self) -> String {
        // `seconds` runs from the first frame's arrival to the last's: frames − 1
        // intervals, and the bytes of all frames but the first.
        let (fps, mbps) = if self.seconds > 0.0 && self.frames > 1 {
            let after_first = (self.frames - 1) as f64 / self.frames as f64;
            (
                (self.frames - 1) as f64 / self.seconds,
                self.bytes as f64 * after_first / self.seconds / 1e6,
            )
        } else {
            (0.0, 0.0)
        };
        let (p50, p99) = self.sink.latency_ms.p50_p99();
        let (r50, r99) = self.receive_latency_ms.p50_p99();
        // A disk error that stopped the workers is both the sink's error and the run's.
        let own_error = self.error.is_some() && self.error != self.sink.fatal;
        format!(
            "summary: frames={} bytes={} seconds={:.2} fps={:.1} MB/s={:.1} written={} disk_fps={:.1} drops={} errors={} latency_ms_p50={:.1} latency_ms_p99={:.1} recv_latency_ms_p50={:.2} recv_latency_ms_p99={:.2} server_drops={} missing={} reconnects={} crc_errors={} protocol_errors={} resyncs={} skipped_bytes={} partial_frames={} disk_errors={} unwritten={} stale_temp_removed={}",
            self.frames,
            self.bytes,
            self.seconds,
            fps,
            mbps,
            self.sink.written,
            self.disk_fps(),
            self.sink.dropped,
            self.sink.errors + own_error as u64,
            p50,
            p99,
            r50,
            r99,
            self.server_drops,
            self.missing,
            self.reconnects,
            self.crc_errors,
            self.protocol_errors,
            self.resyncs,
            self.skipped_bytes,
            self.partial_frames,
            self.sink.disk_errors,
            self.sink.abandoned,
            self.sink.stale_temp_files,
        )
    }

    /// The counters the live view shows.
    fn live_counters(&self) -> crate::live::Counters {
        crate::live::Counters {
            frames: self.frames,
            bytes: self.bytes,
            server_drops: self.server_drops,
            missing: self.missing,
            crc_errors: self.crc_errors,
            protocol_errors: self.protocol_errors,
            reconnects: self.reconnects,
        }
    }
}

/// Median and 99th percentile of a stream of samples in bounded memory: a DDSketch
/// (relative error 0.5 %, at most 2 048 bins), so a receiver that runs for months holds
/// kilobytes, not a sample per frame, and a percentile costs the same at any count.
/// Up to [`Quantiles::EXACT`] samples the percentiles are exact (nearest rank, as
/// [`percentiles`]), so a short run's p99 is its largest sample.
#[derive(Clone)]
pub struct Quantiles(sketches_ddsketch::DDSketch, Vec<f64>);

impl Default for Quantiles {
    fn default() -> Self {
        Self(
            sketches_ddsketch::DDSketch::new(sketches_ddsketch::Config::new(0.005, 2048, 1e-6)),
            Vec::new(),
        )
    }
}

impl std::fmt::Debug for Quantiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (p50, p99) = self.p50_p99();
        write!(f, "Quantiles(n={}, p50={p50}, p99={p99})", self.0.count())
    }
}

impl Extend<f64> for Quantiles {
    fn extend<I: IntoIterator<Item = f64>>(&mut self, it: I) {
        for v in it {
            self.push(v);
        }
    }
}

impl Quantiles {
    /// Samples kept exactly before the sketch alone answers.
    pub const EXACT: usize = 1024;

    /// Adds a sample (a non-finite one is ignored).
    pub fn push(&mut self, v: f64) {
        if v.is_finite() {
            let v = v.max(0.0);
            self.0.add(v);
            if self.0.count() <= Self::EXACT {
                self.1.push(v);
            } else if !self.1.is_empty() {
                self.1 = Vec::new();
            }
        }
    }

    /// Median and 99th percentile: exact up to [`Self::EXACT`] samples, then within
    /// 0.5 %; zeros when empty.
    pub fn p50_p99(&self) -> (f64, f64) {
        if self.0.count() <= Self::EXACT {
            return percentiles(&self.1);
        }
        let q = |q: f64| self.0.quantile(q).ok().flatten().unwrap_or(0.0);
        (q(0.5), q(0.99))
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

/// How a connection ended.
enum Ended {
    /// Nothing more to do: clean end of stream, `--frames` reached, or a signal.
    Done,
    /// The connection failed; another one may succeed.
    Fault(anyhow::Error),
    /// Trying again cannot help.
    Fatal(anyhow::Error),
}

/// A connection attempt's failure.
enum ConnectError {
    /// Refused, unreachable, reset: try again later.
    Retry(anyhow::Error),
    /// Certificate or TLS protocol failure: retrying cannot help.
    Fatal(anyhow::Error),
    /// The server closed the connection on our TLS ClientHello. A plaintext server does
    /// that every time; a TLS server only when it sheds load (`--max-pending`) or shuts
    /// down. So it is retried, but [`HANDSHAKE_CLOSES`] in a row are fatal.
    HandshakeClosed(anyhow::Error),
}

/// Consecutive connections closed during the TLS handshake after which the receiver
/// stops retrying (a plaintext server, not a busy TLS one).
const HANDSHAKE_CLOSES: u32 = 3;

/// True if an I/O error carries a TLS failure (bad certificate, not TLS at all).
fn is_tls_failure(e: &std::io::Error) -> bool {
    e.get_ref()
        .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some())
}

/// Why a server closes the connection during the TLS handshake, as a rule.
pub(crate) const CLOSED_IN_TLS_HANDSHAKE: &str = "the server closed the connection during the TLS handshake: is it serving TLS? (start it with --tls-cert/--tls-key, or drop --tls-ca/--tls-insecure)";

/// True if the peer closed or reset the connection (during a TLS handshake).
fn closed_in_handshake(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        UnexpectedEof | ConnectionReset | ConnectionAborted | BrokenPipe
    )
}

/// What a plaintext receiver says when the server answers with a TLS record.
const SERVER_SPEAKS_TLS: &str = "the server speaks TLS: add --tls-ca PEM (or --tls-insecure)";

/// A second handle on a connection's TCP socket (a duplicated descriptor), for socket
/// options once TLS has wrapped the stream.
struct AckHandle(std::net::TcpStream);

impl AckHandle {
    /// `sock` back, with a handle on it if its descriptor can be duplicated.
    fn of(sock: TcpStream) -> std::io::Result<(TcpStream, Option<AckHandle>)> {
        let std = sock.into_std()?;
        let dup = std.try_clone().ok().map(AckHandle);
        Ok((TcpStream::from_std(std)?, dup))
    }

    /// Acknowledges what has been read at once instead of delaying the ACK. The kernel
    /// leaves quick-ack mode on its own, so this is set after every read. On loopback
    /// at 4K it lets the sender's window open sooner: 4K `--sink null` went from
    /// 137–149 to 158–166 frames/s in alternating runs (docs/BENCHMARKS.md).
    fn quick_ack(&self) {
        #[cfg(target_os = "linux")]
        let _ = socket2::SockRef::from(&self.0).set_tcp_quickack(true);
    }
}

/// A connection that stayed open this long was up, even without a frame: a fault after
/// it starts the reconnect budget and the backoff afresh.
const UP_AFTER: Duration = Duration::from_secs(5);

/// The least time one connection attempt is given, even at its deadline (unless the
/// peer timeout is shorter): enough for a TLS handshake over a slow link.
const MIN_ATTEMPT: Duration = Duration::from_secs(1);

/// One attempt: TCP connect, TLS handshake, client hello. Each step is bounded by the
/// peer timeout (10 s without one), and none runs past `deadline` (what is left of
/// `--connect-timeout` or `--reconnect-timeout`) by more than [`MIN_ATTEMPT`], so a
/// server that accepts TCP and then never completes the TLS handshake cannot hold the
/// receiver much beyond the time it was given. (A v1 server that completes them and
/// then sends nothing is held to the same time by the session: [`Session::first_by`].)
async fn connect_once(
    cfg: &ReceiveConfig,
    deadline: Option<Instant>,
) -> Result<(BoxConn, Option<AckHandle>), ConnectError> {
    let peer_limit = cfg.peer_timeout.unwrap_or(Duration::from_secs(10));
    // At least a moment, so an attempt that starts at its deadline still gets one try.
    let limit_at = |now: Instant| match deadline {
        Some(d) => peer_limit.min(d.saturating_duration_since(now).max(MIN_ATTEMPT)),
        None => peer_limit,
    };
    let limit = limit_at(Instant::now());
    let sock = match tokio::time::timeout(limit, TcpStream::connect(&cfg.connect)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            return Err(ConnectError::Retry(
                anyhow!(e).context(format!("cannot connect to {}", cfg.connect)),
            ))
        }
        Err(_) => {
            return Err(ConnectError::Retry(anyhow!(
                "cannot connect to {}: no answer within {:.1} s",
                cfg.connect,
                limit.as_secs_f64()
            )))
        }
    };
    crate::netio::tune_stream_socket(&sock);
    let (sock, ack) = AckHandle::of(sock).map_err(|e| {
        ConnectError::Retry(anyhow!(e).context(format!("connection to {}", cfg.connect)))
    })?;
    let mut conn: BoxConn = match &cfg.tls {
        None => Box::new(sock),
        Some(tls) => {
            let hs = tls.connector.connect(tls.server_name.clone(), sock);
            let limit = limit_at(Instant::now());
            match tokio::time::timeout(limit, hs).await {
                Ok(Ok(s)) => Box::new(s),
                Ok(Err(e)) if is_tls_failure(&e) => {
                    return Err(ConnectError::Fatal(anyhow!(
                        "TLS handshake with {} failed: {}",
                        cfg.connect,
                        crate::tls::describe_handshake_error(&e)
                    )))
                }
                // The TCP connection was accepted, then closed on our ClientHello: a
                // plaintext rawlink server does that (it reads the hello as a bad
                // magic), and so does a busy TLS server.
                Ok(Err(e)) if closed_in_handshake(&e) => {
                    return Err(ConnectError::HandshakeClosed(anyhow!(
                        "TLS handshake with {}: {}",
                        cfg.connect,
                        CLOSED_IN_TLS_HANDSHAKE
                    )))
                }
                Ok(Err(e)) => {
                    return Err(ConnectError::Retry(anyhow!(
                        "TLS handshake with {} failed: {e}",
                        cfg.connect
                    )))
                }
                Err(_) => {
                    return Err(ConnectError::Retry(anyhow!(
                        "TLS handshake with {}: no answer within {:.1} s",
                        cfg.connect,
                        limit.as_secs_f64()
                    )))
                }
            }
        }
    };
    if !cfg.legacy {
        let hello = Encoder::encode_parts(&Message::ClientHello(cfg.hello.clone()));
        let mut bytes = hello.header.to_vec();
        bytes.extend_from_slice(&hello.payload);
        let sent = tokio::time::timeout(limit_at(Instant::now()), conn.write_all(&bytes)).await;
        if !matches!(sent, Ok(Ok(()))) {
            return Err(ConnectError::Retry(anyhow!(
                "cannot send the client hello to {}",
                cfg.connect
            )));
        }
    }
    Ok((conn, ack))
}

/// Exponential backoff with jitter: 100 ms doubling to `max`, each delay drawn
/// uniformly from its upper half so that many receivers do not retry in step.
struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(100);
    fn new(max: Duration) -> Self {
        Self {
            next: Self::FIRST,
            max: max.max(Self::FIRST),
        }
    }
    fn reset(&mut self) {
        self.next = Self::FIRST;
    }
    fn delay(&mut self) -> Duration {
        use rand::Rng;
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d.mul_f64(rand::thread_rng().gen_range(0.5..=1.0))
    }

    /// Waits the next delay before retrying after `why`, but not past `deadline` (the
    /// next attempt gets what is left). `false` if `shutdown` came first.
    async fn wait(
        &mut self,
        deadline: Option<Instant>,
        why: &anyhow::Error,
        shutdown: &CancellationToken,
    ) -> bool {
        let d = deadline.map_or(self.delay(), |dl| {
            self.delay()
                .min(dl.saturating_duration_since(Instant::now()))
        });
        tracing::debug!("{why:#}; retrying in {} ms", d.as_millis());
        tokio::select! {
            _ = tokio::time::sleep(d) => true,
            _ = shutdown.cancelled() => false,
        }
    }
}

/// Receives one stream, across reconnects. Returns `Err` only if nothing could be set
/// up (output folder); stream faults are reported in the summary, after every frame
/// already received has been written.
pub async fn receive(cfg: ReceiveConfig, shutdown: CancellationToken) -> Result<ReceiveSummary> {
    let sink = match &cfg.sink {
        Some(s) => Some(FrameSink::start(s.clone())?),
        None => None,
    };
    let mut summary = ReceiveSummary::default();
    let mut track = Track::default();
    let mut backoff = Backoff::new(cfg.reconnect_max_delay);
    let started = Instant::now();
    let mut connected_once = false;
    // Any connection at all, even one later counted as a failed first attempt.
    let mut ever_connected = false;
    let mut down_since: Option<Instant> = None;
    let mut attempts = 0u64;
    let mut handshake_closes = 0u32;
    let mut silent_attempts = 0u64;
    // When the first connection's time is up (`--connect-timeout 0` is one attempt,
    // bounded only by the peer timeout).
    let first_deadline =
        Some(started + cfg.connect_timeout).filter(|_| !cfg.connect_timeout.is_zero());
    loop {
        // The time this attempt may take: what is left of the first connection's budget,
        // or of the reconnect budget (none: only the peer timeout bounds it).
        let deadline = if connected_once {
            cfg.reconnect_timeout
                .zip(down_since)
                .map(|(t, since)| since + t)
        } else {
            first_deadline
        };
        let conn = tokio::select! {
            r = connect_once(&cfg, deadline) => r,
            _ = shutdown.cancelled() => {
                summary.interrupted = true;
                break;
            }
        };
        handshake_closes = match &conn {
            Err(ConnectError::HandshakeClosed(_)) => handshake_closes + 1,
            _ => 0,
        };
        let conn = match conn {
            Err(ConnectError::HandshakeClosed(e)) if handshake_closes >= HANDSHAKE_CLOSES => {
                Err(ConnectError::Fatal(e))
            }
            Err(ConnectError::HandshakeClosed(e)) => Err(ConnectError::Retry(e)),
            other => other,
        };
        let (conn, ack) = match conn {
            Ok(c) => c,
            Err(ConnectError::Fatal(e)) => {
                summary.error = Some(format!("{e:#}"));
                break;
            }
            Err(ConnectError::HandshakeClosed(e)) | Err(ConnectError::Retry(e)) => {
                attempts += 1;
                let gave_up = if connected_once {
                    cfg.reconnect_timeout
                        .zip(down_since)
                        .is_some_and(|(t, since)| since.elapsed() >= t)
                } else {
                    started.elapsed() >= cfg.connect_timeout
                };
                if gave_up {
                    let waited = down_since.unwrap_or(started).elapsed().as_secs_f64();
                    summary.error = Some(format!(
                        "{e:#} (gave up after {attempts} attempt(s) over {waited:.1} s)"
                    ));
                    break;
                }
                // Visible, but not once per attempt: attempts 1, 2, 4, 8, …
                if attempts.is_power_of_two() {
                    info!(
                        "{} not reachable ({e:#}); {attempts} attempt(s) over {:.1} s, still trying",
                        cfg.connect,
                        down_since.unwrap_or(started).elapsed().as_secs_f64()
                    );
                }
                if !backoff.wait(deadline, &e, &shutdown).await {
                    summary.interrupted = true;
                    break;
                }
                continue;
            }
        };
        if let Some(l) = &cfg.live {
            l.state(crate::live::LinkState::Connected, "");
        }
        if connected_once {
            summary.reconnects += 1;
            metrics::counter!("rawlink_receiver_reconnects_total").increment(1);
            info!(
                "reconnected to {} after {:.1} s ({} attempt(s))",
                cfg.connect,
                down_since.map_or(0.0, |t| t.elapsed().as_secs_f64()),
                attempts + 1
            );
            track.reconnected = true;
        } else {
            info!(peer = %cfg.connect, legacy = cfg.legacy, tls = cfg.tls.is_some(), "connected");
        }
        connected_once = true;
        ever_connected = true;
        let span = tracing::info_span!("conn", peer = %cfg.connect);
        let before = summary.frames;
        let session_start = Instant::now();
        let mut session = Session::new(&cfg, sink.as_ref(), &mut summary, &mut track);
        session.first_by = first_deadline;
        let ended = session
            .run(conn, ack.as_ref(), &shutdown)
            .instrument(span)
            .await;
        // The duplicated descriptor would keep the socket open through the backoff below.
        drop(ack);
        // Attempts and the backoff count from the last connection that was up: one that
        // delivered frames, or stayed open a while (a stream between frames, a server
        // still waiting for its clients), unlike a refusal or a failure at once.
        let was_up = summary.frames > before || session_start.elapsed() >= UP_AFTER;
        if was_up {
            backoff.reset();
            attempts = 0;
        }
        match ended {
            Ended::Done => break,
            Ended::Fatal(e) => {
                summary.error = Some(format!("{e:#}"));
                break;
            }
            Ended::Fault(e) if !cfg.reconnect => {
                summary.error = Some(format!("{e:#}"));
                break;
            }
            // A v1 server that accepted but has never said anything: these are still
            // attempts at the first connection, held to --connect-timeout.
            Ended::Fault(e) if !cfg.legacy && !track.ever_spoke => {
                connected_once = false;
                silent_attempts += 1;
                if started.elapsed() >= cfg.connect_timeout {
                    summary.error = Some(format!(
                        "{e:#} (gave up after {silent_attempts} attempt(s) over {:.1} s)",
                        started.elapsed().as_secs_f64()
                    ));
                    break;
                }
                if !backoff.wait(first_deadline, &e, &shutdown).await {
                    summary.interrupted = true;
                    break;
                }
            }
            Ended::Fault(e) => {
                warn!("connection lost: {e:#}; reconnecting (--no-reconnect to exit instead)");
                if let Some(l) = &cfg.live {
                    l.state(crate::live::LinkState::Reconnecting, format!("{e:#}"));
                }
                // The stream is down from the last connection that was up: a server
                // that accepts and then refuses (busy) or fails again at once is
                // retried with the backoff and held to --reconnect-timeout, not
                // reconnected to in a tight loop.
                if was_up || down_since.is_none() {
                    down_since = Some(Instant::now());
                }
                if !was_up {
                    attempts += 1;
                    let since = down_since.unwrap_or(started);
                    if cfg.reconnect_timeout.is_some_and(|t| since.elapsed() >= t) {
                        summary.error = Some(format!(
                            "{e:#} (gave up after {attempts} attempt(s) over {:.1} s)",
                            since.elapsed().as_secs_f64()
                        ));
                        break;
                    }
                    let deadline = cfg.reconnect_timeout.map(|t| since + t);
                    if !backoff.wait(deadline, &e, &shutdown).await {
                        summary.interrupted = true;
                        break;
                    }
                }
            }
        }
    }
    if summary.interrupted && !ever_connected && summary.error.is_none() {
        // Stopped while still trying: not a clean end, as scripts must be able to see.
        summary.error = Some(format!(
            "interrupted before any connection to {} was made ({attempts} attempt(s) over {:.1} s)",
            cfg.connect,
            started.elapsed().as_secs_f64()
        ));
    }
    if let Some(l) = &cfg.live {
        let why = match (&summary.error, &summary.end) {
            (Some(e), _) => e.clone(),
            (None, Some(end)) => format!("end of stream: {}", end.message),
            (None, None) if summary.interrupted => "interrupted".to_string(),
            (None, None) => "done".to_string(),
        };
        l.counters(summary.live_counters());
        l.state(crate::live::LinkState::Ended, why);
    }
    if let Some(sink) = sink {
        summary.sink = sink.finish();
        if summary.error.is_none() {
            if let Some(e) = &summary.sink.fatal {
                summary.error = Some(e.clone());
            }
        }
    }
    Ok(summary)
}

/// Sequence tracking that survives reconnects.
#[derive(Default)]
struct Track {
    first: Option<Instant>,
    last_seq: Option<u64>,
    legacy_seq: u64,
    /// The next frame is the first after a reconnect.
    reconnected: bool,
    /// A valid v1 message has come on some connection: the server is a rawlink server,
    /// and a later fault is a lost connection rather than a failed first attempt.
    ever_spoke: bool,
    /// The stream the frames so far belong to (its StreamStart's `stream_id`).
    stream_id: Option<u64>,
}

struct Session<'a> {
    cfg: &'a ReceiveConfig,
    sink: Option<&'a FrameSink>,
    summary: &'a mut ReceiveSummary,
    track: &'a mut Track,
    /// A valid message has arrived on this connection.
    spoke: bool,
    /// Rejected messages logged at warn level on this connection (then debug level,
    /// so that a flood of garbage cannot flood the log).
    warned: u32,
    /// While no v1 server has said anything yet: when the first connection's time
    /// (`--connect-timeout`) is up, so a server that accepts and stays silent is given
    /// up on then rather than retried for ever.
    first_by: Option<Instant>,
}

impl<'a> Session<'a> {
    fn new(
        cfg: &'a ReceiveConfig,
        sink: Option<&'a FrameSink>,
        summary: &'a mut ReceiveSummary,
        track: &'a mut Track,
    ) -> Self {
        Self {
            cfg,
            sink,
            summary,
            track,
            spoke: false,
            warned: 0,
            first_by: None,
        }
    }

    /// Counts a frame, tracks its sequence number, and hands it to the sink.
    async fn deliver(&mut self, frame: Frame) -> Option<Ended> {
        let now = Instant::now();
        let recv_ns = now_realtime_ns();
        let t0 = *self.track.first.get_or_insert(now);
        let s = &mut *self.summary;
        s.frames += 1;
        s.bytes += frame.payload.len() as u64;
        s.seconds = now.duration_since(t0).as_secs_f64();
        metrics::counter!("rawlink_receiver_frames_total").increment(1);
        metrics::counter!("rawlink_receiver_bytes_total").increment(frame.payload.len() as u64);
        let seq = frame.header.seq;
        let across = std::mem::take(&mut self.track.reconnected);
        // A jump further than any stream could have run (2^32 frames is over two years at
        // 60 frames/s) is a new numbering, not frames lost.
        const JUMP: u64 = 1 << 32;
        // Either way: a numbering of its own, tracked from here.
        let renumbered = self
            .track
            .last_seq
            .is_some_and(|last| seq > last.saturating_add(JUMP) || seq.saturating_add(JUMP) < last);
        match self.track.last_seq {
            Some(last) if renumbered => {
                warn!("sequence jumped from {last} to {seq}: counted as a new numbering, not as missing frames");
            }
            Some(last) if seq > last.saturating_add(1) => {
                let gap = seq - last - 1;
                s.missing += gap;
                metrics::counter!("rawlink_receiver_missing_frames_total").increment(gap);
                if across {
                    warn!("{gap} frame(s) missed across the reconnect (seq {last} -> {seq})");
                } else {
                    tracing::debug!("sequence gap: {gap} frame(s) missing before seq {seq}");
                }
            }
            // On one connection the numbering never goes back: a repeated or late frame
            // is the server's fault. The frame is kept, and the sequence tracked from the
            // highest number seen.
            Some(last) if seq <= last && !across => {
                s.protocol_errors += 1;
                metrics::counter!(
                    "rawlink_receiver_errors_total",
                    "kind" => crate::monitor::SEQUENCE_ERROR_KIND
                )
                .increment(1);
                self.complain(format!(
                    "sequence went back from {last} to {seq} on one connection (a repeated or \
                     out-of-order frame): kept, counted in protocol_errors"
                ));
            }
            Some(last) if seq <= last => {
                info!("sequence restarted at {seq} (was {last}): the server started a new stream");
            }
            _ => {}
        }
        let s = &mut *self.summary;
        if across || renumbered || self.track.last_seq.is_none_or(|last| seq > last) {
            self.track.last_seq = Some(seq);
        }
        let latency_ms = (frame.header.clock == ClockId::Realtime).then(|| {
            let lat_ns = recv_ns.saturating_sub(frame.header.timestamp_ns);
            metrics::histogram!("rawlink_receiver_capture_to_receive_seconds")
                .record(lat_ns as f64 / 1e9);
            lat_ns as f64 / 1e6
        });
        s.receive_latency_ms.extend(latency_ms);
        if let Some(l) = &self.cfg.live {
            l.offer(&frame, recv_ns, latency_ms, s.live_counters());
        }
        let sink = self.sink?;
        let job = Job { frame, recv_ns };
        if self.cfg.hello.policy == rawlink_proto::Policy::Lossless {
            // A recorder waits for its workers rather than dropping.
            sink.submit_wait(job).await;
        } else {
            sink.submit(job);
        }
        sink.fatal().map(|e| Ended::Fatal(anyhow!(e)))
    }

    /// Counts a rejected message and skips past it.
    fn reject(&mut self, e: &ProtoError, dec: &mut Decoder, buf: &mut BytesMut) {
        metrics::counter!("rawlink_receiver_errors_total", "kind" => crate::monitor::error_kind(e))
            .increment(1);
        let s = &mut *self.summary;
        if matches!(
            e,
            ProtoError::HeaderCrc { .. } | ProtoError::PayloadCrc { .. }
        ) {
            s.crc_errors += 1;
        } else {
            s.protocol_errors += 1;
        }
        if s.first_rejection.is_none() {
            let hint = match e {
                ProtoError::DimensionTooLarge { .. } => " (the limit is --max-dimension)",
                ProtoError::PayloadTooLarge { .. } => " (the limit is --max-payload-mb)",
                _ => "",
            };
            s.first_rejection = Some(format!("{e}{hint}"));
        }
        let skipped = dec.resync(buf);
        let what = if skipped > 0 {
            s.resyncs += 1;
            s.skipped_bytes += skipped as u64;
            metrics::counter!("rawlink_receiver_resyncs_total").increment(1);
            metrics::counter!("rawlink_receiver_skipped_bytes_total").increment(skipped as u64);
            "skipping to the next header"
        } else {
            "message discarded"
        };
        if let Some(l) = &self.cfg.live {
            l.counters(s.live_counters());
        }
        let after = self.track.last_seq.unwrap_or(0);
        self.complain(format!("{e}; {what} (after seq {after})"));
    }

    /// Logs a bad message at warn level, the first few on a connection, then at debug
    /// level, so that a flood of garbage cannot flood the log.
    fn complain(&mut self, msg: String) {
        const LOUD: u32 = 10;
        if self.warned < LOUD {
            self.warned += 1;
            warn!("{msg}");
            if self.warned == LOUD {
                warn!("further bad messages on this connection are logged at debug level; the summary counts them all");
            }
        } else {
            tracing::debug!("{msg}");
        }
    }

    /// Handles one decoded v1 message; `Some` ends the connection.
    async fn on_message(&mut self, msg: Message) -> Option<Ended> {
        self.spoke = true;
        self.track.ever_spoke = true;
        match msg {
            Message::Frame(f) => match rawlink_frame::unpack_frame(f) {
                // Packed on the wire: back to 16-bit containers, exactly.
                Ok(f) => return self.deliver(f).await,
                Err(e) => {
                    self.summary.protocol_errors += 1;
                    warn!("frame discarded: {e}");
                }
            },
            Message::StreamStart(info) => {
                let previous = std::mem::replace(&mut self.track.stream_id, info.stream_id);
                if let (Some(old), Some(new), Some(last)) =
                    (previous, info.stream_id, self.track.last_seq)
                {
                    if old != new {
                        // Not a gap: the old stream ended unseen after `last`, and the
                        // new one numbers from 1, so its frames before the first one
                        // received here are the ones missed.
                        info!("the server restarted: a new stream (the previous one's last frame received was seq {last}); counting from seq 1");
                        self.track.last_seq = Some(0);
                    }
                }
                if let Some(l) = &self.cfg.live {
                    l.stream_info(&info.source, &info.server);
                }
                info!(
                    source = %info.source,
                    server = %info.server,
                    "stream: {}x{} {} black {} white {}",
                    info.header.width,
                    info.header.height,
                    info.header.format,
                    info.header.black_level,
                    info.header.white_level
                )
            }
            Message::Heartbeat => {}
            Message::Notice(n) => {
                self.summary.server_drops += n.dropped;
                if let Some(l) = &self.cfg.live {
                    l.counters(self.summary.live_counters());
                }
                metrics::counter!("rawlink_receiver_server_drops_total").increment(n.dropped);
                warn!(
                    "server dropped {} frame(s) for this client ({}), seq {}..={}",
                    n.dropped, n.reason, n.first_seq, n.last_seq
                );
            }
            Message::ClientHello(_) => {
                return Some(Ended::Fault(anyhow!(
                    "protocol error: the server sent a client hello"
                )))
            }
            Message::EndOfStream(end) => {
                info!(reason = %end.reason, last_seq = end.last_seq, "end of stream: {}", end.message);
                // Frames of this stream after the last one received (dropped by the
                // server at shutdown, or skipped by --every) are a gap at the tail.
                if let Some(last) = self.track.last_seq {
                    let tail = end.last_seq.saturating_sub(last);
                    if tail > 0 && tail <= 1 << 32 {
                        self.summary.missing += tail;
                        self.track.last_seq = Some(end.last_seq);
                        metrics::counter!("rawlink_receiver_missing_frames_total").increment(tail);
                        tracing::debug!(
                            "{tail} frame(s) missing after seq {last} at the end of the stream"
                        );
                        if let Some(l) = &self.cfg.live {
                            l.counters(self.summary.live_counters());
                        }
                    }
                }
                let msg = format!("server ended the stream: {}: {}", end.reason, end.message);
                let reason = end.reason;
                self.summary.end = Some(end);
                return Some(match reason {
                    r if r.is_clean() => Ended::Done,
                    EndReason::Unauthorized => Ended::Fatal(anyhow!(msg)),
                    _ => Ended::Fault(anyhow!(msg)),
                });
            }
        }
        None
    }

    fn stats_line(&self, at: &mut (Instant, u64, u64)) {
        let s = &self.summary;
        let dt = at.0.elapsed().as_secs_f64();
        let (p50, p99) = s.receive_latency_ms.p50_p99();
        info!(
            "stats: frames={} fps={:.1} MB/s={:.1} server_drops={} missing={} crc_errors={} resyncs={} reconnects={} recv_latency_ms_p50={p50:.2} p99={p99:.2}",
            s.frames,
            (s.frames - at.1) as f64 / dt,
            (s.bytes - at.2) as f64 / dt / 1e6,
            s.server_drops,
            s.missing,
            s.crc_errors,
            s.resyncs,
            s.reconnects
        );
        *at = (Instant::now(), s.frames, s.bytes);
    }

    /// Reads and decodes one connection until it ends.
    async fn run(
        mut self,
        conn: BoxConn,
        ack: Option<&AckHandle>,
        shutdown: &CancellationToken,
    ) -> Ended {
        let cfg = self.cfg;
        let (mut rd, mut wr) = tokio::io::split(conn);
        let mut buf = BytesMut::with_capacity(256 * 1024);
        let mut decoder = Decoder::with_limits(cfg.limits);
        let mut legacy = LegacyDecoder::new(cfg.legacy_template.payload_len() as usize);
        // A legacy connection is checked once for a v1 server's magic at its start: read
        // as pixels, its headers would make misaligned frames of garbage. (As 12- to
        // 14-bit samples those bytes are out of range, so no real legacy frame starts so.)
        let mut legacy_checked = !cfg.legacy;
        // Whether any byte came on this connection.
        let mut got_bytes = false;
        let hb_bytes = {
            let e = Encoder::encode_parts(&Message::Heartbeat);
            e.header.to_vec()
        };
        let hb_period = cfg.heartbeat.max(Duration::from_millis(10));
        let mut heartbeat =
            tokio::time::interval_at(tokio::time::Instant::now() + hb_period, hb_period);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let far = Duration::from_secs(86400 * 365);
        let peer_timeout = cfg.peer_timeout.unwrap_or(far);
        let mut deadline = tokio::time::Instant::now() + peer_timeout;
        // The first message's deadline, if this is still the first connection's time.
        let first = self
            .first_by
            .filter(|_| !cfg.legacy && !self.track.ever_spoke)
            .map(|t| tokio::time::Instant::from_std(t.max(Instant::now() + MIN_ATTEMPT)));
        let opened = Instant::now();
        let mut stats_at = (Instant::now(), self.summary.frames, self.summary.bytes);
        loop {
            if !cfg.stats_interval.is_zero() && stats_at.0.elapsed() >= cfg.stats_interval {
                self.stats_line(&mut stats_at);
            }
            // Decode everything buffered.
            loop {
                if cfg.frames.is_some_and(|n| self.summary.frames >= n) {
                    info!("received the requested {} frames", self.summary.frames);
                    return Ended::Done;
                }
                if cfg.legacy {
                    if !legacy_checked && buf.len() >= rawlink_proto::MAGIC.len() {
                        legacy_checked = true;
                        if buf[..4] == rawlink_proto::MAGIC {
                            return Ended::Fatal(anyhow!(
                                "the server speaks rawlink protocol v1, not bare legacy frames: drop --legacy"
                            ));
                        }
                        if rawlink_proto::is_tls_record(&buf) {
                            return Ended::Fatal(anyhow!(
                                "the server speaks TLS (rawlink protocol v1 over TLS), not bare legacy frames: drop --legacy and add --tls-ca PEM (or --tls-insecure)"
                            ));
                        }
                    }
                    let Some(payload) = legacy.decode(&mut buf) else {
                        break;
                    };
                    self.track.legacy_seq += 1;
                    let mut h = cfg.legacy_template;
                    h.seq = self.track.legacy_seq;
                    // The receive time, on no clock: it is not a capture time, so no
                    // capture latency is derived from it.
                    h.timestamp_ns = now_realtime_ns();
                    h.clock = ClockId::Unknown;
                    match Frame::new(h, payload) {
                        Ok(f) => {
                            if let Some(end) = self.deliver(f).await {
                                return end;
                            }
                        }
                        Err(e) => return Ended::Fatal(e.into()),
                    }
                    continue;
                }
                let decoded = decoder.decode(&mut buf);
                let late = decoder.take_skipped();
                if late > 0 {
                    self.summary.skipped_bytes += late;
                    metrics::counter!("rawlink_receiver_skipped_bytes_total").increment(late);
                }
                match decoded {
                    Ok(Some(msg)) => {
                        if let Some(end) = self.on_message(msg).await {
                            return end;
                        }
                    }
                    Ok(None) => break,
                    Err(
                        e @ (ProtoError::BadMagic { .. } | ProtoError::UnsupportedVersion { .. }),
                    ) if !self.spoke => {
                        // The very first bytes are wrong: this is not a rawlink v1 server.
                        metrics::counter!("rawlink_receiver_errors_total", "kind" => crate::monitor::error_kind(&e))
                            .increment(1);
                        self.summary.protocol_errors += 1;
                        if e.is_tls_record() {
                            return Ended::Fatal(anyhow!(SERVER_SPEAKS_TLS));
                        }
                        return Ended::Fatal(e.into());
                    }
                    Err(e) => self.reject(&e, &mut decoder, &mut buf),
                }
            }
            if let Some(sink) = self.sink {
                if let Some(e) = sink.fatal() {
                    return Ended::Fatal(anyhow!(e));
                }
            }
            let n = tokio::select! {
                r = rd.read_buf(&mut buf) => match r {
                    Ok(n) => n,
                    Err(e) => {
                        self.discard_partial(&buf);
                        return Ended::Fault(anyhow!(e).context("reading from the server"));
                    }
                },
                _ = tokio::time::sleep_until(match first {
                    Some(f) if !self.spoke => deadline.min(f),
                    _ => deadline,
                }) => {
                    self.discard_partial(&buf);
                    if !self.spoke && first.is_some_and(|f| f <= deadline) {
                        return Ended::Fault(anyhow!(
                            "{} accepted the connection but sent nothing within {:.1} s: is it a rawlink server? (a legacy streamer needs --legacy)",
                            cfg.connect,
                            opened.elapsed().as_secs_f64()
                        ));
                    }
                    return Ended::Fault(anyhow!(
                        "no data from the server for {:.1} s (--peer-timeout): connection presumed dead",
                        peer_timeout.as_secs_f64()
                    ));
                }
                _ = heartbeat.tick(), if !cfg.legacy => {
                    let sent = tokio::time::timeout(peer_timeout, wr.write_all(&hb_bytes)).await;
                    if !matches!(sent, Ok(Ok(()))) {
                        self.discard_partial(&buf);
                        return Ended::Fault(anyhow!("cannot send a heartbeat to the server"));
                    }
                    continue;
                }
                _ = shutdown.cancelled() => {
                    warn!("interrupted: finishing frames already received");
                    self.summary.interrupted = true;
                    return Ended::Done;
                }
            };
            deadline = tokio::time::Instant::now() + peer_timeout;
            if let Some(a) = ack {
                a.quick_ack();
            }
            if n > 0 {
                got_bytes = true;
                continue;
            }
            // The server closed the connection.
            if cfg.legacy && !got_bytes {
                // Not a stream that ended: nothing ever came (a busy or failing
                // streamer, or a TLS server waiting for a handshake).
                return Ended::Fatal(anyhow!(
                    "server closed the connection without sending a frame (a rawlink server with --tls-cert sends nothing until a TLS handshake: for one, drop --legacy and give --tls-ca)"
                ));
            }
            if cfg.legacy {
                return match legacy.finish(&buf) {
                    Ok(()) => {
                        info!("server closed the connection at a frame boundary");
                        Ended::Done
                    }
                    Err(e) => {
                        self.discard_partial(&buf);
                        Ended::Fault(e.into())
                    }
                };
            }
            return match decoder.decode_eof(&mut buf) {
                Err(e) => {
                    metrics::counter!("rawlink_receiver_errors_total", "kind" => crate::monitor::error_kind(&e))
                        .increment(1);
                    self.discard_partial(&buf);
                    Ended::Fault(e.into())
                }
                Ok(_) => Ended::Fault(anyhow!(
                    "server closed the connection without an end-of-stream message"
                )),
            };
        }
    }

    fn discard_partial(&mut self, buf: &BytesMut) {
        if !buf.is_empty() {
            self.summary.partial_frames += 1;
            metrics::counter!("rawlink_receiver_partial_frames_total").increment(1);
            warn!(
                "discarding an incomplete message of {} byte(s) (after seq {})",
                buf.len(),
                self.track.last_seq.unwrap_or(0)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sketch's percentiles stay within its 0.5 % of the exact nearest-rank ones,
    /// and its size does not grow with the samples.
    #[test]
    fn quantiles_are_close_to_the_exact_percentiles_in_bounded_memory() {
        let mut q = Quantiles::default();
        assert_eq!(q.p50_p99(), (0.0, 0.0));
        let mut exact = Vec::new();
        let mut x = 12345u64;
        for _ in 0..200_000 {
            // Latency-like: mostly 1–20 ms, a long tail to ~2 s.
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let u = (x >> 11) as f64 / (1u64 << 53) as f64;
            let v = 1.0
                + 19.0 * u
                + if u > 0.98 {
                    2000.0 * (u - 0.98) * 50.0
                } else {
                    0.0
                };
            q.push(v);
            exact.push(v);
        }
        q.push(f64::NAN); // ignored
        assert_eq!(q.0.count(), 200_000);
        assert!(q.1.is_empty(), "the exact samples are dropped past EXACT");
        let (e50, e99) = percentiles(&exact);
        let (p50, p99) = q.p50_p99();
        assert!((p50 / e50 - 1.0).abs() < 0.011, "{p50} vs {e50}");
        assert!((p99 / e99 - 1.0).abs() < 0.011, "{p99} vs {e99}");
        assert!(q.0.length() <= 2048, "{} bins", q.0.length());
        // A short run is exact: its p99 is its largest sample (nearest rank).
        let mut short = Quantiles::default();
        short.extend([48.0, 47.2, 48.8, 47.9, 48.1]);
        assert_eq!(short.p50_p99(), (48.0, 48.8));
    }

    /// `seconds` spans frames − 1 intervals, so 5 frames 200 ms apart are 5 frames/s; a
    /// disk error that stopped the run is one error, not two.
    #[test]
    fn summary_rates_and_error_count() {
        let mut s = ReceiveSummary {
            frames: 5,
            bytes: 5_000_000,
            seconds: 0.8,
            ..Default::default()
        };
        let line = s.line();
        assert!(line.contains(" fps=5.0 MB/s=5.0 "), "{line}");
        assert!(line.contains(" disk_fps=0.0 "), "nothing written: {line}");
        // Disk rate: written − 1 intervals between the first and the last frame written.
        let t = Instant::now();
        s.sink.written = 5;
        s.sink.written_span = Some((t, t + Duration::from_millis(1600)));
        assert!(
            s.line().contains(" written=5 disk_fps=2.5 "),
            "{}",
            s.line()
        );
        s.sink.written = 1;
        assert!(
            s.line().contains(" written=1 disk_fps=0.0 "),
            "{}",
            s.line()
        );
        s.frames = 1;
        assert!(s.line().contains(" fps=0.0 "), "{}", s.line());
        s.sink.errors = 1;
        s.sink.fatal = Some("stopped by a disk error".into());
        s.error = s.sink.fatal.clone();
        assert!(s.line().contains(" errors=1 "), "{}", s.line());
        s.error = Some("connection lost".into());
        assert!(s.line().contains(" errors=2 "), "{}", s.line());
    }

    #[test]
    fn backoff_doubles_to_the_cap_with_jitter_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(1));
        let mut uppers = Vec::new();
        for _ in 0..8 {
            let upper = b.next;
            let d = b.delay();
            assert!(
                d <= upper && d >= upper / 2,
                "{d:?} not in [{:?}, {upper:?}]",
                upper / 2
            );
            uppers.push(upper.as_millis());
        }
        assert_eq!(uppers, [100, 200, 400, 800, 1000, 1000, 1000, 1000]);
        b.reset();
        assert!(b.delay() <= Duration::from_millis(100));
        // Jitter: many draws are not all equal.
        let draws: std::collections::BTreeSet<u128> = (0..20)
            .map(|_| {
                b.reset();
                b.delay().as_micros()
            })
            .collect();
        assert!(draws.len() > 5, "{draws:?}");
    }

    #[test]
    fn percentiles_nearest_rank() {
        assert_eq!(percentiles(&[]), (0.0, 0.0));
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentiles(&v), (50.0, 99.0));
    }
}
