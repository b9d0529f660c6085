//! rawlink wire protocol v1, sans I/O.
//!
//! Every message is an 80-byte little-endian header followed by a payload;
//! `docs/PROTOCOL.md` gives the byte offsets. [`Decoder::decode`] takes bytes
//! as they arrive and returns whole messages. It checks magic, version, header
//! CRC and the payload limit *before* it reserves room for a payload.
//!
//! ```
//! use bytes::BytesMut;
//! use rawlink_frame::{BayerPattern, Frame, FrameHeader, PixelFormat};
//! use rawlink_proto::{Decoder, Encoder, Message};
//!
//! let fmt = PixelFormat::unpacked(BayerPattern::Rggb, 12).unwrap();
//! let frame = Frame::new(FrameHeader::new(7, 2, 2, fmt), vec![0u8; 8].into()).unwrap();
//! let mut wire = BytesMut::new();
//! Encoder::encode(&Message::Frame(frame), &mut wire);
//!
//! let mut dec = Decoder::default();
//! match dec.decode(&mut wire).unwrap() {
//!     Some(Message::Frame(f)) => assert_eq!(f.header.seq, 7),
//!     other => panic!("unexpected {other:?}"),
//! }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod compress;
mod legacy;
mod message;

pub use legacy::{LegacyDecoder, LegacyError};
pub use message::{
    printable, valid_token, ClientHello, EndOfStream, EndReason, Notice, Policy, StreamInfo,
    MAX_TEXT_CHARS,
};

use bytes::{Buf, Bytes, BytesMut};
use rawlink_frame::{
    BayerPattern, ClockId, Frame, FrameError, FrameHeader, Packing, PixelFormat, MAX_DIMENSION,
};

/// The four magic bytes that open every message: `RLNK`.
pub const MAGIC: [u8; 4] = *b"RLNK";
/// Protocol major version spoken by this crate.
pub const VERSION_MAJOR: u8 = 1;
/// Protocol minor version spoken by this crate.
pub const VERSION_MINOR: u8 = 2;
/// Length of the v1.0 header in bytes.
pub const HEADER_LEN: usize = 80;
/// Largest header length a decoder accepts (later minor versions may grow it).
pub const MAX_HEADER_LEN: usize = 1024;
/// Header flag: the payload is compressed with the codec in byte 14.
pub const FLAG_COMPRESSED: u8 = 1;
/// Default limit on one payload: 256 MiB.
pub const DEFAULT_MAX_PAYLOAD: u64 = 256 << 20;

/// Message kinds (byte 8 of the header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// Describes the stream; sent once, first.
    StreamStart = 1,
    /// One raw frame.
    Frame = 2,
    /// The stream ended; payload says why.
    EndOfStream = 3,
    /// Keep-alive; no payload.
    Heartbeat = 4,
    /// Client → server: delivery options (since 1.1).
    ClientHello = 5,
    /// Server → client: something happened to this client's stream, e.g. drops (since 1.1).
    Notice = 6,
}

impl Kind {
    fn from_code(c: u8) -> Option<Self> {
        Some(match c {
            1 => Self::StreamStart,
            2 => Self::Frame,
            3 => Self::EndOfStream,
            4 => Self::Heartbeat,
            5 => Self::ClientHello,
            6 => Self::Notice,
            _ => return None,
        })
    }
}

/// A decoded protocol message.
#[derive(Debug, Clone)]
pub enum Message {
    /// Stream description.
    StreamStart(StreamInfo),
    /// A frame with its metadata.
    Frame(Frame),
    /// End of stream with a reason.
    EndOfStream(EndOfStream),
    /// Keep-alive.
    Heartbeat,
    /// Delivery options chosen by the client.
    ClientHello(ClientHello),
    /// A report from the server about this client's stream.
    Notice(Notice),
}

impl Message {
    /// The message's kind, as its name and code, e.g. `Frame (kind 2)`: how a log names
    /// a message that was not expected, without its content.
    pub fn kind_name(&self) -> String {
        let kind = match self {
            Message::StreamStart(_) => Kind::StreamStart,
            Message::Frame(_) => Kind::Frame,
            Message::EndOfStream(_) => Kind::EndOfStream,
            Message::Heartbeat => Kind::Heartbeat,
            Message::ClientHello(_) => Kind::ClientHello,
            Message::Notice(_) => Kind::Notice,
        };
        format!("{kind:?} (kind {})", kind as u8)
    }
}

