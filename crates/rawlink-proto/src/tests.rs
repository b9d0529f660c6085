use super::*;
use proptest::prelude::*;

fn fmt12() -> PixelFormat {
    PixelFormat::unpacked(BayerPattern::Rggb, 12).unwrap()
}

fn frame(seq: u64, w: u32, h: u32) -> Frame {
    let mut hd = FrameHeader::new(seq, w, h, fmt12());
    hd.timestamp_ns = 1_700_000_000_123_456_789;
    hd.clock = ClockId::Realtime;
    hd.exposure_us = 10_000;
    hd.analog_gain = 2.5;
    hd.black_level = 64;
    let payload: Vec<u8> = (0..(w * h) as usize)
        .flat_map(|i| ((i as u16).wrapping_mul(16).wrapping_add(seq as u16) & 0xfff).to_le_bytes())
        .collect();
    Frame::new(hd, payload.into()).unwrap()
}

fn wire(msgs: &[Message]) -> BytesMut {
    let mut b = BytesMut::new();
    for m in msgs {
        Encoder::encode(m, &mut b);
    }
    b
}

fn decode_all(dec: &mut Decoder, buf: &mut BytesMut) -> Result<Vec<Message>, ProtoError> {
    let mut out = Vec::new();
    while let Some(m) = dec.decode(buf)? {
        out.push(m);
    }
    Ok(out)
}

#[test]
fn header_layout_matches_protocol_md() {
    let f = frame(0x0102030405060708, 6, 4);
    let e = Encoder::encode_frame(&f);
    let b = &e.header[..];
    assert_eq!(b.len(), 80);
    assert_eq!(&b[0..4], b"RLNK");
    assert_eq!((b[4], b[5]), (1, 2));
    assert_eq!(get_u16(b, 6), 80);
    assert_eq!(b[8], 2, "kind frame");
    assert_eq!(b[10], 1, "clock realtime");
    assert_eq!((b[11], b[12], b[13]), (0, 12, 0));
    assert_eq!(get_u64(b, 16), 0x0102030405060708);
    assert_eq!(get_u64(b, 24), 1_700_000_000_123_456_789);
    assert_eq!((get_u32(b, 32), get_u32(b, 36), get_u32(b, 40)), (6, 4, 12));
    assert_eq!(get_u32(b, 44), 10_000);
    assert_eq!(f32::from_bits(get_u32(b, 48)), 2.5);
    assert_eq!((get_u16(b, 52), get_u16(b, 54)), (64, 4095));
    assert_eq!(get_u32(b, 56), 48);
    assert_eq!(get_u32(b, 60), crc32c::crc32c(&f.payload));
    assert_eq!(get_u32(b, 76), crc32c::crc32c(&b[..76]));
}

/// The example in docs/PROTOCOL.md is what the encoder writes for the demo's first
/// frame: each line's leading hex bytes, 16 bytes a line (the rest of a line, such as
/// the timestamp and the CRCs, is not compared).
#[test]
fn protocol_md_example_is_the_encoders_bytes() {
    let doc = include_str!("../../../docs/PROTOCOL.md");
    let example = doc.split("## Example").nth(1).expect("an Example section");
    let block = example.split("```").nth(1).expect("a code block");
    let mut hd = FrameHeader::new(1, 640, 480, fmt12());
    hd.clock = ClockId::Realtime;
    hd.exposure_us = 10_000;
    hd.black_level = 64;
    let f = Frame::new(hd, vec![0u8; 640 * 480 * 2].into()).unwrap();
    let header = Encoder::encode_frame(&f).header;
    let mut compared = 0;
    for (line_no, line) in block.lines().skip(1).enumerate() {
        let bytes = line.split_whitespace().map_while(|t| {
            (t.len() == 2)
                .then(|| u8::from_str_radix(t, 16).ok())
                .flatten()
        });
        for (i, b) in bytes.enumerate() {
            let at = line_no * 16 + i;
            assert_eq!(b, header[at], "byte {at} in {line:?}");
            compared += 1;
        }
    }
    assert!(compared >= 50, "only {compared} bytes in the example");
}

