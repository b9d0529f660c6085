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
        };
        for line in text.lines().filter(|l| !l.is_empty()) {
            let (k, v) = line
                .split_once('=')
                .ok_or_else(|| bad(format!("line without '=': {line:?}")))?;
            match k {
                "source" => info.source = v.to_string(),
                "server" => info.server = v.to_string(),
                "interval_ns" => {
                    info.interval_ns = v.parse().map_err(|_| bad(format!("bad interval {v:?}")))?
                }
                "frames" => {
                    info.frames = Some(v.parse().map_err(|_| bad(format!("bad frames {v:?}")))?)
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
    /// A code this build does not know.
    Other(u32),
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
        let message = String::from_utf8_lossy(&payload[4..]).into_owned();
        Ok(Self {
            last_seq,
            reason: EndReason::from_code(code),
            message,
        })
    }
}
