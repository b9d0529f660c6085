//! Payloads of the control messages: stream start and end of stream.

use crate::{Kind, ProtoError};
use rawlink_frame::FrameHeader;

/// What a server says about its stream when a client connects.
///
/// On the wire the image fields travel in the fixed header; the payload is
/// UTF-8 `key=value` lines (`source`, `server`, `interval_ns`, `frames`).
/// Unknown keys are ignored so later versions can add some.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamInfo {
    /// Geometry and format of the frames that follow (seq 0).
    pub header: FrameHeader,
    /// Source description, e.g. `sim` or `chardev:/dev/camera`.
    pub source: String,
    /// Server software and version.
    pub server: String,
    /// Nominal frame interval in ns (0 if unknown or as fast as possible).
    pub interval_ns: u64,
    /// Frames the server will send before ending (None = unlimited).
    pub frames: Option<u64>,
    /// Identifies this stream (1.2): a server picks a new one each time it starts, so a
    /// client that reconnects can tell a restarted server (a new numbering) from the same
    /// stream (a gap). `None` from servers that do not send it.
    pub stream_id: Option<u64>,
}

impl StreamInfo {
    pub(crate) fn payload_bytes(&self) -> Vec<u8> {
        let clean = |s: &str| s.replace(['\n', '\r'], " ");
        let mut s = format!(
            "source={}\nserver={}\ninterval_ns={}\n",
            clean(&self.source),
            clean(&self.server),
            self.interval_ns
        );
        if let Some(n) = self.frames {
            s.push_str(&format!("frames={n}\n"));
        }
        if let Some(id) = self.stream_id {
            s.push_str(&format!("stream_id={id:016x}\n"));
        }
        s.into_bytes()
    }

    pub(crate) fn parse(header: FrameHeader, payload: &[u8]) -> Result<Self, ProtoError> {
        let bad = |reason: String| ProtoError::BadMessage {
            kind: Kind::StreamStart,
            reason,
        };
        let text = std::str::from_utf8(payload).map_err(|e| bad(format!("not UTF-8: {e}")))?;
        let mut info = StreamInfo {
            header,
            source: String::new(),
            server: String::new(),
            interval_ns: 0,
            frames: None,
            stream_id: None,
        };
        for line in text.lines().filter(|l| !l.is_empty()) {
            let (k, v) = line
                .split_once('=')
                .ok_or_else(|| bad(format!("line without '=': {line:?}")))?;
            match k {
                "source" => info.source = printable(v),
                "server" => info.server = printable(v),
                "interval_ns" => {
                    info.interval_ns = v.parse().map_err(|_| bad(format!("bad interval {v:?}")))?
                }
                "frames" => {
                    info.frames = Some(v.parse().map_err(|_| bad(format!("bad frames {v:?}")))?)
                }
                "stream_id" => {
                    info.stream_id = Some(
                        u64::from_str_radix(v, 16)
                            .map_err(|_| bad(format!("bad stream_id {v:?}")))?,
                    )
                }
                _ => {}
            }
        }
        Ok(info)
    }
}

/// Why a stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// The requested number of frames was sent.
    FramesDone,
    /// The source ran out (end of file, device hung up).
    SourceEnded,
    /// The server is shutting down (signal).
    Shutdown,
    /// The source failed.
    SourceError,
    /// The server dropped this client (for example, too slow).
    Kicked,
    /// The server refused this client: no token or a wrong one (1.2). Retrying with
    /// the same credentials cannot succeed.
    Unauthorized,
    /// The server is at its client limit (1.2); trying again later may succeed.
    Busy,
    /// A code this build does not know.
    Other(u32),
}

/// The reason's name as in docs/PROTOCOL.md (`FramesDone`, …); a code this build does
/// not know reads `unknown reason code N`.
impl std::fmt::Display for EndReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Other(c) => write!(f, "unknown reason code {c}"),
            known => write!(f, "{known:?}"),
        }
    }
}

impl EndReason {
    /// Wire code.
    pub fn code(self) -> u32 {
        match self {
            Self::FramesDone => 1,
            Self::SourceEnded => 2,
            Self::Shutdown => 3,
            Self::SourceError => 4,
            Self::Kicked => 5,
            Self::Unauthorized => 6,
            Self::Busy => 7,
            Self::Other(c) => c,
        }
    }
    /// Reason from its wire code.
    pub fn from_code(c: u32) -> Self {
        match c {
            1 => Self::FramesDone,
            2 => Self::SourceEnded,
            3 => Self::Shutdown,
            4 => Self::SourceError,
            5 => Self::Kicked,
            6 => Self::Unauthorized,
            7 => Self::Busy,
            c => Self::Other(c),
        }
    }
    /// True for reasons after which a receiver should not expect more frames
    /// from this server and should exit successfully.
    pub fn is_clean(self) -> bool {
        matches!(self, Self::FramesDone | Self::SourceEnded | Self::Shutdown)
    }
}

