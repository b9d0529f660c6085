//! Per-client flow control: policies, isolation of slow clients, decimation.
//! Real processes on 127.0.0.1.

mod common;

use common::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::time::Duration;

const T: Duration = Duration::from_secs(90);

fn field(summary: &str, key: &str) -> u64 {
    summary
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key} in {summary:?}"))
        .parse::<f64>()
        .unwrap() as u64
}

fn summary_line(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.starts_with("summary:"))
        .unwrap_or_else(|| panic!("no summary: {}", String::from_utf8_lossy(&out.stderr)))
        .to_string()
}

fn signal(child: &std::process::Child, sig: Signal) {
    kill(Pid::from_raw(child.id() as i32), sig).unwrap();
}

#[test]
fn latest_policy_drops_only_for_the_slow_client() {
    let frames = 60u64;
    let server = Server::start(&[
        "--frames",
        &frames.to_string(),
        "--interval-ms",
        "10",
        "--wait-clients",
        "2",
        "--client-queue",
        "2",
    ]);
    let addr = server.addr.to_string();
    let fast = spawn_receive(&["--connect", &addr, "--policy", "latest", "--sink", "null"]);
    let slow = spawn_receive(&["--connect", &addr, "--policy", "latest", "--sink", "null"]);
    std::thread::sleep(Duration::from_millis(300));
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

    let f = summary_line(&fast_out);
    assert_eq!(field(&f, "frames"), frames, "{f}");
    assert_eq!(field(&f, "server_drops"), 0, "{f}");
    assert_eq!(field(&f, "missing"), 0, "{f}");
    let s = summary_line(&slow_out);
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
    let slow = spawn_receive(&["--connect", &addr, "--sink", "null"]);
    std::thread::sleep(Duration::from_millis(300));
    signal(&slow, Signal::SIGSTOP);
    std::thread::sleep(Duration::from_millis(1500));
    signal(&slow, Signal::SIGCONT);
    let fast_out = finish(fast, T);
    let slow_out = finish(slow, T);
    assert!(fast_out.status.success() && slow_out.status.success());
    assert!(server.wait(T).0.success());
    for o in [&fast_out, &slow_out] {
        let s = summary_line(o);
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
    let s = summary_line(&c);
    assert!((2..=4).contains(&field(&s, "frames")), "{s}");
}
