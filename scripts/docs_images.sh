#!/usr/bin/env bash
# Regenerates the pictures in docs/ISP.md with rawlink itself (python3 + numpy + Pillow
# only render the raw mosaic as grey and cut the zoomed crops).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
BIN=target/release/rawlink
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
$BIN demo --quiet --source sim:scene --frames 1 --profile reference --out "$TMP/scene" >/dev/null 2>&1
RAW="$TMP/scene/frame_000001.raw"
cp "$TMP/scene/frame_000001.png" docs/img/scene_reference.png
python3 - "$RAW" docs/img/scene_raw.png <<'PY'
import sys, numpy as np
from PIL import Image
raw = np.fromfile(sys.argv[1], dtype="<u2").reshape(480, 640)
Image.fromarray((raw.astype(np.float64) * 255 / 4095).astype(np.uint8), "L").save(sys.argv[2])
PY
isp() { $BIN isp "$RAW" --width 640 --height 480 --black-level 256 "$@" >/dev/null; }
isp -o docs/img/scene_1_blc_demosaic.png --stages blc,demosaic
isp -o docs/img/scene_2_wb.png --stages blc,wb,demosaic
isp -o docs/img/scene_3_tone.png --stages blc,wb,demosaic,ccm,tone
isp -o docs/img/scene_default.png
isp -o "$TMP/bilinear.png" --demosaic bilinear
isp -o "$TMP/malvar.png" --demosaic malvar
python3 - "$TMP/bilinear.png" "$TMP/malvar.png" docs/img/scene_default.png docs/img/demosaic_star_zoom.png <<'PY'
import sys
from PIL import Image
box = (420, 60, 540, 180)  # the Siemens star's centre
crops = [Image.open(p).convert("RGB").crop(box).resize((240, 240), Image.NEAREST) for p in sys.argv[1:4]]
out = Image.new("RGB", (3 * 240 + 8, 240), "white")
for i, c in enumerate(crops):
    out.paste(c, (i * 244, 0))
out.save(sys.argv[4])
PY
$BIN isp tests/data/astronaut_256x192_rggb12.raw -o docs/img/astronaut_reference.png \
  --width 256 --height 192 --profile reference >/dev/null