/// True if `bytes` begin a TLS record: a handshake (`0x16`) or alert (`0x15`) record of
/// TLS 1.x (`0x03`). A rawlink peer that sees one is talking to a TLS peer in plaintext.
pub fn is_tls_record(bytes: &[u8]) -> bool {
    matches!(bytes, [0x15 | 0x16, 0x03, ..])
}

fn bad_magic_message(found: &[u8; 4]) -> String {
    if is_tls_record(found) {
        format!(
            "bad magic {found:02x?}: a TLS record, not a rawlink v1 message (the peer speaks TLS)"
        )
    } else {
        format!("bad magic {found:02x?} (expected \"RLNK\"): not a rawlink v1 stream (legacy bare frames need --legacy)")
    }
}

impl ProtoError {
    /// True for a [`ProtoError::BadMagic`] whose bytes begin a TLS record (see
    /// [`is_tls_record`]).
    pub fn is_tls_record(&self) -> bool {
        matches!(self, Self::BadMagic { found } if is_tls_record(found))
    }
}

/// Everything that can be wrong with bytes on the wire.
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    /// The first four bytes are not `RLNK`.
    #[error("{}", bad_magic_message(found))]
    BadMagic {
        /// The bytes found.
        found: [u8; 4],
    },
    /// A major version this decoder does not speak.
    #[error("unsupported protocol version {major}.{minor} (this build speaks {VERSION_MAJOR}.x)")]
    UnsupportedVersion {
        /// Major version found.
        major: u8,
        /// Minor version found.
        minor: u8,
    },
    /// The header length field is out of range.
    #[error("bad header length {0} (expected {HEADER_LEN}..={MAX_HEADER_LEN})")]
    BadHeaderLength(u16),
    /// The header CRC does not match.
    #[error("header CRC mismatch: header says {expected:#010x}, bytes give {actual:#010x}")]
    HeaderCrc {
        /// CRC stored in the header.
        expected: u32,
        /// CRC computed over the header bytes.
        actual: u32,
    },
    /// Unknown message kind.
    #[error("unknown message kind {0}")]
    UnknownKind(u8),
    /// The payload is larger than the configured limit.
    #[error("payload of {len} bytes exceeds the limit of {max} bytes (seq {seq})")]
    PayloadTooLarge {
        /// Claimed payload length.
        len: u64,
        /// Limit in force.
        max: u64,
        /// Sequence number in the header.
        seq: u64,
    },
    /// The frame is wider or taller than the configured limit.
    #[error("frame of {width}x{height} exceeds the limit of {max} pixels per side (seq {seq})")]
    DimensionTooLarge {
        /// Width in the header.
        width: u32,
        /// Height in the header.
        height: u32,
        /// Limit in force.
        max: u32,
        /// Sequence number in the header.
        seq: u64,
    },
    /// The payload CRC does not match; the message has been consumed.
    #[error("payload CRC mismatch on frame seq {seq}: header says {expected:#010x}, payload gives {actual:#010x}")]
    PayloadCrc {
        /// Sequence number of the bad frame.
        seq: u64,
        /// CRC stored in the header.
        expected: u32,
        /// CRC of the bytes received.
        actual: u32,
    },
    /// Header fields are inconsistent (geometry, format, length).
    #[error("invalid frame header (seq {seq}): {source}")]
    BadFrame {
        /// Sequence number in the header.
        seq: u64,
        /// What is wrong.
        #[source]
        source: FrameError,
    },
    /// A control message payload could not be parsed.
    #[error("malformed {kind:?} message: {reason}")]
    BadMessage {
        /// Kind of message.
        kind: Kind,
        /// What is wrong.
        reason: String,
    },
    /// The stream ended inside a message.
    #[error("stream truncated: {buffered} bytes of an incomplete message (needed {needed})")]
    Truncated {
        /// Bytes that were buffered.
        buffered: usize,
        /// Bytes the message needed (with an incomplete header, the header's declared
        /// length, or [`HEADER_LEN`]).
        needed: u64,
    },
    /// A compressed payload could not be decoded; the message has been consumed.
    #[error("cannot decompress frame seq {seq}: {source}")]
    Decompress {
        /// Sequence number of the frame.
        seq: u64,
        /// What is wrong.
        #[source]
        source: compress::CompressError,
    },
    /// Transport error (only from the `codec` integration).
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// Limits applied to untrusted input before any allocation.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest payload accepted, in bytes.
    pub max_payload: u64,
    /// Largest width or height accepted.
    pub max_dimension: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_payload: DEFAULT_MAX_PAYLOAD,
            max_dimension: 16_384,
        }
    }
}