/// Text a peer sends for people (an end message, a notice's reason, the stream's
/// source and server names) arrives on one line, without control characters, and
/// bounded, however it was sent.
#[test]
fn peer_text_is_one_printable_bounded_line() {
    let hostile = "disk failed\nrawlink: error: FAKE\r\u{1b}[31mred\u{7}";
    let mut info = StreamInfo {
        header: frame(0, 4, 4).header,
        source: String::new(),
        server: String::new(),
        interval_ns: 0,
        frames: None,
        stream_id: None,
    };
    info.source = "a\u{1b}]0;title\u{7}".into();
    info.server = "s\u{8}\u{8}ok".into();
    let mut buf = wire(&[
        Message::StreamStart(info),
        Message::Notice(Notice {
            dropped: 1,
            reason: "slow\u{1b}[2J".into(),
            first_seq: 1,
            last_seq: 1,
        }),
        Message::EndOfStream(EndOfStream {
            last_seq: 1,
            reason: EndReason::SourceError,
            message: hostile.into(),
        }),
        Message::EndOfStream(EndOfStream {
            last_seq: 1,
            reason: EndReason::SourceError,
            message: "é".repeat(MAX_TEXT_CHARS + 5),
        }),
    ]);
    let got = decode_all(&mut Decoder::default(), &mut buf).unwrap();
    let texts: Vec<String> = got
        .iter()
        .flat_map(|m| match m {
            Message::StreamStart(i) => vec![i.source.clone(), i.server.clone()],
            Message::Notice(n) => vec![n.reason.clone()],
            Message::EndOfStream(e) => vec![e.message.clone()],
            m => panic!("{m:?}"),
        })
        .collect();
    assert_eq!(
        texts[..4],
        [
            "a\\u{1b}]0;title\\u{7}",
            "s\\u{8}\\u{8}ok",
            "slow\\u{1b}[2J",
            "disk failed\\nrawlink: error: FAKE\\r\\u{1b}[31mred\\u{7}",
        ]
    );
    for t in &texts {
        assert!(!t.chars().any(char::is_control), "{t:?}");
    }
    assert_eq!(
        texts[4],
        format!("{}… (45 more characters)", "é".repeat(MAX_TEXT_CHARS - 40))
    );
    // Ordinary text is kept as it is.
    assert_eq!(printable("5 frames sent: ok"), "5 frames sent: ok");
    // Whatever comes in, what goes out is at most MAX_TEXT_CHARS characters and
    // printable again unchanged (a relayed message reads the same), escapes that
    // lengthen it past the cap included.
    for t in [
        "\u{18}".repeat(MAX_TEXT_CHARS),
        "x".repeat(MAX_TEXT_CHARS),
        "x".repeat(MAX_TEXT_CHARS + 1),
        format!("{}\n", "x".repeat(MAX_TEXT_CHARS - 1)),
    ] {
        let p = printable(&t);
        assert!(
            p.chars().count() <= MAX_TEXT_CHARS,
            "{} chars",
            p.chars().count()
        );
        assert_eq!(printable(&p), p);
    }
    assert_eq!(
        printable(&"x".repeat(MAX_TEXT_CHARS)),
        "x".repeat(MAX_TEXT_CHARS)
    );
}

/// End reasons print by name; an unknown code says so.
#[test]
fn end_reasons_display_by_name() {
    assert_eq!(EndReason::Unauthorized.to_string(), "Unauthorized");
    assert_eq!(
        EndReason::from_code(99).to_string(),
        "unknown reason code 99"
    );
}

/// A message named in a log shows its kind, not its content (a frame's payload).
#[test]
fn kind_name_names_the_kind_only() {
    assert_eq!(
        Message::Frame(frame(1, 64, 64)).kind_name(),
        "Frame (kind 2)"
    );
    assert_eq!(Message::Heartbeat.kind_name(), "Heartbeat (kind 4)");
}

#[test]
fn round_trip_all_kinds() {
    let f = frame(3, 8, 6);
    let info = StreamInfo {
        header: f.header,
        source: "sim".into(),
        server: "rawlink 0.1".into(),
        interval_ns: 2_000_000_000,
        frames: Some(5),
        stream_id: Some(0xfedc_ba98_7654_3210),
    };
    let end = EndOfStream {
        last_seq: 3,
        reason: EndReason::FramesDone,
        message: "5 frames sent".into(),
    };
    let mut buf = wire(&[
        Message::StreamStart(info.clone()),
        Message::Frame(f.clone()),
        Message::Heartbeat,
        Message::EndOfStream(end.clone()),
    ]);
    let msgs = decode_all(&mut Decoder::default(), &mut buf).unwrap();
    assert_eq!(msgs.len(), 4);
    assert!(matches!(&msgs[0], Message::StreamStart(i) if *i == info));
    match &msgs[1] {
        Message::Frame(g) => {
            assert_eq!(g.header, f.header);
            assert_eq!(g.payload, f.payload);
        }
        m => panic!("{m:?}"),
    }
    assert!(matches!(msgs[2], Message::Heartbeat));
    assert!(matches!(&msgs[3], Message::EndOfStream(e) if *e == end));
    assert!(buf.is_empty());
}

