//! End-to-end tests: real `rawlink` processes talking over 127.0.0.1.

mod common;

use bytes::BytesMut;
use common::*;
use rawlink_frame::{BayerPattern, ClockId, Frame, FrameHeader, PixelFormat};
use rawlink_proto::{Encoder, EndOfStream, EndReason, Message, StreamInfo};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

const T: Duration = Duration::from_secs(60);

#[test]
fn demo_writes_driver_exact_raw_png_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("demo-out");
    let o = bin()
        .args(["demo", "--interval-ms", "20", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(stdout.contains("summary: frames=5 "), "{stdout}");
    assert_frame_files(&out, &[1, 2, 3, 4, 5]);
    // The rate to disk is reported (5 frames written, so 4 intervals), and the demo's
    // own last line gives the same figure.
    let summary = stdout.lines().find(|l| l.starts_with("summary: ")).unwrap();
    let disk_fps: f64 = summary
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix("disk_fps="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no disk_fps in {summary}"));
    assert!(disk_fps > 0.0, "{summary}");
    assert!(
        stdout.contains(&format!("({disk_fps:.1} frames/s to disk)")),
        "{stdout}"
    );
    let mut raws = Vec::new();
    for n in 1..=5u64 {
        let raw = std::fs::read(out.join(format!("frame_{n:06}.raw"))).unwrap();
        assert!(
            raw == driver_frame(n),
            "frame {n} is not the driver formula"
        );
        raws.push(raw);
    }
    for a in 0..5 {
        for b in a + 1..5 {
            assert_ne!(raws[a], raws[b], "frames {a} and {b} identical");
        }
    }
}

fn frame_msg(seq: u64, payload: Vec<u8>) -> Message {
    frame_msg_black(seq, payload, 64)
}

fn frame_msg_black(seq: u64, payload: Vec<u8>, black: u16) -> Message {
    let fmt = PixelFormat::unpacked(BayerPattern::Rggb, 12).unwrap();
    let mut h = FrameHeader::new(seq, W as u32, H as u32, fmt);
    h.black_level = black;
    h.clock = ClockId::Realtime;
    h.timestamp_ns = rawlink_source::now_realtime_ns();
    Message::Frame(Frame::new(h, payload.into()).unwrap())
}

fn start_msg() -> Message {
    let fmt = PixelFormat::unpacked(BayerPattern::Rggb, 12).unwrap();
    Message::StreamStart(StreamInfo {
        header: FrameHeader::new(0, W as u32, H as u32, fmt),
        source: "test".into(),
        server: "test".into(),
        interval_ns: 0,
        frames: None,
        stream_id: None,
    })
}

fn encode(msgs: &[Message]) -> Vec<u8> {
    let mut b = BytesMut::new();
    for m in msgs {
        Encoder::encode(m, &mut b);
    }
    b.to_vec()
}

/// A one-shot fake server: accepts one client and writes `bytes`, then closes.
fn fake_server(bytes: Vec<u8>) -> (String, std::thread::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let h = std::thread::spawn(move || {
        let mut s = accept_within(&l, T);
        drain_hello(&mut s);
        let _ = s.write_all(&bytes);
        let _ = s.flush();
        std::thread::sleep(Duration::from_millis(100));
    });
    (addr, h)
}

/// Reads the client's hello (a closed socket with unread bytes would reset instead of
/// ending cleanly), and checks that it is one.
fn drain_hello(s: &mut TcpStream) {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut head = [0u8; 80];
    s.read_exact(&mut head).unwrap();
    assert_eq!(&head[..4], b"RLNK");
    assert_eq!(head[8], 5, "first message is a client hello");
    let len = u32::from_le_bytes([head[56], head[57], head[58], head[59]]) as usize;
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload).unwrap();
    assert!(String::from_utf8_lossy(&payload).contains("policy=lossless"));
}

/// Runs `rawlink receive --no-reconnect` (plus `extra`) against a fake server sending
/// `bytes`; returns its output and the folder holding its output folder, `out`.
fn receive_from(bytes: Vec<u8>, extra: &[&str]) -> (std::process::Output, tempfile::TempDir) {
    let (addr, server) = fake_server(bytes);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let mut args = vec![
        "--connect",
        &addr,
        "--out",
        out.to_str().unwrap(),
        "--no-reconnect",
    ];
    args.extend_from_slice(extra);
    let o = finish(spawn_receive(&args), T);
    server.join().unwrap();
    (o, dir)
}

/// Runs `rawlink receive` from `addr` into `out` until it exits, then joins the test's
/// `server` thread; the receiver must succeed. Returns its output and stderr.
fn receive_ok(
    addr: &str,
    out: &std::path::Path,
    server: std::thread::JoinHandle<()>,
) -> (std::process::Output, String) {
    let o = finish(
        spawn_receive(&["--connect", addr, "--out", out.to_str().unwrap()]),
        T,
    );
    server.join().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{stderr}");
    (o, stderr)
}

fn last_line(o: &std::process::Output) -> String {
    let stderr = String::from_utf8_lossy(&o.stderr);
    stderr.lines().last().unwrap_or_default().to_string()
}

/// Two good frames, then `bad`; the receiver (with --no-reconnect) must fail with
/// `needle` in a one-line error and keep frames 1 and 2 on disk.
fn assert_fault(bad: Vec<u8>, needle: &str) -> String {
    let mut bytes = encode(&[
        start_msg(),
        frame_msg(1, driver_frame(1)),
        frame_msg(2, driver_frame(2)),
    ]);
    bytes.extend_from_slice(&bad);
    let (o, dir) = receive_from(bytes, &[]);
    let out = dir.path().join("out");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "receiver must fail: {stderr}");
    let last = last_line(&o);
    assert!(
        last.starts_with("rawlink: error: ") && last.contains(needle),
        "last line {last:?} should name {needle:?}"
    );
    assert_driver_frames(&out, &[1, 2]);
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(stdout.contains("summary: frames=2 "), "{stdout}");
    stdout
}

