//! Fault injection: real `rawlink` processes on 127.0.0.1, a tampering proxy, killed
//! processes, a full disk (a small tmpfs in a private mount namespace), bad
//! credentials and idle connections. Every test asserts what was kept: frames, files
//! and counters.

mod common;

use common::*;
use nix::sys::signal::Signal;
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(90);

/// The file names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Asserts that `dir` holds exactly the frame sets `stems` (`frame_000001-1`, ...),
/// each complete: the raw file is the driver's frame for its seq, the PNG decodes and
/// the JSON parses with that seq.
fn assert_frame_sets(dir: &Path, stems: &[&str]) {
    let mut want: Vec<String> = stems
        .iter()
        .flat_map(|s| ["json", "png", "raw"].map(|e| format!("{s}.{e}")))
        .collect();
    want.sort();
    assert_eq!(names(dir), want, "files in {}", dir.display());
    for s in stems {
        let seq: u64 = s[6..12].parse().unwrap();
        assert!(
            std::fs::read(dir.join(format!("{s}.raw"))).unwrap() == driver_frame(seq),
            "{s}.raw is not the driver's frame {seq}"
        );
        let (w, h, _, _) = read_png(&dir.join(format!("{s}.png")));
        assert_eq!((w, h), (W as u32, H as u32));
        let j: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join(format!("{s}.json"))).unwrap()).unwrap();
        assert_eq!(j["seq"], seq);
        assert_eq!(j["files"]["raw"], format!("{s}.raw"));
    }
}

/// Stems of complete frame sets in `dir`, and a check that nothing else is there.
fn complete_sets(dir: &Path) -> BTreeSet<String> {
    let all = names(dir);
    let stems: BTreeSet<String> = all
        .iter()
        .filter_map(|n| n.strip_suffix(".raw").map(str::to_string))
        .collect();
    let refs: Vec<&str> = stems.iter().map(String::as_str).collect();
    assert_frame_sets(dir, &refs);
    stems
}

/// `rawlink serve --source sim` on a free port: `interval_ms` apart, `frames` frames,
/// after `wait` clients, plus `extra` flags.
fn sim(interval_ms: u64, frames: u64, wait: usize, extra: &[&str]) -> Server {
    let (i, f, w) = (
        interval_ms.to_string(),
        frames.to_string(),
        wait.to_string(),
    );
    let mut args = vec![
        "--source",
        "sim",
        "--interval-ms",
        &i,
        "--frames",
        &f,
        "--wait-clients",
        &w,
    ];
    args.extend_from_slice(extra);
    Server::start(&args)
}

fn sim_server(listen: &str, extra: &[&str]) -> Server {
    let mut args = vec!["--source", "sim", "--stats-interval", "0"];
    args.extend_from_slice(extra);
    Server::start_at(listen, &args)
}

