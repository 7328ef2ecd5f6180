# PyTorch timings of the layers bench_layers times (same shapes, fp32, CPU, median of 5), one line
# "name fwd_ms bwd_ms" per layer. Run with Debian's /usr/bin/python3 (torch 1.13).
import argparse
import statistics
import time

import torch
import torch.nn.functional as F


def median_ms(reps, fn):
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def conv(name, xs, ws, stride, pad, groups, need_dx, reps):
    x = torch.randn(*xs, requires_grad=need_dx)
    w = (torch.randn(*ws) * 0.01).requires_grad_()
    b = torch.zeros(ws[0], requires_grad=True)
    fwd = median_ms(reps, lambda: torch.relu(F.conv2d(x, w, b, stride, pad, 1, groups)))
    with torch.no_grad():
        dy = torch.randn_like(F.conv2d(x, w, b, stride, pad, 1, groups))

    # Backward of the conv alone: recompute the forward graph outside the timed region.
    def bwd_once():
        y = F.conv2d(x, w, b, stride, pad, 1, groups)
        t0 = time.perf_counter()
        y.backward(dy)
        return (time.perf_counter() - t0) * 1e3

    bwd_once()
    bwd = statistics.median(bwd_once() for _ in range(reps))
    print(f"{name} {fwd:.3f} {bwd:.3f}", flush=True)


def linear(name, n, fin, fout, reps):
    x = torch.randn(n, fin, requires_grad=True)
    w = (torch.randn(fout, fin) * 0.01).requires_grad_()
    b = torch.zeros(fout, requires_grad=True)
    fwd = median_ms(reps, lambda: torch.relu(F.linear(x, w, b)))
    dy = torch.randn(n, fout)

    def bwd_once():
        y = F.linear(x, w, b)
        t0 = time.perf_counter()
        y.backward(dy)
        return (time.perf_counter() - t0) * 1e3

    bwd_once()
    bwd = statistics.median(bwd_once() for _ in range(reps))
    print(f"{name} {fwd:.3f} {bwd:.3f}", flush=True)


def pool(name, xs, reps):
    x = torch.randn(*xs, requires_grad=True)
    fwd = median_ms(reps, lambda: F.max_pool2d(x, 3, 2))
    dy = torch.randn_like(F.max_pool2d(x.detach(), 3, 2))

    def bwd_once():
        y = F.max_pool2d(x, 3, 2)
        t0 = time.perf_counter()
        y.backward(dy)
        return (time.perf_counter() - t0) * 1e3

    bwd_once()
    bwd = statistics.median(bwd_once() for _ in range(reps))
    print(f"{name} {fwd:.3f} {bwd:.3f}", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=5)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    n, r = 64, a.reps
    conv("conv1", (n, 3, 227, 227), (48, 3, 11, 11), 4, 0, 1, False, r)
    conv("conv2", (n, 48, 27, 27), (128, 48, 5, 5), 1, 2, 1, True, r)
    conv("conv3", (n, 256, 13, 13), (192, 256, 3, 3), 1, 1, 1, True, r)
    conv("conv4", (n, 192, 13, 13), (192, 192, 3, 3), 1, 1, 1, True, r)
    conv("conv5", (n, 192, 13, 13), (128, 192, 3, 3), 1, 1, 1, True, r)
    conv("conv1_merged", (n, 3, 227, 227), (96, 3, 11, 11), 4, 0, 1, False, r)
    conv("conv2_g2", (n, 96, 27, 27), (256, 48, 5, 5), 1, 2, 2, True, r)
    linear("fc6", n, 9216, 2048, r)
    linear("fc7", n, 4096, 2048, r)
    linear("fc8", n, 4096, 500, r)
    pool("pool1", (n, 48, 55, 55), r)
    pool("pool2", (n, 128, 27, 27), r)
    pool("pool5", (n, 128, 13, 13), r)


if __name__ == "__main__":
    main()