/// Frames 1 and 2, then `bad` in place of frame 3, then frame 4 and a clean end: the
/// receiver skips the bad bytes without dropping the connection, exits 0, keeps frames
/// 1, 2 and 4, and counts the error. Returns the summary line.
fn assert_resync(bad: Vec<u8>, warning: &str) -> String {
    let mut bytes = encode(&[
        start_msg(),
        frame_msg(1, driver_frame(1)),
        frame_msg(2, driver_frame(2)),
    ]);
    bytes.extend_from_slice(&bad);
    bytes.extend_from_slice(&encode(&[
        frame_msg(4, driver_frame(4)),
        Message::EndOfStream(EndOfStream {
            last_seq: 4,
            reason: EndReason::FramesDone,
            message: "done".into(),
        }),
    ]));
    let (addr, server) = fake_server(bytes);
    let dir = tempfile::tempdir().unwrap();
    let child = spawn_receive(&[
        "--connect",
        &addr,
        "--out",
        dir.path().to_str().unwrap(),
        "--no-reconnect",
    ]);
    let o = finish(child, T);
    server.join().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "receiver must recover: {stderr}");
    assert!(stderr.contains(warning), "{stderr}");
    assert_driver_frames(dir.path(), &[1, 2, 4]);
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    let line = stdout
        .lines()
        .find(|l| l.starts_with("summary:"))
        .unwrap()
        .to_string();
    assert!(
        line.contains(" frames=3 ") || line.starts_with("summary: frames=3 "),
        "{line}"
    );
    assert!(
        line.contains(" missing=1 ") && line.contains(" reconnects=0 "),
        "{line}"
    );
    line
}

#[test]
fn corrupt_payload_crc_is_counted_and_the_stream_goes_on() {
    let mut bad = encode(&[frame_msg(3, driver_frame(3))]);
    bad[80 + 1000] ^= 0x10;
    let line = assert_resync(bad, "payload CRC mismatch on frame seq 3");
    assert!(
        line.contains(" crc_errors=1 ") && line.contains(" resyncs=0 "),
        "{line}"
    );
}

#[test]
fn corrupt_header_is_skipped_by_resynchronising() {
    let mut bad = encode(&[frame_msg(3, driver_frame(3))]);
    bad[40] ^= 0x01;
    let line = assert_resync(bad, "header CRC mismatch");
    assert!(
        line.contains(" crc_errors=1 ")
            && line.contains(" resyncs=1 ")
            && line.contains(&format!(" skipped_bytes={} ", 80 + FRAME_BYTES)),
        "{line}"
    );
}

