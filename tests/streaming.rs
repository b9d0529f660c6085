//! Per-client flow control: policies, isolation of slow clients, decimation.
//! Real processes on 127.0.0.1.

mod common;

use common::*;
use nix::sys::signal::Signal;
use std::time::Duration;

const T: Duration = Duration::from_secs(90);

/// A receiver (`args` plus RAW files into `dir`), returned once its first frame is on
/// disk: connected and streaming, so a `--wait-clients` server has counted it (a fixed
/// sleep could stop it before it connected, and the server would never start).
fn streaming_receiver(args: &[&str], dir: &std::path::Path) -> std::process::Child {
    let mut a = args.to_vec();
    a.extend(["--out", dir.to_str().unwrap(), "--save", "raw", "--quiet"]);
    let child = spawn_receive(&a);
    wait_for_file(&dir.join("frame_000001.raw"));
    child
}

#[test]
fn latest_policy_drops_only_for_the_slow_client() {
    let frames = 150u64;
    let server = Server::start(&[
        "--frames",
        &frames.to_string(),
        "--interval-ms",
        "10",
        "--wait-clients",
        "2",
        "--client-queue",
        "2",
        "--stats-interval",
        "0.2",
    ]);
    let addr = server.addr.to_string();
    let fast = spawn_receive(&["--connect", &addr, "--policy", "latest", "--sink", "null"]);
    let slow_dir = tempfile::tempdir().unwrap();
    let slow = streaming_receiver(&["--connect", &addr, "--policy", "latest"], slow_dir.path());
    signal(&slow, Signal::SIGSTOP); // stalled while the server streams
    let fast_out = finish(fast, T);
    assert!(
        fast_out.status.success(),
        "{}",
        String::from_utf8_lossy(&fast_out.stderr)
    );
    std::thread::sleep(Duration::from_millis(300));
    signal(&slow, Signal::SIGCONT);
    let slow_out = finish(slow, T);
    assert!(
        slow_out.status.success(),
        "{}",
        String::from_utf8_lossy(&slow_out.stderr)
    );
    let (status, out, err) = server.wait(T);
    assert!(status.success(), "{err}");

    let f = summary_of(&fast_out);
    assert_eq!(field(&f, "frames"), frames, "{f}");
    assert_eq!(field(&f, "server_drops"), 0, "{f}");
    assert_eq!(field(&f, "missing"), 0, "{f}");
    let s = summary_of(&slow_out);
    let got = field(&s, "frames");
    let dropped = field(&s, "server_drops");
    assert!(dropped > 0, "the stalled client must lose frames: {s}");
    assert_eq!(
        got + dropped,
        frames,
        "every frame is received or reported dropped: {s}"
    );
    assert_eq!(
        field(&s, "missing"),
        dropped,
        "the gaps are exactly the reported drops: {s}"
    );
    // The server counts them too.
    assert!(out.contains(&format!("dropped={dropped}")), "{out}");
    // Its stats lines show the delivery rate, and the stalled client by name: its queue
    // full (2 frames) and its drops, beside the other client's empty queue.
    let stats: Vec<&str> = err.lines().filter(|l| l.contains("stats: ")).collect();
    assert!(
        stats.iter().any(|l| field(l, "fps_out") > 0),
        "no delivery rate: {err}"
    );
    let stalled = stats.iter().any(|l| {
        let list = l.split("per_client=").nth(1).unwrap_or("");
        list.contains("(q=2,") && !list.contains("drops=0),") && list.contains("(q=0,")
    });
    assert!(
        stalled,
        "no line shows the stalled client's queue and drops: {err}"
    );
}