#[test]
fn wrong_magic_is_rejected_at_once() {
    let mut buf = BytesMut::from(&b"GET / HTTP/1.1\r\n"[..]);
    let err = Decoder::default().decode(&mut buf).unwrap_err();
    assert!(matches!(err, ProtoError::BadMagic { found } if &found == b"GET "));
    // Even a 2-byte prefix that cannot be RLNK is rejected.
    let mut buf = BytesMut::from(&b"RX"[..]);
    assert!(matches!(
        Decoder::default().decode(&mut buf),
        Err(ProtoError::BadMagic { .. })
    ));
    assert!(err.to_string().contains("bad magic"));
    assert!(!err.is_tls_record());
}

#[test]
fn a_tls_record_is_recognised_and_not_sent_to_legacy() {
    // A TLS ClientHello (handshake record) and a TLS alert, whole or only two bytes.
    for bytes in [
        &[0x16, 0x03, 0x01, 0x00, 0xf4, 0x01][..],
        &[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x32],
        &[0x16, 0x03],
    ] {
        let mut buf = BytesMut::from(bytes);
        let err = Decoder::default().decode(&mut buf).unwrap_err();
        assert!(err.is_tls_record(), "{bytes:02x?}: {err}");
        let msg = err.to_string();
        assert!(msg.contains("TLS") && !msg.contains("--legacy"), "{msg}");
    }
    assert!(!is_tls_record(b"RLNK"));
    assert!(!is_tls_record(&[0x16, 0x02]));
}

#[test]
fn unknown_major_version_rejected() {
    let mut buf = wire(&[Message::Frame(frame(1, 2, 2))]);
    buf[4] = 2;
    let err = Decoder::default().decode(&mut buf).unwrap_err();
    assert!(matches!(
        err,
        ProtoError::UnsupportedVersion { major: 2, minor: 2 }
    ));
}

#[test]
fn header_crc_checked() {
    let mut buf = wire(&[Message::Frame(frame(1, 2, 2))]);
    buf[20] ^= 0x40; // flip a bit of seq
    assert!(matches!(
        Decoder::default().decode(&mut buf),
        Err(ProtoError::HeaderCrc { .. })
    ));
}

#[test]
fn payload_crc_checked_and_stream_continues() {
    let mut buf = wire(&[
        Message::Frame(frame(1, 4, 4)),
        Message::Frame(frame(2, 4, 4)),
    ]);
    buf[HEADER_LEN + 3] ^= 1;
    let mut dec = Decoder::default();
    let err = dec.decode(&mut buf).unwrap_err();
    assert!(
        matches!(err, ProtoError::PayloadCrc { seq: 1, .. }),
        "{err}"
    );
    match dec.decode(&mut buf).unwrap() {
        Some(Message::Frame(f)) => {
            assert_eq!(f.header.seq, 2);
            // The checked CRC goes with the frame, for its sidecar.
            assert_eq!(f.payload_crc32c, Some(crc32c::crc32c(&f.payload)));
        }
        m => panic!("{m:?}"),
    }
}

/// Rewrites header fields and fixes up the header CRC, as a hostile peer could.
fn forge(buf: &mut BytesMut, edit: impl FnOnce(&mut [u8])) {
    edit(&mut buf[..HEADER_LEN]);
    let crc = crc32c::crc32c(&buf[..HEADER_LEN - 4]);
    buf[HEADER_LEN - 4..HEADER_LEN].copy_from_slice(&crc.to_le_bytes());
}

#[test]
fn absurd_payload_rejected_before_allocation() {
    let mut buf = wire(&[Message::Frame(frame(1, 2, 2))]);
    buf.truncate(HEADER_LEN);
    forge(&mut buf, |b| put_u32(b, 56, u32::MAX));
    let cap_before = buf.capacity();
    let err = Decoder::default().decode(&mut buf).unwrap_err();
    assert!(matches!(err, ProtoError::PayloadTooLarge { len, .. } if len == u32::MAX as u64));
    assert_eq!(
        buf.capacity(),
        cap_before,
        "no reservation for a rejected payload"
    );
}

#[test]
fn length_inconsistent_with_geometry_rejected() {
    let mut buf = wire(&[Message::Frame(frame(1, 2, 2))]);
    forge(&mut buf, |b| put_u32(b, 56, 1000));
    assert!(matches!(
        Decoder::default().decode(&mut buf),
        Err(ProtoError::BadFrame { .. })
    ));
    let mut buf = wire(&[Message::Frame(frame(1, 2, 2))]);
    forge(&mut buf, |b| put_u32(b, 32, 100_000));
    assert!(matches!(
        Decoder::default().decode(&mut buf),
        Err(ProtoError::BadFrame { .. })
    ));
}