#[test]
fn junk_between_messages_is_skipped() {
    let line = assert_resync(b"JUNK".repeat(1000), "bad magic");
    assert!(
        line.contains(" skipped_bytes=4000 ") && line.contains(" resyncs=1 "),
        "{line}"
    );
}

#[test]
fn absurd_payload_length_is_rejected_before_allocating_and_skipped() {
    let mut bad = encode(&[frame_msg(3, driver_frame(3))]);
    bad.truncate(80);
    bad[56..60].copy_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
    let crc = crc32c::crc32c(&bad[..76]);
    bad[76..80].copy_from_slice(&crc.to_le_bytes());
    let line = assert_resync(bad, "exceeds the limit");
    assert!(line.contains(" protocol_errors=1 "), "{line}");
}

#[test]
fn wrong_protocol_from_the_first_byte_is_fatal() {
    let (addr, server) = fake_server(b"HTTP/1.1 400 Bad Request\r\n\r\n".to_vec());
    let dir = tempfile::tempdir().unwrap();
    // Reconnect is on: a peer that does not speak rawlink is still not retried.
    let o = finish(
        spawn_receive(&["--connect", &addr, "--out", dir.path().to_str().unwrap()]),
        T,
    );
    server.join().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    let last = stderr.lines().last().unwrap_or_default();
    assert!(last.starts_with("rawlink: error: bad magic"), "{last}");
}

#[test]
fn truncated_stream_is_reported_and_earlier_frames_kept() {
    let mut bad = encode(&[frame_msg(3, driver_frame(3))]);
    bad.truncate(80 + 5000);
    let line = assert_fault(bad, "stream truncated");
    assert!(line.contains(" partial_frames=1 "), "{line}");
}

#[test]
fn close_without_end_of_stream_is_an_error() {
    assert_fault(Vec::new(), "without an end-of-stream");
}

/// The server's connection drops mid-frame; on the second connection the stream goes
/// on. The receiver keeps every complete frame, discards the partial one (counted),
/// reports the gap, and exits 0 at the clean end.
#[test]
fn reconnects_after_a_close_mid_frame_and_keeps_every_complete_frame() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let server = std::thread::spawn(move || {
        let mut s = accept_within(&l, T);
        drain_hello(&mut s);
        let mut first = encode(&[
            start_msg(),
            frame_msg(1, driver_frame(1)),
            frame_msg(2, driver_frame(2)),
        ]);
        let third = encode(&[frame_msg(3, driver_frame(3))]);
        first.extend_from_slice(&third[..third.len() / 2]);
        s.write_all(&first).unwrap();
        drop(s);
        let mut s = accept_within(&l, T);
        drain_hello(&mut s);
        s.write_all(&encode(&[
            start_msg(),
            frame_msg(5, driver_frame(5)),
            Message::EndOfStream(EndOfStream {
                last_seq: 5,
                reason: EndReason::FramesDone,
                message: "done".into(),
            }),
        ]))
        .unwrap();
        std::thread::sleep(Duration::from_millis(100));
    });
    let dir = tempfile::tempdir().unwrap();
    let (o, stderr) = receive_ok(&addr, dir.path(), server);
    assert!(
        stderr.contains("2 frame(s) missed across the reconnect (seq 2 -> 5)"),
        "{stderr}"
    );
    assert_driver_frames(dir.path(), &[1, 2, 5]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    for kv in [
        "frames=3 ",
        "reconnects=1 ",
        "partial_frames=1 ",
        "missing=2 ",
    ] {
        assert!(stdout.contains(kv), "{kv} in {stdout}");
    }
}

#[test]
fn clean_end_of_stream_exits_zero() {
    let bytes = encode(&[
        start_msg(),
        frame_msg(1, driver_frame(1)),
        Message::EndOfStream(EndOfStream {
            last_seq: 1,
            reason: EndReason::FramesDone,
            message: "done".into(),
        }),
    ]);
    let (addr, server) = fake_server(bytes);
    let dir = tempfile::tempdir().unwrap();
    let o = finish(
        spawn_receive(&["--connect", &addr, "--out", dir.path().to_str().unwrap()]),
        T,
    );
    server.join().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_frame_files(dir.path(), &[1]);
}