/// Fixed header fields, as they are on the wire.
#[derive(Debug, Clone, Copy, PartialEq)]
struct WireHeader {
    kind: u8,
    flags: u8,
    /// Compression codec (byte 14) when `flags & FLAG_COMPRESSED`.
    codec: u8,
    header: FrameHeader,
    payload_len: u32,
    payload_crc: u32,
}

fn put_u16(b: &mut [u8], o: usize, v: u16) {
    b[o..o + 2].copy_from_slice(&v.to_le_bytes());
}
fn put_u32(b: &mut [u8], o: usize, v: u32) {
    b[o..o + 4].copy_from_slice(&v.to_le_bytes());
}
fn put_u64(b: &mut [u8], o: usize, v: u64) {
    b[o..o + 8].copy_from_slice(&v.to_le_bytes());
}
fn get_u16(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}
fn get_u32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}
fn get_u64(b: &[u8], o: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[o..o + 8]);
    u64::from_le_bytes(a)
}

impl WireHeader {
    fn to_bytes(self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        let h = &self.header;
        b[0..4].copy_from_slice(&MAGIC);
        b[4] = VERSION_MAJOR;
        b[5] = VERSION_MINOR;
        put_u16(&mut b, 6, HEADER_LEN as u16);
        b[8] = self.kind;
        b[9] = self.flags;
        b[10] = h.clock as u8;
        b[11] = h.format.pattern.code();
        b[12] = h.format.bits;
        b[13] = h.format.packing.code();
        b[14] = self.codec;
        // 15 reserved
        put_u64(&mut b, 16, h.seq);
        put_u64(&mut b, 24, h.timestamp_ns);
        put_u32(&mut b, 32, h.width);
        put_u32(&mut b, 36, h.height);
        put_u32(&mut b, 40, h.stride);
        put_u32(&mut b, 44, h.exposure_us);
        put_u32(&mut b, 48, h.analog_gain.to_bits());
        put_u16(&mut b, 52, h.black_level);
        put_u16(&mut b, 54, h.white_level);
        put_u32(&mut b, 56, self.payload_len);
        put_u32(&mut b, 60, self.payload_crc);
        // 64..76 reserved
        let crc = rawlink_frame::crc32c(&b[..HEADER_LEN - 4]);
        put_u32(&mut b, HEADER_LEN - 4, crc);
        b
    }
}

/// Encodes messages. Stateless.
#[derive(Debug, Default, Clone, Copy)]
pub struct Encoder;

/// A frame encoded once, ready to be written to any number of clients:
/// the header bytes and the shared payload, for a vectored write.
#[derive(Debug, Clone)]
pub struct EncodedFrame {
    /// The 80 header bytes.
    pub header: Bytes,
    /// The payload, shared with the source's buffer.
    pub payload: Bytes,
}

impl EncodedFrame {
    /// Total bytes on the wire.
    pub fn wire_len(&self) -> usize {
        self.header.len() + self.payload.len()
    }
}

/// A header with no image (control messages).
fn empty_header(seq: u64) -> FrameHeader {
    let mut h = FrameHeader::new(
        seq,
        0,
        0,
        PixelFormat::unpacked(BayerPattern::Rggb, 16).expect("16 is a valid depth"),
    );
    h.stride = 0;
    h
}

fn stream_header(info: &StreamInfo) -> FrameHeader {
    info.header
}

impl Encoder {
    /// Encodes a frame's header; the payload CRC is computed here, once.
    pub fn encode_frame(frame: &Frame) -> EncodedFrame {
        let wh = WireHeader {
            kind: Kind::Frame as u8,
            flags: 0,
            codec: 0,
            header: frame.header,
            payload_len: frame.payload.len() as u32,
            payload_crc: frame
                .payload_crc32c
                .unwrap_or_else(|| rawlink_frame::crc32c(&frame.payload)),
        };
        EncodedFrame {
            header: Bytes::copy_from_slice(&wh.to_bytes()),
            payload: frame.payload.clone(),
        }
    }

