# Self-checks of the PyTorch reference model (tests/parity/torch_alexnet.py), so the parity suite
# compares against something known to be right: LRN against naive loops, gradients against finite
# differences in float64, the hand-written SGD rule against torch.optim.SGD, shapes and parameter count.
import itertools
import sys

import numpy as np
import torch
import torch.nn.functional as F

import torch_alexnet as ta

FAILURES = []


def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what)
    if not ok:
        FAILURES.append(what)


def naive_lrn_channels(a, k, n, alpha, beta, towers):
    """The paper's formula, element by element, each tower on its own."""
    nb, c, h, w = a.shape
    per = c // towers
    b = np.empty_like(a)
    for t in range(towers):
        for i in range(per):
            lo, hi = max(0, i - n // 2), min(per - 1, i + n // 2)
            s = np.zeros((nb, h, w))
            for j in range(lo, hi + 1):
                s += a[:, t * per + j] ** 2
            b[:, t * per + i] = a[:, t * per + i] / (k + alpha * s) ** beta
    return b


def naive_lrn_2d(a, k, n, alpha, beta):
    nb, c, h, w = a.shape
    b = np.empty_like(a)
    r = n // 2
    for y, x in itertools.product(range(h), range(w)):
        win = a[:, :, max(0, y - r):min(h, y + r + 1), max(0, x - r):min(w, x + r + 1)]
        s = (win ** 2).sum(axis=(2, 3))
        b[:, :, y, x] = a[:, :, y, x] / (k + alpha * s) ** beta
    return b


def check_lrn():
    rng = np.random.default_rng(1)
    a = rng.normal(0, 1.5, size=(2, 12, 5, 6))
    for n in range(1, 8):
        k, alpha, beta = 1.5, 0.7, 0.75
        got = ta.TowerLRN(k, n, alpha, beta)(torch.from_numpy(a)).numpy()
        want = naive_lrn_channels(a, k, n, alpha, beta, towers=2)
        err = np.abs(got - want).max()
        check(err < 1e-12, f"across-channel LRN n={n} (per tower) vs naive loop: max |diff| {err:.2e}")
        got2 = ta.LRN2d(k, n, alpha, beta)(torch.from_numpy(a)).numpy()
        want2 = naive_lrn_2d(a, k, n, alpha, beta)
        err2 = np.abs(got2 - want2).max()
        check(err2 < 1e-12, f"2D LRN n={n} vs naive loop: max |diff| {err2:.2e}")
    # The window never crosses the tower boundary.
    x = torch.from_numpy(a.copy())
    y0 = ta.TowerLRN(2.0, 5, 1.0, 0.75)(x)
    x[:, 6:] *= 10.0
    y1 = ta.TowerLRN(2.0, 5, 1.0, 0.75)(x)
    check(torch.equal(y0[:, :6], y1[:, :6]), "LRN: tower 0 does not see tower 1's channels")
    # For odd n, PyTorch's LocalResponseNorm is the same formula with alpha divided by n (one tower).
    for n in (3, 5):
        one = torch.from_numpy(a[:, :6].copy())
        ours = ta.lrn_across_channels(one, 2.0, n, 0.3, 0.75)
        theirs = torch.nn.LocalResponseNorm(n, alpha=0.3 * n, beta=0.75, k=2.0)(one)
        err = (ours - theirs).abs().max().item()
        check(err < 1e-12, f"LRN n={n} equals torch.nn.LocalResponseNorm(alpha*n): max |diff| {err:.2e}")
    # Gradients of both LRNs against finite differences.
    xs = torch.randn(2, 8, 4, 5, dtype=torch.float64, requires_grad=True)
    for n in (2, 3, 4):
        check(torch.autograd.gradcheck(lambda t: ta.TowerLRN(2.0, n, 0.5, 0.75)(t), (xs,)),
              f"across-channel LRN n={n}: autograd = finite differences")
        check(torch.autograd.gradcheck(lambda t: ta.LRN2d(1.0, n, 0.5, 0.75)(t), (xs,)),
              f"2D LRN n={n}: autograd = finite differences")


def check_shapes_and_count():
    m = ta.TorchAlexNet({"num_classes": 1000})
    count = ta.parameter_count(m)
    check(count == 60_965_224, f"1000 classes: {count:,} parameters (paper network: 60,965,224)")
    shapes = m.expected_shapes()
    want = {
        "conv1/weight": (96, 3, 11, 11), "conv2/weight": (256, 48, 5, 5), "conv3/weight": (384, 256, 3, 3),
        "conv4/weight": (384, 192, 3, 3), "conv5/weight": (256, 192, 3, 3), "fc6/weight": (4096, 9216),
        "fc7/weight": (4096, 4096), "fc8/weight": (1000, 4096),
    }
    for name, shape in want.items():
        check(shapes[name] == shape, f"{name} shape {shapes[name]} (layout v1: {shape})")
    check(len(shapes) == 16, f"lrn model has 16 tensors ({len(shapes)})")
    bn = ta.TorchAlexNet({"num_classes": 10, "norm": "batchnorm"})
    names = sorted(bn.expected_shapes())
    want_bn = [f"norm{i}/{p}" for i in (1, 2) for p in ("bias", "running_mean", "running_var", "weight")]
    check(all(n in names for n in want_bn) and len(names) == 24, f"batchnorm model tensors {len(names)} incl. norm1/2")
    for pool in ({"size": 3, "stride": 2}, {"size": 2, "stride": 2}):
        net = ta.TorchAlexNet({"num_classes": 10, "pool": pool})
        with torch.no_grad():
            out = net(torch.zeros(1, 3, 227, 227))
        check(net.pool5_side == 6 and tuple(out.shape) == (1, 10), f"pool {pool}: pool5 6x6, logits {tuple(out.shape)}")


def check_block_gradients():
    """Elementwise finite differences (torch.autograd.gradcheck, float64) through one tower-split stage
    on a tiny input: grouped conv -> activation -> norm -> max pool, for every norm kind."""
    torch.manual_seed(3)
    for norm in ("lrn", "lrn2d", "batchnorm", "none"):
        for act in (torch.tanh, torch.relu):
            if norm == "lrn":
                layer = ta.TowerLRN(1.0, 4, 1.0, 0.75)
            elif norm == "lrn2d":
                layer = ta.LRN2d(1.0, 3, 1.0, 0.75)
            elif norm == "batchnorm":
                layer = torch.nn.BatchNorm2d(8).double()
            else:
                layer = torch.nn.Identity()
            conv = torch.nn.Conv2d(4, 8, 3, padding=1, groups=2).double()
            pool = torch.nn.MaxPool2d(3, 2)
            x = torch.randn(2, 4, 7, 7, dtype=torch.float64, requires_grad=True)
            w = conv.weight.detach().clone().requires_grad_(True)

            def f(x, w):
                return pool(layer(act(F.conv2d(x, w, conv.bias, padding=1, groups=2))))

            check(torch.autograd.gradcheck(f, (x, w), atol=1e-6, rtol=1e-4),
                  f"grouped conv -> {act.__name__} -> {norm} -> pool: autograd = finite differences")


def check_model_gradients():
    """Directional finite differences of the whole network's mean loss, float64, one per tensor. The
    step is small (1e-7 of the tensor's norm) so that few ReLU/max-pool kinks fall inside it."""
    torch.manual_seed(0)
    for cfg in ({"num_classes": 10, "norm": "lrn", "activation": "tanh",
                 "lrn": {"k": 1.0, "n": 4, "alpha": 1.0, "beta": 0.75}},
                {"num_classes": 10, "norm": "batchnorm", "activation": "relu"}):
        net = ta.TorchAlexNet(cfg).double()
        with torch.no_grad():
            for name, p in net.named_parameters():
                p.normal_(0, 0.01 if name.endswith("weight") else 0.5)
                if name.startswith("norm") and name.endswith("weight"):
                    p.normal_(1.0, 0.2)
        net.train()
        x = torch.randn(2, 3, 227, 227, dtype=torch.float64)
        y = torch.tensor([3, 7])

        def loss_fn():
            return F.cross_entropy(net(x, dropout=False), y)

        net.zero_grad()
        loss_fn().backward()
        worst = 0.0
        for name, p in net.named_parameters():
            d = torch.randn_like(p)
            analytic = (p.grad * d).sum().item()
            h = 1e-7 * p.detach().norm().item() / d.norm().item()
            with torch.no_grad():
                p.add_(h * d)
                up = loss_fn().item()
                p.sub_(2 * h * d)
                down = loss_fn().item()
                p.add_(h * d)
            numeric = (up - down) / (2 * h)
            rel = abs(numeric - analytic) / max(abs(numeric), abs(analytic), 1e-12)
            worst = max(worst, rel)
            if rel > 2e-4:
                check(False, f"{cfg['norm']}: {name} directional derivative {analytic:.6e} vs finite difference {numeric:.6e}")
        check(worst <= 2e-4, f"{cfg['norm']}/{cfg['activation']} network: every tensor's gradient = finite "
                             f"differences (worst rel {worst:.1e})")


def check_sgd_rule():
    """With a constant learning rate the paper's rule (v <- m v - wd lr w - lr g; w <- w + v) and PyTorch's
    SGD (b <- m b + g + wd w; w <- w - lr b) take the same steps, with v = -lr b."""
    torch.manual_seed(1)
    cfg = {"model": {"num_classes": 10, "norm": "batchnorm"}, "train": {"momentum": 0.8, "weight_decay": 0.01}}
    ref = ta.TorchAlexNet(cfg["model"]).double()
    with torch.no_grad():
        for name, p in ref.named_parameters():
            p.normal_(0, 0.01 if name.endswith("weight") else 0.5)
    checkpoint = {"config": cfg, "model": {k: v for k, v in ref.state_arrays().items()}, "momentum": {}}
    x = np.random.default_rng(2).normal(size=(3, 3, 227, 227))
    y = np.array([1, 4, 9])
    lr = 0.05
    # Ours, two steps.
    ck = dict(checkpoint)
    for _ in range(2):
        model, mom, _ = ta.step(ck, x, y, lr, dtype=torch.float64)
        ck = {"config": cfg, "model": model, "momentum": mom}
    # torch.optim.SGD with weight decay only on conv/FC weights.
    net = ta.TorchAlexNet(cfg["model"]).double()
    net.load_arrays(checkpoint["model"])
    decay = [p for n, p in net.named_parameters() if ta.decays(n.replace(".", "/"))]
    rest = [p for n, p in net.named_parameters() if not ta.decays(n.replace(".", "/"))]
    opt = torch.optim.SGD([{"params": decay, "weight_decay": 0.01}, {"params": rest, "weight_decay": 0.0}],
                          lr=lr, momentum=0.8)
    net.train()
    for _ in range(2):
        opt.zero_grad()
        F.cross_entropy(net(torch.from_numpy(x), dropout=False), torch.from_numpy(y)).backward()
        opt.step()
    theirs = net.state_arrays()
    worst = max(np.abs(ck["model"][k] - theirs[k]).max() / (np.abs(theirs[k]).max() + 1e-30) for k in theirs)
    check(worst < 1e-12, f"paper SGD rule = torch.optim.SGD (constant lr), weights and BN stats after 2 steps: {worst:.1e}")
    vel = {n.replace(".", "/"): -lr * opt.state[p]["momentum_buffer"].numpy() for n, p in net.named_parameters()}
    worst_v = max(np.abs(ck["momentum"][k] - vel[k]).max() / (np.abs(vel[k]).max() + 1e-30) for k in vel)
    check(worst_v < 1e-10, f"velocity = -lr * torch momentum buffer: {worst_v:.1e}")
    # Running statistics: momentum 0.1 with the unbiased batch variance.
    net2 = ta.TorchAlexNet(cfg["model"]).double()
    net2.load_arrays(checkpoint["model"])
    net2.train()
    captured = {}
    net2.norm2.register_forward_hook(lambda mod, inp, out: captured.__setitem__("x", inp[0].detach()))
    net2(torch.from_numpy(x), dropout=False)
    a = captured["x"]
    mean = a.mean(dim=(0, 2, 3))
    var = a.var(dim=(0, 2, 3), unbiased=True)
    old_m, old_v = torch.from_numpy(checkpoint["model"]["norm2/running_mean"]), torch.from_numpy(checkpoint["model"]["norm2/running_var"])
    ok = torch.allclose(net2.norm2.running_mean, 0.9 * old_m + 0.1 * mean, rtol=1e-12, atol=1e-14) and \
        torch.allclose(net2.norm2.running_var, 0.9 * old_v + 0.1 * var, rtol=1e-12, atol=1e-14)
    check(ok, "BN running stats: new = 0.9 old + 0.1 batch (unbiased variance)")


def main():
    torch.set_num_threads(2)
    check_lrn()
    check_shapes_and_count()
    check_block_gradients()
    check_model_gradients()
    check_sgd_rule()
    if FAILURES:
        print(f"{len(FAILURES)} check(s) failed:\n  " + "\n  ".join(FAILURES))
        return 1
    print("all reference-model checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