#[test]
fn two_simultaneous_clients_both_get_every_frame() {
    let server = Server::start(&[
        "--frames",
        "5",
        "--interval-ms",
        "20",
        "--wait-clients",
        "2",
    ]);
    let addr = server.addr.to_string();
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let kids: Vec<_> = dirs
        .iter()
        .map(|d| spawn_receive(&["--connect", &addr, "--out", d.path().to_str().unwrap()]))
        .collect();
    for k in kids {
        let o = finish(k, T);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let (status, out, err) = server.wait(T);
    assert!(status.success(), "{err}");
    assert!(out.contains("frames=5 clients=2 dropped=0"), "{out}");
    for d in &dirs {
        assert_driver_frames(d.path(), &[1, 2, 3, 4, 5]);
    }
}

#[test]
fn legacy_server_feeds_a_bare_tcp_client() {
    // Like the reference streamer, a legacy server waits for its client: frame 1 is
    // captured only once the client has connected, however late.
    let server = Server::start(&["--legacy", "--frames", "3", "--interval-ms", "10"]);
    std::thread::sleep(Duration::from_millis(300));
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    assert_eq!(all.len(), 3 * FRAME_BYTES, "bare frames, no header");
    for n in 1..=3u64 {
        let f = &all[(n as usize - 1) * FRAME_BYTES..n as usize * FRAME_BYTES];
        assert!(f == &driver_frame(n)[..], "legacy frame {n}");
    }
    let (status, _, err) = server.wait(T);
    assert!(status.success(), "{err}");
}

/// A `--legacy` receiver (with `extra` flags) connecting to a listener of the test's
/// own, which plays the bare streamer; the receiver writes into the returned folder.
fn legacy_receiver(extra: &[&str]) -> (TcpListener, tempfile::TempDir, std::process::Child) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let mut args = vec![
        "--legacy",
        "--connect",
        &addr,
        "--out",
        dir.path().to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let child = spawn_receive(&args);
    (l, dir, child)
}

#[test]
fn legacy_receiver_reads_a_bare_tcp_streamer() {
    // Like the reference streamer: bare frames, then close at a frame boundary.
    let (l, dir, child) = legacy_receiver(&[]);
    let mut s = accept_within(&l, T);
    for n in 1..=3 {
        for piece in driver_frame(n).chunks(100_000) {
            s.write_all(piece).unwrap();
        }
    }
    drop(s);
    let o = finish(child, T);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_driver_frames(dir.path(), &[1, 2, 3]);
    // Bare frames have no capture time: no capture latency is made up for them, and
    // the black level is the driver's at the default 12 bits.
    let j: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("frame_000001.json")).unwrap())
            .unwrap();
    assert!(j["capture_to_receive_ms"].is_null(), "{j}");
    assert!(j["capture_to_png_ms"].is_null(), "{j}");
    assert!(j["receive_time_ns"].as_u64().unwrap() > 0, "{j}");
    assert_eq!(j["black_level"], 64, "{j}");
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("frame seq=1 bytes=614400 latency=- "),
        "{stdout}"
    );
    assert!(
        summary_of(&o).contains("recv_latency_ms_p50=0.00"),
        "{stdout}"
    );
}

#[test]
fn legacy_receiver_reports_a_close_mid_frame() {
    let (l, dir, child) = legacy_receiver(&["--no-reconnect"]);
    let mut s = accept_within(&l, T);
    s.write_all(&driver_frame(1)).unwrap();
    s.write_all(&driver_frame(2)[..1234]).unwrap();
    drop(s);
    let o = finish(child, T);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        stderr.contains("truncated: peer closed after 1234 of 614400 bytes"),
        "{stderr}"
    );
    assert_frame_files(dir.path(), &[1]);
}

#[test]
fn chardev_source_through_a_fifo_with_short_writes() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("camera");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    let spec = format!("chardev:{}", fifo.display());
    let server = Server::start(&["--source", &spec, "--wait-clients", "1"]);
    let out = dir.path().join("out");
    let child = spawn_receive(&[
        "--connect",
        &server.addr.to_string(),
        "--out",
        out.to_str().unwrap(),
    ]);
    // The "driver": three frames written in pieces much smaller than a frame.
    let mut w = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
    for n in 1..=3 {
        for piece in driver_frame(n).chunks(4093) {
            w.write_all(piece).unwrap();
        }
    }
    drop(w); // hang up: POLLHUP ends the stream cleanly
    let o = finish(child, T);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (status, stdout, err) = server.wait(T);
    assert!(status.success(), "{err}");
    assert!(stdout.contains("frames=3"), "{stdout}");
    assert_driver_frames(&out, &[1, 2, 3]);
}

