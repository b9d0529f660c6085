//! The reference system's wire format: bare frames of `W*H*2` bytes, back to back,
//! with no header. A clean end is the peer closing exactly at a frame boundary.

use bytes::{Bytes, BytesMut};

/// Errors of the legacy format.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LegacyError {
    /// The peer closed in the middle of a frame.
    #[error("legacy stream truncated: peer closed after {got} of {frame_len} bytes of a frame")]
    Truncated {
        /// Bytes of the partial frame.
        got: usize,
        /// Bytes in a whole frame.
        frame_len: usize,
    },
}

/// Splits a byte stream into fixed-size frames.
#[derive(Debug, Clone)]
pub struct LegacyDecoder {
    frame_len: usize,
}

impl LegacyDecoder {
    /// A decoder for frames of `frame_len` bytes (`frame_len > 0`).
    pub fn new(frame_len: usize) -> Self {
        assert!(frame_len > 0, "frame length must be positive");
        Self { frame_len }
    }

    /// Bytes per frame.
    pub fn frame_len(&self) -> usize {
        self.frame_len
    }

    /// One whole frame from the front of `buf`, or `None` if more bytes are needed.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Option<Bytes> {
        if buf.len() >= self.frame_len {
            Some(buf.split_to(self.frame_len).freeze())
        } else {
            buf.reserve(self.frame_len - buf.len());
            None
        }
    }

    /// At end of input: an error if a partial frame is buffered.
    pub fn finish(&self, buf: &BytesMut) -> Result<(), LegacyError> {
        if buf.is_empty() {
            Ok(())
        } else {
            Err(LegacyError::Truncated {
                got: buf.len(),
                frame_len: self.frame_len,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_and_detects_truncation() {
        let mut d = LegacyDecoder::new(4);
        let mut buf = BytesMut::from(&[1u8, 2, 3, 4, 5, 6][..]);
        assert_eq!(d.decode(&mut buf).unwrap().as_ref(), &[1, 2, 3, 4]);
        assert!(d.decode(&mut buf).is_none());
        assert_eq!(
            d.finish(&buf),
            Err(LegacyError::Truncated {
                got: 2,
                frame_len: 4
            })
        );
        buf.extend_from_slice(&[7, 8]);
        assert_eq!(d.decode(&mut buf).unwrap().as_ref(), &[5, 6, 7, 8]);
        assert!(d.finish(&buf).is_ok());
    }
}
