#!/usr/bin/env python3
"""The receiver's frame rate with and without live-view browsers watching.

    cargo build --release && python3 scripts/bench_live.py [--rounds 3] [--viewers 4]

For each case, `rawlink serve --source sim:scene` streams to one
`rawlink receive --sink null --http 127.0.0.1:0`, first with nobody watching, then with
N WebSocket viewers reading the live view as fast as it comes (a minimal client here:
handshake, then read and count bytes). Rounds alternate the two so that drift on a
shared machine hits both; medians are printed.

Cases: 640x480 paced at 30 fps (the rate must hold, with no drops or gaps) and 640x480
unpaced, lossless (as fast as the two cores allow: this shows what the view's ISP work
costs at saturation).
"""
import argparse
import base64
import os
import re
import socket
import statistics
import subprocess
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
BIN = os.path.join(HERE, "..", "target", "release", "rawlink")


def serve(*args):
    p = subprocess.Popen([BIN, "serve", "--listen", "127.0.0.1:0", "--stats-interval", "0",
                          "--source", "sim:scene", "--wait-clients", "1", *args],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    addr = p.stdout.readline().strip().removeprefix("listening on ")
    return p, addr


def viewer(addr, stop, counts, i):
    host, port = addr.rsplit(":", 1)
    s = socket.create_connection((host, int(port)))
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall((f"GET /api/streams/0/ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    s.settimeout(1.0)
    n = 0
    while not stop.is_set():
        try:
            b = s.recv(1 << 20)
        except socket.timeout:
            continue
        if not b:
            break
        n += len(b)
    counts[i] = n
    s.close()


def run(viewers, serve_args, frames):
    p, addr = serve(*serve_args, "--frames", str(frames))
    r = subprocess.Popen([BIN, "receive", "--connect", addr, "--sink", "null", "--policy", "lossless",
                          "--frames", str(frames), "--stats-interval", "0", "--http", "127.0.0.1:0"],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    http = r.stdout.readline().strip().removeprefix("live view: http://").rstrip("/")
    stop = threading.Event()
    counts = [0] * viewers
    ts = [threading.Thread(target=viewer, args=(http, stop, counts, i)) for i in range(viewers)]
    for t in ts:
        t.start()
    out = r.communicate(timeout=600)[0]
    stop.set()
    for t in ts:
        t.join()
    p.wait(timeout=30)
    line = next(l for l in out.splitlines() if l.startswith("summary:"))
    f = dict(kv.split("=", 1) for kv in line.split()[1:])
    return {k: float(v) for k, v in f.items() if re.fullmatch(r"[0-9.]+", v)}, sum(counts)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--viewers", type=int, default=4)
    a = ap.parse_args()
    cases = [
        ("640x480 at 30 fps, 300 frames", ["--fps", "30"], 300),
        ("640x480 unpaced, 3000 frames", ["--interval-ms", "0"], 3000),
    ]
    print(f"| case | viewers | receiver fps (median of {a.rounds}) | missing + server drops | "
          f"capture->receive p99 ms | bytes to viewers |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, args, frames in cases:
        res = {0: [], a.viewers: []}
        for _ in range(a.rounds):
            for v in (0, a.viewers):
                res[v].append(run(v, args, frames))
        for v, rs in res.items():
            fps = statistics.median(s["fps"] for s, _ in rs)
            lost = max(s["missing"] + s["server_drops"] for s, _ in rs)
            p99 = statistics.median(s["recv_latency_ms_p99"] for s, _ in rs)
            sent = statistics.median(b for _, b in rs)
            print(f"| {name} | {v} | {fps:.1f} | {lost:.0f} | {p99:.2f} | {sent / 1e6:.1f} MB |", flush=True)


if __name__ == "__main__":
    main()