#[test]
fn file_source_replays_raw_files() {
    let dir = tempfile::tempdir().unwrap();
    for n in 1..=2 {
        std::fs::write(
            dir.path().join(format!("cap_{n}.raw")),
            driver_frame(n + 10),
        )
        .unwrap();
    }
    let spec = format!("file:{}/cap_*.raw", dir.path().display());
    let out = dir.path().join("out");
    serve_into(&["--source", &spec], &out);
    assert_frame_files(&out, &[1, 2]);
    assert!(std::fs::read(out.join("frame_000002.raw")).unwrap() == driver_frame(12));
}

/// Serves with `args` (unpaced, to one client) and receives the whole stream into
/// `out`; both must succeed.
fn serve_into(args: &[&str], out: &std::path::Path) {
    let mut a = vec!["--interval-ms", "0", "--wait-clients", "1"];
    a.extend_from_slice(args);
    let server = Server::start(&a);
    let o = finish(
        spawn_receive(&[
            "--connect",
            &server.addr.to_string(),
            "--out",
            out.to_str().unwrap(),
        ]),
        T,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(server.wait(T).0.success());
}

/// Serves `spec` (one frame), receives it into `out` and returns its JSON sidecar.
fn serve_one_frame(spec: &str, extra: &[&str], out: &std::path::Path) -> serde_json::Value {
    let mut args = vec!["--source", spec, "--frames", "1"];
    args.extend_from_slice(extra);
    serve_into(&args, out);
    serde_json::from_slice(&std::fs::read(out.join("frame_000001.json")).unwrap()).unwrap()
}

/// A `file:` replay of the driver's frame 1 carries the driver's black level, so it is
/// processed exactly as `sim`'s frame 1; `--black-level`/`--white-level` override it.
#[test]
fn file_replay_of_a_sim_frame_has_the_drivers_black_level_and_the_same_png() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cap.raw"), driver_frame(1)).unwrap();
    let file_spec = format!("file:{}/cap.raw", dir.path().display());
    let (sim_out, file_out) = (dir.path().join("sim"), dir.path().join("file"));
    let sim = serve_one_frame("sim", &[], &sim_out);
    let file = serve_one_frame(&file_spec, &[], &file_out);
    assert_eq!(file["black_level"], 64, "{file}");
    assert_eq!(sim["black_level"], 64, "{sim}");
    assert_eq!(file["white_level"], sim["white_level"]);
    let png = |d: &std::path::Path| read_png(&d.join("frame_000001.png"));
    assert!(png(&sim_out) == png(&file_out), "file: and sim PNGs differ");
    let set = dir.path().join("set");
    let j = serve_one_frame(
        &file_spec,
        &["--black-level", "100", "--white-level", "4000"],
        &set,
    );
    assert_eq!(
        (j["black_level"].as_u64(), j["white_level"].as_u64()),
        (Some(100), Some(4000))
    );
    for (flags, want) in [
        (
            &["--black-level", "4095"][..],
            "black level 4095 must be below the white level 4095",
        ),
        (
            &["--white-level", "4096"][..],
            "white level 4096 does not fit in 12 bits",
        ),
        (
            &["--bits", "8", "--white-level", "300"][..],
            "white level 300 does not fit in 8 bits",
        ),
    ] {
        let o = bin()
            .args(["serve", "--listen", "127.0.0.1:0", "--source", &file_spec])
            .args(flags)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success());
        assert!(
            err.contains(want) && err.starts_with("rawlink: error: "),
            "{flags:?}: {err}"
        );
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    }
}

/// A file of the wrong size anywhere in a glob fails at start, before a frame is sent;
/// a sample above the depth is refused.
#[test]
fn file_source_checks_every_file_at_start_and_samples_against_the_depth() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.raw"), driver_frame(1)).unwrap();
    let f = std::fs::File::create(dir.path().join("b.raw")).unwrap();
    f.set_len(1 << 30).unwrap(); // sparse
    let spec = format!("file:{}/*.raw", dir.path().display());
    let o = bin()
        .args(["serve", "--listen", "127.0.0.1:0", "--source", &spec])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("b.raw: 1073741824 bytes, but 640x480 16-bit samples need 614400"),
        "{err}"
    );
    assert!(o.stdout.is_empty(), "failed before listening");
    std::fs::remove_file(dir.path().join("b.raw")).unwrap();
    // Frame 1 at 12 bits holds 4080: too deep for --bits 10.
    let server = Server::start(&["--source", &spec, "--bits", "10", "--interval-ms", "0"]);
    let (status, _, err) = server.wait(T);
    assert!(!status.success());
    assert!(err.contains("does not fit in 10 bits"), "{err}");
}