#[test]
fn bad_header_length_and_kind() {
    let mut buf = wire(&[Message::Frame(frame(1, 2, 2))]);
    put_u16(&mut buf, 6, 12);
    assert!(matches!(
        Decoder::default().decode(&mut buf),
        Err(ProtoError::BadHeaderLength(12))
    ));
    let mut buf = wire(&[Message::Frame(frame(1, 2, 2))]);
    forge(&mut buf, |b| b[8] = 99);
    assert!(matches!(
        Decoder::default().decode(&mut buf),
        Err(ProtoError::UnknownKind(99))
    ));
}

#[test]
fn longer_header_from_a_later_minor_version_is_accepted() {
    let f = frame(9, 2, 2);
    let e = Encoder::encode_frame(&f);
    let mut h = e.header.to_vec();
    h.truncate(HEADER_LEN - 4);
    h.extend_from_slice(&[0xAA; 16]); // new fields
    h[5] = 3;
    let len = (h.len() + 4) as u16;
    h[6..8].copy_from_slice(&len.to_le_bytes());
    let crc = crc32c::crc32c(&h);
    h.extend_from_slice(&crc.to_le_bytes());
    let mut buf = BytesMut::from(&h[..]);
    buf.extend_from_slice(&e.payload);
    match Decoder::default().decode(&mut buf).unwrap() {
        Some(Message::Frame(g)) => assert_eq!(g.header.seq, 9),
        m => panic!("{m:?}"),
    }
}

#[test]
fn truncated_stream_reported_at_eof() {
    let mut buf = wire(&[Message::Frame(frame(1, 4, 4))]);
    buf.truncate(HEADER_LEN + 5);
    let mut dec = Decoder::default();
    assert!(dec.decode(&mut buf).unwrap().is_none());
    let err = dec.decode_eof(&mut buf).unwrap_err();
    assert!(
        matches!(err, ProtoError::Truncated { buffered, needed } if buffered == HEADER_LEN + 5 && needed == (HEADER_LEN + 32) as u64)
    );
    // An empty buffer at EOF is a clean end.
    assert!(Decoder::default()
        .decode_eof(&mut BytesMut::new())
        .unwrap()
        .is_none());
}

proptest! {
    /// The same messages come out whether the input arrives whole or in arbitrary pieces.
    #[test]
    fn split_reads_give_same_result(cuts in proptest::collection::vec(1usize..200, 1..40), n in 1usize..4) {
        let msgs: Vec<Message> = (1..=n as u64).map(|s| Message::Frame(frame(s, 6, 4))).collect();
        let all = wire(&msgs);
        let mut dec = Decoder::default();
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        let mut pos = 0;
        let mut i = 0;
        while pos < all.len() {
            let step = cuts[i % cuts.len()].min(all.len() - pos);
            buf.extend_from_slice(&all[pos..pos + step]);
            pos += step;
            i += 1;
            while let Some(m) = dec.decode(&mut buf).unwrap() {
                got.push(m);
            }
        }
        prop_assert_eq!(got.len(), n);
        for (g, m) in got.iter().zip(&msgs) {
            match (g, m) {
                (Message::Frame(a), Message::Frame(b)) => {
                    prop_assert_eq!(a.header, b.header);
                    prop_assert_eq!(&a.payload, &b.payload);
                }
                _ => prop_assert!(false),
            }
        }
    }

    /// Arbitrary bytes never panic the decoder and never make it reserve beyond the limit,
    /// also when they carry a valid magic, version, header length and header CRC (so that
    /// the length fields are believed).
    #[test]
    fn garbage_never_panics(mut bytes in proptest::collection::vec(any::<u8>(), 0..300), valid_prefix: bool) {
        if valid_prefix && bytes.len() >= 8 {
            bytes[..4].copy_from_slice(&MAGIC);
            bytes[4] = 1;
            bytes[6..8].copy_from_slice(&80u16.to_le_bytes());
        }
        if valid_prefix && bytes.len() >= HEADER_LEN {
            let crc = crc32c::crc32c(&bytes[..76]);
            bytes[76..80].copy_from_slice(&crc.to_le_bytes());
        }
        let mut buf = BytesMut::from(&bytes[..]);
        let mut dec = Decoder::with_limits(Limits { max_payload: 1 << 20, max_dimension: 4096 });
        for _ in 0..4 {
            match dec.decode(&mut buf) {
                Ok(Some(_)) => continue,
                _ => break,
            }
        }
        prop_assert!(buf.capacity() <= (1 << 20) + 1024);
    }
}

