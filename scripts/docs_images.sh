#!/usr/bin/env bash
# Regenerates the pictures in docs/ISP.md with rawlink itself (needs python3 + numpy + Pillow
# only to render the raw mosaic as a grey image).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
BIN=target/release/rawlink
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
$BIN demo --quiet --source sim:scene --frames 1 --out "$TMP/scene" >/dev/null 2>&1
cp "$TMP/scene/frame_000001.png" docs/img/scene_reference.png
python3 - "$TMP/scene/frame_000001.raw" docs/img/scene_raw.png <<'PY'
import sys, numpy as np
from PIL import Image
raw = np.fromfile(sys.argv[1], dtype="<u2").reshape(480, 640)
Image.fromarray((raw.astype(np.float64) * 255 / 4095).astype(np.uint8), "L").save(sys.argv[2])
PY
$BIN isp tests/data/astronaut_256x192_rggb12.raw -o docs/img/astronaut_reference.png \
  --width 256 --height 192 >/dev/null
