#!/usr/bin/env python3
"""Regenerate the reference-ISP golden test data in tests/data/.

    python3 scripts/make_golden.py [--oracle PATH] [--out DIR] [--all-ppm] [--skip-expf-check]

Needs python3 with numpy, pillow and scikit-image (pip install numpy pillow scikit-image).
Deterministic: the same inputs give the same bytes on every run.

For every case it writes
    <name>.raw      headerless little-endian uint16 RGGB mosaic, W*H samples, row-major
    <name>.ref.png  the oracle's 8-bit RGB PNG output
    <name>.ref.ppm  the oracle's full-depth output (P6, maxval 4095, 16-bit big-endian)
by running the oracle (default /work/shared/reference/seed_isp_ref.py) as
    python3 ORACLE IN.raw OUT.png --width W --height H --bits 12 --black 64 --ppm OUT.ppm

The sim_640x480_n1 PPM is 1.8 MB, so by default it is produced in a temporary folder and
only its SHA-256 is printed (tests/data stays under ~2 MB); --all-ppm keeps it in DIR too.

Cases:
  astronaut_256x192_rggb12  crop of skimage.data.astronaut() (public domain, NASA)
  coffee_256x192_rggb12     crop of skimage.data.coffee()    (CC0, Rachel Michetti)
  sim_640x480_n1            driver formula ((i + j + n*10) * 16) % 4096, n = 1
  noise_7x5                 numpy.random.default_rng(1) uniform integers 0..4095, 7 wide x 5 high

Photo -> mosaic: 8-bit sRGB / 255 -> linear light via the sRGB EOTF (IEC 61966-2-1) in
float64 -> scaled so linear 1.0 = 4095 - 64 -> + black level 64 -> keep the channel of each
RGGB site (even row/even col R, even row/odd col G, odd row/even col G, odd row/odd col B)
-> np.rint (round half to even) -> clip 0..4095 -> '<u2'.

Unless --skip-expf-check is given, the oracle is also run once with --expf model on the
astronaut input (into a temporary folder) and its PNG and PPM must equal the --expf auto
ones byte for byte.
"""
import argparse
import hashlib
import os
import subprocess
import sys
import tempfile

import numpy as np

BITS = 12
BLACK = 64
WHITE = (1 << BITS) - 1          # 4095
CROP_W, CROP_H = 256, 192

# Source photos: skimage loader, crop origin (x0 = first column, y0 = first row) and the
# SHA-256 of the PNG as listed in skimage/data/_registry.py (checked so a different
# scikit-image release cannot silently change the goldens).
PHOTOS = [
    # flag stripes, orange suit, helmet ring, dark collar, white fabric
    ("astronaut", "astronaut.png", 40, 150,
     "88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5"),
    # cup rim, crema, red-brown glaze, handle, specular spoon
    ("coffee", "coffee.png", 190, 110,
     "cc02f8ca188b167c775a7101b5d767d1e71792cf762c33d6fa15a4599b5a8de7"),
]


def srgb_to_linear(v8):
    """sRGB EOTF (IEC 61966-2-1) of 8-bit code values, float64 in [0, 1]."""
    c = v8.astype(np.float64) / 255.0
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def mosaic_rggb12(rgb8):
    """12-bit RGGB Bayer mosaic (uint16) of an 8-bit sRGB image of shape (H, W, 3)."""
    lin = srgb_to_linear(rgb8)
    scaled = lin * float(WHITE - BLACK) + float(BLACK)
    h, w, _ = rgb8.shape
    chan = np.empty((h, w), dtype=np.intp)
    chan[0::2, 0::2] = 0   # R
    chan[0::2, 1::2] = 1   # G (red rows)
    chan[1::2, 0::2] = 1   # G (blue rows)
    chan[1::2, 1::2] = 2   # B
    samp = np.take_along_axis(scaled, chan[..., None], axis=2)[..., 0]
    return np.clip(np.rint(samp), 0, WHITE).astype(np.uint16)


