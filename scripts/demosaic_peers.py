#!/usr/bin/env python3
"""PSNR of peer demosaic implementations on the photo crops in tests/data/photos/.

    python3 scripts/demosaic_peers.py [--photos DIR] [--patterns rggb,bggr,grbg,gbrg] [--markdown]
    python3 scripts/demosaic_peers.py --make-crops [--photos DIR]

Needs: numpy, pillow (always); opencv-python-headless, colour-demosaicing (measuring);
scikit-image (only for --make-crops). Install with
    pip install numpy pillow scikit-image opencv-python-headless colour-demosaicing

Protocol (rawlink's Rust tests implement the same one; keep them in sync):

  1. P = the 8-bit RGB photo, H x W x 3 uint8 (the PNG code values as stored; no colour
     management, no linearisation, no black level).
  2. Ground truth T = round(P * 4095 / 255), integers 0..4095 (12-bit codes). Computed
     exactly as (2*P*4095 + 255) // 510; P*4095/255 is never exactly x.5, so the rounding
     mode does not matter.
  3. Mosaic M (H x W, 12-bit): keep one channel of T per pixel. The pattern names the
     top-left 2x2 cell read row by row; e.g. RGGB: (even y, even x) = R, (even, odd) = G,
     (odd, even) = G, (odd, odd) = B. BGGR, GRBG, GBRG likewise.
  4. Demosaic M with the peer -> estimate E in 12-bit code units.
  5. PSNR = 10*log10(4095^2 / MSE), MSE over all 3 channels of all pixels, excluding an
     8-pixel border on every side. Reported per image and as the mean of the per-image PSNRs.

Peers:
  * OpenCV cv2.cvtColor COLOR_Bayer??2RGB (bilinear) on the uint16 mosaic.
  * OpenCV COLOR_Bayer??2RGB_VNG. OpenCV's VNG only accepts 8-bit input, so it is fed the
    8-bit mosaic round(M*255/4095) (which equals the photo's own 8-bit values at each site)
    and its 8-bit output is multiplied by 4095/255 (float, not rounded) before the PSNR.
  * OpenCV COLOR_Bayer??2RGB_EA (edge-aware) on the uint16 mosaic.
  * colour-demosaicing demosaicing_CFA_Bayer_bilinear / _Malvar2004 / _Menon2007 (default
    refining_step=True) on the float mosaic M/4095; the output is multiplied by 4095 and
    CLIPPED to 0..4095 before the PSNR (Malvar and Menon overshoot at edges).
  OpenCV's outputs are integers already saturated to the input type's range.

Timing: for each method and pattern, after one untimed warm-up call, all images are
demosaiced once per repetition, 3 repetitions; reported is the median over the repetitions of (wall time / number of images),
in ms, measured around the peer call including its small input/output conversions
(dtype casts, /4095, *4095, clip). OpenCV runs with its default thread count (printed).

--make-crops rebuilds the PNGs from the images bundled in the installed scikit-image wheel
(skimage/data/, no download). Each source file's SHA-256 is checked against both the value
hard-coded below and skimage/data/_registry.py, and each crop's pixel data (raw RGB bytes,
row-major) against the SHA-256 hard-coded below, so a different scikit-image / decoder
release cannot silently change the test images.
"""
import argparse
import hashlib
import os
import statistics
import sys
import time
import warnings

import numpy as np
from PIL import Image

WHITE = 4095
BORDER = 8
CROP_W, CROP_H = 320, 240
REPEATS = 3

# name, skimage/data file, crop origin x0 (column), y0 (row), SHA-256 of the source file
# (as in skimage/data/_registry.py), SHA-256 of the crop's raw RGB bytes, licence.
PHOTOS = [
    ("astronaut", "astronaut.png", 10, 240,
     "88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5",
     "359b89d03fdc39fd6b2b9677c63e532618cfb1416c08d644851a2056afc4781e",
     "public domain (NASA; Eileen Collins portrait, NASA Great Images)"),
    ("chelsea", "chelsea.png", 120, 40,
     "596aa1e7cb875eb79f437e310381d26b338a81c2da23439704a73c4651e8c4bb",
     "f5c8c22129c70dcd240a00737367c66d9fe8333a98e323657b0e091e3583235f",
     "CC0 (photographer Stefan van der Walt)"),
    ("coffee", "coffee.png", 240, 150,
     "cc02f8ca188b167c775a7101b5d767d1e71792cf762c33d6fa15a4599b5a8de7",
     "d29a9416025bb23dc65c32ce65489e039557e5442f190961611f48d3e8e04a4e",
     "CC0 (photographer Rachel Michetti; courtesy of Pikolo Espresso Bar)"),
    ("rocket", "rocket.jpg", 20, 180,
     "c2dd0de7c538df8d111e479619b129464d0269d0ae5fd18ca91d33a7fdfea95c",
     "9670a5e241715e059cddf998bff4f64a2b573174266ef76c4340338ca9eff760",
     "public domain (SpaceX; DSCOVR on Falcon 9 launch photo)"),
]

