//! The client hello parser (the first bytes any client sends a server, before
//! authentication) never panics on any payload, and whatever it accepts survives an
//! encode/decode round trip unchanged.
#![no_main]

mod common;

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use rawlink_proto::{ClientHello, Decoder, Encoder, Limits, Message};

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_payload: 4096,
        ..Limits::default()
    };
    let mut wire = common::with_payload(&Message::ClientHello(ClientHello::default()), data);
    let Ok(Some(Message::ClientHello(h))) = Decoder::with_limits(limits).decode(&mut wire) else {
        return;
    };
    let mut again = BytesMut::new();
    Encoder::encode(&Message::ClientHello(h.clone()), &mut again);
    // Re-encoding may lengthen the payload (escapes, keys with their defaults): the
    // default limits, not the input's.
    match Decoder::default().decode(&mut again) {
        Ok(Some(Message::ClientHello(h2))) => assert_eq!(h, h2),
        other => panic!("re-encoded hello does not decode: {other:?}"),
    }
});
