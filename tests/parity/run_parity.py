# PyTorch parity of `alexnet-tool init/grad/step`: for each config, the tool's logits, loss, every
# gradient, and two SGD steps (weights, momentum, batch-norm running statistics) are compared with the
# independent model in torch_alexnet.py, and every file is checked against checkpoint layout v1.
#
#   /usr/bin/python3 tests/parity/run_parity.py --tool build/bin/alexnet-tool --workdir /tmp/parity
#
# Errors are norm-wise relative: ||ours - torch|| / ||torch|| per tensor, float64 arithmetic.
import argparse
import math
import os
import shutil
import subprocess
import sys
import time
import zlib

import h5py
import numpy as np
import torch
import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_alexnet as ta  # noqa: E402

# The paper's values, and a strong LRN (alpha ~ 1) under which alpha/n or window mistakes show.
PAPER_LRN = {"k": 2.0, "n": 5, "alpha": 1.0e-4, "beta": 0.75}


def strong_lrn(n):
    return {"k": 1.0, "n": n, "alpha": 0.5, "beta": 0.75}


CONFIGS = [
    ("lrn_relu_n5", {"model": {"num_classes": 10, "norm": "lrn", "activation": "relu", "lrn": strong_lrn(5)}}),
    ("lrn_tanh_n2", {"model": {"num_classes": 10, "norm": "lrn", "activation": "tanh", "lrn": strong_lrn(2)}}),
    ("lrn2d_relu_n3", {"model": {"num_classes": 10, "norm": "lrn2d", "activation": "relu", "lrn": strong_lrn(3)}}),
    ("lrn2d_tanh_n4", {"model": {"num_classes": 10, "norm": "lrn2d", "activation": "tanh", "lrn": strong_lrn(4)}}),
    ("batchnorm_relu", {"model": {"num_classes": 10, "norm": "batchnorm", "activation": "relu"}}),
    # Non-default optimiser keys: the tool must take momentum and weight decay from /config.
    ("none_tanh_wd", {"model": {"num_classes": 10, "norm": "none", "activation": "tanh"},
                      "train": {"momentum": 0.8, "weight_decay": 0.05}}),
    ("pool2_lrn_relu", {"model": {"num_classes": 10, "norm": "lrn", "activation": "relu", "lrn": strong_lrn(5),
                                  "pool": {"size": 2, "stride": 2}}}),
    ("paper_1000", {"model": {"num_classes": 1000, "norm": "lrn", "activation": "relu", "lrn": PAPER_LRN,
                              "pool": {"size": 3, "stride": 2}, "dropout": 0.5}}),
]

PAPER_PARAMETER_COUNT = 60_965_224
F32_EPS = 2.0 ** -23


class Failures:
    def __init__(self):
        self.items = []

    def add(self, config, what):
        self.items.append(f"{config}: {what}")
        print(f"  FAIL {what}", flush=True)


def rel_err(ours, ref):
    a = np.asarray(ours, dtype=np.float64)
    b = np.asarray(ref, dtype=np.float64)
    if a.shape != b.shape:
        return math.inf
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def residual(diff, basis):
    """`diff` with its component in the span of `basis` (flip effects, see torch_alexnet.analyze) removed."""
    d = np.asarray(diff, dtype=np.float64).ravel()
    if not basis:
        return d
    b = np.stack([np.asarray(v, dtype=np.float64).ravel() for v in basis], axis=1)
    coef, *_ = np.linalg.lstsq(b, d, rcond=None)
    return d - b @ coef


def compare(ours, ref, basis=(), before=None):
    """-> (raw, projected) norm-wise relative errors of `ours` against `ref`; projected = after removing
    flip effects. With `before`, the errors are of the update (after - before), allowing the float32
    rounding of the stored result: projected <= tol exactly when
    ||r|| <= tol ||ref - before|| + 2^-23 ||ref||."""
    a = np.asarray(ours, dtype=np.float64)
    b = np.asarray(ref, dtype=np.float64)
    if a.shape != b.shape:
        return math.inf, math.inf
    diff = a - b
    r = residual(diff, list(basis)) if basis else diff.ravel()
    if before is None:
        den = max(np.linalg.norm(b), 1e-30)
    else:
        den = max(np.linalg.norm(b - np.asarray(before, dtype=np.float64)) + F32_EPS / ARGS.tol * np.linalg.norm(b), 1e-30)
    return float(np.linalg.norm(diff) / den), float(np.linalg.norm(r) / den)


