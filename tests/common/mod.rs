//! Helpers for the integration tests: real `rawlink` processes on 127.0.0.1.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const W: usize = 640;
pub const H: usize = 480;
pub const FRAME_BYTES: usize = W * H * 2;

pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_rawlink"));
    c.env("RAWLINK_LOG", "info");
    c
}

pub fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

/// A server process and the address it listens on.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    stdout: BufReader<std::process::ChildStdout>,
}

impl Server {
    /// Starts `rawlink serve --listen 127.0.0.1:0 ARGS` and reads its address.
    pub fn start(args: &[&str]) -> Server {
        Self::start_at("127.0.0.1:0", args)
    }

    /// Starts `rawlink serve --listen LISTEN ARGS` and reads its address.
    pub fn start_at(listen: &str, args: &[&str]) -> Server {
        let mut child = bin()
            .arg("serve")
            .args(["--listen", listen])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn rawlink serve");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).expect("read listen line");
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .parse()
            .unwrap();
        Server {
            child,
            addr,
            stdout,
        }
    }

    /// Waits for exit (with a timeout) and returns status, stdout rest and stderr.
    pub fn wait(mut self, timeout: Duration) -> (std::process::ExitStatus, String, String) {
        let status = wait_timeout(&mut self.child, timeout);
        let mut out = String::new();
        self.stdout.read_to_string(&mut out).ok();
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            e.read_to_string(&mut err).ok();
        }
        (status, out, err)
    }
}

/// Waits for a child, killing it and failing the test after `timeout`.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if start.elapsed() > timeout {
            child.kill().ok();
            panic!("process did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Spawns `rawlink receive ARGS` with piped output.
pub fn spawn_receive(args: &[&str]) -> Child {
    bin()
        .arg("receive")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn rawlink receive")
}

/// `rawlink receive --connect SERVER --out DIR --quiet EXTRA…`, started.
pub fn receive_into(server: &Server, dir: &Path, extra: &[&str]) -> Child {
    let addr = server.addr.to_string();
    let mut args = vec![
        "--connect",
        &addr,
        "--out",
        dir.to_str().unwrap(),
        "--quiet",
    ];
    args.extend_from_slice(extra);
    spawn_receive(&args)
}

/// Collects a child's output after it exits (with a timeout).
pub fn finish(mut child: Child, timeout: Duration) -> Output {
    let status = wait_timeout(&mut child, timeout);
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    child.stdout.take().map(|mut s| s.read_to_end(&mut stdout));
    child.stderr.take().map(|mut s| s.read_to_end(&mut stderr));
    Output {
        status,
        stdout,
        stderr,
    }
}

/// The reference driver's frame `n` as bytes.
pub fn driver_frame(n: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(FRAME_BYTES);
    for i in 0..H as u64 {
        for j in 0..W as u64 {
            let s = (((i + j + n * 10) * 16) % 4096) as u16;
            v.extend_from_slice(&s.to_le_bytes());
        }
    }
    v
}

/// Decodes a PNG, returning (width, height, color type, pixels).
pub fn read_png(path: &Path) -> (u32, u32, png::ColorType, Vec<u8>) {
    let dec = png::Decoder::new(std::fs::File::open(path).unwrap());
    let mut r = dec.read_info().unwrap();
    let mut buf = vec![0; r.output_buffer_size()];
    let info = r.next_frame(&mut buf).unwrap();
    buf.truncate(info.buffer_size());
    (info.width, info.height, info.color_type, buf)
}

/// Asserts that `dir` holds raw+png+json for exactly the given sequence numbers.
pub fn assert_frame_files(dir: &Path, seqs: &[u64]) {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut want: Vec<String> = seqs
        .iter()
        .flat_map(|s| ["json", "png", "raw"].map(|ext| format!("frame_{s:06}.{ext}")))
        .collect();
    want.sort();
    assert_eq!(names, want, "files in {}", dir.display());
    for s in seqs {
        let (w, h, ct, _) = read_png(&dir.join(format!("frame_{s:06}.png")));
        assert_eq!((w, h, ct), (W as u32, H as u32, png::ColorType::Rgb));
        let j: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join(format!("frame_{s:06}.json"))).unwrap())
                .unwrap();
        assert_eq!(j["seq"], *s);
        assert_eq!(j["width"], W);
        assert!(j["processing_ms"].as_f64().unwrap() > 0.0);
        assert!(j["receive_time_ns"].as_u64().unwrap() > 0);
    }
}

/// Asserts the files for `seqs` exist (as [`assert_frame_files`]) and that each
/// `frame_NNNNNN.raw` is the driver's frame `NNNNNN` byte for byte.
pub fn assert_driver_frames(dir: &Path, seqs: &[u64]) {
    assert_frame_files(dir, seqs);
    for &n in seqs {
        let raw = std::fs::read(dir.join(format!("frame_{n:06}.raw"))).unwrap();
        assert!(
            raw == driver_frame(n),
            "frame_{n:06}.raw is not the driver's frame {n}"
        );
    }
}

/// What a [`Proxy`] does with one server → client message.
pub enum Verdict {
    /// Send it on (possibly modified).
    Forward,
    /// Send the (possibly truncated) bytes, then stop forwarding and, once released,
    /// close the client's connection.
    CutAndHold,
}