/// Runs `script` with `sh -c` in a private mount namespace (so it can mount a tmpfs of
/// its own), with `RAWLINK_LOG=info`, to the end.
fn in_private_mounts(script: &str) -> std::process::Output {
    let child = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", script])
        .env("RAWLINK_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("unshare (util-linux) is needed for the disk-full tests");
    finish(child, T)
}

/// `rawlink receive --connect ADDR --sink null --quiet --frames N EXTRA…`, run to the
/// end; its output and how long it took.
fn timed_receive(addr: &str, frames: &str, extra: &[&str]) -> (std::process::Output, Duration) {
    let mut a = vec![
        "--connect",
        addr,
        "--sink",
        "null",
        "--quiet",
        "--frames",
        frames,
    ];
    a.extend_from_slice(extra);
    let t = Instant::now();
    let o = finish(spawn_receive(&a), T);
    (o, t.elapsed())
}

#[test]
fn server_killed_mid_frame_then_restarted() {
    let listen = format!("127.0.0.1:{}", free_port());
    let first = sim_server(&listen, &["--interval-ms", "30", "--wait-clients", "1"]);
    // On the first connection, frame 3 is cut after 1000 payload bytes and held there
    // while the server is killed.
    let proxy = Proxy::start(
        first.addr,
        Arc::new(|conn, frame, _kind, msg: &mut Vec<u8>| {
            if conn == 0 && frame == 3 {
                msg.truncate(80 + 1000);
                Verdict::CutAndHold
            } else {
                Verdict::Forward
            }
        }),
    );
    let dir = tempfile::tempdir().unwrap();
    let rx = spawn_receive(&[
        "--connect",
        &proxy.addr.to_string(),
        "--out",
        dir.path().to_str().unwrap(),
        "--quiet",
    ]);
    proxy.wait_held(T);
    let mut first = first;
    signal(&first.child, Signal::SIGKILL);
    first.child.wait().unwrap();
    // The same port, a new server process: its sequence starts again at 1.
    let second = sim_server(
        &listen,
        &[
            "--interval-ms",
            "30",
            "--frames",
            "3",
            "--wait-clients",
            "1",
        ],
    );
    proxy.release();
    let o = finish(rx, T);
    let (status, _, err) = second.wait(T);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(status.success(), "{err}");
    let line = summary_of(&o);
    assert_eq!(field(&line, "frames"), 5, "{line}");
    assert_eq!(field(&line, "partial_frames"), 1, "{line}");
    assert_eq!(field(&line, "reconnects"), 1, "{line}");
    assert_eq!(field(&line, "written"), 5, "{line}");
    assert!(
        stderr.contains(
            "the server restarted: a new stream (the previous one's last frame received was seq 2)"
        ),
        "{stderr}"
    );
    assert_eq!(field(&line, "missing"), 0, "{line}");
    // Two frames renamed, said once.
    assert_eq!(stderr.matches("exists already").count(), 1, "{stderr}");
    // Nothing overwritten: the new stream's seq 1 and 2 get their own names.
    assert_frame_sets(
        dir.path(),
        &[
            "frame_000001",
            "frame_000001-1",
            "frame_000002",
            "frame_000002-1",
            "frame_000003",
        ],
    );
}

#[test]
fn receiver_killed_and_restarted_while_the_others_keep_going() {
    let server = sim(40, 50, 2, &[]);
    let addr = server.addr.to_string();
    let steady = spawn_receive(&["--connect", &addr, "--sink", "null", "--quiet"]);
    let victim_dir = tempfile::tempdir().unwrap();
    let victim = spawn_receive(&[
        "--connect",
        &addr,
        "--out",
        victim_dir.path().to_str().unwrap(),
        "--save",
        "raw",
        "--quiet",
    ]);
    // Killed once it is a client (the server counts 3 below), however slow the start.
    wait_for_file(&victim_dir.path().join("frame_000001.raw"));
    signal(&victim, Signal::SIGKILL);
    let _ = finish(victim, T);
    let again = spawn_receive(&["--connect", &addr, "--sink", "null", "--quiet"]);
    let steady = finish(steady, T);
    let again = finish(again, T);
    let (status, out, err) = server.wait(T);
    assert!(status.success(), "{err}");
    assert!(steady.status.success() && again.status.success());
    let s = summary_of(&steady);
    assert_eq!((field(&s, "frames"), field(&s, "missing")), (50, 0), "{s}");
    let a = summary_of(&again);
    assert!(
        field(&a, "frames") >= 10,
        "the restarted receiver is served: {a}"
    );
    assert!(out.contains("clients=3"), "{out}");
}

#[test]
fn corrupting_proxy_costs_two_frames_and_no_reconnect() {
    let server = sim(20, 12, 1, &[]);
    let proxy = Proxy::start(
        server.addr,
        Arc::new(|_conn, frame, _kind, msg: &mut Vec<u8>| {
            match frame {
                4 => msg[80 + 5000] ^= 0x40, // payload: CRC mismatch
                8 => msg[20] ^= 0x01,        // header (seq): header CRC mismatch
                _ => {}
            }
            Verdict::Forward
        }),
    );
    let dir = tempfile::tempdir().unwrap();
    let o = finish(
        spawn_receive(&[
            "--connect",
            &proxy.addr.to_string(),
            "--out",
            dir.path().to_str().unwrap(),
            "--quiet",
        ]),
        T,
    );
    let (status, _, err) = server.wait(T);
    assert!(status.success(), "{err}");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let line = summary_of(&o);
    for (k, v) in [
        ("frames", 10),
        ("crc_errors", 2),
        ("resyncs", 1),
        ("skipped_bytes", 80 + FRAME_BYTES as u64),
        ("reconnects", 0),
        ("missing", 2),
        ("written", 10),
    ] {
        assert_eq!(field(&line, k), v, "{k} in {line}");
    }
    assert_driver_frames(dir.path(), &[1, 2, 3, 5, 6, 7, 9, 10, 11, 12]);
}

/// A fake server: accepts one client, reads its hello, then runs `script`.
fn fake_server(
    script: impl FnOnce(std::net::TcpStream) + Send + 'static,
) -> (String, std::thread::JoinHandle<()>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let h = std::thread::spawn(move || {
        let mut s = accept_within(&l, T);
        let mut head = [0u8; 80];
        s.read_exact(&mut head).unwrap();
        let len = u32::from_le_bytes(head[56..60].try_into().unwrap()) as usize;
        let mut p = vec![0u8; len];
        s.read_exact(&mut p).unwrap();
        script(s)
    });
    (addr, h)
}

fn encode(msgs: &[rawlink_proto::Message]) -> Vec<u8> {
    let mut b = bytes::BytesMut::new();
    for m in msgs {
        rawlink_proto::Encoder::encode(m, &mut b);
    }
    b.to_vec()
}

/// A clean end of stream after frame `last_seq`.
fn end_msg(last_seq: u64) -> rawlink_proto::Message {
    rawlink_proto::Message::EndOfStream(rawlink_proto::EndOfStream {
        last_seq,
        reason: rawlink_proto::EndReason::FramesDone,
        message: "done".into(),
    })
}

fn frame_msg(seq: u64) -> rawlink_proto::Message {
    use rawlink_frame::*;
    let fmt = PixelFormat::unpacked(BayerPattern::Rggb, 12).unwrap();
    let mut h = FrameHeader::new(seq, W as u32, H as u32, fmt);
    h.black_level = 64;
    rawlink_proto::Message::Frame(Frame::new(h, driver_frame(seq).into()).unwrap())
}

/// A frame header with a valid CRC whose fields are edited by `edit`.
fn forged_header(edit: impl Fn(&mut [u8])) -> Vec<u8> {
    let mut h = encode(&[frame_msg(99)]);
    h.truncate(80);
    edit(&mut h);
    let crc = crc32c::crc32c(&h[..76]);
    h[76..80].copy_from_slice(&crc.to_le_bytes());
    h
}

#[test]
fn absurd_headers_are_rejected_before_allocation_and_memory_stays_flat() {
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let (addr, server) = fake_server(move |mut s| {
        s.write_all(&encode(&[frame_msg(1)])).unwrap();
        // 3 x 300 headers that claim absurd sizes, each with a valid header CRC.
        for _ in 0..300 {
            s.write_all(&forged_header(|h| {
                h[56..60].copy_from_slice(&u32::MAX.to_le_bytes())
            }))
            .unwrap();
            s.write_all(&forged_header(|h| {
                h[32..36].copy_from_slice(&60_000u32.to_le_bytes());
                h[40..44].copy_from_slice(&120_000u32.to_le_bytes());
            }))
            .unwrap();
            s.write_all(&forged_header(|h| {
                h[56..60].copy_from_slice(&(200u32 << 20).to_le_bytes())
            }))
            .unwrap();
        }
        s.write_all(&encode(&[frame_msg(2)])).unwrap();
        // Hold the connection open while the test measures the receiver.
        let _ = rx.recv_timeout(Duration::from_secs(60));
        s.write_all(&encode(&[end_msg(2)])).unwrap();
        std::thread::sleep(Duration::from_millis(100));
    });
    let dir = tempfile::tempdir().unwrap();
    let log = tempfile::NamedTempFile::new().unwrap();
    // stderr goes to a file: nobody reads the pipe while the test waits for frame 2.
    let child = bin()
        .args(["receive", "--connect", &addr, "--quiet", "--out"])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(log.reopen().unwrap())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while !dir.path().join("frame_000002.json").exists() {
        assert!(t.elapsed() < T, "frame 2 never arrived");
        std::thread::sleep(Duration::from_millis(20));
    }
    let hwm_kb = proc_status(child.id(), "VmHWM");
    let peak_kb = proc_status(child.id(), "VmPeak");
    tx.send(()).unwrap();
    let o = finish(child, T);
    server.join().unwrap();
    let stderr = std::fs::read_to_string(log.path()).unwrap();
    assert!(o.status.success(), "{stderr}");
    let line = summary_of(&o);
    assert_eq!(field(&line, "frames"), 2, "{line}");
    assert_eq!(field(&line, "protocol_errors"), 900, "{line}");
    // The log names the first few and then goes quiet; the summary counts them all.
    assert_eq!(
        stderr.matches("skipping to the next header").count(),
        10,
        "{stderr}"
    );
    // Two 600 KB frames and their processing; nothing near the 4 GiB or 200 MiB claims.
    assert!(hwm_kb < 200 * 1024, "peak RSS {hwm_kb} kB");
    assert!(
        peak_kb < 3 * 1024 * 1024,
        "peak virtual size {peak_kb} kB: something reserved a claimed payload"
    );
    assert_driver_frames(dir.path(), &[1, 2]);
}

#[test]
fn server_rejects_an_absurd_hello_and_keeps_serving() {
    let server = sim(20, 60, 1, &[]);
    let good = spawn_receive(&[
        "--connect",
        &server.addr.to_string(),
        "--sink",
        "null",
        "--quiet",
    ]);
    std::thread::sleep(Duration::from_millis(300));
    let before = proc_status(server.child.id(), "VmHWM");
    for _ in 0..100 {
        let mut s = std::net::TcpStream::connect(server.addr).unwrap();
        let mut h = forged_header(|h| h[56..60].copy_from_slice(&u32::MAX.to_le_bytes()));
        h[8] = 5; // a client hello claiming a 4 GiB payload
        let crc = crc32c::crc32c(&h[..76]);
        h[76..80].copy_from_slice(&crc.to_le_bytes());
        s.write_all(&h).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink); // the server closes it
    }
    let after = proc_status(server.child.id(), "VmHWM");
    let good = finish(good, T);
    let (status, out, err) = server.wait(T);
    assert!(status.success(), "{err}");
    let s = summary_of(&good);
    assert_eq!((field(&s, "frames"), field(&s, "missing")), (60, 0), "{s}");
    assert!(err.contains("exceeds the limit"), "{err}");
    assert!(out.contains("rejected=100"), "{out}");
    assert!(
        after < before + 20 * 1024,
        "server peak RSS grew from {before} to {after} kB"
    );
}