def conditioned_weights(shapes, activation, seed):
    """Weights under which float32 gradients are well conditioned: N(0, gain/fan_in) weights
    (gain 2 for ReLU, 1 for tanh), N(0, 0.1^2) biases, batch norm scale ~ N(1, 0.1^2), shift ~ N(0, 0.1^2),
    running mean ~ N(0, 0.1^2), running variance ~ U(0.5, 1.5). (The paper's init -- weights 0.01, biases 1 --
    makes the early layers' gradients a small difference of large terms: float32 PyTorch itself is off by
    ~5e-3 relative at conv1 there, so a 1e-4 comparison would test nothing but rounding.)"""
    rng = np.random.default_rng(seed)
    gain = 2.0 if activation == "relu" else 1.0
    out = {}
    for name, shape in sorted(shapes.items()):
        layer, param = name.split("/")
        if param == "weight" and layer in ta.LAYERS:
            out[name] = rng.normal(0, math.sqrt(gain / np.prod(shape[1:])), shape)
        elif param == "bias":
            out[name] = rng.normal(0, 0.1, shape)
        elif param == "weight":
            out[name] = rng.normal(1, 0.1, shape)
        elif param == "running_mean":
            out[name] = rng.normal(0, 0.1, shape)
        else:
            out[name] = rng.uniform(0.5, 1.5, shape)
    return {k: v.astype(np.float32) for k, v in out.items()}


def write_checkpoint_h5py(path, config_text, model, momentum=None, step=0):
    """Layout v1 written with h5py (the tool must read what PyTorch users write)."""
    with h5py.File(path, "w") as f:
        f.attrs["format"] = "alexnet-checkpoint"
        f.attrs["format_version"] = np.int64(1)
        f.attrs["step"] = np.int64(step)
        f.attrs["epoch"] = np.int64(0)
        f["config"] = config_text
        for name, arr in model.items():
            f[f"model/{name}"] = np.asarray(arr, dtype=np.float32)
        for name, arr in (momentum or {}).items():
            f[f"optimizer/momentum/{name}"] = np.asarray(arr, dtype=np.float32)


def run_tool(args, what):
    t0 = time.time()
    proc = subprocess.run([ARGS.tool] + args, capture_output=True, text=True, timeout=ARGS.call_timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed (exit {proc.returncode}): {' '.join([ARGS.tool] + args)}\n"
                           f"{proc.stdout}{proc.stderr}")
    return time.time() - t0


def datasets(path):
    names = {}
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                names[name] = (tuple(obj.shape), obj.dtype)
        f.visititems(visit)
    return names


def check_layout(name, path, expected, fails, what):
    """`expected`: {dataset: shape, None for a string, "scalar" for a float scalar}; every one present with
    that shape, float32 unless said otherwise; nothing else."""
    got = datasets(path)
    for ds in sorted(set(expected) - set(got)):
        fails.add(name, f"{what}: missing dataset /{ds}")
    for ds in sorted(set(got) - set(expected)):
        fails.add(name, f"{what}: unexpected dataset /{ds}")
    for ds in sorted(set(got) & set(expected)):
        shape, dtype = got[ds]
        if expected[ds] is None:  # a string
            if dtype.kind not in ("O", "S", "U"):
                fails.add(name, f"{what}: /{ds} is {dtype}, expected a string")
            continue
        if expected[ds] == "scalar":  # /loss: the layout fixes no precision
            if shape != () or dtype not in (np.float32, np.float64):
                fails.add(name, f"{what}: /{ds} is {dtype} {shape}, expected a float scalar")
            continue
        if shape != tuple(expected[ds]):
            fails.add(name, f"{what}: /{ds} has shape {shape}, layout v1 says {tuple(expected[ds])}")
        if dtype != np.float32:
            fails.add(name, f"{what}: /{ds} is {dtype}, expected float32")


def check_attrs(name, ck, fails, what, step=None):
    attrs = ck["attrs"]
    if attrs.get("format") != "alexnet-checkpoint":
        fails.add(name, f"{what}: root attribute format = {attrs.get('format')!r}")
    if int(attrs.get("format_version", -1)) != 1:
        fails.add(name, f"{what}: root attribute format_version = {attrs.get('format_version')!r}")
    if step is not None and "step" in attrs and int(attrs["step"]) != step:
        fails.add(name, f"{what}: root attribute step = {attrs['step']}, expected {step}")