/// A protocol-aware TCP proxy on 127.0.0.1 for fault injection. Client → server bytes
/// pass unchanged; server → client messages go through `tamper(connection, frame_index,
/// kind, bytes)` (`frame_index` counts frames on that connection from 1, 0 for other kinds).
pub struct Proxy {
    pub addr: SocketAddr,
    held: std::sync::Arc<std::sync::atomic::AtomicBool>,
    release: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

type Tamper = dyn Fn(usize, u64, u8, &mut Vec<u8>) -> Verdict + Send + Sync;

impl Proxy {
    pub fn start(upstream: SocketAddr, tamper: std::sync::Arc<Tamper>) -> Proxy {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::Arc;
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let held = Arc::new(AtomicBool::new(false));
        let release = Arc::new(AtomicBool::new(false));
        let (h2, r2) = (held.clone(), release.clone());
        std::thread::spawn(move || {
            for (conn, down) in l.incoming().enumerate() {
                let Ok(mut down) = down else { continue };
                let Ok(mut up) = std::net::TcpStream::connect(upstream) else {
                    continue;
                };
                let (mut down_r, mut up_w) = (down.try_clone().unwrap(), up.try_clone().unwrap());
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut down_r, &mut up_w);
                    let _ = up_w.shutdown(std::net::Shutdown::Write);
                });
                let (tamper, held, release) = (tamper.clone(), h2.clone(), r2.clone());
                std::thread::spawn(move || {
                    let mut frames = 0u64;
                    loop {
                        let mut msg = vec![0u8; 80];
                        if up.read_exact(&mut msg).is_err() {
                            break;
                        }
                        let len = u32::from_le_bytes(msg[56..60].try_into().unwrap()) as usize;
                        msg.resize(80 + len, 0);
                        if up.read_exact(&mut msg[80..]).is_err() {
                            break;
                        }
                        let kind = msg[8];
                        let index = if kind == 2 {
                            frames += 1;
                            frames
                        } else {
                            0
                        };
                        let verdict = tamper(conn, index, kind, &mut msg);
                        if std::io::Write::write_all(&mut down, &msg).is_err() {
                            break;
                        }
                        if let Verdict::CutAndHold = verdict {
                            held.store(true, Ordering::SeqCst);
                            while !release.load(Ordering::SeqCst) {
                                std::thread::sleep(Duration::from_millis(10));
                            }
                            break;
                        }
                    }
                    let _ = down.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        Proxy {
            addr,
            held,
            release,
        }
    }

    /// Waits until a `CutAndHold` verdict has been applied.
    pub fn wait_held(&self, timeout: Duration) {
        let t = Instant::now();
        while !self.held.load(std::sync::atomic::Ordering::SeqCst) {
            assert!(t.elapsed() < timeout, "the proxy never reached its cut");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Lets a held connection close.
    pub fn release(&self) {
        self.release
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// The next connection on `l`, or a panic naming the wait if none comes within
/// `timeout` (a receiver that exited early must fail the test, not hang it).
pub fn accept_within(l: &std::net::TcpListener, timeout: Duration) -> std::net::TcpStream {
    l.set_nonblocking(true).unwrap();
    let deadline = std::time::Instant::now() + timeout;
    let s = loop {
        match l.accept() {
            Ok((s, _)) => break s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "nobody connected to {:?} within {timeout:?}",
                    l.local_addr()
                );
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("accept: {e}"),
        }
    };
    s.set_nonblocking(false).unwrap();
    l.set_nonblocking(false).unwrap();
    s
}

/// A free TCP port on 127.0.0.1 (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `/proc/PID/status` field in kB (e.g. `VmRSS`, `VmHWM`) or count (`Threads`).
pub fn proc_status(pid: u32, field: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// Open file descriptors of a process.
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// A `key=value` number from a summary line.
pub fn field(line: &str, key: &str) -> u64 {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key} in {line}"))
        .parse::<f64>()
        .unwrap() as u64
}

/// The receiver's summary line from its stdout.
pub fn summary_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.contains("summary: "))
        .unwrap_or_else(|| {
            panic!(
                "no summary; stdout {} stderr {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        })
        .to_string()
}

/// Sends a signal to a child.
pub fn signal(child: &Child, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), sig).unwrap();
}

/// Reads a child's stdout lines until `live view: http://ADDR/`; returns ADDR and the
/// rest of the output.
pub fn live_addr(child: &mut Child) -> (SocketAddr, BufReader<std::process::ChildStdout>) {
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    for _ in 0..10 {
        line.clear();
        out.read_line(&mut line).unwrap();
        if let Some(rest) = line.trim().strip_prefix("live view: http://") {
            return (rest.trim_end_matches('/').parse().unwrap(), out);
        }
    }
    panic!("no live view line; last: {line:?}");
}

/// `rawlink demo` streaming `sim:scene` at 10 fps until killed, writing into `out`, with
/// the live view on a free loopback port; returns the process and the view's address.
pub fn live_demo(out: &Path) -> (Child, SocketAddr) {
    let mut child = bin()
        .args([
            "demo",
            "--source",
            "sim:scene",
            "--frames",
            "0",
            "--interval-ms",
            "100",
        ])
        .args(["--http", "127.0.0.1:0", "--quiet"])
        .arg("--out")
        .arg(out)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn rawlink demo");
    let (addr, _) = live_addr(&mut child);
    (child, addr)
}

/// Waits (up to 60 s) until `path` exists.
pub fn wait_for_file(path: &Path) {
    let t = Instant::now();
    while !path.exists() {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
