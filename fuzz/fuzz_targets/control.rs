//! The control messages' payload parsers (stream start, end of stream, notice,
//! heartbeat), reached past valid lengths and CRCs, never panic on any payload, and
//! whatever they accept survives an encode/decode round trip unchanged. The first input
//! byte picks the message kind; the rest is the payload.
#![no_main]

mod common;

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use rawlink_frame::{BayerPattern, FrameHeader, PixelFormat};
use rawlink_proto::{
    Decoder, Encoder, EndOfStream, EndReason, Limits, Message, Notice, StreamInfo,
};

fn template(kind: u8) -> Message {
    match kind % 4 {
        0 => {
            let fmt = PixelFormat::unpacked(BayerPattern::Rggb, 12).unwrap();
            Message::StreamStart(StreamInfo {
                header: FrameHeader::new(0, 4, 4, fmt),
                source: "sim".into(),
                server: "rawlink".into(),
                interval_ns: 1,
                frames: Some(3),
                stream_id: Some(7),
            })
        }
        1 => Message::EndOfStream(EndOfStream {
            last_seq: 3,
            reason: EndReason::SourceError,
            message: "done".into(),
        }),
        2 => Message::Notice(Notice {
            dropped: 1,
            reason: "slow".into(),
            first_seq: 1,
            last_seq: 1,
        }),
        _ => Message::Heartbeat,
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&kind, payload)) = data.split_first() else {
        return;
    };
    let mut b = common::with_payload(&template(kind), payload);
    let limits = Limits {
        max_payload: 4096,
        ..Limits::default()
    };
    let Ok(Some(m)) = Decoder::with_limits(limits).decode(&mut b) else {
        return;
    };
    let mut again = BytesMut::new();
    Encoder::encode(&m, &mut again);
    // Re-encoding may lengthen the payload (escapes, keys with their defaults): the
    // default limits, not the input's.
    match Decoder::default().decode(&mut again) {
        Ok(Some(m2)) => assert_eq!(format!("{m:?}"), format!("{m2:?}")),
        other => panic!("re-encoded {m:?} does not decode: {other:?}"),
    }
});