def check_config(name, ck, cfg, fails):
    """The stored /config is the full resolved config: its model: section equals ours with defaults."""
    stored = ck["config"]
    if "model" not in stored:
        fails.add(name, "init: /config has no model: section")
        return
    want = ta.resolve_model_config(cfg["model"])
    got = stored["model"]
    for key, value in want.items():
        if isinstance(value, dict):
            for sub, v in value.items():
                g = (got.get(key) or {}).get(sub)
                if g is None or not math.isclose(float(g), float(v), rel_tol=1e-12):
                    fails.add(name, f"init: /config model.{key}.{sub} = {g!r}, expected {v!r}")
        elif got.get(key) != value and not (isinstance(value, float) and math.isclose(float(got.get(key, "nan")), value)):
            fails.add(name, f"init: /config model.{key} = {got.get(key)!r}, expected {value!r}")
    for key, value in cfg.get("train", {}).items():
        g = (stored.get("train") or {}).get(key)
        if g is None or not math.isclose(float(g), float(value), rel_tol=1e-12):
            fails.add(name, f"init: /config train.{key} = {g!r}, expected {value!r}")


def check_init(name, ck, model, fails):
    """The paper's initialisation: weights ~ N(0, 0.01^2); biases 1 in conv2, conv4, conv5, fc6, fc7, else 0;
    batch norm scale 1, shift 0, running mean 0, variance 1."""
    for key, arr in ck["model"].items():
        layer, param = key.split("/")
        a = np.asarray(arr, dtype=np.float64)
        if param == "weight" and layer in ta.LAYERS:
            std, mean = a.std(), a.mean()
            if not (0.0095 < std < 0.0105) or abs(mean) > 5 * 0.01 / math.sqrt(a.size):
                fails.add(name, f"init: {key} mean {mean:.2e} std {std:.5f}, expected N(0, 0.01^2)")
        else:
            want = {"bias": 1.0 if layer in ("conv2", "conv4", "conv5", "fc6", "fc7") else 0.0,
                    "weight": 1.0, "running_mean": 0.0, "running_var": 1.0}[param]
            if not np.all(a == want):
                fails.add(name, f"init: {key} should be all {want} (got min {a.min()}, max {a.max()})")