PATTERNS = ("rggb", "bggr", "grbg", "gbrg")

# Verified mapping (empirically, by verify_mappings() below, which runs on every
# measurement): our pattern (top-left 2x2 cell, row by row) -> OpenCV code stem.
# OpenCV's legacy names describe the 2nd row's 2nd/3rd pixels, so RGGB is "BayerBG"
# (OpenCV >= 4.6 also has the alias COLOR_BayerRGGB2RGB == COLOR_BayerBG2RGB).
# Verified with OpenCV 5.0.0 (opencv-python-headless 5.0.0.93):
#   RGGB -> BayerBG, BGGR -> BayerRG, GRBG -> BayerGB, GBRG -> BayerGR
# (for ..2RGB, ..2RGB_VNG and ..2RGB_EA alike).
CV2_STEM = {"rggb": "BayerBG", "bggr": "BayerRG", "grbg": "BayerGB", "gbrg": "BayerGR"}
# colour-demosaicing's pattern strings name the top-left 2x2 cell row by row, i.e. the same
# convention as ours (verified with colour-demosaicing 0.2.7): rggb -> "RGGB" etc.
COLOUR_PAT = {p: p.upper() for p in PATTERNS}


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def pixel_sha256(rgb):
    return hashlib.sha256(np.ascontiguousarray(rgb, dtype=np.uint8).tobytes()).hexdigest()


# ---------------------------------------------------------------------------- crops

def make_crops(outdir):
    import skimage
    from skimage.data._registry import registry

    datadir = os.path.join(os.path.dirname(skimage.__file__), "data")
    os.makedirs(outdir, exist_ok=True)
    ok = True
    for name, fname, x0, y0, src_sha, crop_sha, _lic in PHOTOS:
        src = os.path.join(datadir, fname)
        if not os.path.isfile(src):
            sys.exit(f"{src}: not bundled in this scikit-image wheel")
        got = sha256_file(src)
        reg = registry.get("data/" + fname)
        if got != src_sha or reg != src_sha:
            sys.exit(f"{src}: SHA-256 {got}, registry {reg}, expected {src_sha}")
        with Image.open(src) as im:
            rgb = np.asarray(im.convert("RGB"), dtype=np.uint8)
        crop = rgb[y0:y0 + CROP_H, x0:x0 + CROP_W]
        assert crop.shape == (CROP_H, CROP_W, 3), (name, crop.shape)
        psha = pixel_sha256(crop)
        if crop_sha is not None and psha != crop_sha:
            print(f"ERROR {name}: crop pixel SHA-256 {psha} != expected {crop_sha}",
                  file=sys.stderr)
            ok = False
        out = os.path.join(outdir, name + ".png")
        Image.fromarray(crop, "RGB").save(out, format="PNG", compress_level=9)
        print(f"{out}: {fname} crop x0={x0} y0={y0} w={CROP_W} h={CROP_H} "
              f"pixels sha256={psha} ({os.path.getsize(out)} bytes)")
    if not ok:
        sys.exit(1)


def load_photos(photodir):
    known = {p[0]: p[5] for p in PHOTOS}
    names = sorted(f for f in os.listdir(photodir) if f.lower().endswith(".png"))
    if not names:
        sys.exit(f"no .png files in {photodir} (run with --make-crops)")
    photos = []
    for f in names:
        with Image.open(os.path.join(photodir, f)) as im:
            if im.mode != "RGB":
                sys.exit(f"{f}: mode {im.mode}, expected 8-bit RGB")
            rgb = np.asarray(im, dtype=np.uint8)
        stem = os.path.splitext(f)[0]
        exp = known.get(stem)
        if exp is not None and pixel_sha256(rgb) != exp:
            print(f"WARNING {f}: pixel SHA-256 differs from the one recorded in this script",
                  file=sys.stderr)
        photos.append((stem, rgb))
    return photos


# ---------------------------------------------------------------------------- protocol

def truth12(p8):
    """T = round(P*4095/255) exactly, int64."""
    p = p8.astype(np.int64)
    return (2 * p * WHITE + 255) // 510


