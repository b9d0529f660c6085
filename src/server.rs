//! `rawlink serve`: one capture thread, one fan-out task, one writer task per client.
//!
//! ```text
//! capture thread ──mpsc──▶ fan-out task ──per-client bounded queue──▶ writer task ──▶ socket
//!                            ▲
//! accept loop ──new client───┘
//! ```
//! A frame is encoded once (header + CRC) and its payload is shared by reference
//! count with every client queue; writers send header and payload with one vectored
//! write. Each client chooses its policy in a hello (protocol 1.1): `latest` (a short
//! queue that drops that client's oldest frames) or `lossless` (a large byte buffer; a
//! file source waits for it, a live source records overruns as reported drops), plus
//! decimation and a frame-rate cap. A slow client never slows the others, except that a
//! file source is paced by its slowest lossless client, by design.

use crate::netio::{write_all_vectored, BoxConn};
use anyhow::{Context, Result};
use bytes::BytesMut;
use rawlink_frame::Frame;
use rawlink_proto::{
    ClientHello, Decoder, EncodedFrame, Encoder, EndOfStream, EndReason, Limits, Message, Notice,
    Policy, StreamInfo,
};
use rawlink_source::FrameSource;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};

/// Server settings (already validated).
#[derive(Clone)]
pub struct ServeConfig {
    /// Stop after this many frames.
    pub frames: Option<u64>,
    /// Bare frames, no protocol.
    pub legacy: bool,
    /// Wait for this many clients before capturing.
    pub wait_clients: usize,
    /// Refuse clients beyond this count.
    pub max_clients: usize,
    /// Frames queued per `latest` client.
    pub client_queue: usize,
    /// Bytes buffered per `lossless` client.
    pub client_buffer_bytes: usize,
    /// How long to wait for a client's hello before using the defaults.
    pub hello_timeout: Duration,
    /// Period of the one-line statistics log (zero: off).
    pub stats_interval: Duration,
    /// Text for the stream-start message.
    pub source_name: String,
    /// Time a connection gets for its TLS handshake and hello.
    pub handshake_timeout: Duration,
    /// Connections allowed at once that are still in their handshake.
    pub max_pending: usize,
    /// A client that stalls a write, or that promised heartbeats and stays silent,
    /// this long is dead (`None`: never).
    pub peer_timeout: Option<Duration>,
    /// A heartbeat goes to each client after this long without a frame.
    pub heartbeat: Duration,
    /// TLS, if configured.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// Token every client must present, if configured.
    pub token: Option<String>,
}

impl std::fmt::Debug for ServeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeConfig")
            .field("frames", &self.frames)
            .field("legacy", &self.legacy)
            .field("max_clients", &self.max_clients)
            .field("max_pending", &self.max_pending)
            .field("tls", &self.tls.is_some())
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

/// What the server did.
#[derive(Debug, Default, Clone)]
pub struct ServeSummary {
    /// Frames captured.
    pub frames: u64,
    /// Clients accepted over the run.
    pub clients: u64,
    /// Frames dropped because a client's queue was full, over all clients.
    pub dropped: u64,
    /// Connections refused: failed authentication, handshake timeout, or limits.
    pub rejected: u64,
    /// Why the stream ended.
    pub end_reason: Option<EndReason>,
    /// Source error text, if the source failed.
    pub source_error: Option<String>,
}

/// One item in a client's queue.
#[derive(Debug, Clone)]
enum Outgoing {
    /// A frame: its sequence number, its encoding, and when it was queued.
    Frame(u64, EncodedFrame, Instant),
    End(EncodedFrame),
}

/// Queue-to-socket times kept per client between two stats lines; later frames in the
/// same interval are counted but not timed, so a stalled stats line cannot grow this.
const WAIT_SAMPLES: usize = 4096;

/// Drops not yet reported to the client.
#[derive(Debug, Clone, Copy)]
struct DropRun {
    first: u64,
    last: u64,
    count: u64,
    reason: &'static str,
}

#[derive(Default)]
struct QueueState {
    items: VecDeque<Outgoing>,
    frames: usize,
    bytes: usize,
    /// Drops not yet reported, as runs in the order they happened: a run ends when a
    /// frame is queued after it, so each run lies wholly before or after every queued
    /// frame and can be reported just ahead of the first frame after it.
    unreported: VecDeque<DropRun>,
    /// A frame was queued since the last drop (the next drop starts a new run).
    queued_since_drop: bool,
    /// Frames and bytes written to the client's socket.
    sent_frames: u64,
    sent_bytes: u64,
    /// Milliseconds from queueing to the end of the write, for frames written since the
    /// last stats line (at most [`WAIT_SAMPLES`]).
    waits_ms: Vec<f64>,
}

/// What happened to a frame offered to a client.
#[derive(Debug, PartialEq, Eq)]
enum Push {
    Queued,
    /// Queued after dropping the oldest queued frame (latest policy).
    DroppedOldest,
    /// Not queued: the buffer is full and the source cannot wait (overrun).
    DroppedNew,
    /// Not queued: the buffer is full; the caller may wait for space and retry.
    Full,
}

/// A client's queue and delivery options.
struct ClientQueue {
    state: Mutex<QueueState>,
    item_ready: Notify,
    space_ready: Notify,
    hello: ClientHello,
    /// True if the client spoke 1.1 (it gets notices).
    wants_notices: bool,
    frame_cap: usize,
    byte_cap: usize,
    dropped: AtomicU64,
    closed: AtomicBool,
}

