#!/usr/bin/python3
"""The PIL + NumPy anchor for bench_pipeline: the same per-image training transform, single-threaded.

usage: pil_pipeline.py --dir DIR [--seconds S]   (DIR written by `bench_pipeline --generate DIR`)
Prints "RESULT <set> <mode> <img/s>" lines: mode decode = PIL open + decode to RGB; mode full = open with
draft (DCT scaling when the shorter side stays >= 256), resize((w', h'), BILINEAR), centre crop 256, random
227 crop, mirror, float32, minus the mean image cropped the same way, plus the PCA lighting offset, CHW.
"""
import argparse
import io
import os
import time

import numpy as np
from PIL import Image

SIDE, CROP = 256, 227
EIGVAL = np.array([0.2175, 0.0188, 0.0045]) * 255
EIGVEC = np.array([[-0.5675, 0.7192, 0.4009], [-0.5808, -0.0045, -0.8140], [-0.5836, -0.6948, 0.4203]])


def load_set(d):
    names = sorted(os.listdir(d))
    if not names:
        raise SystemExit("no images in %s (run bench_pipeline --generate first)" % d)
    out = []
    for n in names:
        with open(os.path.join(d, n), "rb") as f:
            out.append(f.read())
    return out


def rate(files, seconds, one):
    for b in files:  # warm-up
        one(b)
    start = time.perf_counter()
    done = 0
    while True:
        for b in files:
            one(b)
        done += len(files)
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return done / elapsed


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    ap.add_argument("--seconds", type=float, default=2.0)
    args = ap.parse_args()

    y, x = np.mgrid[0:SIDE, 0:SIDE]
    mean_hwc = np.stack([110 + 10 * c + 8 * np.sin(0.02 * (x + y)) for c in range(3)], axis=2).astype(np.float32)
    rng = np.random.default_rng(7)

    def decode(b):
        im = Image.open(io.BytesIO(b))
        im = im.convert("RGB") if im.mode != "RGB" else im
        im.load()
        return im

    def transform(b, prepared):
        im = Image.open(io.BytesIO(b))
        if not prepared:
            im.draft("RGB", (SIDE, SIDE))
        im = im.convert("RGB") if im.mode != "RGB" else im
        if not prepared:
            w, h = im.size
            if w <= h:
                nw, nh = SIDE, max(SIDE, int(h * SIDE / w + 0.5))
            else:
                nw, nh = max(SIDE, int(w * SIDE / h + 0.5)), SIDE
            ox, oy = (nw - SIDE) // 2, (nh - SIDE) // 2
            im = im.resize((nw, nh), Image.BILINEAR).crop((ox, oy, ox + SIDE, oy + SIDE))
        arr = np.asarray(im)
        cx, cy = rng.integers(0, SIDE - CROP + 1, 2)
        patch = arr[cy:cy + CROP, cx:cx + CROP]
        mean = mean_hwc[cy:cy + CROP, cx:cx + CROP]
        if rng.random() < 0.5:
            patch, mean = patch[:, ::-1], mean[:, ::-1]
        lighting = EIGVEC @ (rng.normal(0.0, 0.1, 3) * EIGVAL)
        out = patch.astype(np.float32) - mean + lighting.astype(np.float32)
        return np.ascontiguousarray(out.transpose(2, 0, 1))

    for s in ["jpeg420", "jpeg444", "prepared"]:
        files = load_set(os.path.join(args.dir, s))
        print("RESULT %s decode %.1f" % (s, rate(files, args.seconds, decode)), flush=True)
        prepared = s == "prepared"
        print("RESULT %s full %.1f" % (s, rate(files, args.seconds, lambda b: transform(b, prepared))), flush=True)


if __name__ == "__main__":
    main()