/// Runs a receiver whose output folder is a tmpfs of `size` in a private mount
/// namespace; copies what it kept to `copy`.
fn receive_on_tmpfs(size: &str, server: &str, copy: &Path, extra: &str) -> std::process::Output {
    let mnt = tempfile::tempdir().unwrap();
    let script = format!(
        "mount -t tmpfs -o size={size} rawlink-test {mnt} || exit 99; \
         {bin} receive --connect {server} --out {mnt}/out --quiet --no-reconnect {extra}; rc=$?; \
         cp -a {mnt}/out/. {copy}/ 2>/dev/null; exit $rc",
        mnt = mnt.path().display(),
        bin = env!("CARGO_BIN_EXE_rawlink"),
        copy = copy.display(),
    );
    let o = in_private_mounts(&script);
    assert_ne!(
        o.status.code(),
        Some(99),
        "cannot mount a tmpfs in a private mount namespace: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

/// Ten sim frames to a receiver whose output is a 2 MiB tmpfs, under `policy`, every
/// file written through the page cache (`--io buffered`; the direct path has its own
/// test below); returns its output, whether the server succeeded, and a copy of what it
/// kept.
fn disk_full(policy: &str) -> (std::process::Output, bool, tempfile::TempDir) {
    let server = sim(20, 10, 1, &[]);
    let copy = tempfile::tempdir().unwrap();
    let o = receive_on_tmpfs(
        "2m",
        &server.addr.to_string(),
        copy.path(),
        &format!("--on-disk-error {policy} --io buffered"),
    );
    let (status, _, _) = server.wait(T);
    (o, status.success(), copy)
}

/// The receiver failed, and its last line is the one-line full-disk error.
fn assert_stopped_by_a_full_disk(o: &std::process::Output) {
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("rawlink: error: stopped by a disk error")
            && last.contains("disk is full"),
        "{last}"
    );
}

#[test]
fn disk_full_stop_keeps_whole_frames_and_exits_with_the_error() {
    let (o, _, copy) = disk_full("stop");
    assert_stopped_by_a_full_disk(&o);
    let line = summary_of(&o);
    let kept = complete_sets(copy.path());
    assert!(!kept.is_empty() && kept.len() < 10, "{kept:?}");
    assert_eq!(field(&line, "written"), kept.len() as u64, "{line}");
    assert!(field(&line, "disk_errors") >= 1, "{line}");
    // Every frame received is accounted for, and the error that stopped the run is
    // counted once.
    assert_eq!(
        field(&line, "written") + field(&line, "disk_errors") + field(&line, "unwritten"),
        field(&line, "frames"),
        "{line}"
    );
    assert_eq!(
        field(&line, "errors"),
        field(&line, "disk_errors"),
        "{line}"
    );
}

/// A full disk under direct I/O: frames of 1000×750 (a 1.43 MiB RAW file, not a whole
/// number of blocks, written with `O_DIRECT`) into an 8 MiB tmpfs. The same one-line
/// error, and only whole frames kept.
#[test]
fn disk_full_under_direct_io_keeps_whole_frames() {
    let server = sim(20, 10, 1, &["--width", "1000", "--height", "750"]);
    let copy = tempfile::tempdir().unwrap();
    let o = receive_on_tmpfs(
        "8m",
        &server.addr.to_string(),
        copy.path(),
        "--on-disk-error stop --io direct",
    );
    let _ = server.wait(T);
    assert_stopped_by_a_full_disk(&o);
    let line = summary_of(&o);
    // Whole sets only: every stem has its three files, the RAW is the sim's frame for
    // its seq byte for byte, the PNG decodes at full size, the JSON names the seq.
    let all = names(copy.path());
    let stems: BTreeSet<String> = all
        .iter()
        .filter_map(|n| n.strip_suffix(".json").map(str::to_string))
        .collect();
    let want: Vec<String> = stems
        .iter()
        .flat_map(|s| ["json", "png", "raw"].map(|e| format!("{s}.{e}")))
        .collect();
    assert_eq!(all, want, "only whole frame sets are kept");
    assert!(!stems.is_empty() && stems.len() < 10, "{stems:?}");
    assert_eq!(field(&line, "written"), stems.len() as u64, "{line}");
    for s in &stems {
        let seq: u64 = s[6..12].parse().unwrap();
        let frame: Vec<u8> = (0..750u64)
            .flat_map(|i| (0..1000u64).map(move |j| (((i + j + seq * 10) * 16) % 4096) as u16))
            .flat_map(u16::to_le_bytes)
            .collect();
        assert!(
            std::fs::read(copy.path().join(format!("{s}.raw"))).unwrap() == frame,
            "{s}.raw is not the sim's frame {seq}"
        );
        let (w, h, _, _) = read_png(&copy.path().join(format!("{s}.png")));
        assert_eq!((w, h), (1000, 750));
        let j: serde_json::Value =
            serde_json::from_slice(&std::fs::read(copy.path().join(format!("{s}.json"))).unwrap())
                .unwrap();
        assert_eq!(j["seq"], seq);
    }
}

#[test]
fn disk_full_drop_counts_every_lost_frame_and_keeps_receiving() {
    let (o, served, copy) = disk_full("drop");
    assert!(served);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success(),
        "lost frames make the exit status non-zero"
    );
    assert!(
        stderr.contains("frame dropped (--on-disk-error drop)"),
        "{stderr}"
    );
    let line = summary_of(&o);
    let kept = complete_sets(copy.path());
    assert_eq!(
        field(&line, "frames"),
        10,
        "every frame was received: {line}"
    );
    assert_eq!(field(&line, "written"), kept.len() as u64, "{line}");
    assert_eq!(
        field(&line, "written") + field(&line, "disk_errors"),
        10,
        "each frame is either written whole or counted lost: {line}"
    );
}

#[test]
fn read_only_output_folder_is_a_clear_error() {
    let mnt = tempfile::tempdir().unwrap();
    let script = format!(
        "mount -t tmpfs -o ro rawlink-test {mnt} || exit 99; {bin} receive --connect 127.0.0.1:9 --out {mnt}/out",
        mnt = mnt.path().display(),
        bin = env!("CARGO_BIN_EXE_rawlink"),
    );
    let o = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .output()
        .unwrap();
    assert_ne!(o.status.code(), Some(99));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("rawlink: error: cannot create output folder")
            && last.contains("Read-only"),
        "{last}"
    );
}