def run_config(name, cfg, fails, table):
    print(f"== {name}: {yaml.safe_dump(cfg, default_flow_style=True).strip()}", flush=True)
    work = os.path.join(ARGS.workdir, name)
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    p = {k: os.path.join(work, k) for k in ("C.yaml", "W0.h5", "Wc.h5", "B.h5", "O.h5", "W1.h5", "W2.h5")}
    with open(p["C.yaml"], "w") as f:
        yaml.safe_dump(cfg, f)
    row = {"config": name}
    tool_s = 0.0
    t_start = time.time()

    model = ta.TorchAlexNet(cfg["model"])
    shapes = model.expected_shapes()
    trainable = model.trainable_names()
    k = model.cfg["num_classes"]

    # -- init --
    tool_s += run_tool(["init", "--config", p["C.yaml"], "--out", p["W0.h5"], "--seed", "7"], "init")
    check_layout(name, p["W0.h5"], {"config": None, **{f"model/{n}": s for n, s in shapes.items()}}, fails, "init")
    ck0 = ta.read_checkpoint(p["W0.h5"])
    check_attrs(name, ck0, fails, "init")
    check_config(name, ck0, cfg, fails)
    check_init(name, ck0, model, fails)
    count = sum(int(np.prod(ck0["model"][n].shape)) for n in trainable if n in ck0["model"])
    if k == 1000 and cfg["model"]["norm"] != "batchnorm" and count != PAPER_PARAMETER_COUNT:
        fails.add(name, f"init: {count:,} trainable parameters, the paper's network has {PAPER_PARAMETER_COUNT:,}")
    row["params"] = count

    # -- the batch; logits and loss at the paper's init (the forward is well conditioned there) --
    rng = np.random.default_rng(zlib.crc32(name.encode()) + 1)
    images = rng.normal(size=(ARGS.batch, 3, 227, 227)).astype(np.float32)
    labels = rng.integers(0, k, size=ARGS.batch).astype(np.int64)
    ta.write_batch(p["B.h5"], images, labels)
    tool_s += run_tool(["grad", "--checkpoint", p["W0.h5"], "--batch", p["B.h5"], "--out", p["O.h5"]], "grad at init")
    with h5py.File(p["O.h5"], "r") as f:
        logits_c, loss_c = f["logits"][()], float(f["loss"][()])
    net0 = ta.build(ck0, torch.float64).train()
    with torch.no_grad():
        logits_t = net0(torch.from_numpy(images).double(), dropout=False)
        loss_t = float(torch.nn.functional.cross_entropy(logits_t, torch.from_numpy(labels)))
    row["init_logits"] = compare(logits_c, logits_t.numpy())[0]
    row["init_loss"] = abs(loss_c - loss_t) / abs(loss_t)
    for what, err in (("logits", row["init_logits"]), ("loss", row["init_loss"])):
        if not err <= ARGS.tol:
            fails.add(name, f"grad at init: {what} rel err {err:.2e} > {ARGS.tol:g}")
    del net0

    # -- conditioned weights (see conditioned_weights) --
    wc = conditioned_weights(shapes, model.cfg["activation"], zlib.crc32(name.encode()))
    write_checkpoint_h5py(p["Wc.h5"], ck0["config_text"], wc)
    ckc = ta.read_checkpoint(p["Wc.h5"])
    train = ta.resolve_train_config(ck0["config"].get("train"))

    def note(key, value, tensor):
        row[key] = max(row.get(key, (0.0, "")), (value, tensor))

    def judge(what, tensor, raw, proj, extra=""):
        if not proj <= ARGS.tol:
            fails.add(name, f"{what}: {tensor} rel err {proj:.2e} > {ARGS.tol:g} (before removing flips: "
                            f"{raw:.2e}){extra}")

    # -- grad --
    tool_s += run_tool(["grad", "--checkpoint", p["Wc.h5"], "--batch", p["B.h5"], "--out", p["O.h5"]], "grad")
    check_layout(name, p["O.h5"], {"logits": (ARGS.batch, k), "loss": "scalar",
                                   **{f"grad/{n}": shapes[n] for n in trainable}}, fails, "grad output")
    t0 = time.time()
    ref = ta.analyze(ckc, images, labels, delta=ARGS.flip_margin, max_sites=ARGS.max_flips)
    torch_s = time.time() - t0
    row["flips"] = f"{len(ref['sites'])}/{ref['sites_total']}"
    with h5py.File(p["O.h5"], "r") as f:
        logits_c = f["logits"][()]
        loss_c = float(f["loss"][()])
        grads_c = {n: f[f"grad/{n}"][()] for n in trainable if f"grad/{n}" in f}
    row["logits"] = compare(logits_c, ref["logits"])[0]
    row["loss"] = abs(loss_c - ref["loss"]) / abs(ref["loss"])
    judge("grad", "/logits", row["logits"], row["logits"])
    judge("grad", "/loss", row["loss"], row["loss"])
    for n in trainable:
        if n not in grads_c:
            continue
        raw, proj = compare(grads_c[n], ref["grads"][n], ref["flips"][n])
        judge("grad", f"/grad/{n}", raw, proj, f" (||ours|| {np.linalg.norm(grads_c[n]):.4e}, "
                                               f"||torch|| {np.linalg.norm(ref['grads'][n]):.4e})")
        if not np.linalg.norm(ref["grads"][n]) > 0:
            fails.add(name, f"grad: torch gradient of {n} is zero; the comparison would be vacuous")
        note("grad_raw", raw, n)
        note("grad", proj, n)

    # -- two steps; each compared with the paper's rule applied to the same input checkpoint --
    step_layout = {"config": None, **{f"model/{n}": s for n, s in shapes.items()},
                   **{f"optimizer/momentum/{n}": shapes[n] for n in trainable}}
    src, src_ck = p["Wc.h5"], ckc
    for i, out in ((1, p["W1.h5"]), (2, p["W2.h5"])):
        tool_s += run_tool(["step", "--checkpoint", src, "--batch", p["B.h5"], "--lr", repr(ARGS.lr),
                            "--out", out], f"step {i}")
        what = f"step {i}"
        check_layout(name, out, step_layout, fails, what)
        ck = ta.read_checkpoint(out)
        check_attrs(name, ck, fails, what, step=i)
        if i == 2:
            t0 = time.time()
            ref = ta.analyze(src_ck, images, labels, delta=ARGS.flip_margin, max_sites=ARGS.max_flips)
            torch_s += time.time() - t0
        new_w, new_v = ta.paper_sgd(src_ck["model"], ref["grads"], src_ck["momentum"], ARGS.lr,
                                    float(train["momentum"]), float(train["weight_decay"]))
        new_w.update(ref["buffers"])
        for n in shapes:
            if n not in ck["model"]:
                continue
            basis = ref["flips"].get(n, [])
            raw, proj = compare(ck["model"][n], new_w[n], basis)
            judge(what, f"/model/{n}", raw, proj)
            uraw, uproj = compare(ck["model"][n], new_w[n], basis, before=src_ck["model"][n])
            judge(what, f"update of /model/{n}", uraw, uproj)
            note("weights", proj, n)
            note("update", uproj, n)
        for n in trainable:
            if n not in ck["momentum"]:
                continue
            raw, proj = compare(ck["momentum"][n], new_v[n], ref["flips"][n])
            judge(what, f"/optimizer/momentum/{n}", raw, proj,
                  f" (||ours|| {np.linalg.norm(ck['momentum'][n]):.4e}, ||torch|| {np.linalg.norm(new_v[n]):.4e})")
            note("momentum", proj, n)
        src, src_ck = out, ck

    row["torch_s"] = torch_s
    row["tool_s"] = tool_s
    row["total_s"] = time.time() - t_start
    table.append(row)
    if not ARGS.keep:
        shutil.rmtree(work, ignore_errors=True)


