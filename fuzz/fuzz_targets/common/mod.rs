//! Shared by the targets that fuzz one message kind's payload parser.

use bytes::BytesMut;
use rawlink_proto::{Encoder, Message};

/// `template`'s header with `payload` as its payload, the length and both CRCs made
/// valid, so the bytes reach the payload parser.
pub fn with_payload(template: &Message, payload: &[u8]) -> BytesMut {
    let mut b = BytesMut::new();
    Encoder::encode(template, &mut b);
    b.truncate(80);
    b[56..60].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    b[60..64].copy_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    let crc = crc32c::crc32c(&b[..76]);
    b[76..80].copy_from_slice(&crc.to_le_bytes());
    b.extend_from_slice(payload);
    b
}