/// The end-of-stream message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndOfStream {
    /// Sequence number of the last frame captured (0 if none).
    pub last_seq: u64,
    /// Why.
    pub reason: EndReason,
    /// Human-readable detail.
    pub message: String,
}

impl EndOfStream {
    pub(crate) fn payload_bytes(&self) -> Vec<u8> {
        let mut v = self.reason.code().to_le_bytes().to_vec();
        v.extend_from_slice(self.message.as_bytes());
        v
    }

    pub(crate) fn parse(last_seq: u64, payload: &[u8]) -> Result<Self, ProtoError> {
        let bad = |reason: String| ProtoError::BadMessage {
            kind: Kind::EndOfStream,
            reason,
        };
        if payload.len() < 4 {
            return Err(bad(format!("payload of {} bytes, need 4", payload.len())));
        }
        let code = u32::from_le_bytes([payload[0], payload[1], payload[2], payload[3]]);
        let message = printable(&String::from_utf8_lossy(&payload[4..]));
        Ok(Self {
            last_seq,
            reason: EndReason::from_code(code),
            message,
        })
    }
}

/// Longest text from a peer kept for people to read, in characters.
pub const MAX_TEXT_CHARS: usize = 1024;

/// Text from a peer, made safe to print on one line of a log or an error: control
/// characters (line breaks, escape sequences) written as Rust escapes (`\n`, `\u{1b}`),
/// and text whose printable form is longer than [`MAX_TEXT_CHARS`] cut, with a note of
/// how many characters were left out, to at most that many characters in all. Printable
/// text comes back unchanged, so `printable(printable(t)) == printable(t)`.
pub fn printable(text: &str) -> String {
    /// Room kept for the note: "… (" + up to 20 digits + " more characters)".
    const NOTE: usize = 40;
    let width = |c: char| {
        if c.is_control() {
            c.escape_default().count()
        } else {
            1
        }
    };
    let fits = text.chars().map(width).sum::<usize>() <= MAX_TEXT_CHARS;
    let room = if fits {
        usize::MAX
    } else {
        MAX_TEXT_CHARS - NOTE
    };
    let mut out = String::with_capacity(text.len().min(MAX_TEXT_CHARS * 4));
    let mut used = 0;
    for (i, c) in text.chars().enumerate() {
        if used + width(c) > room {
            let rest = text.chars().count() - i;
            out.push_str(&format!("… ({rest} more characters)"));
            break;
        }
        used += width(c);
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Parses `key=value` lines, calling `f` for each pair.
fn parse_kv(
    kind: Kind,
    payload: &[u8],
    mut f: impl FnMut(&str, &str) -> Result<(), String>,
) -> Result<(), ProtoError> {
    let bad = |reason: String| ProtoError::BadMessage { kind, reason };
    let text = std::str::from_utf8(payload).map_err(|e| bad(format!("not UTF-8: {e}")))?;
    for line in text.lines().filter(|l| !l.is_empty()) {
        let (k, v) = line
            .split_once('=')
            .ok_or_else(|| bad(format!("line without '=': {line:?}")))?;
        f(k, v).map_err(bad)?;
    }
    Ok(())
}

/// How the server treats a client that cannot keep up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Policy {
    /// Live view: a short queue; when full, the oldest queued frames are dropped
    /// for this client only, and counted.
    #[default]
    Latest,
    /// Recorder: a large byte buffer; a file source waits for the slowest lossless
    /// client, a live source records overruns as counted, reported drops.
    Lossless,
}

impl std::str::FromStr for Policy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "latest" => Ok(Self::Latest),
            "lossless" => Ok(Self::Lossless),
            _ => Err(format!("unknown policy {s:?} (latest, lossless)")),
        }
    }
}

impl std::fmt::Display for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Latest => "latest",
            Self::Lossless => "lossless",
        })
    }
}

/// Delivery options a client asks for (protocol 1.1). Payload: `key=value` lines
/// `policy`, `every`, `max_fps`, `pack`, `compress`, and since 1.2 `heartbeat_ms` and
/// `token`; unknown keys are ignored.
#[derive(Clone, PartialEq, Default)]
pub struct ClientHello {
    /// Flow-control policy.
    pub policy: Policy,
    /// Deliver every Nth frame only (1 = all).
    pub every: u32,
    /// Deliver at most this many frames per second (0 = unlimited).
    pub max_fps: f32,
    /// Send frames bit-packed (`Packing::PackedLsb`) when their depth is below 16.
    pub pack: bool,
    /// Send frames compressed with the CFA-LZ4 codec (takes precedence over `pack`).
    pub compress: bool,
    /// The client sends a heartbeat at least this often (ms; 0 = it does not), so the
    /// server may treat a silent client as dead (1.2).
    pub heartbeat_ms: u32,
    /// Shared secret for servers that require one (1.2). Printable ASCII, no spaces.
    pub token: Option<String>,
}