def fmt(v):
    if isinstance(v, tuple):
        return f"{v[0]:.1e} {v[1]}"
    if isinstance(v, float):
        return f"{v:.1e}"
    return str(v)


def print_table(table):
    cols = ["config", "init_logits", "init_loss", "logits", "loss", "grad_raw", "grad", "weights", "update", "momentum", "flips", "tool_s",
            "torch_s", "total_s"]
    rows = [[r.get(c, "-") if not c.endswith("_s") else f"{r.get(c, 0):.1f}" for c in cols] for r in table]
    rows = [[fmt(v) if not isinstance(v, str) else v for v in r] for r in rows]
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
    print("\nmax relative error per config, worst tensor named (tolerance %g). grad_raw: before, the other"
          "\ncolumns after removing the effect of fragile ReLU/max-pool branches (flips: fragile branches"
          "\nprojected out / found, step 1 analysis); update: error of (new - old) weights; init_*: at the tool's paper init, the rest at conditioned weights" % ARGS.tol)
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths)))
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)))


def main():
    global ARGS
    ap = argparse.ArgumentParser(description="PyTorch parity of alexnet-tool init/grad/step")
    ap.add_argument("--tool", required=True, help="path to alexnet-tool")
    ap.add_argument("--workdir", required=True, help="scratch folder (one subfolder per config)")
    ap.add_argument("--configs", default="", help="comma-separated subset of: " + ", ".join(n for n, _ in CONFIGS))
    ap.add_argument("--batch", type=int, default=2, help="images per batch")
    ap.add_argument("--flip-margin", type=float, default=1e-5,
                    help="a ReLU input or max-pool gap within this fraction of its layer's rms counts as fragile")
    ap.add_argument("--max-flips", type=int, default=32, help="fragile branches whose effect is projected out")
    ap.add_argument("--lr", type=float, default=0.01, help="learning rate of the two steps")
    ap.add_argument("--tol", type=float, default=1e-4, help="norm-wise relative error allowed per tensor")
    ap.add_argument("--call-timeout", type=float, default=300, help="seconds allowed per tool call")
    ap.add_argument("--keep", action="store_true", help="keep the files of each config")
    ARGS = ap.parse_args()
    if not os.access(ARGS.tool, os.X_OK):
        print(f"run_parity: {ARGS.tool} is not an executable", file=sys.stderr)
        return 2
    os.makedirs(ARGS.workdir, exist_ok=True)
    torch.manual_seed(0)
    chosen = [c for c in CONFIGS if not ARGS.configs or c[0] in ARGS.configs.split(",")]
    if ARGS.configs and len(chosen) != len(ARGS.configs.split(",")):
        print(f"run_parity: unknown config in --configs {ARGS.configs}", file=sys.stderr)
        return 2
    fails = Failures()
    table = []
    for name, cfg in chosen:
        try:
            run_config(name, cfg, fails, table)
        except (RuntimeError, subprocess.TimeoutExpired, OSError, KeyError, ValueError) as e:
            fails.add(name, f"{type(e).__name__}: {e}")
    print_table(table)
    if fails.items:
        print(f"\n{len(fails.items)} failure(s):")
        for item in fails.items:
            print("  " + item)
        return 1
    print(f"\nparity: all {len(chosen)} configs match PyTorch")
    return 0


ARGS = None

if __name__ == "__main__":
    sys.exit(main())
