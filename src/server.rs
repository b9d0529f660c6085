//! `rawlink serve`: one capture thread, one fan-out task, one writer task per client.
//!
//! ```text
//! capture thread ──mpsc──▶ fan-out task ──per-client bounded queue──▶ writer task ──▶ socket
//!                            ▲
//! accept loop ──new client───┘
//! ```
//! A frame is encoded once (header + CRC) and its payload is shared by reference
//! count with every client queue; writers send header and payload with one vectored
//! write. A full client queue drops that client's oldest frame (counted), so a slow
//! client never slows the others.

use crate::netio::write_all_vectored;
use anyhow::{Context, Result};
use rawlink_frame::Frame;
use rawlink_proto::{EncodedFrame, Encoder, EndOfStream, EndReason, Message, StreamInfo};
use rawlink_source::FrameSource;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};

/// Server settings (already validated).
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Stop after this many frames.
    pub frames: Option<u64>,
    /// Bare frames, no protocol.
    pub legacy: bool,
    /// Wait for this many clients before capturing.
    pub wait_clients: usize,
    /// Refuse clients beyond this count.
    pub max_clients: usize,
    /// Frames queued per client.
    pub client_queue: usize,
    /// Text for the stream-start message.
    pub source_name: String,
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
    /// Why the stream ended.
    pub end_reason: Option<EndReason>,
    /// Source error text, if the source failed.
    pub source_error: Option<String>,
}

/// One item in a client's queue.
#[derive(Debug, Clone)]
enum Outgoing {
    Frame(EncodedFrame),
    End(EncodedFrame),
}

/// A client's queue: bounded, oldest dropped when full.
struct ClientQueue {
    items: Mutex<VecDeque<Outgoing>>,
    notify: Notify,
    capacity: usize,
    dropped: AtomicU64,
    closed: AtomicBool,
}

impl ClientQueue {
    fn new(capacity: usize) -> Self {
        Self {
            items: Mutex::new(VecDeque::with_capacity(capacity)),
            notify: Notify::new(),
            capacity: capacity.max(1),
            dropped: AtomicU64::new(0),
            closed: AtomicBool::new(false),
        }
    }

    /// Queues an item; returns true if an older frame had to be dropped.
    fn push(&self, item: Outgoing) -> bool {
        let mut dropped = false;
        {
            let mut q = self.items.lock().unwrap_or_else(|e| e.into_inner());
            if matches!(item, Outgoing::Frame(_)) && q.len() >= self.capacity {
                if let Some(pos) = q.iter().position(|i| matches!(i, Outgoing::Frame(_))) {
                    q.remove(pos);
                    dropped = true;
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
            q.push_back(item);
        }
        self.notify.notify_one();
        dropped
    }

    async fn pop(&self) -> Outgoing {
        loop {
            let notified = self.notify.notified();
            if let Some(i) = self
                .items
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pop_front()
            {
                return i;
            }
            notified.await;
        }
    }
}

struct ClientHandle {
    peer: SocketAddr,
    queue: Arc<ClientQueue>,
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
    };
    let start_msg = Encoder::encode_parts(&Message::StreamStart(info));
    let (client_tx, mut client_rx) = mpsc::channel::<ClientHandle>(16);
    let client_count = Arc::new(AtomicU64::new(0));
    let accepted = Arc::new(AtomicU64::new(0));
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
        let register_tx = client_tx.clone();
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
                let n = client_count.load(Ordering::SeqCst) as usize;
                if n >= cfg.max_clients {
                    warn!(%peer, "refusing client: --max-clients {} reached", cfg.max_clients);
                    drop(sock);
                    continue;
                }
                let _ = sock.set_nodelay(true);
                let queue = Arc::new(ClientQueue::new(cfg.client_queue));
                // Register with the fan-out before anyone can start capturing for this
                // client, so that it cannot miss the first frame.
                if register_tx
                    .send(ClientHandle {
                        peer,
                        queue: queue.clone(),
                    })
                    .await
                    .is_err()
                {
                    break;
                }
                let now = client_count.fetch_add(1, Ordering::SeqCst) + 1;
                accepted.fetch_add(1, Ordering::SeqCst);
                info!(%peer, clients = now, "client connected");
                if now as usize >= cfg.wait_clients {
                    enough.notify_one();
                }
                let q = queue.clone();
                let cc = client_count.clone();
                let legacy = cfg.legacy;
                let start = start_msg.clone();
                tasks.spawn(
                    async move {
                        let r = client_writer(sock, q.clone(), legacy, start).await;
                        q.closed.store(true, Ordering::SeqCst);
                        let left = cc.fetch_sub(1, Ordering::SeqCst) - 1;
                        match r {
                            Ok(()) => debug!(clients = left, "client finished"),
                            Err(e) => info!(clients = left, "client disconnected: {e}"),
                        }
                        q.dropped.load(Ordering::Relaxed)
                    }
                    .instrument(tracing::info_span!("client", %peer)),
                );
            }
            // Let every writer flush its end-of-stream message.
            let mut dropped = 0;
            while let Some(r) = tasks.join_next().await {
                dropped += r.unwrap_or(0);
            }
            dropped
        })
    };
    drop(client_tx);

    // Wait for enough clients before capturing.
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
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
    }

    // Capture thread.
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
    let mut clients: Vec<ClientHandle> = Vec::new();
    let mut summary = ServeSummary::default();
    let mut last_seq = 0u64;
    let mut shutting_down = false;
    loop {
        tokio::select! {
            biased;
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
                    last_seq = frame.header.seq;
                    let enc = Encoder::encode_frame(&frame);
                    clients.retain(|c| !c.queue.closed.load(Ordering::SeqCst));
                    for c in &clients {
                        if c.queue.push(Outgoing::Frame(enc.clone())) {
                            debug!(peer = %c.peer, seq = last_seq, "client queue full: dropped its oldest frame");
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
        c.queue.push(Outgoing::End(end.clone()));
    }
    stream_done.cancel();
    // Clients that raced the accept loop's exit.
    while let Some(c) = client_rx.recv().await {
        c.queue.push(Outgoing::End(end.clone()));
        clients.push(c);
    }
    drop(clients);
    summary.dropped = match tokio::time::timeout(Duration::from_secs(30), accept_task).await {
        Ok(Ok(d)) => d,
        _ => {
            warn!("some clients did not take the end of stream within 30 s");
            0
        }
    };
    summary.clients = accepted.load(Ordering::SeqCst);
    Ok(summary)
}

/// Writes the stream to one client until the end message has been sent.
async fn client_writer(
    mut sock: TcpStream,
    queue: Arc<ClientQueue>,
    legacy: bool,
    start: EncodedFrame,
) -> std::io::Result<()> {
    if !legacy {
        write_all_vectored(&mut sock, &start.header, &start.payload).await?;
    }
    loop {
        match queue.pop().await {
            Outgoing::Frame(f) => {
                let header: &[u8] = if legacy { &[] } else { &f.header };
                write_all_vectored(&mut sock, header, &f.payload).await?;
            }
            Outgoing::End(e) => {
                if !legacy {
                    write_all_vectored(&mut sock, &e.header, &e.payload).await?;
                }
                sock.flush().await?;
                sock.shutdown().await?;
                return Ok(());
            }
        }
    }
}