#[test]
fn sigterm_during_writes_finishes_every_received_frame() {
    let server = sim(5, 1_000_000, 1, &[]);
    let dir = tempfile::tempdir().unwrap();
    let rx = receive_into(&server, dir.path(), &["--profile", "default"]);
    std::thread::sleep(Duration::from_millis(1500));
    signal(&rx, Signal::SIGTERM);
    let o = finish(rx, T);
    signal(&server.child, Signal::SIGTERM);
    let (status, _, err) = server.wait(T);
    assert!(status.success(), "{err}");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let line = summary_of(&o);
    let kept = complete_sets(dir.path());
    assert!(kept.len() >= 5, "{line}");
    assert_eq!(field(&line, "frames"), kept.len() as u64, "{line}");
    assert_eq!(field(&line, "written"), kept.len() as u64, "{line}");
}

#[test]
fn sigkill_during_writes_leaves_only_complete_files_and_temp_files_are_cleaned() {
    let server = sim(5, 1_000_000, 1, &[]);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap();
    let rx = spawn_receive(&[
        "--connect",
        &server.addr.to_string(),
        "--out",
        out,
        "--quiet",
    ]);
    std::thread::sleep(Duration::from_millis(1500));
    signal(&rx, Signal::SIGKILL);
    let _ = finish(rx, T);
    signal(&server.child, Signal::SIGKILL);
    let _ = server.wait(T);
    // Every file under a final name is complete.
    let all = names(dir.path());
    let finals: Vec<&String> = all.iter().filter(|n| !n.starts_with('.')).collect();
    assert!(finals.len() >= 3, "{all:?}");
    for n in &finals {
        let p = dir.path().join(n);
        let seq: u64 = n[6..12].parse().unwrap();
        match n.rsplit('.').next().unwrap() {
            "raw" => assert!(std::fs::read(&p).unwrap() == driver_frame(seq), "{n}"),
            "png" => assert_eq!(read_png(&p).0, W as u32),
            "json" => {
                let j: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
                assert_eq!(j["seq"], seq);
            }
            other => panic!("unexpected file {n} ({other})"),
        }
    }
    // Plus one temporary file of a process that certainly no longer exists.
    std::fs::write(
        dir.path().join(".frame_000777.png.4294967.rawlink-tmp"),
        b"partial",
    )
    .unwrap();
    let temps = names(dir.path())
        .iter()
        .filter(|n| n.ends_with(".rawlink-tmp"))
        .count() as u64;
    let server = sim(20, 2, 1, &[]);
    let o = finish(
        spawn_receive(&[
            "--connect",
            &server.addr.to_string(),
            "--out",
            out,
            "--quiet",
        ]),
        T,
    );
    let _ = server.wait(T);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let line = summary_of(&o);
    assert_eq!(field(&line, "stale_temp_removed"), temps, "{line}");
    let after = names(dir.path());
    assert!(!after.iter().any(|n| n.starts_with('.')), "{after:?}");
    // Nothing was overwritten: the files from before are all still there.
    for n in finals {
        assert!(after.contains(n), "{n} disappeared");
    }
    assert!(
        after.contains(&"frame_000001-1.raw".to_string()),
        "{after:?}"
    );
}

/// A CA and a server certificate for localhost/127.0.0.1, as PEM files in `dir`.
fn make_certs(dir: &Path, name: &str) -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, format!("{name} test CA"));
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    p.subject_alt_names
        .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
    let cert = p.signed_by(&key, &ca_cert, &ca_key).unwrap();
    let files = [
        (format!("{name}-ca.pem"), ca_cert.pem()),
        (format!("{name}-cert.pem"), cert.pem()),
        (format!("{name}-key.pem"), key.serialize_pem()),
    ];
    let paths: Vec<String> = files
        .iter()
        .map(|(f, pem)| {
            let p = dir.join(f);
            std::fs::write(&p, pem).unwrap();
            p.to_str().unwrap().to_string()
        })
        .collect();
    (paths[0].clone(), paths[1].clone(), paths[2].clone())
}

fn token_file(dir: &Path, name: &str, token: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, format!("{token}\n")).unwrap();
    p.to_str().unwrap().to_string()
}

#[test]
fn wrong_token_no_token_and_wrong_certificate_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let (ca, cert, key) = make_certs(d.path(), "good");
    let (other_ca, _, _) = make_certs(d.path(), "other");
    let good_token = token_file(d.path(), "good.token", "correct-horse-battery-staple");
    let bad_token = token_file(d.path(), "bad.token", "correct-horse-battery-stapler");
    let server = Server::start(&[
        "--source",
        "sim",
        "--interval-ms",
        "20",
        "--wait-clients",
        "1",
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "--token-file",
        &good_token,
    ]);
    let addr = server.addr.to_string();
    let run = |args: &[&str]| timed_receive(&addr, "5", args);
    // The right CA and token: served, frames verified.
    let (ok, _) = run(&["--tls-ca", &ca, "--token-file", &good_token]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert_eq!(field(&summary_of(&ok), "frames"), 5);
    // --tls-insecure works, loudly.
    let (insecure, _) = run(&["--tls-insecure", "--token-file", &good_token]);
    assert!(insecure.status.success());
    assert!(String::from_utf8_lossy(&insecure.stderr).contains("WARNING: --tls-insecure"));
    // Refusals are fatal at once (no reconnect loop) with a one-line error.
    for (args, needle) in [
        (
            vec!["--tls-ca", ca.as_str(), "--token-file", bad_token.as_str()],
            "authentication failed: wrong token",
        ),
        (
            vec!["--tls-ca", ca.as_str()],
            "authentication failed: no token",
        ),
        (
            vec![
                "--tls-ca",
                other_ca.as_str(),
                "--token-file",
                good_token.as_str(),
            ],
            "TLS handshake",
        ),
    ] {
        let (o, took) = run(&args);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{args:?}: {stderr}");
        let last = stderr.lines().last().unwrap_or_default();
        assert!(
            last.starts_with("rawlink: error: ") && last.contains(needle),
            "{last}"
        );
        assert!(took < Duration::from_secs(5), "{args:?} took {took:?}");
    }
    signal(&server.child, Signal::SIGTERM);
    let (status, out, err) = server.wait(T);
    assert!(status.success(), "{err}");
    assert!(out.contains("rejected=3"), "{out}");
    assert_eq!(err.matches("authentication failed").count(), 2, "{err}");
    assert!(err.contains("TLS handshake failed"), "{err}");
}

