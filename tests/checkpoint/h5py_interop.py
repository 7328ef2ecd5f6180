# h5py side of the checkpoint interoperability test: `write DIR` makes checkpoints the way a PyTorch
# user would with h5py; `check FILE` verifies a checkpoint written by our C++ writer (exit 0 when it matches).
import sys

import h5py
import numpy as np

CONFIG = "model:\n  num_classes: 10\n  norm: lrn  # é ü, UTF-8\n"


def pattern(shape, offset):
    """The values both sides agree on: element i is i * 0.5 - 1 + offset (exact in float32)."""
    n = int(np.prod(shape)) if shape else 1
    return (np.arange(n, dtype=np.float32) * np.float32(0.5) - np.float32(1.0) + np.float32(offset)).reshape(shape)


MODEL = {"conv1/weight": ((4, 3, 2, 2), 0.0), "conv1/bias": ((4,), 1.0), "norm1/running_var": ((4,), 2.0)}
MOMENTUM = {"conv1/weight": ((4, 3, 2, 2), 3.0)}


def write(directory):
    # Full checkpoint: str attributes and datasets become variable-length UTF-8, ints become int64.
    with h5py.File(f"{directory}/from_h5py.h5", "w") as f:
        f.attrs["format"] = "alexnet-checkpoint"
        f.attrs["format_version"] = np.int64(1)
        f.attrs["step"] = np.int64(7)
        f.attrs["epoch"] = np.int64(2)
        f["config"] = CONFIG
        for key, (shape, off) in MODEL.items():
            f[f"model/{key}"] = pattern(shape, off)
        for key, (shape, off) in MOMENTUM.items():
            f[f"optimizer/momentum/{key}"] = pattern(shape, off)
    # Weights-only, no attributes, config as a fixed-length byte string.
    with h5py.File(f"{directory}/weights_only_h5py.h5", "w") as f:
        f["config"] = np.bytes_(CONFIG.encode("utf-8"))
        for key, (shape, off) in MODEL.items():
            f[f"model/{key}"] = pattern(shape, off)


def check(path):
    errors = []
    with h5py.File(path, "r") as f:
        attrs = dict(f.attrs)
        fmt = attrs.get("format")
        if isinstance(fmt, bytes):
            fmt = fmt.decode()
        if fmt != "alexnet-checkpoint":
            errors.append(f"format attribute {fmt!r}")
        for name, want in (("format_version", 1), ("step", 12345678901), ("epoch", 3)):
            if int(attrs.get(name, -1)) != want:
                errors.append(f"attribute {name} = {attrs.get(name)!r}, expected {want}")
        config = f["config"][()]
        if isinstance(config, bytes):
            config = config.decode("utf-8")
        if config != CONFIG:
            errors.append(f"config {config!r}")
        for group, table in (("model", MODEL), ("optimizer/momentum", MOMENTUM)):
            for key, (shape, off) in table.items():
                ds = f[f"{group}/{key}"]
                if ds.dtype != np.float32 or ds.shape != shape:
                    errors.append(f"{group}/{key}: {ds.dtype} {ds.shape}")
                elif not np.array_equal(ds[()], pattern(shape, off)):
                    errors.append(f"{group}/{key}: values differ")
        names = []
        f.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
        want = {"config"} | {f"model/{k}" for k in MODEL} | {f"optimizer/momentum/{k}" for k in MOMENTUM}
        if set(names) != want:
            errors.append(f"datasets {sorted(names)}")
    for e in errors:
        print(f"{path}: {e}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("write", "check"):
        sys.exit("usage: h5py_interop.py write DIR | check FILE")
    sys.exit(write(sys.argv[2]) if sys.argv[1] == "write" else check(sys.argv[2]))