impl ClientQueue {
    fn new(hello: ClientHello, wants_notices: bool, frame_cap: usize, byte_cap: usize) -> Self {
        Self {
            state: Mutex::new(QueueState::default()),
            item_ready: Notify::new(),
            space_ready: Notify::new(),
            hello,
            wants_notices,
            frame_cap: frame_cap.max(1),
            byte_cap: byte_cap.max(1),
            dropped: AtomicU64::new(0),
            closed: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn record_drop(&self, st: &mut QueueState, seq: u64, reason: &'static str) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("rawlink_server_client_drops_total", "reason" => reason).increment(1);
        match st.unreported.back_mut() {
            Some(r) if !st.queued_since_drop => {
                r.first = r.first.min(seq);
                r.last = r.last.max(seq);
                r.count += 1;
                r.reason = reason;
            }
            _ => st.unreported.push_back(DropRun {
                first: seq,
                last: seq,
                count: 1,
                reason,
            }),
        }
        st.queued_since_drop = false;
    }

    /// Counts a frame not offered to the client (the server is shutting down while its
    /// lossless queue is full); the client is told in a notice before the next item.
    fn drop_frame(&self, seq: u64, reason: &'static str) {
        let mut st = self.lock();
        self.record_drop(&mut st, seq, reason);
    }

    /// Offers a frame under the client's policy. `can_wait`: the source can be paced.
    fn offer(&self, seq: u64, f: &EncodedFrame, can_wait: bool) -> Push {
        let len = f.wire_len();
        let mut result = Push::Queued;
        {
            let mut st = self.lock();
            match self.hello.policy {
                Policy::Latest => {
                    if st.frames >= self.frame_cap {
                        if let Some(pos) = st
                            .items
                            .iter()
                            .position(|i| matches!(i, Outgoing::Frame(..)))
                        {
                            if let Some(Outgoing::Frame(old, e, _)) = st.items.remove(pos) {
                                st.frames -= 1;
                                st.bytes -= e.wire_len();
                                self.record_drop(&mut st, old, "slow");
                                result = Push::DroppedOldest;
                            }
                        }
                    }
                }
                Policy::Lossless => {
                    if st.frames > 0 && st.bytes + len > self.byte_cap {
                        if can_wait {
                            return Push::Full;
                        }
                        self.record_drop(&mut st, seq, "overrun");
                        return Push::DroppedNew;
                    }
                }
            }
            st.items
                .push_back(Outgoing::Frame(seq, f.clone(), Instant::now()));
            st.queued_since_drop = true;
            st.frames += 1;
            st.bytes += len;
        }
        self.item_ready.notify_one();
        result
    }

    /// Counts a frame of `bytes` written to the socket, queued at `queued`.
    fn record_sent(&self, bytes: usize, queued: Instant) {
        let ms = queued.elapsed().as_secs_f64() * 1e3;
        let mut st = self.lock();
        st.sent_frames += 1;
        st.sent_bytes += bytes as u64;
        if st.waits_ms.len() < WAIT_SAMPLES {
            st.waits_ms.push(ms);
        }
    }

    fn push_end(&self, e: EncodedFrame) {
        self.lock().items.push_back(Outgoing::End(e));
        self.item_ready.notify_one();
    }

    /// Next item, with a notice of the unreported drops that come before it, if any (for
    /// the end, all of them): a lossless queue drops new frames while older ones wait,
    /// and those go out before the notice of the drops, so the client hears of frame
    /// `n`'s loss only once every frame before `n` it will get has come.
    async fn pop(&self) -> (Option<DropRun>, Outgoing) {
        loop {
            let notified = self.item_ready.notified();
            {
                let mut st = self.lock();
                if let Some(item) = st.items.pop_front() {
                    if let Outgoing::Frame(_, e, _) = &item {
                        st.frames -= 1;
                        st.bytes -= e.wire_len();
                    }
                    // Every run before this item, as one notice (the end: all of them).
                    let before = match &item {
                        Outgoing::Frame(seq, ..) => *seq,
                        Outgoing::End(_) => u64::MAX,
                    };
                    let mut notice: Option<DropRun> = None;
                    while st.unreported.front().is_some_and(|r| r.last < before) {
                        let Some(r) = st.unreported.pop_front() else {
                            break;
                        };
                        notice = Some(match notice {
                            None => r,
                            Some(n) => DropRun {
                                first: n.first.min(r.first),
                                last: n.last.max(r.last),
                                count: n.count + r.count,
                                reason: r.reason,
                            },
                        });
                    }
                    drop(st);
                    self.space_ready.notify_one();
                    return (notice, item);
                }
            }
            notified.await;
        }
    }
}

/// A registered client, with the fan-out's per-client delivery state.
struct ClientHandle {
    peer: SocketAddr,
    queue: Arc<ClientQueue>,
    offered: u64,
    last_sent_ns: Option<u64>,
    /// Frames and bytes written to the client at the last stats line.
    reported: (u64, u64),
}

/// What the periodic `stats:` line compares against: the previous line.
struct StatsWindow {
    at: Instant,
    frames: u64,
    /// Frames and bytes written since the previous line to clients that have left.
    departed: (u64, u64),
}

/// Clients listed by name on a stats line (the fullest queues first).
const STATS_CLIENTS: usize = 8;

impl StatsWindow {
    fn new() -> Self {
        Self {
            at: Instant::now(),
            frames: 0,
            departed: (0, 0),
        }
    }

    /// Keeps what a leaving client was sent since the previous line.
    fn client_left(&mut self, c: &ClientHandle) {
        let st = c.queue.lock();
        self.departed.0 += st.sent_frames - c.reported.0;
        self.departed.1 += st.sent_bytes - c.reported.1;
    }

    /// The line for `frames` captured so far, and a new window from now: capture and
    /// delivery rates, the clients, send latency (queued to written) percentiles, and
    /// each client's queue depth, frames sent and drops.
    fn line(&mut self, frames: u64, clients: &mut [ClientHandle], counts: [u64; 2]) -> String {
        let dt = self.at.elapsed().as_secs_f64().max(1e-9);
        let (mut out_frames, mut out_bytes) = std::mem::take(&mut self.departed);
        let mut waits = Vec::new();
        // (queued frames, drops, sent frames, peer) per client.
        let mut each = Vec::with_capacity(clients.len());
        for c in clients.iter_mut() {
            let mut st = c.queue.lock();
            out_frames += st.sent_frames - c.reported.0;
            out_bytes += st.sent_bytes - c.reported.1;
            c.reported = (st.sent_frames, st.sent_bytes);
            waits.append(&mut st.waits_ms);
            let dropped = c.queue.dropped.load(Ordering::Relaxed);
            each.push((st.frames, dropped, st.sent_frames, c.peer));
        }
        each.sort_by_key(|e| std::cmp::Reverse((e.0, e.1)));
        let mut per_client: Vec<String> = each
            .iter()
            .take(STATS_CLIENTS)
            .map(|(q, d, s, peer)| format!("{peer}(q={q},sent={s},drops={d})"))
            .collect();
        if each.len() > STATS_CLIENTS {
            per_client.push(format!("+{}_more", each.len() - STATS_CLIENTS));
        }
        let per_client = if per_client.is_empty() {
            "-".to_string()
        } else {
            per_client.join(",")
        };
        let (p50, p99) = crate::receiver::percentiles(&waits);
        let line = format!(
            "frames={frames} fps_in={:.1} fps_out={:.1} MB/s_out={:.1} clients={} accepted={} rejected={} queue_max={} drops_now={} send_latency_ms_p50={p50:.2} p99={p99:.2} per_client={per_client}",
            (frames - self.frames) as f64 / dt,
            out_frames as f64 / dt,
            out_bytes as f64 / dt / 1e6,
            clients.len(),
            counts[0],
            counts[1],
            each.iter().map(|e| e.0).max().unwrap_or(0),
            each.iter().map(|e| e.1).sum::<u64>(),
        );
        (self.at, self.frames) = (Instant::now(), frames);
        line
    }
}

impl ClientHandle {
    /// Decimation and frame-rate cap.
    fn wants(&mut self, timestamp_ns: u64) -> bool {
        let h = &self.queue.hello;
        self.offered += 1;
        if !(self.offered - 1).is_multiple_of(h.every.max(1) as u64) {
            return false;
        }
        if h.max_fps > 0.0 {
            let min_gap = (1e9 / h.max_fps as f64 * 0.98) as u64;
            if let Some(last) = self.last_sent_ns {
                if timestamp_ns.saturating_sub(last) < min_gap {
                    return false;
                }
            }
        }
        self.last_sent_ns = Some(timestamp_ns);
        true
    }
}

/// Reads the client's hello, if it sends one within `timeout`.
/// `Ok(None)`: a 1.0 client (nothing sent); `Err`: something other than a hello.
/// Returns the bytes read past the hello too (a heartbeat that came with it): they
/// are the start of what the client sends next.
async fn read_hello(
    sock: &mut BoxConn,
    timeout: Duration,
    required: bool,
) -> Result<(Option<ClientHello>, BytesMut), HelloError> {
    let bad = |e: anyhow::Error| HelloError {
        timed_out: false,
        closed: false,
        silent: false,
        error: e,
    };
    let mut buf = BytesMut::with_capacity(512);
    let mut dec = Decoder::with_limits(Limits {
        max_payload: 4096,
        ..Limits::default()
    });
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let decoded = dec.decode(&mut buf).map_err(|e| {
            bad(if e.is_tls_record() {
                anyhow::anyhow!("a client began a TLS handshake but this server has no --tls-cert")
            } else {
                e.into()
            })
        });
        if let Some(msg) = decoded? {
            return match msg {
                Message::ClientHello(h) => Ok((Some(h), buf)),
                other => Err(bad(anyhow::anyhow!(
                    "expected a client hello, got a {} message",
                    other.kind_name()
                ))),
            };
        }
        match tokio::time::timeout_at(deadline, sock.read_buf(&mut buf)).await {
            Err(_) if buf.is_empty() && !required => return Ok((None, buf)),
            Err(_) => {
                let what = if buf.is_empty() {
                    "no client hello within"
                } else {
                    "incomplete client hello after"
                };
                return Err(HelloError {
                    timed_out: true,
                    closed: false,
                    silent: buf.is_empty(),
                    error: anyhow::anyhow!(
                        "handshake timeout: {what} {:.1} s",
                        timeout.as_secs_f64()
                    ),
                });
            }
            // Closed before sending anything: a probe or a client that gave up, not a
            // 1.0 client (which keeps its connection open to read).
            Ok(Ok(0)) if buf.is_empty() => {
                return Err(HelloError {
                    timed_out: false,
                    closed: true,
                    silent: true,
                    error: anyhow::anyhow!("connection closed before any hello"),
                })
            }
            Ok(Ok(0)) => return Err(bad(anyhow::anyhow!("client closed inside its hello"))),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(bad(e.into())),
        }
    }
}

/// Why a client's hello was not accepted.
struct HelloError {
    /// The handshake timeout ran out (counted apart from malformed hellos).
    timed_out: bool,
    /// The peer closed without sending a byte: not a client, not counted as rejected.
    closed: bool,
    /// Nothing at all arrived before the timeout (a 1.0 client, which sends no hello,
    /// waits like this).
    silent: bool,
    error: anyhow::Error,
}

/// Runs the server on `listener` until the source ends, `frames` are sent, or
/// `shutdown` is cancelled. Every client is told why the stream ended.
pub async fn serve(
    listener: TcpListener,
    source: Box<dyn FrameSource>,
    cfg: ServeConfig,
    shutdown: CancellationToken,
) -> Result<ServeSummary> {
    let stream_header = source.stream_header();
    let info = StreamInfo {
        header: stream_header,
        source: cfg.source_name.clone(),
        server: format!("rawlink {}", env!("CARGO_PKG_VERSION")),
        interval_ns: source.interval().as_nanos() as u64,
        frames: cfg.frames,
        // A new one per server start: a client reconnecting can tell a restart.
        stream_id: Some(rand::random()),
    };
    let start_msg = Encoder::encode_parts(&Message::StreamStart(info));
    let (client_tx, mut client_rx) = mpsc::channel::<ClientHandle>(16);
    let client_count = Arc::new(AtomicU64::new(0));
    let accepted = Arc::new(AtomicU64::new(0));
    let rejected = Arc::new(AtomicU64::new(0));
    let enough_clients = Arc::new(Notify::new());
    let stream_done = CancellationToken::new();

    // Accept loop.
    let accept_task = {
        let stream_done = stream_done.clone();
        let client_count = client_count.clone();
        let accepted = accepted.clone();
        let enough = enough_clients.clone();
        let cfg = cfg.clone();
        let start_msg = start_msg.clone();
        let register_tx = client_tx;
        let rejected = rejected.clone();
        let pending = Arc::new(AtomicU64::new(0));
        tokio::spawn(async move {
            let mut tasks = JoinSet::new();
            loop {
                let (sock, peer) = tokio::select! {
                    _ = stream_done.cancelled() => break,
                    r = listener.accept() => match r {
                        Ok(x) => x,
                        Err(e) => { warn!("accept failed: {e}"); tokio::time::sleep(Duration::from_millis(50)).await; continue; }
                    },
                };
                if pending.load(Ordering::SeqCst) >= cfg.max_pending as u64 {
                    rejected.fetch_add(1, Ordering::SeqCst);
                    metrics::counter!("rawlink_server_rejected_total", "reason" => "max_pending")
                        .increment(1);
                    debug!(%peer, "refusing connection: --max-pending {} handshakes in progress", cfg.max_pending);
                    drop(sock);
                    continue;
                }
                crate::netio::tune_stream_socket(&sock);
                let shared = ClientShared {
                    cfg: cfg.clone(),
                    register_tx: register_tx.clone(),
                    client_count: client_count.clone(),
                    accepted: accepted.clone(),
                    rejected: rejected.clone(),
                    enough: enough.clone(),
                    start: start_msg.clone(),
                    pending: PendingGuard::new(pending.clone()),
                };
                tasks.spawn(
                    handle_client(sock, peer, shared)
                        .instrument(tracing::info_span!("client", %peer)),
                );
                // Reap finished connection tasks as we go, so a long run does not
                // accumulate them.
                while tasks.try_join_next().is_some() {}
            }
            drop(register_tx);
            // Let every writer flush its end-of-stream message.
            while tasks.join_next().await.is_some() {}
        })
    };

    // Wait for enough clients before capturing, registering them as they come (the
    // registration channel is bounded, so it must be drained while we wait).
    let mut clients: Vec<ClientHandle> = Vec::new();
    if cfg.wait_clients > 0 {
        info!(
            "waiting for {} client(s) before capturing",
            cfg.wait_clients
        );
        loop {
            if client_count.load(Ordering::SeqCst) as usize >= cfg.wait_clients {
                break;
            }
            tokio::select! {
                _ = enough_clients.notified() => {}
                Some(c) = client_rx.recv() => clients.push(c),
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
    }

    // Capture thread.
    let live = source.is_live();
    let stop = Arc::new(AtomicBool::new(false));
    let (frame_tx, mut frame_rx) = mpsc::channel::<Result<Frame, String>>(4);
    let capture = {
        let stop = stop.clone();
        let limit = cfg.frames;
        let mut source = source;
        std::thread::Builder::new()
            .name("capture".into())
            .spawn(move || -> EndReason {
                let mut n = 0u64;
                if stop.load(Ordering::Relaxed) {
                    return EndReason::Shutdown;
                }
                loop {
                    if limit.is_some_and(|l| n >= l) {
                        return EndReason::FramesDone;
                    }
                    match source.next_frame(&stop) {
                        Ok(Some(f)) => {
                            n += 1;
                            if frame_tx.blocking_send(Ok(f)).is_err() {
                                return EndReason::Shutdown;
                            }
                        }
                        Ok(None) if stop.load(Ordering::Relaxed) => return EndReason::Shutdown,
                        Ok(None) => return EndReason::SourceEnded,
                        Err(e) => {
                            let _ = frame_tx.blocking_send(Err(e.to_string()));
                            return EndReason::SourceError;
                        }
                    }
                }
            })
            .context("starting the capture thread")?
    };
    if shutdown.is_cancelled() {
        stop.store(true, Ordering::SeqCst);
    }

    // Fan-out.
    let mut summary = ServeSummary::default();
    let mut last_seq = 0u64;
    let mut shutting_down = false;
    let mut stats = tokio::time::interval(cfg.stats_interval.max(Duration::from_millis(100)));
    stats.tick().await;
    let mut window = StatsWindow::new();
    // The tasks gauge, each second whatever --stats-interval says (the first tick at once).
    let mut tasks_tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            biased;
            _ = tasks_tick.tick() => {
                metrics::gauge!("rawlink_server_tasks").set(alive_tasks() as f64);
            }
            _ = stats.tick(), if !cfg.stats_interval.is_zero() => {
                let counts = [accepted.load(Ordering::SeqCst), rejected.load(Ordering::SeqCst)];
                let line = window.line(summary.frames, &mut clients, counts);
                let tasks = alive_tasks();
                metrics::gauge!("rawlink_server_tasks").set(tasks as f64);
                // `tasks` stays last: the soak test reads it from the end of the line.
                info!("stats: {line} tasks={tasks}");
            }
            _ = shutdown.cancelled(), if !shutting_down => {
                info!("shutdown requested: finishing the stream");
                shutting_down = true;
                stop.store(true, Ordering::SeqCst);
            }
            Some(c) = client_rx.recv() => {
                debug!(peer = %c.peer, "client registered");
                clients.push(c);
            }
            item = frame_rx.recv() => match item {
                Some(Ok(frame)) => {
                    summary.frames += 1;
                    metrics::counter!("rawlink_server_frames_captured_total").increment(1);
                    last_seq = frame.header.seq;
                    let enc = Encoder::encode_frame(&frame);
                    // Bit-packed once per frame, only if some client asked for it.
                    let mut packed: Option<Option<EncodedFrame>> = None;
                    let mut compressed: Option<EncodedFrame> = None;
                    clients.retain(|c| {
                        let open = !c.queue.closed.load(Ordering::SeqCst);
                        if !open {
                            summary.dropped += c.queue.dropped.load(Ordering::Relaxed);
                            window.client_left(c);
                        }
                        open
                    });
                    for c in clients.iter_mut() {
                        if !c.wants(frame.header.timestamp_ns) {
                            continue;
                        }
                        let enc = if c.queue.hello.compress {
                            &*compressed.get_or_insert_with(|| Encoder::encode_frame_compressed(&frame))
                        } else if c.queue.hello.pack && frame.header.format.bits < 16 {
                            packed
                                .get_or_insert_with(|| match rawlink_frame::pack_frame(&frame) {
                                    Ok(p) => Some(Encoder::encode_frame(&p)),
                                    Err(e) => {
                                        debug!("frame not packed ({e}); sending it unpacked");
                                        None
                                    }
                                })
                                .as_ref()
                                .unwrap_or(&enc)
                        } else {
                            &enc
                        };
                        loop {
                            // A file source can wait for a slow lossless client.
                            let space = c.queue.space_ready.notified();
                            match c.queue.offer(last_seq, enc, !live) {
                                Push::Queued => break,
                                Push::DroppedOldest => {
                                    debug!(peer = %c.peer, seq = last_seq, "latest: dropped the oldest queued frame");
                                    break;
                                }
                                Push::DroppedNew => {
                                    // Logged at the 1st, 2nd, 4th, 8th… drop of the
                                    // client: a stalled client on a live source would
                                    // otherwise log every frame. The stats line and the
                                    // client's notices count them all.
                                    let n = c.queue.dropped.load(Ordering::Relaxed);
                                    if n.is_power_of_two() {
                                        warn!(peer = %c.peer, seq = last_seq, "lossless buffer full on a live source: frame dropped (overrun; {n} so far for this client)");
                                    } else {
                                        tracing::debug!(peer = %c.peer, seq = last_seq, "lossless buffer full: frame dropped (overrun)");
                                    }
                                    break;
                                }
                                Push::Full => {
                                    if c.queue.closed.load(Ordering::SeqCst) {
                                        break;
                                    }
                                    if shutdown.is_cancelled() {
                                        // Not waited for any more, but not dropped
                                        // silently either: the client gets a notice.
                                        c.queue.drop_frame(last_seq, "shutdown");
                                        break;
                                    }
                                    tokio::select! {
                                        _ = space => {}
                                        _ = shutdown.cancelled() => {}
                                        _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                                    }
                                }
                            }
                        }
                    }
                    debug!(seq = last_seq, clients = clients.len(), "frame captured");
                }
                Some(Err(e)) => {
                    warn!("source failed: {e}");
                    summary.source_error = Some(e);
                }
                None => break,
            },
        }
    }
    let reason = capture.join().unwrap_or(EndReason::SourceError);
    let reason = if shutting_down && reason != EndReason::FramesDone {
        EndReason::Shutdown
    } else {
        reason
    };
    summary.end_reason = Some(reason);
    let message = match (&summary.source_error, reason) {
        (Some(e), _) => format!("source error: {e}"),
        (None, EndReason::FramesDone) => format!("{} frames sent", summary.frames),
        (None, EndReason::SourceEnded) => "source ended".to_string(),
        (None, _) => "server shutting down".to_string(),
    };
    info!(frames = summary.frames, "stream ended: {message}");
    if summary.frames > 0 && accepted.load(Ordering::SeqCst) == 0 {
        warn!(
            "no client was connected: the {} frame(s) captured went to no one (--wait-clients N waits for N clients before capturing)",
            summary.frames
        );
    }
    let end = Encoder::encode_parts(&Message::EndOfStream(EndOfStream {
        last_seq,
        reason,
        message,
    }));
    // Clients that connected while we were finishing still get the end message.
    while let Ok(c) = client_rx.try_recv() {
        clients.push(c);
    }
    for c in &clients {
        c.queue.push_end(end.clone());
    }
    stream_done.cancel();
    // Clients that raced the accept loop's exit.
    while let Some(c) = client_rx.recv().await {
        c.queue.push_end(end.clone());
        clients.push(c);
    }
    let queues: Vec<Arc<ClientQueue>> = clients.iter().map(|c| c.queue.clone()).collect();
    drop(clients);
    // Give writers a bounded time to deliver what is queued and the end message, and
    // their clients to read it (see `linger`); a stalled client is not worth waiting
    // for longer. A slow client that is still reading (a loaded machine, a long lossless
    // queue) must not be cut off mid-frame: it would take the reset for a fault and
    // reconnect to a server that is gone.
    let grace = end_grace(cfg.peer_timeout);
    if tokio::time::timeout(grace, accept_task).await.is_err() {
        warn!(
            "some clients did not take the end of stream within {:.0} s; closing them",
            grace.as_secs_f64()
        );
    }
    summary.dropped += queues
        .iter()
        .map(|q| q.dropped.load(Ordering::Relaxed))
        .sum::<u64>();
    summary.clients = accepted.load(Ordering::SeqCst);
    summary.rejected = rejected.load(Ordering::SeqCst);
    if summary.dropped > 0 {
        // One line per run, for scripts: the drops of every client together.
        info!("dropped={} frame(s) over all clients", summary.dropped);
    }
    Ok(summary)
}

/// What a connection task needs from the server.
struct ClientShared {
    cfg: ServeConfig,
    register_tx: mpsc::Sender<ClientHandle>,
    client_count: Arc<AtomicU64>,
    accepted: Arc<AtomicU64>,
    rejected: Arc<AtomicU64>,
    enough: Arc<Notify>,
    start: EncodedFrame,
    pending: PendingGuard,
}

/// Counts a connection as pending (in its handshake) until dropped or released.
struct PendingGuard(Option<Arc<AtomicU64>>);

impl PendingGuard {
    fn new(n: Arc<AtomicU64>) -> Self {
        n.fetch_add(1, Ordering::SeqCst);
        Self(Some(n))
    }
    fn release(&mut self) {
        if let Some(n) = self.0.take() {
            n.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl Drop for PendingGuard {
    fn drop(&mut self) {
        self.release();
    }
}

/// Tells a refused client why (best effort, bounded) and closes it.
async fn refuse(mut conn: BoxConn, reason: EndReason, message: String) {
    say_end(&mut conn, reason, message, 0, Duration::from_secs(1)).await;
}

/// Best effort: sends an end message (`seq` `last_seq`) and shuts the writing side
/// down, giving up after `limit` (the client may not be reading).
async fn say_end<W: tokio::io::AsyncWrite + Unpin>(
    w: &mut W,
    reason: EndReason,
    message: String,
    last_seq: u64,
    limit: Duration,
) {
    let end = Encoder::encode_parts(&Message::EndOfStream(EndOfStream {
        last_seq,
        reason,
        message,
    }));
    let sent = tokio::time::timeout(limit, async {
        write_all_vectored(w, &end.header, &end.payload).await?;
        metrics::counter!("rawlink_server_bytes_sent_total")
            .increment((end.header.len() + end.payload.len()) as u64);
        w.shutdown().await
    })
    .await;
    match sent {
        Ok(Ok(())) => {}
        Ok(Err(e)) => debug!("end message ({reason}) not delivered: {e}"),
        Err(_) => debug!("end message ({reason}) not delivered within {limit:?}"),
    }
}

/// One connection: TLS, hello, authentication, limits, then the writer (and a reader
/// for the client's heartbeats) until the stream ends or the client goes away.
async fn handle_client(sock: TcpStream, peer: SocketAddr, mut sh: ClientShared) {
    let cfg = &sh.cfg;
    let deadline = tokio::time::Instant::now() + cfg.handshake_timeout;
    let reject = |reason: &'static str| {
        sh.rejected.fetch_add(1, Ordering::SeqCst);
        metrics::counter!("rawlink_server_rejected_total", "reason" => reason).increment(1);
    };
    let mut conn: BoxConn = match &cfg.tls {
        None => Box::new(sock),
        Some(acceptor) => match tokio::time::timeout_at(deadline, acceptor.accept(sock)).await {
            Ok(Ok(s)) => Box::new(s),
            Ok(Err(e)) => {
                reject("tls");
                warn!("rejecting client: TLS handshake failed: {e}");
                return;
            }
            Err(_) => {
                reject("handshake_timeout");
                warn!(
                    "rejecting client: TLS handshake not finished within {:.1} s",
                    cfg.handshake_timeout.as_secs_f64()
                );
                return;
            }
        },
    };
    let required = cfg.token.is_some();
    let (hello, after_hello) = if cfg.legacy {
        (None, BytesMut::new())
    } else {
        let wait = if required {
            deadline.saturating_duration_since(tokio::time::Instant::now())
        } else {
            cfg.hello_timeout.min(cfg.handshake_timeout)
        };
        match read_hello(&mut conn, wait, required).await {
            Ok(h) => h,
            Err(e) if e.closed => {
                debug!("{:#}: not a client", e.error);
                return;
            }
            Err(e) => {
                reject(if e.timed_out {
                    "handshake_timeout"
                } else {
                    "hello"
                });
                warn!("rejecting client: {:#}", e.error);
                if required && e.timed_out && e.silent {
                    // Probably a 1.0 client, waiting to read: tell it why it gets
                    // nothing, rather than closing without a word.
                    refuse(
                        conn,
                        EndReason::Unauthorized,
                        format!(
                            "{:#} (this server requires a token in a client hello)",
                            e.error
                        ),
                    )
                    .await;
                }
                return;
            }
        }
    };
    if let Some(expected) = &cfg.token {
        let presented = hello.as_ref().and_then(|h| h.token.as_deref());
        if !crate::tls::token_matches(expected, presented) {
            reject("auth");
            let why = if presented.is_some() {
                "wrong token"
            } else {
                "no token"
            };
            warn!("authentication failed ({why}): disconnecting");
            refuse(
                conn,
                EndReason::Unauthorized,
                format!("authentication failed: {why}"),
            )
            .await;
            return;
        }
    }
    sh.pending.release();
    if sh.client_count.load(Ordering::SeqCst) as usize >= cfg.max_clients {
        reject("max_clients");
        warn!("refusing client: --max-clients {} reached", cfg.max_clients);
        refuse(
            conn,
            EndReason::Busy,
            format!("server busy: {} clients already connected", cfg.max_clients),
        )
        .await;
        return;
    }
    let wants_notices = hello.is_some();
    let hello = hello.unwrap_or(ClientHello {
        every: 1,
        ..Default::default()
    });
    info!(policy = %hello.policy, every = hello.every, max_fps = hello.max_fps, tls = cfg.tls.is_some(), "client options");
    let heartbeats_in = hello.heartbeat_ms > 0;
    let queue = Arc::new(ClientQueue::new(
        hello,
        wants_notices,
        cfg.client_queue,
        cfg.client_buffer_bytes,
    ));
    // Register with the fan-out before anyone can start capturing for this client,
    // so that it cannot miss the first frame.
    let handle = ClientHandle {
        peer,
        queue: queue.clone(),
        offered: 0,
        last_sent_ns: None,
        reported: (0, 0),
    };
    if sh.register_tx.send(handle).await.is_err() {
        return;
    }
    // The fan-out waits for every registration sender to go away before it finishes;
    // do not hold one for the connection's life.
    let (dummy, _) = mpsc::channel(1);
    drop(std::mem::replace(&mut sh.register_tx, dummy));
    let now = sh.client_count.fetch_add(1, Ordering::SeqCst) + 1;
    sh.accepted.fetch_add(1, Ordering::SeqCst);
    // Increment, not set: two clients registering at once would race on a set.
    metrics::gauge!("rawlink_server_clients").increment(1.0);
    info!(clients = now, "client connected");
    if now as usize >= cfg.wait_clients {
        sh.enough.notify_one();
    }
    let (rd, wr) = tokio::io::split(conn);
    let gone = CancellationToken::new();
    // Why the reader dropped the client, for the writer's end message (`Kicked`).
    let kick = Arc::new(OnceLock::new());
    let reader = (!cfg.legacy).then(|| {
        let silent_limit = cfg.peer_timeout.filter(|_| heartbeats_in);
        let drain = linger(cfg.peer_timeout).min(KICK_DRAIN);
        let task = client_reader(
            rd,
            after_hello,
            silent_limit,
            drain,
            gone.clone(),
            kick.clone(),
        );
        tokio::spawn(task.in_current_span())
    });
    let io = WriterIo {
        heartbeat: cfg.heartbeat,
        peer_timeout: cfg.peer_timeout,
        legacy: cfg.legacy,
    };
    let r = client_writer(wr, queue.clone(), io, sh.start.clone(), gone.clone(), kick).await;
    if r.is_ok() && reader.is_some() {
        // Lingering close: the end message is sent and our side shut down; let the
        // client read it all and close first, reading (and discarding) what it still
        // sends meanwhile. Closing a socket with unread input makes the kernel reset the
        // connection, and a reset discards data the client has not read yet.
        let _ = tokio::time::timeout(linger(cfg.peer_timeout), gone.cancelled()).await;
    }
    gone.cancel();
    let why = match reader {
        Some(reader) => reader.await.ok().flatten(),
        None => None,
    };
    queue.closed.store(true, Ordering::SeqCst);
    queue.space_ready.notify_one();
    let left = sh.client_count.fetch_sub(1, Ordering::SeqCst) - 1;
    metrics::gauge!("rawlink_server_clients").decrement(1.0);
    match (r, why) {
        (Ok(()), _) => debug!(clients = left, "client finished"),
        // The writer stopped because the reader saw the connection end: say why.
        (Err(e), Some(why)) if e.kind() == std::io::ErrorKind::ConnectionAborted => {
            info!(clients = left, "client disconnected: {why}")
        }
        (Err(e), _) => info!(clients = left, "client disconnected: {e}"),
    }
    let dropped = queue.dropped.load(Ordering::Relaxed);
    if dropped > 0 {
        warn!(policy = %queue.hello.policy, "{dropped} frame(s) dropped for this client");
    }
}

/// How long a client gets, after the end message and our side's shutdown, to read
/// what is still in flight and close first: `--peer-timeout` (a client that reads
/// nothing for that long is dead anyway), or 10 s when that is off. A live client
/// closes as soon as it has read the end message, so this only bounds slow or stalled
/// ones.
fn linger(peer_timeout: Option<Duration>) -> Duration {
    peer_timeout.unwrap_or(Duration::from_secs(10))
}

/// How long the server waits at the end of the stream for its clients: room for a
/// writer stalled up to `--peer-timeout` on its last write and then the `linger`,
/// plus slack; at least 5 s.
fn end_grace(peer_timeout: Option<Duration>) -> Duration {
    (2 * linger(peer_timeout) + Duration::from_secs(5)).max(Duration::from_secs(5))
}

/// Longest wait, after a client is dropped, for it to read its `Kicked` end message
/// and close (the write of that message is bounded by the same time).
const KICK_DRAIN: Duration = Duration::from_secs(2);

/// Reads what a client sends after its hello (heartbeats), starting with `buf`, the
/// bytes read with the hello past its end. Cancels `gone` when the
/// client closes, sends something that is not a heartbeat, or, if it promised
/// heartbeats, stays silent past `silent_limit`; returns which, for the log (`None`:
/// the writer's side ended the connection first).
///
/// The last two drop the client: the reader puts the reason into `kick` first, for the
/// writer's `Kicked` end message, and then reads and discards what the client still
/// sends until it closes or `drain` has passed, so that the client's unread input does
/// not make the close a reset, which would discard the end message before the client
/// has read it.
async fn client_reader(
    mut rd: tokio::io::ReadHalf<BoxConn>,
    buf: BytesMut,
    silent_limit: Option<Duration>,
    drain: Duration,
    gone: CancellationToken,
    kick: Arc<OnceLock<String>>,
) -> Option<&'static str> {
    let (why, message) = match read_heartbeats(&mut rd, buf, silent_limit, &gone).await? {
        Ok(closed) => {
            gone.cancel();
            return Some(closed);
        }
        Err(kicked) => kicked,
    };
    let _ = kick.set(message);
    gone.cancel();
    let until = tokio::time::Instant::now() + drain;
    let mut scratch = [0u8; 4096];
    while let Ok(Ok(1..)) = tokio::time::timeout_at(until, rd.read(&mut scratch)).await {}
    Some(why)
}

/// Why a client's connection ends on the reader's side: `Ok` the client closed it,
/// `Err` the server drops the client (the log's reason and the client's message).
type ReaderEnd = Result<&'static str, (&'static str, String)>;

/// [`client_reader`]'s loop: `None` when `gone` was cancelled by the writer's side.
async fn read_heartbeats(
    rd: &mut tokio::io::ReadHalf<BoxConn>,
    mut buf: BytesMut,
    silent_limit: Option<Duration>,
    gone: &CancellationToken,
) -> Option<ReaderEnd> {
    buf.reserve(256);
    let mut dec = Decoder::with_limits(Limits {
        max_payload: 4096,
        ..Limits::default()
    });
    let far = Duration::from_secs(86400 * 365);
    loop {
        loop {
            match dec.decode(&mut buf) {
                Ok(Some(Message::Heartbeat)) => {}
                Ok(Some(other)) => {
                    let kind = other.kind_name();
                    warn!("unexpected {kind} message from the client; disconnecting");
                    return Some(Err((
                        "dropped for an unexpected message",
                        format!("dropped: unexpected {kind} message from the client"),
                    )));
                }
                Ok(None) => break,
                Err(e) => {
                    warn!("bad data from the client ({e}); disconnecting");
                    return Some(Err((
                        "dropped for bad data",
                        format!("dropped: bad data from the client ({e})"),
                    )));
                }
            }
        }
        tokio::select! {
            r = tokio::time::timeout(silent_limit.unwrap_or(far), rd.read_buf(&mut buf)) => match r {
                Ok(Ok(n)) if n > 0 => {}
                Ok(_) => {
                    debug!("client closed its side of the connection");
                    return Some(Ok("the client closed the connection"));
                }
                Err(_) => {
                    let secs = silent_limit.unwrap_or(far).as_secs_f64();
                    warn!("no heartbeat from the client for {secs:.1} s: presumed dead, disconnecting");
                    metrics::counter!("rawlink_server_dead_peers_total").increment(1);
                    return Some(Err((
                        "dropped: no heartbeat within --peer-timeout",
                        format!("dropped: no heartbeat from the client for {secs:.1} s (--peer-timeout)"),
                    )));
                }
            },
            _ = gone.cancelled() => return None,
        }
    }
}

/// Timing of a client writer.
struct WriterIo {
    heartbeat: Duration,
    peer_timeout: Option<Duration>,
    legacy: bool,
}

/// Live tokio tasks of this runtime.
fn alive_tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

/// Writes header and payload, failing if the client takes longer than `limit`; counts
/// what was written in `rawlink_server_bytes_sent_total` (every message, not only frames).
async fn send(
    w: &mut tokio::io::WriteHalf<BoxConn>,
    header: &[u8],
    payload: &[u8],
    limit: Option<Duration>,
) -> std::io::Result<()> {
    send_unmetered(w, header, payload, limit).await?;
    metrics::counter!("rawlink_server_bytes_sent_total")
        .increment((header.len() + payload.len()) as u64);
    Ok(())
}

async fn send_unmetered(
    w: &mut tokio::io::WriteHalf<BoxConn>,
    header: &[u8],
    payload: &[u8],
    limit: Option<Duration>,
) -> std::io::Result<()> {
    match limit {
        None => write_all_vectored(w, header, payload).await,
        Some(t) => match tokio::time::timeout(t, write_all_vectored(w, header, payload)).await {
            Ok(r) => r,
            Err(_) => {
                metrics::counter!("rawlink_server_dead_peers_total").increment(1);
                Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "write stalled for {:.1} s (--peer-timeout): client presumed dead",
                        t.as_secs_f64()
                    ),
                ))
            }
        },
    }
}