#[test]
fn two_hundred_idle_connections_time_out_and_real_clients_are_served() {
    let d = tempfile::tempdir().unwrap();
    let token = token_file(d.path(), "t", "s3cret");
    let server = sim(
        20,
        150,
        1,
        &[
            "--token-file",
            &token,
            "--handshake-timeout",
            "1",
            "--max-pending",
            "300",
        ],
    );
    let addr = server.addr.to_string();
    let steady = spawn_receive(&[
        "--connect",
        &addr,
        "--sink",
        "null",
        "--quiet",
        "--token-file",
        &token,
    ]);
    std::thread::sleep(Duration::from_millis(300));
    let idle: Vec<std::net::TcpStream> = (0..200)
        .map(|_| std::net::TcpStream::connect(server.addr).unwrap())
        .collect();
    // A real client arriving during the flood still gets in.
    let late = spawn_receive(&[
        "--connect",
        &addr,
        "--sink",
        "null",
        "--quiet",
        "--token-file",
        &token,
        "--frames",
        "20",
    ]);
    let t = Instant::now();
    for mut s in idle {
        // Each is told why (a 1.0 client, which sends no hello, would be waiting to
        // read), then closed.
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got)
            .expect("idle connection closed by the server");
        let end = end_of(&got);
        assert_eq!(end.reason, rawlink_proto::EndReason::Unauthorized);
        assert_eq!(
            end.message,
            "handshake timeout: no client hello within 1.0 s (this server requires a token in a client hello)"
        );
    }
    let closed_after = t.elapsed();
    let late = finish(late, T);
    let steady = finish(steady, T);
    let (status, out, err) = server.wait(T);
    assert!(status.success(), "{err}");
    assert!(closed_after < Duration::from_secs(5), "{closed_after:?}");
    let s = summary_of(&steady);
    assert_eq!((field(&s, "frames"), field(&s, "missing")), (150, 0), "{s}");
    assert_eq!(field(&summary_of(&late), "frames"), 20);
    assert!(out.contains("rejected=200"), "{out}");
    assert_eq!(err.matches("handshake timeout").count(), 200);
}

#[test]
fn heartbeats_keep_an_idle_stream_alive_in_both_directions() {
    // 2.5 s between frames, 1 s peer timeouts on both sides: only heartbeats (200 ms
    // from the server, 1 s from the receiver) keep the connection.
    let server = sim(
        2500,
        2,
        1,
        &["--peer-timeout", "1.5", "--heartbeat-ms", "200"],
    );
    let o = finish(
        spawn_receive(&[
            "--connect",
            &server.addr.to_string(),
            "--sink",
            "null",
            "--peer-timeout",
            "1",
            "--no-reconnect",
        ]),
        T,
    );
    let (status, _, err) = server.wait(T);
    assert!(status.success(), "{err}");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s = summary_of(&o);
    assert_eq!(
        (field(&s, "frames"), field(&s, "reconnects")),
        (2, 0),
        "{s}"
    );
    assert!(!err.contains("presumed dead"), "{err}");
}

#[test]
fn a_silent_server_is_detected_by_the_peer_timeout() {
    let (addr, server) = fake_server(|mut s| {
        s.write_all(&encode(&[frame_msg(1)])).unwrap();
        // Then silence, with the connection open: a dead host looks like this.
        std::thread::sleep(Duration::from_secs(6));
    });
    let dir = tempfile::tempdir().unwrap();
    let t = Instant::now();
    let o = finish(
        spawn_receive(&[
            "--connect",
            &addr,
            "--out",
            dir.path().to_str().unwrap(),
            "--peer-timeout",
            "1",
            "--no-reconnect",
        ]),
        T,
    );
    let took = t.elapsed();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        stderr
            .lines()
            .last()
            .unwrap_or_default()
            .contains("no data from the server for 1.0 s"),
        "{stderr}"
    );
    assert!(took < Duration::from_secs(4), "{took:?}");
    assert_driver_frames(dir.path(), &[1]);
    server.join().unwrap();
}

#[test]
fn the_server_drops_a_client_whose_heartbeats_stop_and_one_that_stops_reading() {
    let server = Server::start(&[
        "--source",
        "sim",
        "--interval-ms",
        "10",
        "--frames",
        "600",
        "--peer-timeout",
        "1",
    ]);
    // A client that promises heartbeats every 200 ms, reads everything, sends nothing.
    let mut mute = std::net::TcpStream::connect(server.addr).unwrap();
    let mut hello = bytes::BytesMut::new();
    rawlink_proto::Encoder::encode(
        &rawlink_proto::Message::ClientHello(rawlink_proto::ClientHello {
            every: 1,
            heartbeat_ms: 200,
            ..Default::default()
        }),
        &mut hello,
    );
    mute.write_all(&hello).unwrap();
    mute.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let t = Instant::now();
    let mut got = Vec::new();
    let mut b = vec![0u8; 1 << 16];
    loop {
        match mute.read(&mut b) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&b[..n]),
        }
    }
    let mute_for = t.elapsed();
    // A client that connects and never reads: its socket buffers fill, writes stall.
    let stalled = std::net::TcpStream::connect(server.addr).unwrap();
    let (status, _, err) = server.wait(T);
    drop(stalled);
    assert!(status.success(), "{err}");
    // Served first, then told why it was dropped, after the last frame it was sent.
    let msgs = messages(&got);
    let last_frame = msgs
        .iter()
        .filter_map(|m| match m {
            rawlink_proto::Message::Frame(f) => Some(f.header.seq),
            _ => None,
        })
        .last()
        .expect("the mute client was served first");
    let end = end_of(&got);
    assert_eq!(end.reason, rawlink_proto::EndReason::Kicked, "{end:?}");
    assert_eq!(end.last_seq, last_frame);
    assert_eq!(
        end.message,
        "dropped: no heartbeat from the client for 1.0 s (--peer-timeout)"
    );
    assert!(
        mute_for >= Duration::from_millis(900) && mute_for < Duration::from_secs(5),
        "{mute_for:?}"
    );
    // Named with the client's address, and the disconnection with its reason.
    let mute_peer = mute.local_addr().unwrap().to_string();
    let line = err
        .lines()
        .find(|l| l.contains("no heartbeat from the client for 1.0 s"))
        .unwrap_or_else(|| panic!("{err}"));
    assert!(line.contains(&mute_peer), "{line}");
    assert!(
        err.lines().any(|l| l.contains(&mute_peer)
            && l.contains("client disconnected: dropped: no heartbeat within --peer-timeout")),
        "{err}"
    );
    assert!(err.contains("write stalled for 1.0 s"), "{err}");
}

