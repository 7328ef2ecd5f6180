# An independent PyTorch AlexNet in the checkpoint's merged layout (groups=2 convolutions), with the
# paper's LRN written from its formula, the paper's SGD rule by hand, and h5py I/O of checkpoint layout v1.
# It is the reference the parity suite compares `alexnet-tool grad/step` against.

import h5py
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import yaml

# Per-tower widths of the paper's network (Figure 2); the merged layer has twice as many.
TOWER_WIDTH = {"conv1": 48, "conv2": 128, "conv3": 192, "conv4": 192, "conv5": 128, "fc6": 2048, "fc7": 2048}
LAYERS = ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"]

MODEL_DEFAULTS = {
    "num_classes": 1000,
    "input_size": 227,
    "activation": "relu",
    "norm": "lrn",
    "lrn": {"k": 2.0, "n": 5, "alpha": 1e-4, "beta": 0.75},
    "pool": {"size": 3, "stride": 2},
    "dropout": 0.5,
}
TRAIN_DEFAULTS = {"momentum": 0.9, "weight_decay": 0.0005}


def resolve_model_config(model):
    """The `model:` section with defaults filled in (nested dicts merged)."""
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in MODEL_DEFAULTS.items()}
    for k, v in (model or {}).items():
        if isinstance(v, dict):
            out[k].update(v)
        else:
            out[k] = v
    return out


def resolve_train_config(train):
    out = dict(TRAIN_DEFAULTS)
    out.update({k: v for k, v in (train or {}).items() if k in TRAIN_DEFAULTS})
    return out


# ---- normalisation layers -----------------------------------------------------------------------


def lrn_across_channels(x, k, n, alpha, beta):
    """b[i] = a[i] / (k + alpha * sum_{j=i-n//2}^{i+n//2} a[j]^2)^beta over the channels of x, the window
    clipped at the edges; alpha is NOT divided by n and an even n sums n+1 channels (paper formula).
    x: [N, C, H, W]."""
    half = n // 2
    sq = x * x
    padded = F.pad(sq, (0, 0, 0, 0, half, half))  # zero channels on both sides = a clipped window
    c = x.shape[1]
    s = padded[:, 0:c]
    for j in range(1, 2 * half + 1):
        s = s + padded[:, j:j + c]
    return x * (k + alpha * s).pow(-beta)


def lrn_within_channel(x, k, n, alpha, beta):
    """The same formula with the sum over the clipped (2*(n//2)+1)^2 spatial window of each channel."""
    half = n // 2
    w = 2 * half + 1
    nb, c, h, wd = x.shape
    sq = (x * x).reshape(nb * c, 1, h, wd)
    ones = torch.ones(1, 1, w, w, dtype=x.dtype, device=x.device)
    s = F.conv2d(sq, ones, padding=half).reshape(nb, c, h, wd)  # zero padding = clipped window
    return x * (k + alpha * s).pow(-beta)


class TowerLRN(nn.Module):
    """Across-channel LRN applied to each tower's half of the channels separately."""

    def __init__(self, k, n, alpha, beta, towers=2):
        super().__init__()
        self.k, self.n, self.alpha, self.beta, self.towers = k, n, alpha, beta, towers

    def forward(self, x):
        parts = x.chunk(self.towers, dim=1)
        return torch.cat([lrn_across_channels(p, self.k, self.n, self.alpha, self.beta) for p in parts], dim=1)


class LRN2d(nn.Module):
    def __init__(self, k, n, alpha, beta):
        super().__init__()
        self.k, self.n, self.alpha, self.beta = k, n, alpha, beta

    def forward(self, x):
        return lrn_within_channel(x, self.k, self.n, self.alpha, self.beta)


# ---- the network --------------------------------------------------------------------------------


def conv_out(side, kernel, stride, pad):
    return (side + 2 * pad - kernel) // stride + 1


