#!/usr/bin/env python3
"""Writes tests/data/photos/: the photo set used by the ISP quality tests.

Six real photographs bundled in scikit-image's wheel (no download), at full size except
retina, whose centre 640x640 is kept to bound the repository size. All are public domain
or CC0 (see tests/data/photos/README.md).

    pip install numpy pillow scikit-image && python3 scripts/make_photo_set.py
"""
import os
import sys

import numpy as np
from PIL import Image
import skimage.data as data

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "photos")
NAMES = ["astronaut", "chelsea", "coffee", "immunohistochemistry", "retina", "rocket"]


def main():
    os.makedirs(OUT, exist_ok=True)
    for name in NAMES:
        img = np.asarray(getattr(data, name)())[..., :3]
        if name == "retina":
            h, w = img.shape[:2]
            img = img[h // 2 - 320:h // 2 + 320, w // 2 - 320:w // 2 + 320]
        path = os.path.join(OUT, f"{name}.png")
        Image.fromarray(np.ascontiguousarray(img), "RGB").save(path, optimize=True)
        print(f"{path}: {img.shape[1]}x{img.shape[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
