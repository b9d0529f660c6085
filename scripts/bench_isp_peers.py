#!/usr/bin/env python3
"""ISP speed, rawlink against the peers named in the speed issue, measured in one run.

    pip install numpy opencv-python-headless && python3 scripts/bench_isp_peers.py [--iters 7]

Prints medians (ms) for, on this machine and with 2 threads:
  - OpenCV cvtColor(COLOR_BayerBG2RGB) on a 16-bit RGGB frame at 640x480, 1920x1080, 3840x2160;
  - OpenCV bilateralFilter(d=9, sigmaColor=30, sigmaSpace=2) on a float32 3-channel 640x480 frame;
  - `rawlink bench --json` for both profiles at the same sizes, 1 and 2 threads;
and the ratios the issue asks for.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import cv2
import numpy as np

SIZES = [(640, 480), (1920, 1080), (3840, 2160)]


def median_ms(fn, iters):
    fn()
    t = []
    for _ in range(iters):
        s = time.perf_counter()
        fn()
        t.append((time.perf_counter() - s) * 1e3)
    return statistics.median(t)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, default=7)
    ap.add_argument("--bin", default=os.path.join(os.path.dirname(__file__), "..", "target", "release", "rawlink"))
    a = ap.parse_args()
    cv2.setNumThreads(2)
    rng = np.random.default_rng(1)
    print(f"OpenCV {cv2.__version__}, {cv2.getNumThreads()} threads; numpy {np.__version__}")
    peers = {}
    for w, h in SIZES:
        m = rng.integers(0, 4096, size=(h, w), dtype=np.uint16)
        peers[f"{w}x{h}"] = median_ms(lambda: cv2.cvtColor(m, cv2.COLOR_BayerBG2RGB), a.iters)
        print(f"opencv cvtColor BayerBG2RGB u16 {w}x{h}: {peers[f'{w}x{h}']:.2f} ms")
    img = rng.random((480, 640, 3), dtype=np.float32) * 4095
    bil = median_ms(lambda: cv2.bilateralFilter(img, 9, 30, 2), a.iters)
    print(f"opencv bilateralFilter d=9 float32 3ch 640x480: {bil:.2f} ms")
    out = subprocess.run([a.bin, "bench", "--json", "--threads", "1,2", "--iters", str(a.iters),
                          "--sizes", ",".join(f"{w}x{h}" for w, h in SIZES)],
                         check=True, capture_output=True, text=True).stdout
    res = json.loads(out)
    print()
    print("| size | profile | threads | rawlink ms | MP/s | peak RSS MB | OpenCV bilinear ms | ratio rawlink/OpenCV |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for r in res:
        cv = peers[r["size"]]
        print(f"| {r['size']} | {r['profile']} | {r['threads']} | {r['total_ms_median']:.2f} | {r['mp_per_s']:.1f} | "
              f"{r['peak_rss_mb']:.0f} | {cv:.2f} | {r['total_ms_median'] / cv:.1f}× |")
    ref = next(r for r in res if r["size"] == "640x480" and r["profile"] == "reference" and r["threads"] == 2)
    print()
    print(f"reference profile 640x480 x2: {ref['total_ms_median']:.2f} ms total, bilateral {ref['stages_ms']['denoise']:.2f} ms; "
          f"vs OpenCV bilateralFilter {bil:.2f} ms: {ref['total_ms_median'] / bil:.2f}×; vs the reference C++ ISP's 205 ms "
          f"(issue figure, not measured here): {205 / ref['total_ms_median']:.1f}× faster")
    for prof in ("reference", "default"):
        r1 = next(r for r in res if r["size"] == "3840x2160" and r["profile"] == prof and r["threads"] == 1)
        r2 = next(r for r in res if r["size"] == "3840x2160" and r["profile"] == prof and r["threads"] == 2)
        print(f"thread scaling 4K {prof}: {r1['total_ms_median'] / r2['total_ms_median']:.2f}×")
    return 0


if __name__ == "__main__":
    sys.exit(main())
