# Checks an `alexnet-tool augment-dump` file against the prepared folder with an independent numpy
# computation: every row's float input equals its uint8 crop minus the mean image (cropped and flipped
# the same way) plus its lighting offset; labels match the index; offsets, flips and lighting are in range.
# Usage: augment_dump_check.py DUMP.h5 PREPARED train|val COUNT
import sys

import h5py
import numpy as np

dump, prepared, split, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
crop, side = 227, 256
labels = {"train": [], "val": []}
with open(f"{prepared}/index.txt", encoding="utf-8") as f:
    for line in f:
        fields = line.rstrip("\n").split("\t")
        if fields[0] in labels:
            labels[fields[0]].append(int(fields[1]))
with h5py.File(f"{prepared}/stats.h5", "r") as s:
    mean_image = s["mean_image"][()].astype(np.float64)
    eigval = s["eigenvalues"][()]
failures = []


def check(ok, what):
    if not ok:
        failures.append(what)


with h5py.File(dump, "r") as d:
    images, crops = d["images"][()], d["crops"][()]
    ids, loaded = d["sample_ids"][()], d["loaded_ids"][()]
    lab, cx, cy, flip, light = d["labels"][()], d["crop_x"][()], d["crop_y"][()], d["flip"][()], d["lighting"][()]
check(images.shape == (count, 3, crop, crop) and images.dtype == np.float32, f"images {images.shape} {images.dtype}")
check(crops.shape == (count, 3, crop, crop) and crops.dtype == np.uint8, f"crops {crops.shape} {crops.dtype}")
check(len(set(ids.tolist())) == count, "sample ids repeat")
check(np.array_equal(ids, loaded), "a sample was replaced although the dataset has no bad file")
n = len(labels[split])
check(all(0 <= i < n for i in ids), "sample id out of range")
check(all(lab[k] == labels[split][ids[k]] for k in range(count)), "labels differ from index.txt")
worst = 0.0
for k in range(count):
    m = mean_image[:, cy[k]:cy[k] + crop, cx[k]:cx[k] + crop]
    if flip[k]:
        m = m[:, :, ::-1]
    expect = crops[k].astype(np.float64) - m + light[k].astype(np.float64)[:, None, None]
    worst = max(worst, float(np.abs(images[k] - expect).max()))
check(worst < 1e-3, f"normalised input differs from crop - mean + lighting by {worst}")
if split == "val":
    check(np.all(cx == (side - crop) // 2) and np.all(cy == (side - crop) // 2), "val crops are not centred")
    check(np.all(flip == 0) and np.all(light == 0), "val samples are flipped or lit")
    check(np.array_equal(ids, np.arange(count)), "val samples are not the first images in order")
else:
    check(np.all((cx >= 0) & (cx <= side - crop) & (cy >= 0) & (cy <= side - crop)), "crop offset out of range")
    check(0 < flip.sum() < count, f"{flip.sum()} of {count} flipped")
    # Lighting: 255 * P (alpha * lambda01) with alpha ~ N(0, 0.1^2): |offset| is a few levels, bounded
    # by 255 * 0.1 * 5 sigma * sum(lambda01) = 0.5 * sum(eigenvalues) / 255.
    bound = 0.5 * eigval.sum() / 255
    check(np.all(np.abs(light) < bound) and np.abs(light).max() > 0, f"lighting {np.abs(light).max()} vs {bound}")
if failures:
    print("FAIL:", *failures, sep="\n  ")
    sys.exit(1)
print(f"augment-dump {split}: {count} samples agree with crop - mean + lighting (max error {worst:.2e})")