/// One example of each control message, as the template whose payload the property below
/// replaces.
fn control_templates() -> Vec<Message> {
    vec![
        Message::StreamStart(StreamInfo {
            header: frame(0, 4, 4).header,
            source: "sim".into(),
            server: "rawlink".into(),
            interval_ns: 1,
            frames: Some(3),
            stream_id: Some(7),
        }),
        Message::EndOfStream(EndOfStream {
            last_seq: 3,
            reason: EndReason::SourceError,
            message: "done".into(),
        }),
        Message::Notice(Notice {
            dropped: 1,
            reason: "slow".into(),
            first_seq: 1,
            last_seq: 1,
        }),
        Message::ClientHello(ClientHello {
            every: 2,
            pack: true,
            ..ClientHello::default()
        }),
        Message::Heartbeat,
    ]
}

/// `template`'s header with `payload` as its payload, every length and CRC made valid, so
/// the payload parser itself is reached.
fn with_payload(template: &Message, payload: &[u8]) -> BytesMut {
    let mut b = wire(std::slice::from_ref(template));
    b.truncate(HEADER_LEN);
    b[56..60].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    b[60..64].copy_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    let crc = crc32c::crc32c(&b[..76]);
    b[76..80].copy_from_slice(&crc.to_le_bytes());
    b.extend_from_slice(payload);
    b
}

proptest! {
    /// Every control message's payload parser (stream start, end, notice, hello,
    /// heartbeat), reached past valid CRCs: never panics, and what it accepts encodes and
    /// decodes again to the same message.
    #[test]
    fn control_payloads_never_panic_and_round_trip(
        kind in 0usize..5,
        payload in proptest::collection::vec(any::<u8>(), 0..400),
    ) {
        let template = &control_templates()[kind];
        let limits = Limits { max_payload: 4096, ..Limits::default() };
        let mut buf = with_payload(template, &payload);
        if let Ok(Some(m)) = Decoder::with_limits(limits).decode(&mut buf) {
            let mut again = wire(std::slice::from_ref(&m));
            let back = Decoder::with_limits(limits).decode(&mut again);
            prop_assert_eq!(format!("{:?}", back), format!("{:?}", Ok::<_, ProtoError>(Some(m))));
        }
    }
}

/// The templates' own payloads are accepted, so the property above reaches the parsers.
#[test]
fn control_templates_decode_with_their_own_payloads() {
    for t in control_templates() {
        let full = wire(std::slice::from_ref(&t));
        let mut buf = with_payload(&t, &full[HEADER_LEN..]);
        let got = Decoder::default().decode(&mut buf).unwrap().unwrap();
        assert_eq!(format!("{got:?}"), format!("{t:?}"));
    }
}

/// Decodes everything, skipping corrupt bytes; returns the frames' seqs, the errors
/// seen and the bytes skipped.
fn decode_resyncing(dec: &mut Decoder, buf: &mut BytesMut) -> (Vec<u64>, usize, usize) {
    let (mut seqs, mut errors, mut skipped) = (Vec::new(), 0, 0);
    loop {
        match dec.decode(buf) {
            Ok(Some(Message::Frame(f))) => seqs.push(f.header.seq),
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(_) => {
                errors += 1;
                skipped += dec.resync(buf);
            }
        }
    }
    (seqs, errors, skipped)
}

#[test]
fn resync_skips_a_corrupt_header_and_keeps_the_rest() {
    let frames: Vec<Message> = (1..=5).map(|s| Message::Frame(frame(s, 16, 8))).collect();
    let one = wire(&frames[..1]).len();
    let mut buf = wire(&frames);
    // Flip a bit in frame 3's width field: its header CRC no longer matches.
    buf[2 * one + 33] ^= 0x04;
    let (seqs, errors, skipped) = decode_resyncing(&mut Decoder::default(), &mut buf);
    assert_eq!(seqs, [1, 2, 4, 5]);
    assert_eq!(errors, 1);
    assert_eq!(skipped, one, "exactly frame 3's bytes are skipped");
    assert!(buf.is_empty());
}

#[test]
fn resync_scans_bytes_that_arrive_later_as_one_event() {
    let frames: Vec<Message> = (1..=4).map(|s| Message::Frame(frame(s, 64, 32))).collect();
    let one = wire(&frames[..1]).len();
    let mut all = wire(&frames);
    all[one + 20] ^= 0x01; // frame 2's seq: header CRC mismatch
    let (mut dec, mut buf) = (Decoder::default(), BytesMut::new());
    let (mut seqs, mut errors, mut skipped) = (Vec::new(), 0, 0u64);
    for chunk in all.chunks(100) {
        buf.extend_from_slice(chunk);
        loop {
            match dec.decode(&mut buf) {
                Ok(Some(Message::Frame(f))) => seqs.push(f.header.seq),
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => {
                    errors += 1;
                    skipped += dec.resync(&mut buf) as u64;
                }
            }
            skipped += dec.take_skipped();
        }
    }
    assert_eq!(seqs, [1, 3, 4]);
    assert_eq!(
        errors, 1,
        "one corrupt header is one error, however it arrives"
    );
    assert_eq!(skipped, one as u64);
}

