//! Bounded soak: a server at full rate (640x480 RAW12 every 5 ms, ~123 MB/s per client)
//! with two steady receivers and a third that keeps connecting and disconnecting,
//! cleanly or by SIGKILL. Samples the server's and a receiver's RSS, open file
//! descriptors and threads, and the server's live tokio tasks, and asserts they stay
//! flat. `RAWLINK_SOAK_SECS` sets the length (default 90 s).

mod common;

use common::*;
use nix::sys::signal::Signal;
use std::io::{BufRead, BufReader};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    rss_kb: u64,
    fds: usize,
    threads: u64,
}

fn sample(pid: u32) -> Sample {
    Sample {
        rss_kb: proc_status(pid, "VmRSS"),
        fds: fd_count(pid),
        threads: proc_status(pid, "Threads"),
    }
}

fn max_of<T: Copy + Ord>(v: &[Sample], f: impl Fn(&Sample) -> T) -> T {
    v.iter().map(f).max().unwrap()
}

/// Asserts that nothing grew between the early and the late part of the run.
fn assert_flat(who: &str, s: &[Sample], rss_slack_kb: u64) {
    let q = s.len() / 4;
    let (early, late) = (&s[q..2 * q], &s[3 * q..]);
    let (e_rss, l_rss) = (max_of(early, |x| x.rss_kb), max_of(late, |x| x.rss_kb));
    let (e_fd, l_fd) = (max_of(early, |x| x.fds), max_of(late, |x| x.fds));
    let (e_th, l_th) = (max_of(early, |x| x.threads), max_of(late, |x| x.threads));
    eprintln!("{who}: rss {e_rss} -> {l_rss} kB, fds {e_fd} -> {l_fd}, threads {e_th} -> {l_th}");
    assert!(l_rss <= e_rss + rss_slack_kb, "{who} RSS grew: {s:?}");
    assert!(l_fd <= e_fd + 2, "{who} leaks file descriptors: {s:?}");
    assert!(l_th <= e_th, "{who} leaks threads: {s:?}");
}

#[test]
fn soak_memory_descriptors_threads_and_tasks_stay_flat() {
    let secs: u64 = std::env::var("RAWLINK_SOAK_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(90);
    // A long --peer-timeout: at the end the server waits that long for each client to
    // read what is still in flight, and on a loaded 2-core machine the debug-build
    // `--compress` receiver can need ~10 s to drain its socket buffers; cut off, it
    // would take the reset for a fault and keep reconnecting to a server that is gone.
    let mut server = Server::start(&[
        "--source",
        "sim",
        "--interval-ms",
        "5",
        "--stats-interval",
        "1",
        "--peer-timeout",
        "30",
    ]);
    // Drain the server's log as it goes, keeping the live-task counts.
    let tasks: Arc<Mutex<Vec<(Instant, u64)>>> = Arc::default();
    let log = BufReader::new(server.child.stderr.take().unwrap());
    let t2 = tasks.clone();
    let drain = std::thread::spawn(move || {
        let mut lines = 0u64;
        for line in log.lines().map_while(Result::ok) {
            lines += 1;
            if let Some(v) = line.split("tasks=").nth(1) {
                if let Ok(n) = v.trim().parse() {
                    t2.lock().unwrap().push((Instant::now(), n));
                }
            }
        }
        lines
    });
    let addr = server.addr.to_string();
    let steady = spawn_receive(&[
        "--connect",
        &addr,
        "--sink",
        "null",
        "--quiet",
        "--stats-interval",
        "0",
    ]);
    let live = spawn_receive(&[
        "--connect",
        &addr,
        "--sink",
        "null",
        "--quiet",
        "--policy",
        "latest",
        "--compress",
        "--stats-interval",
        "0",
    ]);
    let start = Instant::now();
    let end = start + Duration::from_secs(secs);
    let (mut srv, mut rx) = (Vec::new(), Vec::new());
    let mut churn = 0u64;
    let mut next_sample = Instant::now() + Duration::from_secs(2);
    while Instant::now() < end {
        // A client that comes and goes: every other one is killed mid-stream.
        let c = spawn_receive(&[
            "--connect",
            &addr,
            "--sink",
            "null",
            "--quiet",
            "--frames",
            "40",
            "--stats-interval",
            "0",
        ]);
        std::thread::sleep(Duration::from_millis(150));
        if churn % 2 == 1 {
            signal(&c, Signal::SIGKILL);
        }
        let _ = finish(c, Duration::from_secs(30));
        churn += 1;
        if Instant::now() >= next_sample {
            srv.push(sample(server.child.id()));
            rx.push(sample(steady.id()));
            next_sample += Duration::from_secs(2);
        }
    }
    signal(&server.child, Signal::SIGTERM);
    let steady = finish(steady, Duration::from_secs(60));
    let live = finish(live, Duration::from_secs(60));
    let (status, out, _) = server.wait(Duration::from_secs(60));
    let log_lines = drain.join().unwrap();
    assert!(status.success(), "{out}");
    assert!(steady.status.success() && live.status.success());
    let s = summary_of(&steady);
    let frames = field(&s, "frames");
    eprintln!("soak: {secs} s, {churn} churn clients, {frames} frames to the steady receiver ({log_lines} server log lines); {s}");
    assert!(
        frames as f64 >= secs as f64 * 100.0,
        "the steady receiver kept up: {s}"
    );
    assert_eq!(field(&s, "missing"), 0, "{s}");
    assert_eq!(field(&s, "server_drops"), 0, "{s}");
    assert!(churn >= secs / 2, "only {churn} churn clients");
    assert!(srv.len() >= 8, "too few samples: {}", srv.len());
    // Frames in flight move RSS by a few frames (0.6 MB each); a leak of one frame
    // per churn client would add far more than this slack over the run.
    assert_flat("server", &srv, 24 * 1024);
    assert_flat("receiver", &rx, 16 * 1024);
    let t = tasks.lock().unwrap();
    assert!(t.len() >= 8, "too few task counts: {}", t.len());
    let q = t.len() / 4;
    let early = t[q..2 * q].iter().map(|x| x.1).max().unwrap();
    let late = t[3 * q..].iter().map(|x| x.1).max().unwrap();
    eprintln!("server tasks: {early} -> {late}");
    assert!(late <= early + 2, "server tasks leak: {:?}", *t);
}