class TorchAlexNet(nn.Module):
    """conv1 -> act -> norm1 -> pool; conv2 -> act -> norm2 -> pool; conv3 -> act; conv4 -> act;
    conv5 -> act -> pool; fc6 -> act -> dropout; fc7 -> act -> dropout; fc8. Parameter names and shapes
    equal checkpoint layout v1 ("conv2.weight" <-> /model/conv2/weight)."""

    def __init__(self, model_cfg):
        super().__init__()
        cfg = resolve_model_config(model_cfg)
        self.cfg = cfg
        size, stride = cfg["pool"]["size"], cfg["pool"]["stride"]
        side = conv_out(cfg["input_size"], 11, 4, 0)
        for _ in range(3):
            side = (side - size) // stride + 1
        self.pool5_side = side
        self.conv1 = nn.Conv2d(3, 96, 11, stride=4, padding=0)
        self.conv2 = nn.Conv2d(96, 256, 5, stride=1, padding=2, groups=2)
        self.conv3 = nn.Conv2d(256, 384, 3, stride=1, padding=1)
        self.conv4 = nn.Conv2d(384, 384, 3, stride=1, padding=1, groups=2)
        self.conv5 = nn.Conv2d(384, 256, 3, stride=1, padding=1, groups=2)
        self.fc6 = nn.Linear(256 * side * side, 4096)
        self.fc7 = nn.Linear(4096, 4096)
        self.fc8 = nn.Linear(4096, cfg["num_classes"])
        norm = cfg["norm"]
        lrn = cfg["lrn"]
        for name, channels in (("norm1", 96), ("norm2", 256)):
            if norm == "lrn":
                layer = TowerLRN(lrn["k"], lrn["n"], lrn["alpha"], lrn["beta"])
            elif norm == "lrn2d":
                layer = LRN2d(lrn["k"], lrn["n"], lrn["alpha"], lrn["beta"])
            elif norm == "batchnorm":
                layer = nn.BatchNorm2d(channels, eps=1e-5, momentum=0.1)
            elif norm == "none":
                layer = nn.Identity()
            else:
                raise ValueError(f"model.norm: unknown value {norm!r}")
            setattr(self, name, layer)
        if cfg["activation"] not in ("relu", "tanh"):
            raise ValueError(f"model.activation: unknown value {cfg['activation']!r}")
        self.act = torch.relu if cfg["activation"] == "relu" else torch.tanh
        self.pool = nn.MaxPool2d(size, stride)
        self.dropout_p = float(cfg["dropout"])

    def forward(self, x, dropout=True):
        """x: [N, 3, S, S]; returns logits [N, num_classes]. Dropout acts only in training mode and
        when `dropout` is true; batch norm follows the module's train/eval mode."""
        a = self.act
        x = self.pool(self.norm1(a(self.conv1(x))))
        x = self.pool(self.norm2(a(self.conv2(x))))
        x = a(self.conv3(x))
        x = a(self.conv4(x))
        x = self.pool(a(self.conv5(x)))
        x = torch.flatten(x, 1)  # (C, H, W) order
        p = self.dropout_p if (dropout and self.training) else 0.0
        x = F.dropout(a(self.fc6(x)), p, self.training)
        x = F.dropout(a(self.fc7(x)), p, self.training)
        return self.fc8(x)

    # -- the checkpoint view --

    def trainable_names(self):
        """Checkpoint names ("conv1/weight") of the trainable tensors."""
        return [n.replace(".", "/") for n, _ in self.named_parameters()]

    def buffer_names(self):
        return [n.replace(".", "/") for n, _ in self.named_buffers() if not n.endswith("num_batches_tracked")]

    def expected_shapes(self):
        """Every /model dataset this config has, with its shape."""
        out = {n.replace(".", "/"): tuple(p.shape) for n, p in self.named_parameters()}
        out.update({n.replace(".", "/"): tuple(b.shape) for n, b in self.named_buffers()
                    if not n.endswith("num_batches_tracked")})
        return out

    def state_arrays(self):
        return {n.replace(".", "/"): t.detach().cpu().numpy().copy() for n, t in
                list(self.named_parameters()) + list(self.named_buffers()) if not n.endswith("num_batches_tracked")}

    def load_arrays(self, arrays):
        """Loads checkpoint-named arrays; they must match the model's names and shapes exactly."""
        want = self.expected_shapes()
        missing = sorted(set(want) - set(arrays))
        extra = sorted(set(arrays) - set(want))
        if missing or extra:
            raise ValueError(f"checkpoint tensors differ from the model: missing {missing}, unexpected {extra}")
        tensors = dict(self.named_parameters())
        tensors.update(dict(self.named_buffers()))
        with torch.no_grad():
            for name, arr in arrays.items():
                t = tensors[name.replace("/", ".")]
                if tuple(arr.shape) != tuple(t.shape):
                    raise ValueError(f"{name}: shape {arr.shape}, model expects {tuple(t.shape)}")
                t.copy_(torch.from_numpy(np.ascontiguousarray(arr)).to(t.dtype))


def parameter_count(model):
    return sum(p.numel() for p in model.parameters())


def decays(name):
    """Weight decay applies to conv and FC weights only (not biases, not batch-norm parameters)."""
    layer, param = name.split("/")
    return param == "weight" and layer in LAYERS