/// Writes the stream to one client until the end message has been sent.
async fn client_writer(
    mut sock: tokio::io::WriteHalf<BoxConn>,
    queue: Arc<ClientQueue>,
    io: WriterIo,
    start: EncodedFrame,
    gone: CancellationToken,
    kick: Arc<OnceLock<String>>,
) -> std::io::Result<()> {
    let limit = io.peer_timeout;
    let heartbeat = Encoder::encode_parts(&Message::Heartbeat);
    if !io.legacy {
        send(&mut sock, &start.header, &start.payload, limit).await?;
    }
    // The last frame sent: a `Kicked` end message's `seq`, so that the client counts
    // no frames after it as missing.
    let mut last_sent = 0;
    loop {
        let next = tokio::select! {
            // The client is gone or dropped: no more frames for it.
            biased;
            _ = gone.cancelled() => {
                if let Some(why) = kick.get() {
                    // A client that sends garbage or went silent may not read it.
                    let t = limit.map_or(KICK_DRAIN, |l| l.min(KICK_DRAIN));
                    say_end(&mut sock, EndReason::Kicked, why.clone(), last_sent, t).await;
                }
                return Err(std::io::Error::new(std::io::ErrorKind::ConnectionAborted, "client went away"));
            }
            item = queue.pop() => Some(item),
            _ = tokio::time::sleep(io.heartbeat), if !io.legacy => None,
        };
        let Some((drops, item)) = next else {
            send(&mut sock, &heartbeat.header, &heartbeat.payload, limit).await?;
            continue;
        };
        if let (Some(d), true) = (drops, queue.wants_notices) {
            let n = Encoder::encode_parts(&Message::Notice(Notice {
                dropped: d.count,
                reason: d.reason.to_string(),
                first_seq: d.first,
                last_seq: d.last,
            }));
            send(&mut sock, &n.header, &n.payload, limit).await?;
        }
        match item {
            Outgoing::Frame(seq, f, queued) => {
                let header: &[u8] = if io.legacy { &[] } else { &f.header };
                send(&mut sock, header, &f.payload, limit).await?;
                last_sent = seq;
                queue.record_sent(header.len() + f.payload.len(), queued);
            }
            Outgoing::End(e) => {
                if !io.legacy {
                    send(&mut sock, &e.header, &e.payload, limit).await?;
                }
                sock.flush().await?;
                sock.shutdown().await?;
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(port: u16) -> ClientHandle {
        ClientHandle {
            peer: SocketAddr::from(([127, 0, 0, 1], port)),
            queue: Arc::new(ClientQueue::new(
                ClientHello {
                    policy: Policy::Latest,
                    ..ClientHello::default()
                },
                true,
                4,
                1 << 20,
            )),
            offered: 0,
            last_sent_ns: None,
            reported: (0, 0),
        }
    }

    /// A lossless queue that overruns drops the new frames while older ones wait: the
    /// notice of the drops goes out with the first frame after them (or the end), never
    /// ahead of an older frame still queued.
    #[tokio::test]
    async fn a_lossless_overrun_notice_follows_the_older_frames() {
        let fmt =
            rawlink_frame::PixelFormat::unpacked(rawlink_frame::BayerPattern::Rggb, 12).unwrap();
        let frame = |seq| {
            let h = rawlink_frame::FrameHeader::new(seq, 4, 4, fmt);
            Encoder::encode_frame(&rawlink_frame::Frame::new(h, vec![0u8; 32].into()).unwrap())
        };
        let one = frame(1).wire_len();
        // Room for two frames.
        let lossless = ClientHello {
            policy: Policy::Lossless,
            ..ClientHello::default()
        };
        let q = ClientQueue::new(lossless.clone(), true, 16, 2 * one);
        for seq in 1..=2 {
            assert!(matches!(q.offer(seq, &frame(seq), false), Push::Queued));
        }
        for seq in 3..=5 {
            assert!(matches!(q.offer(seq, &frame(seq), false), Push::DroppedNew));
        }
        let seq_of = |o: &Outgoing| match o {
            Outgoing::Frame(s, ..) => Some(*s),
            Outgoing::End(_) => None,
        };
        let (n, item) = q.pop().await;
        assert!(n.is_none() && seq_of(&item) == Some(1), "{n:?}");
        let (n, item) = q.pop().await;
        assert!(n.is_none() && seq_of(&item) == Some(2), "{n:?}");
        assert!(matches!(q.offer(6, &frame(6), false), Push::Queued));
        let (n, item) = q.pop().await;
        let n = n.expect("the notice comes with the first frame after the drops");
        assert_eq!(
            (n.first, n.last, n.count, seq_of(&item)),
            (3, 5, 3, Some(6))
        );
        // With nothing after the drops, the end carries the notice.
        assert!(matches!(q.offer(7, &frame(7), false), Push::Queued));
        assert!(matches!(q.offer(8, &frame(8), false), Push::Queued));
        assert!(matches!(q.offer(9, &frame(9), false), Push::DroppedNew));
        q.push_end(frame(0));
        assert!(q.pop().await.0.is_none());
        assert!(q.pop().await.0.is_none());
        let (n, item) = q.pop().await;
        assert!(
            seq_of(&item).is_none() && n.is_some_and(|n| n.first == 9),
            "{n:?}"
        );
        // A sustained overrun, drops and queued frames interleaved: each drop is reported
        // just before the first frame after it, not held back behind the later drops
        // (one run over all of them would never be "before" a queued frame).
        let q = ClientQueue::new(lossless.clone(), true, 16, 2 * one);
        let mut got = Vec::new();
        assert!(matches!(q.offer(1, &frame(1), false), Push::Queued));
        assert!(matches!(q.offer(2, &frame(2), false), Push::Queued));
        let mut seq = 3;
        for _ in 0..6 {
            // Full: this one is dropped; then one goes out and the next is queued.
            assert!(matches!(q.offer(seq, &frame(seq), false), Push::DroppedNew));
            let (n, item) = q.pop().await;
            got.push((n.map(|n| (n.first, n.last, n.count)), seq_of(&item)));
            assert!(matches!(
                q.offer(seq + 1, &frame(seq + 1), false),
                Push::Queued
            ));
            seq += 2;
        }
        assert_eq!(
            got,
            [
                (None, Some(1)),
                (None, Some(2)),
                (Some((3, 3, 1)), Some(4)),
                (Some((5, 5, 1)), Some(6)),
                (Some((7, 7, 1)), Some(8)),
                (Some((9, 9, 1)), Some(10)),
            ]
        );
    }

    fn field<'a>(line: &'a str, key: &str) -> &'a str {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("no {key} in {line}"))
    }

    /// The stats line counts what every client was sent since the previous line, a
    /// client that left included, lists each client's queue, sends and drops, and starts
    /// the next window from zero.
    #[test]
    fn stats_line_counts_delivery_per_client() {
        let mut clients = vec![client(1000), client(1001), client(1002)];
        let mut w = StatsWindow::new();
        let t = Instant::now();
        for _ in 0..3 {
            clients[0].queue.record_sent(1_000_000, t);
        }
        clients[1].queue.record_sent(500_000, t);
        clients[2].queue.record_sent(2_000_000, t);
        // Client 1 has a full queue and has dropped 2 frames.
        let f = EncodedFrame {
            header: vec![0; 80].into(),
            payload: vec![0; 100].into(),
        };
        for seq in 0..6 {
            clients[1].queue.offer(seq, &f, false);
        }
        // Client 2 leaves before the line; what it was sent still counts.
        let gone = clients.pop().unwrap();
        w.client_left(&gone);
        std::thread::sleep(Duration::from_millis(20));
        let line = w.line(10, &mut clients, [5, 1]);
        let dt_max = t.elapsed().as_secs_f64();
        let fps_out: f64 = field(&line, "fps_out").parse().unwrap();
        let mbs: f64 = field(&line, "MB/s_out").parse().unwrap();
        // 5 frames and 5.5 MB over at least 20 ms and at most `dt_max` (rounded to 0.1).
        assert!(
            fps_out <= 5.0 / 0.02 + 0.05 && fps_out >= 5.0 / dt_max - 0.05,
            "{line}"
        );
        assert!(
            mbs <= 5.5 / 0.02 + 0.05 && mbs >= 5.5 / dt_max - 0.05,
            "{line}"
        );
        assert_eq!(field(&line, "clients"), "2", "{line}");
        assert_eq!(field(&line, "accepted"), "5", "{line}");
        assert_eq!(field(&line, "rejected"), "1", "{line}");
        assert_eq!(field(&line, "queue_max"), "4", "{line}");
        assert_eq!(field(&line, "drops_now"), "2", "{line}");
        // The fullest queue first.
        assert_eq!(
            field(&line, "per_client"),
            "127.0.0.1:1001(q=4,sent=1,drops=2),127.0.0.1:1000(q=0,sent=3,drops=0)",
            "{line}"
        );
        assert!(field(&line, "send_latency_ms_p50").parse::<f64>().unwrap() >= 0.0);
        // Nothing sent since: the next window's rates are zero, the totals stay.
        let line = w.line(10, &mut clients, [5, 1]);
        assert_eq!(field(&line, "fps_out"), "0.0", "{line}");
        assert_eq!(field(&line, "fps_in"), "0.0", "{line}");
        assert_eq!(field(&line, "MB/s_out"), "0.0", "{line}");
        assert!(field(&line, "per_client").contains("sent=3,"), "{line}");
    }

    /// Past [`STATS_CLIENTS`] the line names how many more there are.
    #[test]
    fn stats_line_bounds_the_client_list() {
        let mut clients: Vec<_> = (0..11).map(|i| client(2000 + i)).collect();
        let line = StatsWindow::new().line(0, &mut clients, [11, 0]);
        let list = field(&line, "per_client");
        assert_eq!(list.matches("(q=").count(), STATS_CLIENTS, "{line}");
        assert!(list.ends_with(",+3_more"), "{line}");
        let line = StatsWindow::new().line(0, &mut [], [0, 0]);
        assert_eq!(field(&line, "per_client"), "-", "{line}");
    }
}