#[test]
fn resync_after_a_payload_error_skips_nothing() {
    let frames: Vec<Message> = (1..=3).map(|s| Message::Frame(frame(s, 16, 8))).collect();
    let one = wire(&frames[..1]).len();
    let mut buf = wire(&frames);
    buf[one + HEADER_LEN + 7] ^= 0x80;
    let (seqs, errors, skipped) = decode_resyncing(&mut Decoder::default(), &mut buf);
    assert_eq!((seqs, errors, skipped), (vec![1, 3], 1, 0));
}

#[test]
fn resync_keeps_a_partial_magic_at_the_end() {
    let mut buf = BytesMut::from(&b"xxRLN"[..]);
    let mut dec = Decoder::default();
    assert!(dec.decode(&mut buf).is_err());
    assert_eq!(dec.resync(&mut buf), 2);
    assert_eq!(&buf[..], b"RLN");
    // The rest of the header arrives: decoding goes on normally.
    let mut rest = wire(&[Message::Frame(frame(9, 4, 2))]);
    let _ = rest.split_to(3);
    buf.extend_from_slice(&rest);
    assert!(matches!(dec.decode(&mut buf), Ok(Some(Message::Frame(f))) if f.header.seq == 9));
    // Nothing to skip when no header failed.
    assert_eq!(dec.resync(&mut buf), 0);
}

proptest! {
    /// Garbage (with no `RLNK` in it) spliced between messages, and bit flips inside
    /// some messages: every untouched message still comes out, in order, and the
    /// decoder always makes progress.
    #[test]
    fn resync_recovers_every_intact_message(
        garbage in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..120), 6),
        flips in proptest::collection::vec((0usize..6, any::<prop::sample::Index>(), 1u8..=255), 0..3),
        cuts in proptest::collection::vec(1usize..300, 1..20),
    ) {
        let msgs: Vec<BytesMut> = (1..=6u64).map(|s| wire(&[Message::Frame(frame(s, 8, 4))])).collect();
        let mut damaged = [false; 6];
        let mut all = Vec::new();
        let mut msgs = msgs;
        for (i, idx, x) in &flips {
            let m = &mut msgs[*i];
            let at = idx.index(m.len());
            m[at] ^= x;
            damaged[*i] = true;
        }
        for (m, g) in msgs.iter().zip(&garbage) {
            let g: Vec<u8> = g.iter().map(|&b| if b == b'R' { b'r' } else { b }).collect();
            all.extend_from_slice(&g);
            all.extend_from_slice(m);
        }
        let mut dec = Decoder::with_limits(Limits { max_payload: 1 << 16, max_dimension: 64 });
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        let (mut pos, mut i) = (0, 0);
        while pos < all.len() {
            let step = cuts[i % cuts.len()].min(all.len() - pos);
            buf.extend_from_slice(&all[pos..pos + step]);
            pos += step;
            i += 1;
            got.extend(decode_resyncing(&mut dec, &mut buf).0);
        }
        // End of input: a corrupt length field may still hold back what follows it
        // (its header waits for bytes that never come); `decode_eof` reports it as a
        // header failure, and resynchronising recovers the messages behind it.
        finish_resyncing(&mut dec, &mut buf, &mut got);
        let want: Vec<u64> = (1..=6u64).filter(|s| !damaged[*s as usize - 1]).collect();
        for s in &want {
            prop_assert!(got.contains(s), "lost intact frame {} (got {:?})", s, got);
        }
        prop_assert!(got.windows(2).all(|w| w[0] < w[1]), "out of order: {:?}", got);
    }
}

#[test]
fn hello_and_notice_round_trip() {
    let hello = ClientHello {
        policy: Policy::Lossless,
        every: 3,
        max_fps: 12.5,
        pack: true,
        compress: true,
        heartbeat_ms: 1000,
        token: Some("s3cret-token".into()),
    };
    assert!(
        !format!("{hello:?}").contains("s3cret"),
        "Debug must not print the token"
    );
    let notice = Notice {
        dropped: 4,
        reason: "overrun".into(),
        first_seq: 10,
        last_seq: 13,
    };
    let mut buf = wire(&[
        Message::ClientHello(hello.clone()),
        Message::Notice(notice.clone()),
    ]);
    let msgs = decode_all(&mut Decoder::default(), &mut buf).unwrap();
    assert!(matches!(&msgs[0], Message::ClientHello(h) if *h == hello));
    assert!(matches!(&msgs[1], Message::Notice(n) if *n == notice));
    // A bad value is a clear error.
    let mut bad = wire(&[Message::ClientHello(hello)]);
    let p = HEADER_LEN;
    let text = b"policy=fastest\n";
    bad.truncate(p);
    bad.extend_from_slice(text);
    forge(&mut bad, |b| {
        put_u32(b, 56, text.len() as u32);
        put_u32(b, 60, crc32c::crc32c(text));
    });
    let err = Decoder::default().decode(&mut bad).unwrap_err();
    assert!(err.to_string().contains("unknown policy"), "{err}");
}