/// A client that sends something other than heartbeats after its hello is dropped, and
/// told why in a `Kicked` end message; the server goes on serving others. The client
/// sends its offending bytes only once the frames it does not read have filled the
/// socket buffers, so the end message waits in the server's send queue behind them: had
/// the server closed with the client's bytes unread, the close would have been a reset,
/// which discards that queue, and the message would never arrive.
#[test]
fn a_client_that_sends_garbage_or_another_hello_is_told_it_was_kicked() {
    use rawlink_proto::{ClientHello, Encoder, EndReason, Message};
    let server = sim(20, 300, 1, &[]);
    let addr = server.addr.to_string();
    let steady = spawn_receive(&["--connect", &addr, "--sink", "null", "--quiet"]);
    let mut hello = bytes::BytesMut::new();
    Encoder::encode(
        &Message::ClientHello(ClientHello {
            every: 1,
            ..Default::default()
        }),
        &mut hello,
    );
    // Not a message, and more of it than the server reads before it gives up.
    let garbage = vec![0x5a; 256 * 1024];
    for (sent, want) in [
        (
            hello.to_vec(),
            "dropped: unexpected ClientHello (kind 5) message from the client",
        ),
        (garbage, "dropped: bad data from the client ("),
    ] {
        std::thread::sleep(Duration::from_millis(200));
        let mut c = std::net::TcpStream::connect(server.addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        c.write_all(&hello).unwrap();
        // Frames come every 20 ms (614 400 bytes each) and are not read.
        std::thread::sleep(Duration::from_millis(800));
        let writer = {
            let mut c = c.try_clone().unwrap();
            // The server stops reading: the rest of the write may fail, which is fine.
            std::thread::spawn(move || {
                let _ = c.write_all(&sent);
            })
        };
        std::thread::sleep(Duration::from_millis(300));
        let mut got = Vec::new();
        let t = Instant::now();
        c.read_to_end(&mut got).expect("closed, not reset");
        writer.join().unwrap();
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        assert!(
            got.len() > 4 << 20,
            "the buffers were full: {} bytes",
            got.len()
        );
        let end = end_of(&got);
        assert_eq!(end.reason, EndReason::Kicked, "{end:?}");
        assert!(end.message.starts_with(want), "{}", end.message);
    }
    let steady = finish(steady, T);
    let (status, _, err) = server.wait(T);
    assert!(status.success(), "{err}");
    assert_eq!(field(&summary_of(&steady), "frames"), 300, "{err}");
    assert_eq!(err.matches("disconnecting").count(), 2, "{err}");
}

/// Every whole message in `bytes`, decoded (the stream as a client would read it).
fn messages(bytes: &[u8]) -> Vec<rawlink_proto::Message> {
    let mut buf = bytes::BytesMut::from(bytes);
    let mut dec = rawlink_proto::Decoder::default();
    let mut out = Vec::new();
    while let Some(m) = dec.decode(&mut buf).unwrap() {
        out.push(m);
    }
    out
}

/// The end message closing `bytes`, which must be the stream's last message.
fn end_of(bytes: &[u8]) -> rawlink_proto::EndOfStream {
    match messages(bytes).pop() {
        Some(rawlink_proto::Message::EndOfStream(e)) => e,
        other => panic!("the stream does not end with an end message: {other:?}"),
    }
}

/// The last line of a receiver's stderr, checked to be a one-line error.
fn last_error(o: &std::process::Output) -> String {
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{stderr}");
    let last = stderr.lines().last().unwrap_or_default().to_string();
    assert!(last.starts_with("rawlink: error: "), "{stderr}");
    last
}

/// TLS on one side only, or a CA certificate served as the server's: each is named at
/// once, on both sides, instead of retrying or blaming --legacy.
#[test]
fn tls_on_one_side_only_and_a_ca_served_as_leaf_are_named_at_once() {
    let d = tempfile::tempdir().unwrap();
    let (ca, cert, key) = make_certs(d.path(), "m");
    let receive = |addr: &str, extra: &[&str]| timed_receive(addr, "1", extra);
    // A TLS receiver and a plaintext server.
    let plain = sim_server("127.0.0.1:0", &["--interval-ms", "20"]);
    let (o, took) = receive(&plain.addr.to_string(), &["--tls-ca", &ca]);
    let last = last_error(&o);
    assert!(
        last.contains("the server closed the connection during the TLS handshake: is it serving TLS? (start it with --tls-cert/--tls-key, or drop --tls-ca/--tls-insecure)"),
        "{last}"
    );
    assert!(took < Duration::from_secs(5), "retried for {took:?}");
    signal(&plain.child, Signal::SIGTERM);
    let (_, _, err) = plain.wait(T);
    assert!(
        err.contains("a client began a TLS handshake but this server has no --tls-cert"),
        "{err}"
    );
    assert!(!err.contains("--legacy"), "{err}");
    // A plaintext receiver and a TLS server.
    let tls = sim_server(
        "127.0.0.1:0",
        &[
            "--interval-ms",
            "20",
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--handshake-timeout",
            "1",
        ],
    );
    let addr = tls.addr.to_string();
    let (o, took) = receive(&addr, &[]);
    let last = last_error(&o);
    assert!(
        last.contains("the server speaks TLS: add --tls-ca PEM (or --tls-insecure)"),
        "{last}"
    );
    assert!(!last.contains("--legacy"), "{last}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    // A legacy receiver sends nothing: the TLS server gives up on its handshake and
    // closes without a byte, which is an error, not an empty success.
    let (o, _) = receive(&addr, &["--legacy", "--no-reconnect"]);
    let last = last_error(&o);
    assert!(
        last.contains("server closed the connection without sending a frame")
            && last.contains("drop --legacy and give --tls-ca"),
        "{last}"
    );
    signal(&tls.child, Signal::SIGTERM);
    tls.wait(T);
    // A TLS receiver and a legacy server, which sends bare frames at once.
    let legacy = sim_server("127.0.0.1:0", &["--interval-ms", "20", "--legacy"]);
    let (o, took) = receive(&legacy.addr.to_string(), &["--tls-ca", &ca]);
    let last = last_error(&o);
    assert!(
        last.contains("the server's answer is not TLS: is it a plaintext or --legacy server?"),
        "{last}"
    );
    assert!(took < Duration::from_secs(5), "took {took:?}");
    signal(&legacy.child, Signal::SIGTERM);
    legacy.wait(T);
    // A CA certificate served as the server's own.
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, SanType};
    let ca_key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    p.subject_alt_names
        .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = p.self_signed(&ca_key).unwrap();
    let (ca_pem, ca_key_pem) = (d.path().join("ca-leaf.pem"), d.path().join("ca-leaf.key"));
    std::fs::write(&ca_pem, ca_cert.pem()).unwrap();
    std::fs::write(&ca_key_pem, ca_key.serialize_pem()).unwrap();
    let (ca_pem, ca_key_pem) = (ca_pem.to_str().unwrap(), ca_key_pem.to_str().unwrap());
    let bad = sim_server(
        "127.0.0.1:0",
        &[
            "--interval-ms",
            "20",
            "--tls-cert",
            ca_pem,
            "--tls-key",
            ca_key_pem,
        ],
    );
    let (o, _) = receive(&bad.addr.to_string(), &["--tls-ca", ca_pem]);
    let last = last_error(&o);
    assert!(
        last.contains("the server's certificate is a CA certificate; serve a leaf certificate signed by the CA given to --tls-ca"),
        "{last}"
    );
    assert!(!last.contains("OtherError"), "{last}");
    signal(&bad.child, Signal::SIGTERM);
    bad.wait(T);
}

/// `demo --frames 0` whose receiver stops on a full disk ends, with the error, instead
/// of waiting for Ctrl-C.
#[test]
fn demo_without_a_frame_limit_ends_when_its_receiver_stops_on_a_disk_error() {
    let mnt = tempfile::tempdir().unwrap();
    let script = format!(
        "mount -t tmpfs -o size=2m rawlink-test {mnt} || exit 99; \
         timeout 50 {bin} demo --frames 0 --interval-ms 10 --no-http --quiet --out {mnt}/out",
        mnt = mnt.path().display(),
        bin = env!("CARGO_BIN_EXE_rawlink"),
    );
    let o = in_private_mounts(&script);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_ne!(o.status.code(), Some(99), "cannot mount a tmpfs: {stderr}");
    assert_ne!(
        o.status.code(),
        Some(124),
        "demo hung after the disk error: {stderr}"
    );
    let last = last_error(&o);
    assert!(last.contains("stopped by a disk error"), "{last}");
}

/// A server that accepts TCP and then says nothing: a TLS receiver's handshake, and a
/// plaintext receiver's wait for the first message, are held to `--connect-timeout`,
/// not to the (longer) peer timeout, and the error says why.
#[test]
fn connect_timeout_bounds_a_silent_server() {
    let d = tempfile::tempdir().unwrap();
    let (ca, _, _) = make_certs(d.path(), "s");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let held = Arc::new(std::sync::Mutex::new(Vec::new()));
    let keep = Arc::clone(&held);
    std::thread::spawn(move || {
        for s in listener.incoming().flatten() {
            keep.lock().unwrap().push(s); // held open, never answered
        }
    });
    // A TLS receiver with these timeouts: its last error line and how long it took.
    let attempt = |connect: &str, peer: &str| {
        let extra = [
            "--tls-ca",
            &ca,
            "--connect-timeout",
            connect,
            "--peer-timeout",
            peer,
        ];
        let (o, took) = timed_receive(&addr, "1", &extra);
        (last_error(&o), took)
    };
    let (last, took) = attempt("1.5", "30");
    assert!(
        last.contains(&format!("TLS handshake with {addr}: no answer within")),
        "{last}"
    );
    assert!(last.contains("gave up after"), "{last}");
    assert!(took < Duration::from_secs(6), "waited {took:?}");
    assert!(
        !held.lock().unwrap().is_empty(),
        "the receiver never connected"
    );
    // `--connect-timeout 0` is one attempt, which the peer timeout bounds.
    let (last, took) = attempt("0", "2");
    assert!(last.contains("no answer within 2.0 s"), "{last}");
    assert!(took >= Duration::from_secs(2), "waited {took:?}");
    // Without TLS the connection opens, but no rawlink server ever speaks: that too is
    // a failed first connection, given up on at --connect-timeout (it used to count as
    // connected, and was retried every --peer-timeout for ever).
    let (o, took) = timed_receive(
        &addr,
        "1",
        &["--connect-timeout", "1.5", "--peer-timeout", "30"],
    );
    let last = last_error(&o);
    assert!(
        last.contains(&format!(
            "{addr} accepted the connection but sent nothing within"
        )),
        "{last}"
    );
    assert!(
        last.contains("is it a rawlink server?") && last.contains("gave up after 1 attempt(s)"),
        "{last}"
    );
    assert!(took < Duration::from_secs(6), "waited {took:?}");
    // With a peer timeout shorter than that, each silent connection is one attempt.
    let (o, took) = timed_receive(
        &addr,
        "1",
        &["--connect-timeout", "2", "--peer-timeout", "0.5"],
    );
    let last = last_error(&o);
    assert!(last.contains("no data from the server for 0.5 s"), "{last}");
    assert!(
        !last.contains("gave up after 1 attempt(s)") && last.contains("gave up after"),
        "{last}"
    );
    assert!(took < Duration::from_secs(8), "waited {took:?}");
}

/// Bytes a client sent after its hello and that arrived with it (a slow network, or a
/// server slow to accept, delivers the hello and the first heartbeats together) are the
/// start of its next messages: the server keeps them, instead of reading on from the
/// middle of a heartbeat and dropping the client for bad data.
#[test]
fn heartbeats_that_arrive_with_the_hello_are_kept() {
    use rawlink_proto::{ClientHello, Decoder, Encoder, Message};
    let server = sim_server(
        "127.0.0.1:0",
        &[
            "--frames",
            "3",
            "--interval-ms",
            "50",
            "--wait-clients",
            "1",
        ],
    );
    let mut first = bytes::BytesMut::new();
    Encoder::encode(
        &Message::ClientHello(ClientHello {
            every: 1,
            heartbeat_ms: 1000,
            ..Default::default()
        }),
        &mut first,
    );
    // More than the server's first read (512 bytes): it ends inside a heartbeat.
    for _ in 0..8 {
        Encoder::encode(&Message::Heartbeat, &mut first);
    }
    assert!(first.len() > 600, "{}", first.len());
    let mut s = std::net::TcpStream::connect(server.addr).unwrap();
    s.write_all(&first).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut buf = bytes::BytesMut::new();
    let mut dec = Decoder::default();
    let mut frames = 0;
    let mut chunk = vec![0u8; 1 << 16];
    'read: loop {
        while let Some(m) = dec.decode(&mut buf).unwrap() {
            match m {
                Message::Frame(_) => frames += 1,
                Message::EndOfStream(_) => break 'read,
                _ => {}
            }
        }
        let n = s.read(&mut chunk).unwrap();
        assert!(
            n > 0,
            "closed after {frames} frame(s), before the end of the stream"
        );
        buf.extend_from_slice(&chunk[..n]);
    }
    drop(s);
    let (status, _, err) = server.wait(T);
    assert!(status.success(), "{err}");
    assert_eq!(frames, 3, "{err}");
    assert!(!err.contains("bad data"), "{err}");
}