#[test]
fn lossless_policy_delivers_every_file_frame_to_a_slow_client() {
    let dir = tempfile::tempdir().unwrap();
    let n = 24u64;
    for k in 1..=n {
        std::fs::write(dir.path().join(format!("f{k:03}.raw")), driver_frame(k)).unwrap();
    }
    let spec = format!("file:{}/f*.raw", dir.path().display());
    let server = Server::start(&[
        "--source",
        &spec,
        "--interval-ms",
        "0",
        "--wait-clients",
        "2",
        "--client-buffer-mb",
        "2",
    ]);
    let addr = server.addr.to_string();
    let out_fast = dir.path().join("fast");
    let fast = spawn_receive(&[
        "--connect",
        &addr,
        "--out",
        out_fast.to_str().unwrap(),
        "--quiet",
    ]);
    let slow = streaming_receiver(&["--connect", &addr], &dir.path().join("slow"));
    signal(&slow, Signal::SIGSTOP);
    std::thread::sleep(Duration::from_millis(1500));
    signal(&slow, Signal::SIGCONT);
    let fast_out = finish(fast, T);
    let slow_out = finish(slow, T);
    assert!(fast_out.status.success() && slow_out.status.success());
    assert!(server.wait(T).0.success());
    for o in [&fast_out, &slow_out] {
        let s = summary_of(o);
        assert_eq!(field(&s, "frames"), n, "{s}");
        assert_eq!(field(&s, "server_drops"), 0, "{s}");
        assert_eq!(field(&s, "missing"), 0, "{s}");
    }
    for k in [1, 12, 24] {
        let raw = std::fs::read(out_fast.join(format!("frame_{k:06}.raw"))).unwrap();
        assert!(raw == driver_frame(k), "file frame {k}");
    }
}

#[test]
fn decimation_and_frame_rate_cap() {
    let server = Server::start(&[
        "--frames",
        "12",
        "--interval-ms",
        "20",
        "--wait-clients",
        "2",
    ]);
    let addr = server.addr.to_string();
    let dir = tempfile::tempdir().unwrap();
    let every = spawn_receive(&[
        "--connect",
        &addr,
        "--every",
        "3",
        "--out",
        dir.path().to_str().unwrap(),
        "--quiet",
    ]);
    let capped = spawn_receive(&["--connect", &addr, "--max-fps", "10", "--sink", "null"]);
    let e = finish(every, T);
    let c = finish(capped, T);
    assert!(e.status.success() && c.status.success());
    assert!(server.wait(T).0.success());
    assert_frame_files(dir.path(), &[1, 4, 7, 10]);
    // 12 frames 20 ms apart span 220 ms: at most 10 fps gives 3 frames (0, ~100, ~200 ms).
    let s = summary_of(&c);
    assert!((2..=4).contains(&field(&s, "frames")), "{s}");
}