#[test]
fn compressed_frames_round_trip_and_split_reads_agree() {
    let f = frame(5, 64, 48);
    let e = Encoder::encode_frame_compressed(&f);
    assert_eq!(e.header[9] & FLAG_COMPRESSED, FLAG_COMPRESSED);
    assert!(e.payload.len() < f.payload.len(), "smooth data compresses");
    let mut whole = BytesMut::new();
    whole.extend_from_slice(&e.header);
    whole.extend_from_slice(&e.payload);
    let all = whole.clone();
    match Decoder::default().decode(&mut whole).unwrap() {
        Some(Message::Frame(g)) => {
            assert_eq!(g.header, f.header);
            assert_eq!(g.payload, f.payload);
            // The wire's CRC is the compressed bytes': not the frame's.
            assert_eq!(g.payload_crc32c, None);
        }
        m => panic!("{m:?}"),
    }
    // One byte at a time gives the same frame.
    let mut dec = Decoder::default();
    let mut buf = BytesMut::new();
    let mut got = None;
    for b in all.iter() {
        buf.extend_from_slice(&[*b]);
        if let Some(m) = dec.decode(&mut buf).unwrap() {
            got = Some(m);
        }
    }
    assert!(matches!(got, Some(Message::Frame(g)) if g.payload == f.payload));
}

#[test]
fn corrupt_compressed_payload_is_a_clear_error() {
    let f = frame(6, 32, 8);
    let e = Encoder::encode_frame_compressed(&f);
    let mut p = e.payload.to_vec();
    p[0] = 9; // unknown low-stream mode
    let mut buf = BytesMut::from(&e.header[..]);
    buf.extend_from_slice(&p);
    forge(&mut buf, |b| put_u32(b, 60, crc32c::crc32c(&p)));
    let err = Decoder::default().decode(&mut buf).unwrap_err();
    assert!(
        matches!(err, ProtoError::Decompress { seq: 6, .. }),
        "{err}"
    );
}

#[test]
fn compressed_frame_cannot_claim_more_than_the_limit() {
    let f = frame(7, 64, 48);
    let e = Encoder::encode_frame_compressed(&f);
    let mut buf = BytesMut::from(&e.header[..]);
    buf.extend_from_slice(&e.payload);
    let mut dec = Decoder::with_limits(Limits {
        max_payload: 1000,
        max_dimension: 4096,
    });
    let err = dec.decode(&mut buf).unwrap_err();
    assert!(
        matches!(
            err,
            ProtoError::PayloadTooLarge {
                len: 6144,
                max: 1000,
                ..
            }
        ),
        "{err}"
    );
}

/// A bit flip in the header-length field's high byte makes the header claim more bytes
/// than the stream has left: at end of input `decode_eof` reports it as a header
/// failure, and resynchronising recovers every message behind it (found by the
/// resynchronisation property test).
#[test]
fn a_corrupt_header_length_at_the_end_does_not_hide_what_follows() {
    let mut msgs: Vec<BytesMut> = (1..=6u64)
        .map(|s| wire(&[Message::Frame(frame(s, 8, 4))]))
        .collect();
    msgs[1][7] ^= 3;
    let mut buf = BytesMut::new();
    for m in &msgs {
        buf.extend_from_slice(m);
    }
    let mut dec = Decoder::with_limits(Limits {
        max_payload: 1 << 16,
        max_dimension: 64,
    });
    let mut got = decode_resyncing(&mut dec, &mut buf).0;
    assert_eq!(
        got,
        vec![1],
        "the corrupt header waits for bytes that never come"
    );
    finish_resyncing(&mut dec, &mut buf, &mut got);
    assert_eq!(got, vec![1, 3, 4, 5, 6]);
}

/// End of input: decodes what is left with `decode_eof`, resynchronising after each
/// error that skipped something, and appends the frames' sequence numbers to `got`.
fn finish_resyncing(dec: &mut Decoder, buf: &mut BytesMut, got: &mut Vec<u64>) {
    loop {
        match dec.decode_eof(buf) {
            Ok(Some(Message::Frame(f))) => got.push(f.header.seq),
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(_) => {
                if dec.resync(buf) == 0 {
                    break;
                }
            }
        }
    }
}

