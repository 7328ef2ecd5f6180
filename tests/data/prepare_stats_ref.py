#!/usr/bin/env python3
"""Independent reference for `alexnet-tool prepare`'s statistics: PIL decodes and rescales, numpy computes.

usage: prepare_stats_ref.py DATASET_ROOT OUT.bin

For every train/<wnid>/* file (sorted), PIL opens it (JPEG decoded at the smallest DCT scale 1/2, 1/4, 1/8
whose shorter side stays >= 256 via Image.draft, the service's choice; CMYK and PNG through PIL's own
conversions), resizes the shorter side to 256 with Image.BILINEAR (longer side rounded half up) and takes the
central 256x256 crop at floor((long' - 256) / 2). Files PIL cannot decode are skipped. numpy then computes in
float64: the mean image, the per-channel means, the population covariance of all pixels (np.cov, bias=True)
and its eigen-decomposition (np.linalg.eigh), eigenvalues descending, each eigenvector signed so that its
components sum to >= 0.

OUT.bin: little-endian float64: mean image [3, 256, 256], channel means [3], covariance [3, 3],
eigenvalues [3], eigenvectors [3, 3] (column j pairs eigenvalue j), then the image count.
"""
import glob
import math
import os
import sys

import numpy as np
from PIL import Image

SIDE = 256


def load(path):
    im = Image.open(path)
    if im.format == "JPEG":
        w, h = im.size
        denom = 1
        for d in (2, 4, 8):
            if min(-(-w // d), -(-h // d)) >= SIDE:
                denom = d
        if denom > 1:
            im.draft("RGB", (w // denom, h // denom))
    im = im.convert("RGB")
    w, h = im.size
    if w <= h:
        nw, nh = SIDE, max(SIDE, int(math.floor(h * SIDE / w + 0.5)))
    else:
        nw, nh = max(SIDE, int(math.floor(w * SIDE / h + 0.5))), SIDE
    ox, oy = (nw - SIDE) // 2, (nh - SIDE) // 2
    out = im.resize((nw, nh), Image.BILINEAR).crop((ox, oy, ox + SIDE, oy + SIDE))
    return np.asarray(out, dtype=np.float64)


def main():
    root, out_path = sys.argv[1], sys.argv[2]
    files = sorted(glob.glob(os.path.join(root, "train", "*", "*")))
    total = np.zeros((SIDE, SIDE, 3))
    pixels = []
    for f in files:
        try:
            a = load(f)
        except Exception:  # a bad file: prepare skips it too
            continue
        total += a
        pixels.append(a.reshape(-1, 3))
    n = len(pixels)
    mean = (total / n).transpose(2, 0, 1)
    px = np.concatenate(pixels)
    channel_mean = px.mean(axis=0)
    cov = np.cov(px, rowvar=False, bias=True)
    values, vectors = np.linalg.eigh(cov)
    order = np.argsort(values)[::-1]
    values, vectors = values[order], vectors[:, order]
    vectors = vectors * np.where(vectors.sum(axis=0) >= 0, 1.0, -1.0)
    blob = np.concatenate([mean.ravel(), channel_mean, cov.ravel(), values, vectors.ravel(), [float(n)]])
    blob.astype("<f8").tofile(out_path)


if __name__ == "__main__":
    main()