/// GET /metrics over plain HTTP on loopback; returns (name{labels}, value) pairs.
fn scrape(port: u16) -> Vec<(String, f64)> {
    use std::io::{Read, Write};
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let text = loop {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .unwrap();
            let mut body = String::new();
            s.read_to_string(&mut body).unwrap();
            break body;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "metrics endpoint never came up"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

fn metric(m: &[(String, f64)], name: &str, label: &str) -> f64 {
    m.iter()
        .filter(|(k, _)| (k == name || k.starts_with(&format!("{name}{{"))) && k.contains(label))
        .map(|(_, v)| v)
        .sum()
}

#[test]
fn metrics_are_scraped_over_http_and_count_a_stalled_clients_drops() {
    let (sp, rp) = (free_port(), free_port());
    let server = Server::start(&[
        "--interval-ms",
        "10",
        "--wait-clients",
        "2",
        "--client-queue",
        "2",
        "--metrics",
        &format!("127.0.0.1:{sp}"),
    ]);
    let addr = server.addr.to_string();
    let fast = spawn_receive(&[
        "--connect",
        &addr,
        "--policy",
        "latest",
        "--sink",
        "null",
        "--metrics",
        &format!("127.0.0.1:{rp}"),
    ]);
    let slow_dir = tempfile::tempdir().unwrap();
    let slow = streaming_receiver(&["--connect", &addr, "--policy", "latest"], slow_dir.path());
    signal(&slow, Signal::SIGSTOP);
    std::thread::sleep(Duration::from_millis(1500));
    let sm = scrape(sp);
    let rm = scrape(rp);
    signal(&slow, Signal::SIGCONT);
    signal(&server.child, Signal::SIGTERM);
    let (status, _, err) = server.wait(T);
    assert!(status.success(), "{err}");
    assert!(finish(fast, T).status.success());
    assert!(finish(slow, T).status.success());

    let captured = metric(&sm, "rawlink_server_frames_captured_total", "");
    assert!(captured >= 50.0, "{sm:?}");
    assert_eq!(metric(&sm, "rawlink_server_clients", ""), 2.0);
    let slow_drops = metric(&sm, "rawlink_server_client_drops_total", "reason=\"slow\"");
    assert!(
        slow_drops > 10.0,
        "the stalled client's drops are counted: {sm:?}"
    );
    assert!(metric(&sm, "rawlink_server_bytes_sent_total", "") > 0.0);
    // Set each second, not only with the stats line (every 5 s by default).
    assert!(metric(&sm, "rawlink_server_tasks", "") >= 1.0, "{sm:?}");
    let got = metric(&rm, "rawlink_receiver_frames_total", "");
    assert!(got >= 50.0, "{rm:?}");
    assert_eq!(metric(&rm, "rawlink_receiver_server_drops_total", ""), 0.0);
    assert!(
        metric(&rm, "rawlink_receiver_capture_to_receive_seconds_count", "") >= 50.0,
        "{rm:?}"
    );
    // Labels never name clients (one series per peer would grow without bound), and
    // every series of the process's role is there from the start, at zero if nothing
    // has happened yet; the other role's are not.
    assert!(!sm.iter().any(|(k, _)| k.contains("peer=")), "{sm:?}");
    let series = |m: &[(String, f64)], key: &str| m.iter().find(|(k, _)| k == key).map(|(_, v)| *v);
    for (m, key) in [
        (&sm, "rawlink_server_dead_peers_total"),
        (&sm, "rawlink_server_client_drops_total{reason=\"overrun\"}"),
        (
            &sm,
            "rawlink_server_client_drops_total{reason=\"shutdown\"}",
        ),
        (&sm, "rawlink_server_rejected_total{reason=\"auth\"}"),
        (&rm, "rawlink_receiver_errors_total{kind=\"crc\"}"),
        (&rm, "rawlink_receiver_reconnects_total"),
    ] {
        assert_eq!(series(m, key), Some(0.0), "{key}: {m:?}");
    }
    assert!(
        !sm.iter().any(|(k, _)| k.starts_with("rawlink_receiver_")),
        "{sm:?}"
    );
    assert!(
        !rm.iter().any(|(k, _)| k.starts_with("rawlink_server_")),
        "{rm:?}"
    );
}

#[test]
fn packed_frames_are_smaller_on_the_wire_and_unpacked_exactly() {
    use bytes::BytesMut;
    use rawlink_proto::{ClientHello, Decoder, Encoder, Message, Policy};
    use std::io::{Read, Write};
    let server = Server::start(&[
        "--frames",
        "3",
        "--interval-ms",
        "10",
        "--wait-clients",
        "2",
    ]);
    let addr = server.addr.to_string();
    // A rawlink receiver asking for packing writes the exact driver frames.
    let dir = tempfile::tempdir().unwrap();
    let rx = spawn_receive(&[
        "--connect",
        &addr,
        "--pack",
        "--out",
        dir.path().to_str().unwrap(),
        "--quiet",
    ]);
    // A protocol-level client checks what is on the wire.
    let mut s = std::net::TcpStream::connect(server.addr).unwrap();
    let mut hello = BytesMut::new();
    Encoder::encode(
        &Message::ClientHello(ClientHello {
            policy: Policy::Lossless,
            every: 1,
            max_fps: 0.0,
            pack: true,
            compress: false,
            ..Default::default()
        }),
        &mut hello,
    );
    s.write_all(&hello).unwrap();
    let mut wire = Vec::new();
    s.read_to_end(&mut wire).unwrap();
    let mut buf = BytesMut::from(&wire[..]);
    let mut dec = Decoder::default();
    let mut frames = Vec::new();
    while let Some(m) = dec.decode(&mut buf).unwrap() {
        if let Message::Frame(f) = m {
            frames.push(f);
        }
    }
    assert_eq!(frames.len(), 3);
    for f in frames {
        assert_eq!(f.header.format.packing, rawlink_frame::Packing::PackedLsb);
        assert_eq!(f.payload.len(), FRAME_BYTES * 3 / 4, "12-bit packs 4:3");
        let seq = f.header.seq;
        let u = rawlink_frame::unpack_frame(f).unwrap();
        assert!(u.payload[..] == driver_frame(seq)[..]);
    }
    assert!(finish(rx, T).status.success());
    assert!(server.wait(T).0.success());
    assert_driver_frames(dir.path(), &[1, 2, 3]);
}

/// Compression on real `sim:scene` frames: ratio asserted, exact round trip through a
/// real server and receiver, compared with an uncompressed receiver of the same stream.
#[test]
fn compressed_scene_frames_round_trip_exactly_with_ratio_over_1_5() {
    use rawlink_proto::compress::{compress, decompress};
    use rawlink_source::{SceneSource, SourceOptions};
    let scene = SceneSource::new(&SourceOptions {
        interval: std::time::Duration::ZERO,
        ..Default::default()
    })
    .unwrap();
    let raw = scene.render(3);
    let c = compress(&raw, 640, 480);
    let ratio = raw.len() as f64 / c.len() as f64;
    assert!(ratio >= 1.5, "ratio {ratio:.3}");
    assert_eq!(decompress(&c, 640, raw.len()).unwrap(), raw);

    let server = Server::start(&[
        "--source",
        "sim:scene",
        "--frames",
        "4",
        "--interval-ms",
        "20",
        "--wait-clients",
        "2",
    ]);
    let addr = server.addr.to_string();
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = spawn_receive(&[
        "--connect",
        &addr,
        "--compress",
        "--out",
        d1.path().to_str().unwrap(),
        "--quiet",
    ]);
    let b = spawn_receive(&[
        "--connect",
        &addr,
        "--out",
        d2.path().to_str().unwrap(),
        "--quiet",
    ]);
    assert!(finish(a, T).status.success());
    assert!(finish(b, T).status.success());
    assert!(server.wait(T).0.success());
    for n in 1..=4 {
        let name = format!("frame_{n:06}.raw");
        let x = std::fs::read(d1.path().join(&name)).unwrap();
        assert_eq!(x.len(), FRAME_BYTES);
        assert!(
            x == std::fs::read(d2.path().join(&name)).unwrap(),
            "frame {n} differs"
        );
        // Both sidecars give the CRC-32C of the .raw file: the wire's for the plain
        // stream, computed after decompression for the compressed one.
        for d in [&d1, &d2] {
            let j: serde_json::Value = serde_json::from_slice(
                &std::fs::read(d.path().join(format!("frame_{n:06}.json"))).unwrap(),
            )
            .unwrap();
            assert_eq!(
                j["payload_crc32c"].as_u64(),
                Some(rawlink_frame::crc32c(&x) as u64),
                "frame {n}: {j}"
            );
        }
    }
}

#[test]
fn one_receiver_follows_two_cameras_into_subfolders() {
    let a = Server::start(&[
        "--frames",
        "3",
        "--interval-ms",
        "10",
        "--wait-clients",
        "1",
    ]);
    let b = Server::start(&[
        "--source",
        "sim:scene",
        "--frames",
        "2",
        "--interval-ms",
        "10",
        "--wait-clients",
        "1",
    ]);
    let (aa, ba) = (a.addr.to_string(), b.addr.to_string());
    let dir = tempfile::tempdir().unwrap();
    let o = finish(
        spawn_receive(&[
            "--connect",
            &aa,
            "--connect",
            &ba,
            "--out",
            dir.path().to_str().unwrap(),
            // 0 is no limit, as for `demo`.
            "--frames",
            "0",
        ]),
        T,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    // Each per-frame line names its stream.
    for (addr, seq) in [(&aa, 3), (&ba, 2)] {
        assert!(
            stdout.contains(&format!("[{addr}] frame seq={seq} ")),
            "{stdout}"
        );
    }
    assert!(
        stdout.contains(&format!("[{aa}] summary: frames=3 ")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("[{ba}] summary: frames=2 ")),
        "{stdout}"
    );
    assert!(a.wait(T).0.success() && b.wait(T).0.success());
    let fa = dir.path().join(aa.replace(':', "_"));
    assert_frame_files(&fa, &[1, 2, 3]);
    assert!(std::fs::read(fa.join("frame_000002.raw")).unwrap() == driver_frame(2));
    let fb = dir.path().join(ba.replace(':', "_"));
    assert_eq!(
        std::fs::read_dir(&fb).unwrap().count(),
        6,
        "2 scene frames x 3 files"
    );
}

/// More clients than the registration channel holds must not deadlock --wait-clients.
#[test]
fn twenty_clients_all_get_every_frame() {
    let server = Server::start(&[
        "--frames",
        "5",
        "--interval-ms",
        "20",
        "--wait-clients",
        "20",
    ]);
    let addr = server.addr.to_string();
    let kids: Vec<_> = (0..20)
        .map(|_| spawn_receive(&["--connect", &addr, "--sink", "null", "--policy", "latest"]))
        .collect();
    for k in kids {
        let o = finish(k, T);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let s = summary_of(&o);
        assert_eq!(field(&s, "frames"), 5, "{s}");
        assert_eq!(field(&s, "server_drops"), 0, "{s}");
    }
    let (status, out, _) = server.wait(T);
    assert!(status.success() && out.contains("clients=20"), "{out}");
}

/// `--metrics 127.0.0.1:0` prints the address bound on stdout, and the latency histogram
/// is there (count 0) before any frame, as every other metric is.
#[test]
fn metrics_address_is_printed_and_the_histogram_is_there_before_any_frame() {
    use std::io::BufRead;
    let mut rx = bin()
        .args([
            "receive",
            "--connect",
            "127.0.0.1:1",
            "--connect-timeout",
            "20",
        ])
        .args([
            "--sink",
            "null",
            "--metrics",
            "127.0.0.1:0",
            "--log",
            "warn",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(rx.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port: u16 = line
        .trim()
        .strip_prefix("metrics: http://127.0.0.1:")
        .and_then(|r| r.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("{line:?}"))
        .parse()
        .unwrap();
    let m = scrape(port);
    rx.kill().unwrap();
    rx.wait().unwrap();
    let count = m
        .iter()
        .find(|(k, _)| k == "rawlink_receiver_capture_to_receive_seconds_count")
        .map(|(_, v)| *v);
    assert_eq!(count, Some(0.0), "{m:?}");
}

/// A v1 frame brings its own depth: ISP settings that fit a 16-bit stream are taken
/// whatever `--bits` (which describes legacy frames) says; in legacy mode they are
/// checked against `--bits`.
#[test]
fn receiver_isp_settings_are_checked_against_the_streams_depth() {
    let server = Server::start(&[
        "--bits",
        "16",
        "--width",
        "64",
        "--height",
        "48",
        "--frames",
        "2",
        "--wait-clients",
        "1",
        "--interval-ms",
        "20",
    ]);
    let dir = tempfile::tempdir().unwrap();
    let o = finish(
        receive_into(&server, dir.path(), &["--white-level", "60000"]),
        T,
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    let s = summary_of(&o);
    assert_eq!((field(&s, "frames"), field(&s, "written")), (2, 2), "{s}");
    let (status, _, err) = server.wait(T);
    assert!(status.success(), "{err}");
    let o = bin()
        .args(["receive", "--legacy", "--connect", "127.0.0.1:1"])
        .args(["--white-level", "60000"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("white level 60000 exceeds the 12-bit maximum"),
        "{err}"
    );
}