# ---- checkpoint and batch I/O (h5py) ------------------------------------------------------------


def read_group(f, group):
    out = {}
    if group not in f:
        return out

    def take(name, obj):
        if isinstance(obj, h5py.Dataset):
            out[name] = obj[()]

    f[group].visititems(take)
    return out


def read_checkpoint(path):
    """-> dict(config=parsed YAML dict, config_text, model={name: array}, momentum={...}, attrs={...})."""
    with h5py.File(path, "r") as f:
        text = f["config"][()]
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        return {
            "config_text": text,
            "config": yaml.safe_load(text) or {},
            "model": read_group(f, "model"),
            "momentum": read_group(f, "optimizer/momentum"),
            "attrs": {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()},
        }


def read_batch(path):
    with h5py.File(path, "r") as f:
        return f["images"][()], f["labels"][()]


def write_batch(path, images, labels):
    with h5py.File(path, "w") as f:
        f["images"] = images.astype(np.float32)
        f["labels"] = labels.astype(np.int64)


# ---- reference computations ---------------------------------------------------------------------


def build(checkpoint, dtype=torch.float32):
    model = TorchAlexNet(checkpoint["config"].get("model")).to(dtype)
    model.load_arrays(checkpoint["model"])
    return model


def grad(checkpoint, images, labels, dtype=torch.float32):
    """Training-mode forward (batch statistics), dropout off, mean cross-entropy, backward.
    -> (logits [N, K], loss, {name: grad}) as numpy; BN running stats of the model object move."""
    model = build(checkpoint, dtype)
    model.train()
    x = torch.from_numpy(images).to(dtype)
    y = torch.from_numpy(labels).long()
    logits = model(x, dropout=False)
    loss = F.cross_entropy(logits, y)
    model.zero_grad()
    loss.backward()
    grads = {n.replace(".", "/"): p.grad.detach().numpy().copy() for n, p in model.named_parameters()}
    return logits.detach().numpy(), float(loss), grads


def paper_sgd(params, grads, momentum, lr, m, wd):
    """The paper's rule on numpy arrays: v <- m v - wd lr w - lr g (wd for conv/FC weights only); w <- w + v.
    -> (new params, new velocity) for the names in `grads`; a missing velocity is zero."""
    new_w, new_v = {}, {}
    for name, g in grads.items():
        w = np.asarray(params[name], dtype=np.float64)
        v = np.asarray(momentum.get(name, np.zeros_like(w)), dtype=np.float64)
        v = m * v - (wd * lr if decays(name) else 0.0) * w - lr * np.asarray(g, dtype=np.float64)
        new_w[name], new_v[name] = w + v, v
    return new_w, new_v


def step(checkpoint, images, labels, lr, dtype=torch.float32):
    """One step of the paper's rule, by hand: v <- m v - wd lr w - lr g (wd for conv/FC weights only);
    w <- w + v; momentum from the checkpoint when present, else zero; BN running stats move by this batch.
    -> (model arrays, momentum arrays, loss) as numpy."""
    train = resolve_train_config(checkpoint["config"].get("train"))
    m, wd = float(train["momentum"]), float(train["weight_decay"])
    model = build(checkpoint, dtype)
    model.train()
    x = torch.from_numpy(images).to(dtype)
    y = torch.from_numpy(labels).long()
    loss = F.cross_entropy(model(x, dropout=False), y)
    model.zero_grad()
    loss.backward()
    velocity = {}
    with torch.no_grad():
        for n, p in model.named_parameters():
            name = n.replace(".", "/")
            v_old = checkpoint["momentum"].get(name)
            v = torch.zeros_like(p) if v_old is None else torch.from_numpy(np.ascontiguousarray(v_old)).to(dtype)
            v = m * v - (wd * lr if decays(name) else 0.0) * p - lr * p.grad
            p.add_(v)
            velocity[name] = v.numpy().copy()
    return model.state_arrays(), velocity, float(loss)


# ---- float64 reference with the network's kinks -------------------------------------------------


