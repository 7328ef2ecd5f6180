# Independent numpy reference for the normalisation worked examples (model/norm_examples.h):
# builds both inputs from their formulas, applies LRN, 2D LRN, BN2d and BN1d straight from the
# definitions, checks hand-derivable cases, and writes every value to a text file.
"""Usage: /usr/bin/python3 norm_examples_ref.py OUT.txt

OUT.txt holds, per example and op, a header line
    example E op NAME ndim D d0 d1 ...
followed by the values in row-major order, one per line (repr, so float64 round-trips exactly).
Ops: input, lrn, lrn2d, bn2d, bn1d. Exit status 0 only when every self-check passes.
"""
import sys

try:
    import numpy as np
except ImportError:
    sys.stderr.write(
        "norm_examples_ref.py: numpy is not importable by %s; install it (Debian: apt-get "
        "install python3-numpy) or point ALEXNET_NUMPY_PYTHON at a Python that has it\n"
        % sys.executable)
    sys.exit(2)

LRN_K, LRN_ALPHA, LRN_BETA, LRN_N = 1.0, 0.01, 0.5, 2
BN_EPS = 1e-5


def example_input(example):
    """x[n,c,h,w] as documented in model/norm_examples.h, float64."""
    channels = {1: 3, 2: 4}[example]
    n, c, h, w = np.meshgrid(np.arange(10.0), np.arange(float(channels)), np.arange(10.0),
                             np.arange(10.0), indexing="ij")
    if example == 1:
        return np.sin(0.1 * (n + 1) + 0.37 * c + 0.05 * h * w)
    return (c + 1) * np.cos(0.3 * n - 0.2 * c + 0.1 * h) + 0.05 * w


def lrn_across(x, k, alpha, beta, n):
    """b[i] = a[i] / (k + alpha * sum_{j=max(0,i-n//2)}^{min(C-1,i+n//2)} a[j]^2)^beta."""
    channels = x.shape[1]
    half = n // 2
    y = np.empty_like(x)
    for c in range(channels):
        lo, hi = max(0, c - half), min(channels - 1, c + half)
        s = (x[:, lo:hi + 1] ** 2).sum(axis=1)
        y[:, c] = x[:, c] / (k + alpha * s) ** beta
    return y


def lrn_within(x, k, alpha, beta, n):
    """The same over the clipped window [r-n//2, r+n//2] x [q-n//2, q+n//2] of one channel."""
    height, width = x.shape[2], x.shape[3]
    half = n // 2
    y = np.empty_like(x)
    for r in range(height):
        for q in range(width):
            r0, r1 = max(0, r - half), min(height - 1, r + half)
            q0, q1 = max(0, q - half), min(width - 1, q + half)
            s = (x[:, :, r0:r1 + 1, q0:q1 + 1] ** 2).sum(axis=(2, 3))
            y[:, :, r, q] = x[:, :, r, q] / (k + alpha * s) ** beta
    return y


def batchnorm(x, eps):
    """Training-mode batch norm, gamma 1, beta 0: batch mean and biased variance per channel
    (axes all but 1)."""
    axes = tuple(a for a in range(x.ndim) if a != 1)
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    return (x - mean) / np.sqrt(var + eps)


def all_ops(x):
    return {
        "input": x,
        "lrn": lrn_across(x, LRN_K, LRN_ALPHA, LRN_BETA, LRN_N),
        "lrn2d": lrn_within(x, LRN_K, LRN_ALPHA, LRN_BETA, LRN_N),
        "bn2d": batchnorm(x, BN_EPS),
        "bn1d": batchnorm(x.reshape(x.shape[0], -1), BN_EPS),
    }


failures = []


def expect_close(what, got, want, tol=1e-15):
    got = np.asarray(got, dtype=np.float64)
    if got.shape != np.shape(want) and np.ndim(want) != 0:
        failures.append("%s: shape %s, expected %s" % (what, got.shape, np.shape(want)))
        return
    err = float(np.max(np.abs(got - want)))
    if not err <= tol:
        failures.append("%s: max error %.3g > %.3g" % (what, err, tol))