def mosaic(t, pattern):
    """Keep the channel of each CFA site; pattern = top-left 2x2 cell, row by row."""
    ch = {"r": 0, "g": 1, "b": 2}
    m = np.empty(t.shape[:2], dtype=t.dtype)
    for dy in range(2):
        for dx in range(2):
            m[dy::2, dx::2] = t[dy::2, dx::2, ch[pattern[2 * dy + dx]]]
    return m


def psnr(est, truth, border=BORDER):
    e = np.asarray(est, dtype=np.float64)[border:-border, border:-border]
    t = np.asarray(truth, dtype=np.float64)[border:-border, border:-border]
    mse = np.mean((e - t) ** 2)
    return float("inf") if mse == 0 else 10.0 * np.log10(WHITE * WHITE / mse)


# ---------------------------------------------------------------------------- peers

def make_peers():
    import cv2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # colour warns that matplotlib is missing
        import colour_demosaicing as cd

    def cv_u16(suffix):
        def run(m, pat):
            code = getattr(cv2, f"COLOR_{CV2_STEM[pat]}2RGB{suffix}")
            return cv2.cvtColor(m.astype(np.uint16), code)
        return run

    def cv_vng(m, pat):
        m8 = ((2 * m * 255 + WHITE) // (2 * WHITE)).astype(np.uint8)  # round(M*255/4095)
        out = cv2.cvtColor(m8, getattr(cv2, f"COLOR_{CV2_STEM[pat]}2RGB_VNG"))
        return out.astype(np.float64) * (WHITE / 255.0)

    def colour_fn(fn):
        def run(m, pat):
            out = fn(m.astype(np.float64) / WHITE, COLOUR_PAT[pat])
            return np.clip(out * WHITE, 0.0, WHITE)
        return run

    peers = [
        ("opencv bilinear (u16)", cv_u16("")),
        ("opencv VNG (8-bit in, x4095/255)", cv_vng),
        ("opencv EA (u16)", cv_u16("_EA")),
        ("colour bilinear", colour_fn(cd.demosaicing_CFA_Bayer_bilinear)),
        ("colour Malvar2004", colour_fn(cd.demosaicing_CFA_Bayer_Malvar2004)),
        ("colour Menon2007", colour_fn(cd.demosaicing_CFA_Bayer_Menon2007)),
    ]
    return peers, cv2, cd


def verify_mappings(peers):
    """Flat colour R=3000 G=1500 B=500 through every peer and pattern: the interior must
    come back as that colour (VNG: within its 8-bit quantisation). Also, for the two
    bilinear peers on a random image, every site must keep its own mosaic sample (rules
    out a half-cell shift / mirrored cell that a flat image cannot reveal)."""
    h, w = 24, 32
    col = np.array([3000, 1500, 500], dtype=np.int64)
    flat = np.broadcast_to(col, (h, w, 3)).copy()
    rng = np.random.default_rng(7)
    rnd = rng.integers(0, WHITE + 1, size=(h, w, 3), dtype=np.int64)
    ch = {"r": 0, "g": 1, "b": 2}
    for pat in PATTERNS:
        m = mosaic(flat, pat)
        for name, fn in peers:
            e = np.asarray(fn(m, pat), dtype=np.float64)[4:-4, 4:-4]
            tol = 0.5 * WHITE / 255 + 1e-6 if "VNG" in name else 1e-6
            err = np.abs(e - col).max()
            if err > tol:
                sys.exit(f"pattern self-check FAILED: {name} {pat}: flat colour off by {err:.2f}"
                         f" (mean out {e.reshape(-1, 3).mean(0).round(1)})")
        mr = mosaic(rnd, pat)
        for name, fn in peers:
            if "bilinear" not in name:
                continue
            e = np.asarray(fn(mr, pat), dtype=np.float64)
            for dy in range(2):
                for dx in range(2):
                    c = ch[pat[2 * dy + dx]]
                    d = np.abs(e[2 + dy:-2:2, 2 + dx:-2:2, c] - mr[2 + dy:-2:2, 2 + dx:-2:2])
                    if d.max() > 1e-6:
                        sys.exit(f"pattern self-check FAILED: {name} {pat}: site ({dy},{dx}) "
                                 f"does not keep its sample (max diff {d.max()})")


# ---------------------------------------------------------------------------- tables

def fmt_table(header, rows, markdown):
    if markdown:
        lines = ["| " + " | ".join(header) + " |",
                 "|" + "|".join([":---"] + ["---:"] * (len(header) - 1)) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines)
    widths = [max(len(x) for x in col) for col in zip(header, *rows)]
    def line(r):
        return "  ".join(r[0].ljust(widths[0]) if i == 0 else x.rjust(widths[i])
                         for i, x in enumerate(r))
    return "\n".join([line(header), "  ".join("-" * w for w in widths)] + [line(r) for r in rows])


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    # The test set; --make-crops writes the detail crops: use --photos tests/data/photos-detail.
    default_photos = os.path.normpath(os.path.join(here, "..", "tests", "data", "photos"))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--photos", default=default_photos, help="folder of 8-bit RGB PNGs")
    ap.add_argument("--patterns", default="rggb",
                    help="comma-separated subset of rggb,bggr,grbg,gbrg (default rggb)")
    ap.add_argument("--markdown", action="store_true", help="print GitHub markdown tables")
    ap.add_argument("--make-crops", action="store_true",
                    help="(re)write the crops into --photos from skimage's bundled images, then exit")
    args = ap.parse_args()

    if args.make_crops:
        make_crops(args.photos)
        return

    patterns = [p.strip().lower() for p in args.patterns.split(",") if p.strip()]
    for p in patterns:
        if p not in PATTERNS:
            sys.exit(f"unknown pattern {p!r}; use {','.join(PATTERNS)}")

    peers, cv2, cd = make_peers()
    import PIL
    import colour
    versions = (f"python {sys.version.split()[0]}, numpy {np.__version__}, "
                f"opencv {cv2.__version__} (threads {cv2.getNumThreads()}), "
                f"colour-demosaicing {cd.__version__}, colour-science {colour.__version__}, "
                f"pillow {PIL.__version__}")
    verify_mappings(peers)

    photos = load_photos(args.photos)
    names = [n for n, _ in photos]
    truths = [truth12(rgb) for _, rgb in photos]
    for (n, rgb), t in zip(photos, truths):
        m8 = (2 * t * 255 + WHITE) // (2 * WHITE)
        assert np.array_equal(m8, rgb), f"{n}: round(T*255/4095) != P"

    pre = "" if not args.markdown else "- "
    print(f"{pre}versions: {versions}")
    print(f"{pre}photos: {args.photos} ({len(photos)}: " +
          ", ".join(f"{n} {rgb.shape[1]}x{rgb.shape[0]}" for n, rgb in photos) + ")")
    print(f"{pre}protocol: T = round(P*4095/255); PSNR over RGB, {BORDER}-px border excluded, "
          f"peak 4095; mean = mean of per-image PSNRs; time = median of {REPEATS} runs, ms/image")
    print(f"{pre}pattern mapping self-check (flat colour + bilinear site check): OK "
          f"(OpenCV: " + ", ".join(f"{p.upper()}={CV2_STEM[p]}" for p in PATTERNS) + ")")
    print(f"{pre}opencv VNG is 8-bit only: fed round(M*255/4095), output scaled by 4095/255")
    print(f"{pre}colour-demosaicing: input M/4095 float64, output x4095 then clipped to 0..4095")
    print()

    results = {}  # (method, pattern) -> (list of per-image psnr, ms per image)
    for pat in patterns:
        mosaics = [mosaic(t, pat) for t in truths]
        for mname, fn in peers:
            times, ps = [], None
            fn(mosaics[0], pat)  # untimed warm-up (lazy imports, allocator, thread pool)
            for rep in range(REPEATS):
                outs = []
                t0 = time.perf_counter()
                for m in mosaics:
                    outs.append(fn(m, pat))
                times.append((time.perf_counter() - t0) * 1000.0 / len(mosaics))
                if ps is None:
                    ps = [psnr(e, t) for e, t in zip(outs, truths)]
            results[(mname, pat)] = (ps, statistics.median(times))

    for pat in patterns:
        title = f"PSNR (dB), pattern {pat.upper()}"
        print(f"**{title}**\n" if args.markdown else title)
        header = ["method"] + names + ["mean", "ms/img"]
        rows = []
        for mname, _ in peers:
            ps, ms = results[(mname, pat)]
            rows.append([mname] + [f"{v:.2f}" for v in ps] +
                        [f"{np.mean(ps):.2f}", f"{ms:.1f}"])
        print(fmt_table(header, rows, args.markdown))
        print()

    if len(patterns) > 1:
        title = "mean PSNR (dB) per pattern"
        print(f"**{title}**\n" if args.markdown else title)
        header = ["method"] + [p.upper() for p in patterns] + ["all"]
        rows = []
        for mname, _ in peers:
            means = [np.mean(results[(mname, p)][0]) for p in patterns]
            rows.append([mname] + [f"{v:.2f}" for v in means] + [f"{np.mean(means):.2f}"])
        print(fmt_table(header, rows, args.markdown))
        print()


if __name__ == "__main__":
    main()