impl std::fmt::Debug for ClientHello {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        f.debug_struct("ClientHello")
            .field("policy", &self.policy)
            .field("every", &self.every)
            .field("max_fps", &self.max_fps)
            .field("pack", &self.pack)
            .field("compress", &self.compress)
            .field("heartbeat_ms", &self.heartbeat_ms)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// True for a token that fits on one `key=value` line: printable ASCII, no spaces.
pub fn valid_token(t: &str) -> bool {
    !t.is_empty() && t.len() <= 1024 && t.bytes().all(|b| b.is_ascii_graphic())
}

impl ClientHello {
    pub(crate) fn payload_bytes(&self) -> Vec<u8> {
        let mut s = format!(
            "policy={}\nevery={}\nmax_fps={}\npack={}\ncompress={}\nheartbeat_ms={}\n",
            self.policy,
            self.every.max(1),
            self.max_fps,
            self.pack as u8,
            if self.compress { "cfa-lz4" } else { "none" },
            self.heartbeat_ms
        );
        if let Some(t) = self.token.as_deref().filter(|t| valid_token(t)) {
            s.push_str(&format!("token={t}\n"));
        }
        s.into_bytes()
    }

    pub(crate) fn parse(payload: &[u8]) -> Result<Self, ProtoError> {
        let mut h = ClientHello {
            every: 1,
            ..Default::default()
        };
        parse_kv(Kind::ClientHello, payload, |k, v| {
            match k {
                "policy" => h.policy = v.parse()?,
                "every" => {
                    h.every = v
                        .parse()
                        .ok()
                        .filter(|n| *n >= 1)
                        .ok_or(format!("bad every {v:?}"))?
                }
                "pack" => {
                    h.pack = match v {
                        "0" => false,
                        "1" => true,
                        _ => return Err(format!("bad pack {v:?}")),
                    }
                }
                "compress" => {
                    h.compress = match v {
                        "none" => false,
                        "cfa-lz4" => true,
                        _ => return Err(format!("unsupported compression {v:?} (none, cfa-lz4)")),
                    }
                }
                "max_fps" => {
                    h.max_fps = v
                        .parse()
                        .ok()
                        .filter(|f: &f32| f.is_finite() && *f >= 0.0)
                        .ok_or(format!("bad max_fps {v:?}"))?
                }
                "heartbeat_ms" => {
                    h.heartbeat_ms = v.parse().map_err(|_| format!("bad heartbeat_ms {v:?}"))?
                }
                "token" => {
                    if !valid_token(v) {
                        return Err("malformed token".to_string());
                    }
                    h.token = Some(v.to_string());
                }
                _ => {}
            }
            Ok(())
        })?;
        Ok(h)
    }
}

/// A server report about this client's stream (protocol 1.1): frames dropped for it.
/// Payload: `key=value` lines `dropped`, `reason`, `first_seq`; header `seq` is the
/// last sequence number dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// Frames dropped since the previous notice.
    pub dropped: u64,
    /// Why: `overrun` (lossless buffer full on a live source) or `slow` (latest policy).
    pub reason: String,
    /// First sequence number dropped.
    pub first_seq: u64,
    /// Last sequence number dropped.
    pub last_seq: u64,
}

impl Notice {
    pub(crate) fn payload_bytes(&self) -> Vec<u8> {
        format!(
            "dropped={}\nreason={}\nfirst_seq={}\n",
            self.dropped,
            self.reason.replace(['\n', '\r'], " "),
            self.first_seq
        )
        .into_bytes()
    }

    pub(crate) fn parse(last_seq: u64, payload: &[u8]) -> Result<Self, ProtoError> {
        let mut n = Notice {
            dropped: 0,
            reason: String::new(),
            first_seq: 0,
            last_seq,
        };
        parse_kv(Kind::Notice, payload, |k, v| {
            match k {
                "dropped" => n.dropped = v.parse().map_err(|_| format!("bad dropped {v:?}"))?,
                "first_seq" => {
                    n.first_seq = v.parse().map_err(|_| format!("bad first_seq {v:?}"))?
                }
                "reason" => n.reason = printable(v),
                _ => {}
            }
            Ok(())
        })?;
        Ok(n)
    }
}