    /// Encodes a frame with the CFA-LZ4 codec ([`compress`]); frames it does not apply
    /// to (packed, or padded rows) are encoded plainly.
    pub fn encode_frame_compressed(frame: &Frame) -> EncodedFrame {
        let h = frame.header;
        if h.format.packing != Packing::U16Le || h.stride != h.width * 2 {
            return Self::encode_frame(frame);
        }
        let payload = Bytes::from(compress::compress(
            &frame.payload,
            h.width as usize,
            h.height as usize,
        ));
        let wh = WireHeader {
            kind: Kind::Frame as u8,
            flags: FLAG_COMPRESSED,
            codec: compress::CODEC_CFA_LZ4,
            header: h,
            payload_len: payload.len() as u32,
            payload_crc: rawlink_frame::crc32c(&payload),
        };
        EncodedFrame {
            header: Bytes::copy_from_slice(&wh.to_bytes()),
            payload,
        }
    }

    /// Encodes any message into header + payload parts.
    pub fn encode_parts(msg: &Message) -> EncodedFrame {
        let (kind, header, payload) = match msg {
            Message::Frame(f) => return Self::encode_frame(f),
            Message::StreamStart(info) => (
                Kind::StreamStart,
                stream_header(info),
                Bytes::from(info.payload_bytes()),
            ),
            Message::EndOfStream(end) => {
                let mut h = FrameHeader::new(
                    end.last_seq,
                    1,
                    1,
                    PixelFormat::unpacked(BayerPattern::Rggb, 16).expect("valid"),
                );
                h.width = 0;
                h.height = 0;
                h.stride = 0;
                (Kind::EndOfStream, h, Bytes::from(end.payload_bytes()))
            }
            Message::Heartbeat => (Kind::Heartbeat, empty_header(0), Bytes::new()),
            Message::ClientHello(hello) => (
                Kind::ClientHello,
                empty_header(0),
                Bytes::from(hello.payload_bytes()),
            ),
            Message::Notice(n) => (
                Kind::Notice,
                empty_header(n.last_seq),
                Bytes::from(n.payload_bytes()),
            ),
        };
        let wh = WireHeader {
            kind: kind as u8,
            flags: 0,
            codec: 0,
            header,
            payload_len: payload.len() as u32,
            payload_crc: rawlink_frame::crc32c(&payload),
        };
        EncodedFrame {
            header: Bytes::copy_from_slice(&wh.to_bytes()),
            payload,
        }
    }

    /// Appends a whole message to `dst` (copies the payload; for tests and control messages).
    pub fn encode(msg: &Message, dst: &mut BytesMut) {
        let parts = Self::encode_parts(msg);
        dst.extend_from_slice(&parts.header);
        dst.extend_from_slice(&parts.payload);
    }
}

/// Incremental decoder for protocol v1.
///
/// Feed it the bytes received so far; it consumes whole messages only.
#[derive(Debug, Default, Clone)]
pub struct Decoder {
    limits: Limits,
    /// Header parsed while waiting for the payload, with its header length.
    pending: Option<(WireHeader, usize)>,
    /// The last error was found in a header, whose bytes are still at the front of
    /// the buffer ([`Decoder::resync`] skips them).
    header_failed: bool,
    /// Looking for the next header: bytes are dropped until `RLNK` appears.
    scanning: bool,
    /// Bytes dropped while scanning, not yet collected by [`Decoder::take_skipped`].
    skipped: u64,
    /// CRC32C of the pending message's payload bytes received so far, and how many:
    /// each piece is checksummed as it arrives, while it is still in cache, instead of
    /// the whole payload (16.6 MB at 4K) once it is complete.
    partial_crc: (rawlink_frame::Crc32c, usize),
}