/// A frame the ISP cannot process (its header puts black at white) keeps its RAW and
/// JSON, says why in the JSON, and makes the exit status fail; the frames around it are
/// whole.
#[test]
fn a_frame_without_a_png_keeps_its_raw_and_json() {
    let eos = Message::EndOfStream(EndOfStream {
        last_seq: 3,
        reason: EndReason::FramesDone,
        message: "done".into(),
    });
    let (o, dir) = receive_from(
        encode(&[
            start_msg(),
            frame_msg(1, driver_frame(1)),
            frame_msg_black(2, driver_frame(2), 4095),
            frame_msg(3, driver_frame(3)),
            eos,
        ]),
        &[],
    );
    let out = dir.path().join("out");
    assert!(!o.status.success());
    let last = last_line(&o);
    assert!(
        last.starts_with("rawlink: error: ") && last.contains("no PNG") && last.contains("4095"),
        "{last}"
    );
    assert!(std::fs::read(out.join("frame_000002.raw")).unwrap() == driver_frame(2));
    assert!(!out.join("frame_000002.png").exists());
    let j: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("frame_000002.json")).unwrap()).unwrap();
    assert!(
        j["errors"][0].as_str().unwrap().starts_with("no PNG"),
        "{j}"
    );
    for n in [1, 3] {
        assert!(out.join(format!("frame_{n:06}.png")).exists(), "frame {n}");
    }
}

/// A receiver that accepts none of the frames fails, and names the limit; one with
/// `--legacy` against a v1 server says so instead of writing headers as pixels.
#[test]
fn nothing_accepted_and_legacy_against_v1_are_errors() {
    let frames = || {
        encode(&[
            start_msg(),
            frame_msg(1, driver_frame(1)),
            frame_msg(2, driver_frame(2)),
        ])
    };
    let (o, dir) = receive_from(frames(), &["--max-dimension", "16"]);
    let last = last_line(&o);
    assert!(!o.status.success());
    assert!(
        last.contains("no frame was accepted") && last.contains("--max-dimension"),
        "{last}"
    );
    let out = dir.path().join("out");
    assert!(std::fs::read_dir(&out).map_or(true, |mut d| d.next().is_none()));

    // A v1 server sends its stream start without waiting for a legacy client's hello
    // (which never comes).
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let bytes = frames();
    let server = std::thread::spawn(move || {
        let mut s = accept_within(&l, T);
        let _ = s.write_all(&bytes);
        std::thread::sleep(Duration::from_millis(200));
    });
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let o = finish(
        spawn_receive(&[
            "--legacy",
            "--connect",
            &addr,
            "--out",
            out.to_str().unwrap(),
            "--no-reconnect",
        ]),
        T,
    );
    server.join().unwrap();
    assert!(!o.status.success());
    assert!(last_line(&o).contains("drop --legacy"), "{}", last_line(&o));
    assert!(std::fs::read_dir(&out).map_or(true, |mut d| d.next().is_none()));
}

