//! The client hello parser (the first bytes any client sends a server, before
//! authentication) never panics on any payload, and whatever it accepts survives an
//! encode/decode round trip unchanged.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use rawlink_proto::{ClientHello, Decoder, Encoder, Limits, Message};

/// A hello message with `payload`, its lengths and CRCs made valid.
fn hello_with(payload: &[u8]) -> BytesMut {
    let mut b = BytesMut::new();
    Encoder::encode(&Message::ClientHello(ClientHello::default()), &mut b);
    b.truncate(80);
    b[56..60].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    b[60..64].copy_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    let crc = crc32c::crc32c(&b[..76]);
    b[76..80].copy_from_slice(&crc.to_le_bytes());
    b.extend_from_slice(payload);
    b
}

fuzz_target!(|data: &[u8]| {
    let limits = Limits { max_payload: 4096, ..Limits::default() };
    let mut wire = hello_with(data);
    let Ok(Some(Message::ClientHello(h))) = Decoder::with_limits(limits).decode(&mut wire) else {
        return;
    };
    let mut again = BytesMut::new();
    Encoder::encode(&Message::ClientHello(h.clone()), &mut again);
    match Decoder::with_limits(limits).decode(&mut again) {
        Ok(Some(Message::ClientHello(h2))) => assert_eq!(h, h2),
        other => panic!("re-encoded hello does not decode: {other:?}"),
    }
});