impl Decoder {
    /// A decoder with the given limits.
    pub fn with_limits(limits: Limits) -> Self {
        Self {
            limits,
            ..Self::default()
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Decodes one message from the front of `buf`.
    ///
    /// `Ok(None)` means more bytes are needed. On a payload CRC error the bad
    /// message is consumed, so decoding can go on with the next one. On a header
    /// error nothing is consumed.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Message>, ProtoError> {
        self.header_failed = false;
        if self.scanning {
            let skip = find_resync_point_from(buf, 0);
            buf.advance(skip);
            self.skipped += skip as u64;
            if buf.len() < MAGIC.len() {
                return Ok(None);
            }
            self.scanning = false;
        }
        let (wh, hlen) = match self.pending {
            Some(p) => p,
            None => match self
                .parse_header(buf)
                .inspect_err(|_| self.header_failed = true)?
            {
                Some(p) => {
                    self.pending = Some(p);
                    self.partial_crc = Default::default();
                    // Reserve for the payload only now that the header is checked.
                    reserve_for(buf, p, hlen_total(p));
                    p
                }
                None => return Ok(None),
            },
        };
        let total = hlen + wh.payload_len as usize;
        let (crc, done) = &mut self.partial_crc;
        let upto = buf.len().min(total);
        if hlen + *done < upto {
            crc.update(&buf[hlen + *done..upto]);
            *done = upto - hlen;
        }
        if buf.len() < total {
            return Ok(None);
        }
        let actual = crc.value();
        self.pending = None;
        buf.advance(hlen);
        let payload = buf.split_to(wh.payload_len as usize).freeze();
        if actual != wh.payload_crc {
            return Err(ProtoError::PayloadCrc {
                seq: wh.header.seq,
                expected: wh.payload_crc,
                actual,
            });
        }
        let kind = Kind::from_code(wh.kind).ok_or(ProtoError::UnknownKind(wh.kind))?;
        let compressed = wh.flags & FLAG_COMPRESSED != 0;
        let payload = if compressed {
            let h = &wh.header;
            Bytes::from(
                compress::decompress(&payload, h.width as usize, h.payload_len() as usize)
                    .map_err(|source| ProtoError::Decompress { seq: h.seq, source })?,
            )
        } else {
            payload
        };
        Ok(Some(match kind {
            Kind::Frame => {
                let frame =
                    Frame::new(wh.header, payload).map_err(|source| ProtoError::BadFrame {
                        seq: wh.header.seq,
                        source,
                    })?;
                // The CRC just checked is the frame's own unless the wire carried it
                // compressed.
                Message::Frame(if compressed {
                    frame
                } else {
                    frame.with_payload_crc32c(actual)
                })
            }
            Kind::StreamStart => Message::StreamStart(StreamInfo::parse(wh.header, &payload)?),
            Kind::EndOfStream => Message::EndOfStream(EndOfStream::parse(wh.header.seq, &payload)?),
            Kind::Heartbeat => Message::Heartbeat,
            Kind::ClientHello => Message::ClientHello(ClientHello::parse(&payload)?),
            Kind::Notice => Message::Notice(Notice::parse(wh.header.seq, &payload)?),
        }))
    }

    /// Call at end of input: an error if a partial message is buffered. If that partial
    /// message is a header not yet checked (its length field may be corrupt and claim
    /// more bytes than will ever come), the error counts as a header failure, so that
    /// [`Decoder::resync`] skips it and the messages buffered behind it can still be
    /// decoded.
    pub fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Message>, ProtoError> {
        match self.decode(buf)? {
            Some(m) => Ok(Some(m)),
            None if buf.is_empty() => Ok(None),
            None => Err(ProtoError::Truncated {
                buffered: buf.len(),
                // Without a checked header: its declared length, if that much came.
                needed: self
                    .pending
                    .map(|p| hlen_total(p) as u64)
                    .unwrap_or_else(|| {
                        buf.get(6..8)
                            .filter(|_| buf.starts_with(&MAGIC))
                            .map(|h| u16::from_le_bytes([h[0], h[1]]) as usize)
                            .filter(|h| (HEADER_LEN..=MAX_HEADER_LEN).contains(h))
                            .unwrap_or(HEADER_LEN) as u64
                    }),
            })
            .inspect_err(|_| self.header_failed = self.pending.is_none() && !self.scanning),
        }
    }

    /// After an error from [`Decoder::decode`], skips to the next place a header may
    /// start, so that decoding can go on after corrupt bytes instead of giving up on the
    /// stream. Returns the number of bytes skipped now: zero if the error already
    /// consumed the bad message (a payload CRC mismatch, say), else at least one.
    ///
    /// The scan looks for the next `RLNK`; [`Decoder::decode`] then checks that
    /// candidate's header CRC, and a false match is skipped the same way. If the
    /// buffer holds no `RLNK` yet, the decoder goes on scanning the bytes that arrive
    /// next (without reporting them as new errors) until one appears; those bytes are
    /// counted by [`Decoder::take_skipped`]. A trailing partial `RLNK` is kept, since
    /// the rest of it may still arrive.
    pub fn resync(&mut self, buf: &mut BytesMut) -> usize {
        if !std::mem::take(&mut self.header_failed) {
            return 0;
        }
        self.pending = None;
        let skip = find_resync_point_from(buf, 1);
        buf.advance(skip);
        self.scanning = buf.len() < MAGIC.len();
        skip
    }

    /// Bytes dropped while scanning for a header since the last call (see
    /// [`Decoder::resync`]).
    pub fn take_skipped(&mut self) -> u64 {
        std::mem::take(&mut self.skipped)
    }

    fn parse_header(&self, buf: &BytesMut) -> Result<Option<(WireHeader, usize)>, ProtoError> {
        let n = buf.len().min(4);
        if buf[..n] != MAGIC[..n] {
            let mut found = [0u8; 4];
            found[..n].copy_from_slice(&buf[..n]);
            return Err(ProtoError::BadMagic { found });
        }
        if buf.len() < 8 {
            return Ok(None);
        }
        let (major, minor) = (buf[4], buf[5]);
        if major != VERSION_MAJOR {
            return Err(ProtoError::UnsupportedVersion { major, minor });
        }
        let hlen = get_u16(buf, 6);
        if (hlen as usize) < HEADER_LEN || hlen as usize > MAX_HEADER_LEN {
            return Err(ProtoError::BadHeaderLength(hlen));
        }
        let hlen = hlen as usize;
        if buf.len() < hlen {
            return Ok(None);
        }
        let b = &buf[..hlen];
        let expected = get_u32(b, hlen - 4);
        let actual = rawlink_frame::crc32c(&b[..hlen - 4]);
        if expected != actual {
            return Err(ProtoError::HeaderCrc { expected, actual });
        }
        let kind = b[8];
        let seq = get_u64(b, 16);
        let payload_len = get_u32(b, 56);
        if payload_len as u64 > self.limits.max_payload {
            return Err(ProtoError::PayloadTooLarge {
                len: payload_len as u64,
                max: self.limits.max_payload,
                seq,
            });
        }
        let bad_frame = |source| ProtoError::BadFrame { seq, source };
        let kind_v = Kind::from_code(kind).ok_or(ProtoError::UnknownKind(kind))?;
        // The image fields mean something only in frames and stream starts; in the other
        // kinds a receiver must neither check nor use them (PROTOCOL.md), so an unknown
        // pattern or packing code there is not an error.
        let image = matches!(kind_v, Kind::Frame | Kind::StreamStart);
        let (pattern, packing) = if image {
            (
                BayerPattern::from_code(b[11]).map_err(bad_frame)?,
                Packing::from_code(b[13]).map_err(bad_frame)?,
            )
        } else {
            (
                BayerPattern::from_code(b[11]).unwrap_or(BayerPattern::Rggb),
                Packing::from_code(b[13]).unwrap_or(Packing::U16Le),
            )
        };
        let bits = b[12];
        let header = FrameHeader {
            seq,
            timestamp_ns: get_u64(b, 24),
            clock: ClockId::from_code(b[10]),
            width: get_u32(b, 32),
            height: get_u32(b, 36),
            stride: get_u32(b, 40),
            format: PixelFormat {
                pattern,
                bits,
                packing,
            },
            exposure_us: get_u32(b, 44),
            analog_gain: f32::from_bits(get_u32(b, 48)),
            black_level: get_u16(b, 52),
            white_level: get_u16(b, 54),
        };
        if image {
            header.validate().map_err(bad_frame)?;
            let max_dim = self.limits.max_dimension.min(MAX_DIMENSION);
            if header.width > max_dim || header.height > max_dim {
                return Err(ProtoError::DimensionTooLarge {
                    width: header.width,
                    height: header.height,
                    max: max_dim,
                    seq: header.seq,
                });
            }
        }
        let flags = b[9];
        let compressed = flags & FLAG_COMPRESSED != 0;
        if compressed {
            let plain_rows = header.format.packing == Packing::U16Le
                && header.stride == header.width.saturating_mul(2);
            let why = if kind_v != Kind::Frame {
                Some("only frames may be compressed".to_string())
            } else if b[14] != compress::CODEC_CFA_LZ4 {
                Some(format!("unsupported compression codec {}", b[14]))
            } else if !plain_rows {
                Some(format!(
                    "a compressed frame must describe unpacked 16-bit rows (packing 0, stride \
                     = width × 2), not packing {} with stride {}",
                    b[13], header.stride
                ))
            } else {
                None
            };
            if let Some(reason) = why {
                return Err(ProtoError::BadMessage {
                    kind: kind_v,
                    reason,
                });
            }
            // The decoded size is bounded by the same limit as a plain payload, so a
            // small compressed message cannot make the decoder allocate more.
            if header.payload_len() > self.limits.max_payload {
                return Err(ProtoError::PayloadTooLarge {
                    len: header.payload_len(),
                    max: self.limits.max_payload,
                    seq,
                });
            }
        }
        if kind_v == Kind::Frame && !compressed && header.payload_len() != payload_len as u64 {
            return Err(bad_frame(FrameError::PayloadSize {
                actual: payload_len as usize,
                expected: header.payload_len() as usize,
                width: header.width,
                height: header.height,
                format: header.format,
            }));
        }
        Ok(Some((
            WireHeader {
                kind,
                flags,
                codec: b[14],
                header,
                payload_len,
                payload_crc: get_u32(b, 60),
            },
            hlen,
        )))
    }
}

/// Offset (at least `from`, at most `buf.len()`) of the next possible header start:
/// the next `RLNK`, else the longest tail that could begin one.
fn find_resync_point_from(buf: &[u8], from: usize) -> usize {
    if buf.len() <= from {
        return buf.len().min(from);
    }
    if let Some(i) = buf[from..].windows(MAGIC.len()).position(|w| w == MAGIC) {
        return i + from;
    }
    let tail_from = buf.len().saturating_sub(MAGIC.len() - 1).max(from);
    (tail_from..buf.len())
        .find(|&i| MAGIC.starts_with(&buf[i..]))
        .unwrap_or(buf.len())
}

fn hlen_total((wh, hlen): (WireHeader, usize)) -> usize {
    hlen + wh.payload_len as usize
}

/// Payloads of this many bytes or more are placed on a [`PAYLOAD_ALIGN`] boundary in
/// memory.
pub const ALIGN_PAYLOAD_MIN: usize = 64 << 10;
/// Memory alignment of large payloads: a block boundary, so that a receiver can write
/// them to a file opened with `O_DIRECT` from where they are, without copying them into
/// an aligned buffer first.
pub const PAYLOAD_ALIGN: usize = 4096;

/// Makes room in `buf` (whose first `hlen` bytes are the checked header `wh`) for the
/// whole message of `total` bytes. A payload of [`ALIGN_PAYLOAD_MIN`] or more that is
/// still arriving goes into a fresh buffer where it starts on a [`PAYLOAD_ALIGN`]
/// boundary, unless it already does and fits; the bytes already buffered are carried
/// over (the header and whatever part of the payload came with it). Not for a message
/// already buffered whole (the copy would cost what it saves, and a caller that buffers
/// a whole capture would copy it again for every message) nor for a compressed payload
/// (it is decompressed into a buffer of its own).
fn reserve_for(buf: &mut BytesMut, (wh, hlen): (WireHeader, usize), total: usize) {
    let need = total.saturating_sub(buf.len());
    let aligned = (buf.as_ptr() as usize)
        .wrapping_add(hlen)
        .is_multiple_of(PAYLOAD_ALIGN);
    if total - hlen < ALIGN_PAYLOAD_MIN
        || need == 0
        || wh.flags & FLAG_COMPRESSED != 0
        || (aligned && buf.capacity() - buf.len() >= need)
    {
        buf.reserve(need);
        return;
    }
    let mut fresh = BytesMut::with_capacity(total.max(buf.len()) + PAYLOAD_ALIGN);
    let start = (fresh.as_ptr() as usize).wrapping_add(hlen);
    let pad = (PAYLOAD_ALIGN - start % PAYLOAD_ALIGN) % PAYLOAD_ALIGN;
    fresh.resize(pad, 0);
    fresh.advance(pad);
    fresh.extend_from_slice(buf);
    *buf = fresh;
}

#[cfg(feature = "codec")]
impl tokio_util::codec::Decoder for Decoder {
    type Item = Message;
    type Error = ProtoError;
    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Message>, ProtoError> {
        Decoder::decode(self, src)
    }
    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Message>, ProtoError> {
        Decoder::decode_eof(self, src)
    }
}

#[cfg(test)]
mod tests;