def _pool_sites(z, pool, delta):
    """Max-pool windows of z [N, C, H, W] whose two largest entries are closer than delta * rms(z)
    (exact ties excluded: equal inputs are treated alike by any choice). -> [(margin, row, a, b, window)]
    with row = n*C + c, a/b the flat H*W indices of the largest and second largest entry."""
    nb, c, h, w = z.shape
    k, st = pool.kernel_size, pool.stride
    with torch.no_grad():
        cols = F.unfold(z.reshape(nb * c, 1, h, w), k, stride=st)  # [N*C, k*k, L]
        idx = F.unfold(torch.arange(h * w, dtype=z.dtype).reshape(1, 1, h, w), k, stride=st)[0].long()
        top = cols.topk(2, dim=1)
        gap = (top.values[:, 0] - top.values[:, 1]) / z.pow(2).mean().sqrt()
        rows, wins = torch.nonzero((gap > 0) & (gap < delta), as_tuple=True)
        out = []
        for r, l in zip(rows.tolist(), wins.tolist()):
            a = int(idx[top.indices[r, 0, l], l])
            b = int(idx[top.indices[r, 1, l], l])
            out.append((float(gap[r, l]), r, a, b, l))
    return out


def analyze(checkpoint, images, labels, delta=1e-5, max_sites=32):
    """The reference for one batch, in float64: training-mode forward (batch statistics), dropout off,
    mean cross-entropy, backward. Besides logits, loss, gradients and the batch-norm running statistics
    after this forward, it returns for every "fragile" branch of the forward -- a ReLU whose input is
    within delta * rms of zero, a max-pool window whose two largest inputs are that close -- the change
    of every gradient if a float32 implementation took the other branch ("flip"). A float32 result may
    differ from the reference by any combination of these flips; the parity check projects them out.
    -> dict(logits, loss, grads, buffers, flips={name: [delta-gradient arrays]}, sites=[descriptions])"""
    model = build(checkpoint, torch.float64)
    model.train()
    x = torch.from_numpy(np.asarray(images)).double()
    y = torch.from_numpy(np.asarray(labels)).long()
    relu = model.cfg["activation"] == "relu"
    keep = {}

    def act(name, z):
        a = model.act(z)
        if relu:
            z.retain_grad()
            a.retain_grad()
            keep[name] = (z, a)
        return a

    def pool(name, z):
        p = model.pool(z)
        p.retain_grad()
        keep[name] = (z, p)
        return p

    z = pool("pool1", model.norm1(act("conv1", model.conv1(x))))
    z = pool("pool2", model.norm2(act("conv2", model.conv2(z))))
    z = act("conv3", model.conv3(z))
    z = act("conv4", model.conv4(z))
    z = pool("pool5", act("conv5", model.conv5(z)))
    z = act("fc6", model.fc6(torch.flatten(z, 1)))
    z = act("fc7", model.fc7(z))
    logits = model.fc8(z)
    loss = F.cross_entropy(logits, y)
    params = list(model.named_parameters())
    model.zero_grad()
    loss.backward(retain_graph=True)
    grads = {n.replace(".", "/"): p.grad.detach().numpy().copy() for n, p in params}
    buffers = {n.replace(".", "/"): b.detach().numpy().copy() for n, b in model.named_buffers()
               if not n.endswith("num_batches_tracked")}

    # Fragile branches: (margin, site tensor, cotangent builder, description).
    sites = []
    for name, (zin, out) in keep.items():
        if name.startswith("pool"):
            nb, c, h, w = zin.shape
            gout = out.grad.reshape(nb * c, -1)
            for margin, r, a, b, l in _pool_sites(zin.detach(), model.pool, delta):
                cot = torch.zeros(nb * c, h * w, dtype=torch.float64)
                cot[r, a] = -gout[r, l]
                cot[r, b] = gout[r, l]
                sites.append((margin, zin, cot.reshape(zin.shape), f"{name} window {l} of map {r}"))
        else:
            zz = zin.detach()
            rel = (zz.abs() / zz.pow(2).mean().sqrt()).flatten()
            for i in torch.nonzero(rel < delta).flatten().tolist():
                cot = torch.zeros(zz.numel(), dtype=torch.float64)
                cot[i] = out.grad.flatten()[i]
                sites.append((float(rel[i]), zin, cot.reshape(zz.shape), f"{name} unit {i}"))
    sites.sort(key=lambda s: s[0])
    flips = {n.replace(".", "/"): [] for n, _ in params}
    for margin, zin, cot, _ in sites[:max_sites]:
        if not cot.abs().max() > 0:
            continue
        d = torch.autograd.grad(zin, [p for _, p in params], grad_outputs=cot, retain_graph=True,
                                allow_unused=True)
        for (n, _), g in zip(params, d):
            if g is not None and g.abs().max() > 0:
                flips[n.replace(".", "/")].append(g.numpy().copy())
    return {"logits": logits.detach().numpy(), "loss": float(loss), "grads": grads, "buffers": buffers,
            "flips": flips, "sites": [f"{d} (margin {m:.1e})" for m, _, _, d in sites[:max_sites]],
            "sites_total": len(sites)}