def sim_frame(width, height, n):
    """Driver formula: pixel (row i, col j) = ((i + j + n*10) * 16) % 4096."""
    i = np.arange(height, dtype=np.int64)[:, None]
    j = np.arange(width, dtype=np.int64)[None, :]
    return (((i + j + n * 10) * 16) % 4096).astype(np.uint16)


def noise_frame(width, height, seed):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 4096, size=(height, width), dtype=np.uint16)   # 0..4095


def load_photo(fname, sha256):
    import skimage
    from PIL import Image
    path = os.path.join(os.path.dirname(skimage.__file__), "data", fname)
    with open(path, "rb") as fh:
        blob = fh.read()
    got = hashlib.sha256(blob).hexdigest()
    if got != sha256:
        sys.exit(f"error: {path}: sha256 {got}, expected {sha256}")
    img = np.asarray(Image.open(path).convert("RGB"))
    return img


def write_raw(path, frame):
    with open(path, "wb") as fh:
        fh.write(np.ascontiguousarray(frame, dtype="<u2").tobytes())


def run_oracle(oracle, raw, png, ppm, width, height, expf=None):
    cmd = [sys.executable, oracle, raw, png, "--width", str(width), "--height", str(height),
           "--bits", str(BITS), "--black", str(BLACK), "--ppm", ppm]
    if expf:
        cmd += ["--expf", expf]
    subprocess.run(cmd, check=True)


def read_bytes(path):
    with open(path, "rb") as fh:
        return fh.read()


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--oracle", default="/work/shared/reference/seed_isp_ref.py")
    ap.add_argument("--out", default=os.path.join(here, "..", "tests", "data"))
    ap.add_argument("--all-ppm", action="store_true",
                    help="also keep the 1.8 MB sim_640x480_n1.ref.ppm in the output folder")
    ap.add_argument("--skip-expf-check", action="store_true")
    a = ap.parse_args()
    out = os.path.normpath(a.out)
    os.makedirs(out, exist_ok=True)

    cases = []   # (name, frame, keep_ppm)
    for name, fname, x0, y0, sha in PHOTOS:
        img = load_photo(fname, sha)
        crop = img[y0:y0 + CROP_H, x0:x0 + CROP_W]
        assert crop.shape == (CROP_H, CROP_W, 3), (name, crop.shape)
        cases.append((f"{name}_{CROP_W}x{CROP_H}_rggb12", mosaic_rggb12(crop), True))
    cases.append(("sim_640x480_n1", sim_frame(640, 480, 1), a.all_ppm))
    cases.append(("noise_7x5", noise_frame(7, 5, 1), True))

    def sha(path):
        return hashlib.sha256(read_bytes(path)).hexdigest()

    for name, frame, keep_ppm in cases:
        h, w = frame.shape
        raw = os.path.join(out, name + ".raw")
        png = os.path.join(out, name + ".ref.png")
        write_raw(raw, frame)
        with tempfile.TemporaryDirectory() as td:
            ppm = os.path.join(out if keep_ppm else td, name + ".ref.ppm")
            run_oracle(a.oracle, raw, png, ppm, w, h)
            print(f"{name} ({w}x{h})")
            print(f"  {sha(raw)}  {name}.raw")
            print(f"  {sha(png)}  {name}.ref.png")
            print(f"  {sha(ppm)}  {name}.ref.ppm{'' if keep_ppm else '  (not kept)'}")

    if not a.skip_expf_check:
        name, frame, _ = cases[0]
        h, w = frame.shape
        with tempfile.TemporaryDirectory() as td:
            png = os.path.join(td, "model.png")
            ppm = os.path.join(td, "model.ppm")
            run_oracle(a.oracle, os.path.join(out, name + ".raw"), png, ppm, w, h, "model")
            same_png = read_bytes(png) == read_bytes(os.path.join(out, name + ".ref.png"))
            same_ppm = read_bytes(ppm) == read_bytes(os.path.join(out, name + ".ref.ppm"))
        print(f"expf check on {name}: --expf model vs auto: png "
              f"{'identical' if same_png else 'DIFFERENT'}, ppm "
              f"{'identical' if same_ppm else 'DIFFERENT'}")
        if not (same_png and same_ppm):
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