/// A server that accepts and then refuses (`--max-clients` reached) is retried with the
/// backoff and given up on after `--reconnect-timeout`, not reconnected to in a tight
/// loop (which made thousands of connections a second and never gave up).
#[test]
fn a_busy_server_is_retried_with_backoff_and_given_up_on() {
    let small = ["--max-clients", "1", "--width", "32", "--height", "32"];
    let server = sim(20, 500, 1, &small);
    let addr = server.addr.to_string();
    let held = tempfile::tempdir().unwrap();
    let first = receive_into(&server, held.path(), &["--save", "raw"]);
    // The server captures once its one client is in: the first frame on disk says the
    // slot is taken.
    wait_for_file(&held.path().join("frame_000001.raw"));
    let t = Instant::now();
    let second = spawn_receive(&[
        "--connect",
        &addr,
        "--sink",
        "null",
        "--quiet",
        "--reconnect-timeout",
        "1",
    ]);
    let o = finish(second, T);
    let took = t.elapsed();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.contains("server busy") && last.contains("gave up after"),
        "{last}"
    );
    let line = summary_of(&o);
    // 100 ms doubling (jittered) fits a handful of attempts in a second.
    assert!(field(&line, "reconnects") <= 10, "{line}");
    // The server streams for 10 s: the receiver gave up long before it ended.
    assert!(took < Duration::from_secs(6), "{took:?}");
    signal(&first, Signal::SIGTERM);
    let f = finish(first, T);
    assert!(f.status.success(), "{}", String::from_utf8_lossy(&f.stderr));
    signal(&server.child, Signal::SIGTERM);
    let _ = server.wait(T);
}

/// A connection closed before sending anything (a port probe) is not a client: it does
/// not start a `--wait-clients` capture, so the receiver that comes next gets every frame.
#[test]
fn a_connection_closed_before_its_hello_is_not_a_client() {
    let server = sim(50, 3, 1, &["--width", "32", "--height", "32"]);
    for _ in 0..3 {
        drop(std::net::TcpStream::connect(server.addr).unwrap());
    }
    std::thread::sleep(Duration::from_millis(600));
    let addr = server.addr.to_string();
    let o = finish(
        spawn_receive(&["--connect", &addr, "--sink", "null", "--quiet"]),
        T,
    );
    let line = summary_of(&o);
    assert_eq!(
        (field(&line, "frames"), field(&line, "missing")),
        (3, 0),
        "{line}"
    );
    let (status, out, err) = server.wait(T);
    assert!(status.success(), "{err}");
    assert!(out.contains("clients=1 "), "{out}");
}