#[test]
fn bad_cli_values_give_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("r.raw");
    std::fs::write(&raw, vec![0u8; 32 * 32 * 2]).unwrap();
    let raw = raw.to_str().unwrap();
    let dng = dir.path().join("r.dng");
    let dng = dng.to_str().unwrap();
    let convert = |extra: &[&'static str]| {
        let mut v = vec!["convert", raw, "-o", dng, "--width", "32", "--height", "32"];
        v.extend_from_slice(extra);
        v
    };
    for (args, needle) in [
        (
            vec!["serve", "--stats-interval=1e30", "--listen", "127.0.0.1:0"],
            "--stats-interval must be",
        ),
        (
            vec!["serve", "--wait-clients", "5", "--max-clients", "2"],
            "can never be reached",
        ),
        (vec!["receive", "--max-payload-mb", "0"], "--max-payload-mb"),
        (
            vec![
                "serve",
                "--handshake-timeout",
                "0",
                "--listen",
                "127.0.0.1:0",
            ],
            "--handshake-timeout must be at least",
        ),
        (vec!["receive", "--max-fps", "1e300"], "--max-fps must be"),
        (
            vec!["receive", "--legacy", "--every", "3"],
            "--legacy has no handshake: the server cannot be asked for --every",
        ),
        (
            vec![
                "receive",
                "--connect",
                "127.0.0.1:9",
                "--connect",
                "127.0.0.1:9",
            ],
            "--connect 127.0.0.1:9 is given twice",
        ),
        // File options are checked with `--sink null` too.
        (
            vec!["receive", "--sink", "null", "--save", "raw,tiff"],
            "--save: unknown file type",
        ),
        (
            vec!["receive", "--sink", "null", "--on-disk-error", "retry"],
            "--on-disk-error must be",
        ),
        (
            vec!["receive", "--sink", "null", "--stages", "demosaic,blur"],
            "blur",
        ),
        (
            vec!["receive", "--black-level", "5000"],
            "--black-level 5000 must be below 4095",
        ),
        (convert(&["--gain", "nan"]), "--gain must be"),
        (
            convert(&["--color-matrix", "0,0,0,0,0,0,0,0,0"]),
            "singular",
        ),
        (
            convert(&["--color-matrix", "nan,0,0,0,1,0,0,0,1"]),
            "9 finite numbers",
        ),
        (
            vec![
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--source",
                "chardev:/nonexistent/camera",
            ],
            "/nonexistent/camera: No such file",
        ),
        (vec!["serve", "--bits", "20"], "--bits"),
        (
            vec!["serve", "--listen", "localhost:8080"],
            "is not IP:PORT (e.g. 127.0.0.1:8080",
        ),
        (vec!["serve", "--source", "camera"], "bad source spec"),
        (
            vec!["isp", "x.raw", "-o", "y.png", "--pattern", "rgbg"],
            "rgbg",
        ),
        (
            vec!["isp", "x.raw", "-o", "y.png", "--profile", "fancy"],
            "unknown ISP profile",
        ),
    ] {
        let o = bin().args(&args).output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{args:?}");
        let line = err.lines().last().unwrap_or_default();
        assert!(line.contains(needle), "{args:?}: {err}");
        assert!(line.starts_with("rawlink: error: "), "{args:?}: {err}");
        // The OS error is named once, not again as the error's source.
        assert_eq!(
            line.matches("(os error").count(),
            line.contains("os error") as usize
        );
    }
}

#[test]
fn sigterm_ends_the_stream_cleanly_for_server_and_client() {
    let server = Server::start(&["--interval-ms", "30", "--wait-clients", "1"]);
    let dir = tempfile::tempdir().unwrap();
    let child = spawn_receive(&[
        "--connect",
        &server.addr.to_string(),
        "--out",
        dir.path().to_str().unwrap(),
    ]);
    // Two frames received (asserted below) before the signal, however slow the start.
    wait_for_file(&dir.path().join("frame_000002.raw"));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server.child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let (status, out, err) = server.wait(T);
    assert!(status.success(), "server: {err}");
    assert!(out.contains("end=Shutdown"), "{out}");
    let o = finish(child, T);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "receiver: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    // Every frame the server captured reached the client and was written.
    let frames: u64 = out
        .split("frames=")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap();
    assert!(frames >= 2, "{out}");
    assert!(
        stdout.contains(&format!("summary: frames={frames} ")),
        "{stdout}"
    );
    assert_frame_files(dir.path(), &(1..=frames).collect::<Vec<_>>());
}