def self_checks():
    a = 1.5
    x = np.full((2, 3, 4, 4), a)
    ops = all_ops(x)
    # Across channels, n=2 sums channels c-1..c+1: 2 channels at the ends, 3 in the middle.
    expect_close("lrn constant, channel 0", ops["lrn"][:, 0], a / np.sqrt(1 + 0.01 * 2 * a * a))
    expect_close("lrn constant, channel 1", ops["lrn"][:, 1], a / np.sqrt(1 + 0.01 * 3 * a * a))
    expect_close("lrn constant, channel 2", ops["lrn"][:, 2], a / np.sqrt(1 + 0.01 * 2 * a * a))
    # 2D, n=2: 3x3 window; a corner sees 4 values, an edge 6, the interior 9.
    expect_close("lrn2d corner", ops["lrn2d"][:, :, 0, 0], a / np.sqrt(1 + 0.01 * 4 * a * a))
    expect_close("lrn2d edge", ops["lrn2d"][:, :, 0, 1], a / np.sqrt(1 + 0.01 * 6 * a * a))
    expect_close("lrn2d interior", ops["lrn2d"][:, :, 1, 2], a / np.sqrt(1 + 0.01 * 9 * a * a))
    # A constant has zero variance: batch norm gives 0.
    expect_close("bn2d constant", ops["bn2d"], np.zeros_like(x))
    expect_close("bn1d constant", ops["bn1d"], np.zeros((2, 48)))
    # One feature holding 1, 2, 3, 4 over the batch: mean 2.5, biased variance 1.25.
    v = np.array([1.0, 2.0, 3.0, 4.0]).reshape(4, 1)
    expect_close("bn1d 1..4", batchnorm(v, BN_EPS)[:, 0],
                 (np.array([1.0, 2.0, 3.0, 4.0]) - 2.5) / np.sqrt(1.25 + BN_EPS))
    # Single nonzero channel value 3 at channel 1: its neighbours' scale sees 9.
    x = np.zeros((1, 3, 1, 1))
    x[0, 1, 0, 0] = 3.0
    expect_close("lrn single spike", lrn_across(x, LRN_K, LRN_ALPHA, LRN_BETA, LRN_N)[0, :, 0, 0],
                 np.array([0.0, 3.0 / np.sqrt(1.09), 0.0]))
    # The documented inputs: two values worked by hand from the formulas.
    expect_close("example 1 x[1,2,3,4]", example_input(1)[1, 2, 3, 4], np.sin(0.2 + 0.74 + 0.6))
    expect_close("example 2 x[2,3,4,5]", example_input(2)[2, 3, 4, 5],
                 4 * np.cos(0.6 - 0.6 + 0.4) + 0.25)
    for e in (1, 2):
        ops = all_ops(example_input(e))
        # Batch norm output has mean 0 and (biased) variance var/(var+eps) ~ 1 per channel.
        expect_close("example %d bn2d channel means" % e, ops["bn2d"].mean(axis=(0, 2, 3)), 0.0,
                     1e-12)
        expect_close("example %d bn1d feature means" % e, ops["bn1d"].mean(axis=0), 0.0, 1e-12)


def main():
    if len(sys.argv) != 2:
        sys.stderr.write(__doc__)
        return 2
    self_checks()
    if failures:
        sys.stderr.write("norm_examples_ref.py: self-checks failed:\n  " + "\n  ".join(failures)
                         + "\n")
        return 1
    with open(sys.argv[1], "w") as out:
        for e in (1, 2):
            for name, y in all_ops(example_input(e)).items():
                out.write("example %d op %s ndim %d %s\n"
                          % (e, name, y.ndim, " ".join(str(d) for d in y.shape)))
                out.write("\n".join(repr(float(v)) for v in y.ravel()))
                out.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