/// Stopping a server whose lossless client is behind (a source that can wait: the sim
/// at full speed) loses no frame silently: what the server captured is either received
/// or reported dropped to the client, and the receiver counts the tail as missing.
#[test]
fn frames_captured_when_the_server_is_stopped_are_received_or_reported() {
    let server = sim(
        0,
        1_000_000,
        1,
        &[
            "--width",
            "256",
            "--height",
            "256",
            "--client-buffer-mb",
            "1",
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let rx = receive_into(
        &server,
        dir.path(),
        &["--no-reconnect", "--workers", "1", "--queue", "1"],
    );
    wait_for_file(&dir.path().join("frame_000001.raw"));
    std::thread::sleep(Duration::from_millis(1000));
    signal(&server.child, Signal::SIGTERM);
    let (status, out, err) = server.wait(T);
    assert!(status.success(), "{err}");
    let o = finish(rx, T);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let served = out
        .lines()
        .find(|l| l.starts_with("serve summary: "))
        .unwrap_or_else(|| panic!("{out}"));
    let line = summary_of(&o);
    let (captured, dropped) = (field(served, "frames"), field(served, "dropped"));
    assert_eq!(
        field(&line, "frames") + field(&line, "server_drops"),
        captured,
        "{served}\n{line}"
    );
    assert_eq!(field(&line, "server_drops"), dropped, "{served}\n{line}");
    assert_eq!(field(&line, "missing"), dropped, "{served}\n{line}");
    assert_eq!(field(&line, "written"), field(&line, "frames"), "{line}");
}

/// Ctrl-C in `demo`: the server finishes the stream and the receiver reads on to its
/// end, so every frame captured is written or reported dropped (before, the receiver
/// stopped at the signal and the frames in flight were lost without a count).
#[test]
fn demo_interrupted_writes_every_frame_it_captured() {
    let dir = tempfile::tempdir().unwrap();
    let child = bin()
        .args([
            "demo",
            "--frames",
            "0",
            "--interval-ms",
            "2",
            "--no-http",
            "--quiet",
        ])
        .args(["--width", "256", "--height", "256", "--out"])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(2000));
    signal(&child, Signal::SIGINT);
    let o = finish(child, T);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let line = summary_of(&o);
    let demo = out
        .lines()
        .find(|l| l.starts_with("demo: ") && l.contains(" frames captured, "))
        .unwrap_or_else(|| panic!("{out}"));
    let captured: u64 = demo.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(captured > 5, "{demo}");
    assert_eq!(
        field(&line, "written") + field(&line, "server_drops"),
        captured,
        "{demo}\n{line}"
    );
    assert_eq!(field(&line, "written"), field(&line, "frames"), "{line}");
    let files = names(dir.path());
    for ext in [".raw", ".png"] {
        let n = files.iter().filter(|f| f.ends_with(ext)).count() as u64;
        assert_eq!(n, field(&line, "written"), "{ext} files: {files:?}");
    }
}

/// A second signal stops a server at once, while the first is still waiting for a client
/// that does not read to take the end of the stream.
#[test]
fn a_second_signal_stops_at_once() {
    let server = sim(2, 1_000_000, 1, &["--peer-timeout", "0"]);
    // A 1.0 client (no hello) that never reads: the server's writes to it stall.
    let stalled = std::net::TcpStream::connect(server.addr).unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    let mut server = server;
    signal(&server.child, Signal::SIGINT);
    std::thread::sleep(Duration::from_millis(1000));
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "the first signal is a graceful stop: the server still waits for its client"
    );
    let t = Instant::now();
    signal(&server.child, Signal::SIGINT);
    let (status, _, err) = server.wait(T);
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    assert_eq!(status.code(), Some(130), "{err}");
    assert!(err.contains("second signal"), "{err}");
    drop(stalled);
}

/// A receiver refused with "busy" closes its end of the connection as soon as it has the
/// end-of-stream message, not when its reconnect backoff (seconds, after a few
/// refusals) is over: a duplicated descriptor used to keep the socket open meanwhile.
#[test]
fn a_refused_receiver_closes_at_once_during_its_backoff() {
    use rawlink_proto::{EndOfStream, EndReason, Message};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let rx = spawn_receive(&[
        "--connect",
        &addr,
        "--sink",
        "null",
        "--quiet",
        "--reconnect-timeout",
        "60",
    ]);
    let busy = encode(&[Message::EndOfStream(EndOfStream {
        last_seq: 0,
        reason: EndReason::Busy,
        message: "server busy".into(),
    })]);
    let mut closed_after = Vec::new();
    // Backoff after refusals: 100 ms doubling, jittered to [d/2, d]; after the sixth it
    // is at least 1.6 s.
    for _ in 0..6 {
        let mut s = accept_within(&l, Duration::from_secs(20));
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut head = [0u8; 80];
        s.read_exact(&mut head).unwrap();
        let len = u32::from_le_bytes(head[56..60].try_into().unwrap()) as usize;
        s.read_exact(&mut vec![0u8; len]).unwrap();
        s.write_all(&busy).unwrap();
        let t = Instant::now();
        // Anything else the receiver sends (a heartbeat) is read past; EOF ends it.
        let mut sink = [0u8; 256];
        while s.read(&mut sink).map(|n| n > 0).unwrap_or(false) {}
        closed_after.push(t.elapsed());
    }
    signal(&rx, Signal::SIGTERM);
    let _ = finish(rx, T);
    let last = *closed_after.last().unwrap();
    assert!(
        last < Duration::from_millis(800),
        "closed {closed_after:?} after each refusal"
    );
}

/// On one connection the numbering never goes back: a repeated frame and a late one are
/// kept (nothing received is lost) but counted as protocol errors, not taken for a
/// server that restarted, and the sequence is tracked from the highest number seen.
#[test]
fn a_sequence_that_goes_back_on_one_connection_is_a_protocol_error() {
    let (addr, server) = fake_server(|mut s| {
        // Then a jump past 2^32 and back: each a new numbering, tracked from there
        // (one outlier must not make every later frame an error).
        let seqs = [1, 2, 2, 3, 5, 4, 6, 6 + (1 << 33), 7, 8];
        s.write_all(&encode(&seqs.map(frame_msg))).unwrap();
        s.write_all(&encode(&[end_msg(8)])).unwrap();
        std::thread::sleep(Duration::from_millis(200));
    });
    let dir = tempfile::tempdir().unwrap();
    let o = finish(
        spawn_receive(&[
            "--connect",
            &addr,
            "--out",
            dir.path().to_str().unwrap(),
            "--save",
            "raw",
            "--no-reconnect",
        ]),
        T,
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    let line = summary_of(&o);
    for (k, v) in [
        ("frames", 10),
        ("written", 10),
        ("protocol_errors", 2),
        ("missing", 1),
    ] {
        assert_eq!(field(&line, k), v, "{k} in {line}\n{err}");
    }
    assert!(!err.contains("restarted"), "{err}");
    assert_eq!(err.matches("sequence went back").count(), 2, "{err}");
    assert_eq!(err.matches("sequence jumped").count(), 2, "{err}");
    assert!(dir.path().join("frame_000002-1.raw").exists());
    server.join().unwrap();
}
