#!/usr/bin/env python3
"""ISP speed, rawlink against the peers named in the speed issue, measured in one run.

    pip install numpy opencv-python-headless && python3 scripts/bench_isp_peers.py [--iters 7] [--rounds 3]

Builds rawlink (cargo build --release) unless --bin names a binary. Prints medians (ms) for,
on this machine:
  - OpenCV cvtColor(COLOR_BayerBG2RGB) on a 16-bit RGGB frame at 640x480, 1920x1080, 3840x2160,
    with 1 and with 2 threads (each rawlink row is compared with OpenCV on its own thread
    count; the frame is uniform noise, which this data-independent kernel times as any other);
  - OpenCV bilateralFilter(d=9, sigmaColor=30, sigmaSpace=2) on a float32 3-channel 640x480 frame,
    2 threads;
  - `rawlink bench --json` for both profiles at the same sizes, 1 and 2 threads, and the
    default profile with `--demosaic malvar` on 2 threads;
  - the reference system's C++ ISP, reconstructed in scripts/reference_isp/ref_isp.cpp and
    built as a Release build would be (g++ -O3 -DNDEBUG -fopenmp), on a 640x480 sim:scene
    frame with 2 OpenMP threads, after checking its output byte for byte against the
    executable model ../shared/reference/seed_isp_ref.py (skipped, with a note, where g++
    or the model is missing);
and the ratios the issue asks for. The whole set is measured `--rounds` times, each round
measuring every peer and rawlink back to back, because this machine's clock moves by 2x over
minutes: each ratio is the median of the per-round ratios, never one figure from one moment
against another from minutes later.
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


class ReferenceCpp:
    """The reconstructed reference C++ ISP, built once and checked byte for byte against the
    executable model on a 640x480 sim:scene frame; `ms()` times it with 2 OpenMP threads.
    `exe` is None (with the reason printed) where it cannot be built or checked."""

    def __init__(self, rawlink, tmp):
        here = os.path.dirname(os.path.abspath(__file__))
        model = os.path.join(here, "..", "..", "shared", "reference", "seed_isp_ref.py")
        self.exe = None
        self.tmp = tmp
        if shutil.which("g++") is None:
            print("reference C++ ISP: skipped (no g++)")
            return
        exe = os.path.join(tmp, "ref_isp")
        subprocess.run(["g++", "-O3", "-DNDEBUG", "-fopenmp", os.path.join(here, "reference_isp", "ref_isp.cpp"),
                        "-o", exe], check=True)
        subprocess.run([rawlink, "demo", "--frames", "1", "--interval-ms", "0", "--no-http", "--source", "sim:scene",
                        "--out", os.path.join(tmp, "f")], check=True, capture_output=True)
        self.raw = os.path.join(tmp, "f", "frame_000001.raw")
        self.env = dict(os.environ, OMP_NUM_THREADS="2")
        subprocess.run([exe, self.raw, os.path.join(tmp, "cpp.ppm"), "640", "480", "1"], env=self.env,
                       check=True, capture_output=True)
        if not os.path.exists(model):
            print(f"reference C++ ISP: output not checked ({model} not found)")
        else:
            subprocess.run([sys.executable, model, self.raw, os.path.join(tmp, "py.png"), "--width", "640",
                            "--height", "480", "--ppm", os.path.join(tmp, "py.ppm")], check=True)
            with open(os.path.join(tmp, "cpp.ppm"), "rb") as x, open(os.path.join(tmp, "py.ppm"), "rb") as y:
                if x.read() != y.read():
                    print("reference C++ ISP: output differs from the model; not timed")
                    return
            print("reference C++ ISP: output identical to the model, byte for byte")
        self.exe = exe

    def ms(self, iters):
        out = subprocess.run([self.exe, self.raw, os.path.join(self.tmp, "cpp.ppm"), "640", "480", str(iters)],
                             env=self.env, check=True, capture_output=True, text=True).stdout
        return float(out.split()[-1])


def rawlink_runs(a):
    """One round of `rawlink bench --json`: both profiles, 1 and 2 threads, every size, then the
    default profile with Malvar (the fastest demosaic that passes the quality issue's bar for the
    default, >= 37.5 dB) on 2 threads: how far a faster demosaic alone gets."""
    sizes = ",".join(f"{w}x{h}" for w, h in SIZES)
    out = subprocess.run([a.bin, "bench", "--json", "--threads", "1,2", "--iters", str(a.iters), "--sizes", sizes],
                         check=True, capture_output=True, text=True).stdout
    res = json.loads(out)
    out = subprocess.run([a.bin, "bench", "--json", "--threads", "2", "--iters", str(a.iters),
                          "--profiles", "default", "--demosaic", "malvar", "--sizes", sizes],
                         check=True, capture_output=True, text=True).stdout
    for r in json.loads(out):
        r["profile"] = "default (malvar)"
        res.append(r)
    return {(r["size"], r["profile"], r["threads"]): r for r in res}


def med(v):
    return statistics.median(v)


def spread(v, fmt="{:.2f}"):
    return " / ".join(fmt.format(x) for x in v)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, default=7)
    ap.add_argument("--rounds", type=int, default=3,
                    help="rounds, each measuring every peer and rawlink once, back to back; figures are "
                         "medians over the rounds, ratios the medians of the per-round ratios")
    ap.add_argument("--bin", help="the rawlink binary to time (default: build target/release/rawlink)")
    a = ap.parse_args()
    if a.rounds < 1 or a.iters < 1:
        ap.error("--rounds and --iters must be at least 1")
    if a.bin is None:
        root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=root, check=True)
        a.bin = os.path.join(root, "target", "release", "rawlink")
    cv2.setNumThreads(2)
    rng = np.random.default_rng(1)
    print(f"OpenCV {cv2.__version__}, {cv2.getNumThreads()} threads; numpy {np.__version__}")
    mosaics = {f"{w}x{h}": rng.integers(0, 4096, size=(h, w), dtype=np.uint16) for w, h in SIZES}
    img = rng.random((480, 640, 3), dtype=np.float32) * 4095
    with tempfile.TemporaryDirectory() as tmp:
        cpp = ReferenceCpp(a.bin, tmp)
        rounds = []
        for i in range(a.rounds):
            peers = {}
            for t in (1, 2):
                cv2.setNumThreads(t)
                peers.update({(k, t): median_ms(lambda m=m: cv2.cvtColor(m, cv2.COLOR_BayerBG2RGB), a.iters)
                              for k, m in mosaics.items()})
            cv2.setNumThreads(2)
            bil = median_ms(lambda: cv2.bilateralFilter(img, 9, 30, 2), a.iters)
            runs = rawlink_runs(a)
            ref_cpp = cpp.ms(a.iters) if cpp.exe else None
            rounds.append((peers, bil, runs, ref_cpp))
            print(f"round {i + 1} of {a.rounds}: OpenCV bilinear "
                  + ", ".join(f"{k} x{t} {v:.2f} ms" for (k, t), v in peers.items())
                  + f"; bilateralFilter {bil:.2f} ms"
                  + (f"; reference C++ ISP {ref_cpp:.2f} ms" if ref_cpp else ""), flush=True)
    keys = list(rounds[0][2].keys())
    print()
    print(f"medians over {a.rounds} rounds of {a.iters} timed runs each; the ratio is the median of the per-round ratios")
    print()
    print("| size | profile | threads | rawlink ms | MP/s | peak RSS MB | OpenCV bilinear ms (same threads) | ratio rawlink/OpenCV |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for k in keys:
        size = k[0]
        ms = [r[2][k]["total_ms_median"] for r in rounds]
        cv = [r[0][(size, min(k[2], 2))] for r in rounds]
        mp = [r[2][k]["mp_per_s"] for r in rounds]
        rss = max(r[2][k]["peak_rss_mb"] for r in rounds)
        ratio = med([x / y for x, y in zip(ms, cv)])
        print(f"| {size} | {k[1]} | {k[2]} | {med(ms):.2f} | {med(mp):.1f} | {rss:.0f} | {med(cv):.2f} | {ratio:.1f}× |")
    print()
    key = ("640x480", "reference", 2)
    ref = [r[2][key]["total_ms_median"] for r in rounds]
    den = [r[2][key]["stages_ms"]["denoise"] for r in rounds]
    bil = [r[1] for r in rounds]
    print(f"reference profile 640x480 x2: {med(ref):.2f} ms total ({spread(ref)}), bilateral {med(den):.2f} ms; "
          f"OpenCV bilateralFilter {med(bil):.2f} ms ({spread(bil)}): "
          f"{med([x / y for x, y in zip(ref, bil)]):.2f}× "
          f"(the bilateral alone {med([x / y for x, y in zip(den, bil)]):.2f}×)")
    if cpp.exe:
        c = [r[3] for r in rounds]
        fast = [x / y for x, y in zip(c, ref)]
        print(f"reference C++ ISP (reconstruction, Release build, 2 threads), 640x480: {med(c):.2f} ms ({spread(c)}); "
              f"rawlink's reference profile is {med(fast):.1f}× faster ({spread(fast, '{:.1f}')}; "
              f"the issue's figure: 205 ms)")
    for prof in ("reference", "default"):
        s = [r[2][("3840x2160", prof, 1)]["total_ms_median"] / r[2][("3840x2160", prof, 2)]["total_ms_median"]
             for r in rounds]
        print(f"thread scaling 4K {prof}: {med(s):.2f}× ({spread(s)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