#[test]
fn a_frame_over_the_dimension_limit_names_the_limit_and_the_next_frame_decodes() {
    let mut buf = wire(&[
        Message::Frame(frame(1, 80, 8)),
        Message::Frame(frame(2, 8, 8)),
    ]);
    let mut dec = Decoder::with_limits(Limits {
        max_payload: 1 << 20,
        max_dimension: 64,
    });
    let e = dec.decode(&mut buf).unwrap_err();
    assert!(
        matches!(
            e,
            ProtoError::DimensionTooLarge {
                width: 80,
                height: 8,
                max: 64,
                seq: 1
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("limit of 64 pixels per side"), "{e}");
    assert!(dec.resync(&mut buf) > 0);
    match dec.decode(&mut buf).unwrap() {
        Some(Message::Frame(f)) => assert_eq!(f.header.seq, 2),
        other => panic!("{other:?}"),
    }
}

/// The image fields of control messages are neither checked nor used: an end of stream,
/// a notice or a heartbeat with an unknown pattern or packing code still decodes (a
/// clean end must not be lost to a field that means nothing there); a frame with one
/// does not.
#[test]
fn control_messages_ignore_image_codes() {
    for t in control_templates() {
        if matches!(t, Message::StreamStart(_)) {
            continue;
        }
        let mut b = wire(std::slice::from_ref(&t));
        b[11] = 9; // pattern
        b[13] = 7; // packing
        let crc = crc32c::crc32c(&b[..76]);
        b[76..80].copy_from_slice(&crc.to_le_bytes());
        let got = Decoder::default().decode(&mut b);
        assert!(
            matches!(got, Ok(Some(ref m)) if m.kind_name() == t.kind_name()),
            "{}: {got:?}",
            t.kind_name()
        );
    }
    let mut b = wire(&[Message::Frame(frame(1, 4, 4))]);
    b[11] = 9;
    let crc = crc32c::crc32c(&b[..76]);
    b[76..80].copy_from_slice(&crc.to_le_bytes());
    assert!(matches!(
        Decoder::default().decode(&mut b),
        Err(ProtoError::BadFrame { .. })
    ));
}

/// A stream cut inside a header says how long the header would have been.
#[test]
fn truncated_header_names_its_length() {
    let full = wire(&[Message::Heartbeat]);
    for cut in [4, 8, 40] {
        let mut b = BytesMut::from(&full[..cut]);
        match Decoder::default().decode_eof(&mut b) {
            Err(ProtoError::Truncated { buffered, needed }) => {
                assert_eq!((buffered, needed), (cut, HEADER_LEN as u64))
            }
            other => panic!("cut at {cut}: {other:?}"),
        }
    }
}

#[test]
fn large_payloads_start_on_a_block_boundary() {
    // 256×160 frames (80 KiB payloads, over ALIGN_PAYLOAD_MIN) and small ones between
    // them, read in pieces of odd sizes so that headers and payloads straddle reads; as
    // `AsyncReadExt::read_buf` does, a read fills at most the spare capacity (and makes
    // some first where there is none).
    let msgs: Vec<Message> = (1..=6)
        .map(|s| {
            Message::Frame(if s % 3 == 0 {
                frame(s, 16, 8)
            } else {
                frame(s, 256, 160)
            })
        })
        .collect();
    let all = wire(&msgs);
    for piece in [1000, 4093, 70_001, all.len()] {
        let (mut dec, mut buf) = (Decoder::default(), BytesMut::new());
        let mut got = Vec::new();
        let mut at = 0;
        while at < all.len() {
            if buf.capacity() == buf.len() {
                buf.reserve(64);
            }
            let n = piece.min(all.len() - at).min(buf.capacity() - buf.len());
            buf.extend_from_slice(&all[at..at + n]);
            at += n;
            got.extend(decode_all(&mut dec, &mut buf).unwrap());
        }
        assert_eq!(got.len(), msgs.len(), "pieces of {piece}");
        for (m, want) in got.iter().zip(&msgs) {
            let (Message::Frame(f), Message::Frame(w)) = (m, want) else {
                panic!("not a frame")
            };
            assert!(
                f.payload == w.payload,
                "seq {}, pieces of {piece}",
                w.header.seq
            );
            if f.payload.len() >= ALIGN_PAYLOAD_MIN {
                assert_eq!(
                    f.payload.as_ptr() as usize % PAYLOAD_ALIGN,
                    0,
                    "seq {}, pieces of {piece}",
                    w.header.seq
                );
            }
        }
    }
}
