#!/usr/bin/env python3
"""ISP speed, rawlink against the peers named in the speed issue, measured in one run.

    pip install numpy opencv-python-headless && python3 scripts/bench_isp_peers.py [--iters 7]

Prints medians (ms) for, on this machine and with 2 threads:
  - OpenCV cvtColor(COLOR_BayerBG2RGB) on a 16-bit RGGB frame at 640x480, 1920x1080, 3840x2160;
  - OpenCV bilateralFilter(d=9, sigmaColor=30, sigmaSpace=2) on a float32 3-channel 640x480 frame;
  - `rawlink bench --json` for both profiles at the same sizes, 1 and 2 threads, and the
    default profile with `--demosaic malvar` on 2 threads;
  - the reference system's C++ ISP, reconstructed in scripts/reference_isp/ref_isp.cpp and
    built as a Release build would be (g++ -O3 -DNDEBUG -fopenmp), on a 640x480 sim:scene
    frame with 2 OpenMP threads, after checking its output byte for byte against the
    executable model ../shared/reference/seed_isp_ref.py (skipped, with a note, where g++
    or the model is missing);
and the ratios the issue asks for.
"""
import argparse
import json
import os
import statistics
import shutil
import subprocess
import sys
import tempfile
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


def reference_cpp_ms(rawlink, iters):
    """Median ms of the reconstructed reference C++ ISP on a 640x480 sim:scene frame with
    2 threads, or None (with the reason printed) where it cannot be built or checked."""
    here = os.path.dirname(os.path.abspath(__file__))
    model = os.path.join(here, "..", "..", "shared", "reference", "seed_isp_ref.py")
    if shutil.which("g++") is None:
        print("reference C++ ISP: skipped (no g++)")
        return None
    with tempfile.TemporaryDirectory() as tmp:
        exe = os.path.join(tmp, "ref_isp")
        subprocess.run(["g++", "-O3", "-DNDEBUG", "-fopenmp", os.path.join(here, "reference_isp", "ref_isp.cpp"),
                        "-o", exe], check=True)
        subprocess.run([rawlink, "demo", "--frames", "1", "--interval-ms", "0", "--no-http", "--source", "sim:scene",
                        "--out", os.path.join(tmp, "f")], check=True, capture_output=True)
        raw = os.path.join(tmp, "f", "frame_000001.raw")
        env = dict(os.environ, OMP_NUM_THREADS="2")
        out = subprocess.run([exe, raw, os.path.join(tmp, "cpp.ppm"), "640", "480", str(iters)], env=env,
                             check=True, capture_output=True, text=True).stdout
        if not os.path.exists(model):
            print(f"reference C++ ISP: output not checked ({model} not found)")
        else:
            subprocess.run([sys.executable, model, raw, os.path.join(tmp, "py.png"), "--width", "640",
                            "--height", "480", "--ppm", os.path.join(tmp, "py.ppm")], check=True)
            with open(os.path.join(tmp, "cpp.ppm"), "rb") as a, open(os.path.join(tmp, "py.ppm"), "rb") as b:
                if a.read() != b.read():
                    print("reference C++ ISP: output differs from the model; not timed")
                    return None
            print("reference C++ ISP: output identical to the model, byte for byte")
        return float(out.split()[-1])


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
    # The default profile with Malvar, the fastest demosaic that passes the quality issue's
    # bar for the default (>= 37.5 dB), 2 threads: how far a faster demosaic alone gets.
    out = subprocess.run([a.bin, "bench", "--json", "--threads", "2", "--iters", str(a.iters),
                          "--profiles", "default", "--demosaic", "malvar",
                          "--sizes", ",".join(f"{w}x{h}" for w, h in SIZES)],
                         check=True, capture_output=True, text=True).stdout
    for r in json.loads(out):
        r["profile"] = "default (malvar)"
        res.append(r)
    print()
    print("| size | profile | threads | rawlink ms | MP/s | peak RSS MB | OpenCV bilinear ms | ratio rawlink/OpenCV |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for r in res:
        cv = peers[r["size"]]
        print(f"| {r['size']} | {r['profile']} | {r['threads']} | {r['total_ms_median']:.2f} | {r['mp_per_s']:.1f} | "
              f"{r['peak_rss_mb']:.0f} | {cv:.2f} | {r['total_ms_median'] / cv:.1f}× |")
    ref = next(r for r in res if r["size"] == "640x480" and r["profile"] == "reference" and r["threads"] == 2)
    print()
    cpp = reference_cpp_ms(a.bin, a.iters)
    print(f"reference profile 640x480 x2: {ref['total_ms_median']:.2f} ms total, bilateral {ref['stages_ms']['denoise']:.2f} ms; "
          f"vs OpenCV bilateralFilter {bil:.2f} ms: {ref['total_ms_median'] / bil:.2f}× "
          f"(the bilateral alone {ref['stages_ms']['denoise'] / bil:.2f}×)")
    if cpp is not None:
        print(f"reference C++ ISP (reconstruction, Release build, 2 threads), 640x480: {cpp:.2f} ms; "
              f"rawlink's reference profile is {cpp / ref['total_ms_median']:.1f}× faster (the issue's figure: 205 ms)")
    for prof in ("reference", "default"):
        r1 = next(r for r in res if r["size"] == "3840x2160" and r["profile"] == prof and r["threads"] == 1)
        r2 = next(r for r in res if r["size"] == "3840x2160" and r["profile"] == prof and r["threads"] == 2)
        print(f"thread scaling 4K {prof}: {r1['total_ms_median'] / r2['total_ms_median']:.2f}×")
    return 0


if __name__ == "__main__":
    sys.exit(main())
