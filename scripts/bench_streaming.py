#!/usr/bin/env python3
"""Streaming figures for docs/BENCHMARKS.md, all on loopback (127.0.0.1), in one run.

    python3 scripts/bench_streaming.py [--seconds 5]      (needs iperf3: apt-get install iperf3)

1. Throughput: iperf3 single-stream loopback, then 3840x2160 RAW12 sim frames as fast as
   the sim makes them to one `receive --sink null` (CRC checked), plain, --pack, --compress.
2. Many clients: 32 receivers (`--policy latest --sink null`) of 640x480 at 30 fps; then the
   same with one of them stopped (SIGSTOP) for the whole run.
3. Latency: one client, 640x480 at 30 fps, capture->receive p50/p99.
"""
import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
BIN = os.path.join(HERE, "..", "target", "release", "rawlink")


def serve(*args):
    p = subprocess.Popen([BIN, "serve", "--listen", "127.0.0.1:0", "--stats-interval", "0", *args],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = p.stdout.readline()
    addr = line.strip().removeprefix("listening on ")
    return p, addr


def receive(addr, *args):
    # A receiver whose server is gone for good gives up after 3 s instead of reconnecting
    # forever (the stalled client below is disconnected by the server's peer timeout).
    return subprocess.Popen([BIN, "receive", "--connect", addr, "--stats-interval", "0",
                             "--reconnect-timeout", "3", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def summary(p, timeout=120):
    out, _ = p.communicate(timeout=timeout)
    line = next((l for l in out.splitlines() if "summary:" in l), "")
    return {k: float(v) for k, v in re.findall(r"(\w[\w/]*)=([0-9.]+)", line)}


def iperf(seconds):
    port = "5299"
    s = subprocess.Popen(["iperf3", "-s", "-1", "-B", "127.0.0.1", "-p", port],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    out = subprocess.run(["iperf3", "-c", "127.0.0.1", "-p", port, "-t", str(seconds), "-J"],
                         capture_output=True, text=True, check=True).stdout
    s.wait(timeout=10)
    return json.loads(out)["end"]["sum_received"]["bits_per_second"] / 8


def throughput(seconds, extra):
    p, addr = serve("--width", "3840", "--height", "2160", "--interval-ms", "0", "--wait-clients", "1",
                    "--client-queue", "4")
    # Lossless: the unpaced sim (--interval-ms 0) waits for the client instead of
    # rendering frames that a latest-policy queue would drop.
    r = receive(addr, "--sink", "null", "--policy", "lossless", "--frames", "1000000", *extra)
    time.sleep(seconds)
    r.send_signal(signal.SIGINT)
    s = summary(r)
    p.send_signal(signal.SIGINT)
    p.wait(timeout=30)
    wire = s.get("bytes", 0) / max(s.get("seconds", 1e-9), 1e-9)
    return s, wire


def many(seconds, stall):
    frames = int(30 * (seconds + 3))
    p, addr = serve("--fps", "30", "--frames", str(frames), "--wait-clients", "32")
    rs = [receive(addr, "--sink", "null", "--policy", "latest") for _ in range(32)]
    if stall:
        # After every client has connected (capture starts at 32), stop one of them.
        time.sleep(3.0)
        rs[0].send_signal(signal.SIGSTOP)
    p.wait(timeout=seconds * 4 + 60)
    if stall:
        rs[0].send_signal(signal.SIGCONT)
    sums = [summary(r) for r in rs]
    others = sums[1:] if stall else sums
    return frames, sums, others


def throughput_table(a):
    # iperf3 on this shared machine varies a lot from run to run: measure it and the
    # plain 4K stream in back-to-back pairs and take medians, of the ratio too.
    pairs = []
    for i in range(a.rounds):
        ip = iperf(a.seconds)
        s, rate = throughput(a.seconds, [])
        pairs.append((ip, rate, s.get("fps", 0)))
        print(f"round {i + 1}: iperf3 {ip / 1e6:.0f} MB/s, rawlink 4K plain {s.get('fps', 0):.1f} fps "
              f"{rate / 1e6:.0f} MB/s = {rate / ip * 100:.0f} %")
    med = statistics.median
    ip = med([p[0] for p in pairs])
    ratio = med([p[1] / p[0] for p in pairs])
    print(f"\n| transfer | frames/s | payload MB/s | vs iperf3 (median {ip / 1e6:.0f} MB/s) |")
    print("|---|---:|---:|---:|")
    print(f"| 4K RAW12 plain (median of {a.rounds}) | {med([p[2] for p in pairs]):.1f} | "
          f"{med([p[1] for p in pairs]) / 1e6:.0f} | {ratio * 100:.0f} % (median of the per-round ratios) |")
    for name, extra in [("--pack", ["--pack"]), ("--compress", ["--compress"])]:
        s, rate = throughput(a.seconds, extra)
        print(f"| 4K RAW12 {name} | {s.get('fps', 0):.1f} | {rate / 1e6:.0f} | {rate / ip * 100:.0f} % |")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--rounds", type=int, default=3,
                    help="iperf3 / rawlink pairs, run back to back; medians are reported")
    ap.add_argument("--skip-throughput", action="store_true", help="only the many-client and latency runs")
    ap.add_argument("--only-throughput", action="store_true", help="only the iperf3 / 4K throughput table")
    a = ap.parse_args()
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=os.path.join(HERE, ".."), check=True)
    print(f"machine: {os.cpu_count()} cores")

    if not a.skip_throughput:
        throughput_table(a)
    if a.only_throughput:
        return 0

    for stall in (False, True):
        frames, sums, others = many(a.seconds, stall)
        drops = sum(s.get("server_drops", 0) + s.get("missing", 0) for s in others)
        got = [s.get("frames", 0) for s in others]
        p99 = max(s.get("recv_latency_ms_p99", 0) for s in others)
        label = "one stalled (SIGSTOP)" if stall else "all running"
        extra = ""
        if stall:
            extra = f"; stalled client: frames={sums[0].get('frames', 0):.0f} server_drops={sums[0].get('server_drops', 0):.0f}"
        print(f"32 clients, 640x480 @30 fps, {frames} frames, {label}: others received {min(got):.0f}..{max(got):.0f}, "
              f"drops+gaps {drops:.0f}, worst p99 capture->receive {p99:.2f} ms{extra}")

    p, addr = serve("--fps", "30", "--frames", str(int(30 * a.seconds)), "--wait-clients", "1")
    s = summary(receive(addr, "--sink", "null"))
    p.wait(timeout=60)
    print(f"latency, one client, 640x480 @30 fps: capture->receive p50 {s.get('recv_latency_ms_p50', 0):.2f} ms, "
          f"p99 {s.get('recv_latency_ms_p99', 0):.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