#[test]
fn receiver_started_before_the_server_connects_when_it_comes_up() {
    // Find a free loopback port, then start the receiver before anything listens there.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();
    let child = spawn_receive(&["--connect", &addr, "--out", dir.path().to_str().unwrap()]);
    std::thread::sleep(Duration::from_millis(500));
    let server = bin()
        .args([
            "serve",
            "--listen",
            &addr,
            "--frames",
            "2",
            "--interval-ms",
            "10",
        ])
        .args(["--wait-clients", "1"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let o = finish(child, T);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    // The retries were visible meanwhile (the first one at least).
    assert!(
        stderr.contains(&format!("{addr} not reachable (")) && stderr.contains("1 attempt(s)"),
        "{stderr}"
    );
    assert_frame_files(dir.path(), &[1, 2]);
    let mut server = server;
    assert!(wait_timeout(&mut server, T).success());
}

/// A legacy receiver whose server closes before sending a byte fails instead of
/// reporting an empty success.
#[test]
fn legacy_receiver_fails_when_the_server_closes_without_a_frame() {
    let (l, _dir, child) = legacy_receiver(&[]);
    let s = accept_within(&l, T);
    drop(s);
    let o = finish(child, T);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{stderr}");
    assert!(
        stderr
            .lines()
            .last()
            .unwrap_or_default()
            .starts_with("rawlink: error: server closed the connection without sending a frame"),
        "{stderr}"
    );
}

/// `demo --http ADDR` uses ADDR or fails; only the default address gives way to a free
/// port.
#[test]
fn demo_http_given_explicitly_is_not_replaced_by_a_free_port() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let o = bin()
        .args([
            "demo",
            "--frames",
            "1",
            "--interval-ms",
            "10",
            "--quiet",
            "--http",
            &addr,
            "--out",
        ])
        .arg(dir.path().join("out"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on {addr} (--http)")),
        "{stderr}"
    );
    assert!(!String::from_utf8_lossy(&o.stdout).contains("live view: http://"));
}

#[test]
fn serve_help_lists_every_source() {
    let o = bin().args(["serve", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success());
    assert!(
        help.contains("sim, sim:scene, chardev:PATH, file:GLOB or v4l2:/dev/videoN"),
        "{help}"
    );
    assert!(
        help.contains("--black-level") && help.contains("--white-level"),
        "{help}"
    );
}

/// A receiver that reconnects tells a restarted server from the same stream by the
/// stream start's `stream_id`: after a restart the new stream's frames before the first
/// received count as missing (seq 1 to 9 here), not the jump from the old numbering;
/// with the same id, the jump is a gap across the reconnect.
#[test]
fn a_restarted_server_is_a_new_stream_not_a_gap() {
    for (second_id, missing, needle) in [
        (2u64, 9u64, "the server restarted: a new stream"),
        (1, 6, "6 frame(s) missed across the reconnect (seq 3 -> 10)"),
    ] {
        let start = |id: u64| {
            let Message::StreamStart(mut info) = start_msg() else {
                unreachable!()
            };
            info.stream_id = Some(id);
            Message::StreamStart(info)
        };
        // First connection: three frames, then the connection drops (no end message).
        let first = encode(&[
            start(1),
            frame_msg(1, driver_frame(1)),
            frame_msg(2, driver_frame(2)),
            frame_msg(3, driver_frame(3)),
        ]);
        let second = encode(&[
            start(second_id),
            frame_msg(10, driver_frame(10)),
            frame_msg(11, driver_frame(11)),
            Message::EndOfStream(EndOfStream {
                last_seq: 11,
                reason: EndReason::FramesDone,
                message: "done".into(),
            }),
        ]);
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let server = std::thread::spawn(move || {
            for bytes in [first, second] {
                let mut s = accept_within(&l, T);
                drain_hello(&mut s);
                s.write_all(&bytes).unwrap();
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        let dir = tempfile::tempdir().unwrap();
        let (o, stderr) = receive_ok(&addr, dir.path(), server);
        let line = summary_of(&o);
        assert_eq!(field(&line, "frames"), 5, "{line}");
        assert_eq!(field(&line, "reconnects"), 1, "{line}");
        assert_eq!(field(&line, "missing"), missing, "{line}");
        assert!(stderr.contains(needle), "{stderr}");
    }
}

/// A receiver stopped while it is still trying to connect has not ended cleanly: it
/// exits non-zero and says so (a script cannot tell otherwise).
#[test]
fn a_receiver_interrupted_before_connecting_fails() {
    let addr = format!("127.0.0.1:{}", free_port());
    let dir = tempfile::tempdir().unwrap();
    let child = spawn_receive(&["--connect", &addr, "--out", dir.path().to_str().unwrap()]);
    std::thread::sleep(Duration::from_millis(600));
    signal(&child, nix::sys::signal::Signal::SIGINT);
    let o = finish(child, T);
    let last = last_line(&o);
    assert!(!o.status.success(), "{last}");
    assert!(
        last.starts_with("rawlink: error: ")
            && last.contains(&format!(
                "interrupted before any connection to {addr} was made"
            )),
        "{last}"
    );
}
