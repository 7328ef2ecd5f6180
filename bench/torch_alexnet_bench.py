# PyTorch CPU training throughput of the paper's AlexNet (grouped convs, per-tower LRN, dropout 0.5,
# the paper's SGD step): the anchor the C++ training benchmark is compared against.
# Prints one parseable line: `torch_img_per_s <value>` (median over timed iterations).
import argparse
import contextlib
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "parity"))
import torch_alexnet as ta  # noqa: E402


def paper_init(model, seed):
    """Weights ~ N(0, 0.01^2); biases 1 in conv2, conv4, conv5, fc6, fc7, else 0 (paper section 5)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            layer, param = name.split(".")
            if param == "weight" and layer in ta.LAYERS:
                p.copy_(torch.randn(p.shape, generator=g) * 0.01)
            elif param == "bias":
                p.fill_(1.0 if layer in ("conv2", "conv4", "conv5", "fc6", "fc7") else 0.0)


def main():
    ap = argparse.ArgumentParser(description="PyTorch AlexNet training throughput (CPU or CUDA)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--norm", default="lrn", choices=["lrn", "lrn2d", "batchnorm", "none"])
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--precision", default="float32", choices=["float32", "tf32", "bf16"],
                    help="cuda: float32 with TF32 off, TF32 matmuls/convolutions, or bf16 autocast")
    ap.add_argument("--lrn", choices=["native", "reference"],
                    help="native: PyTorch's own F.local_response_norm per tower (alpha scaled by n, which for odd "
                         "n is the paper's formula), its fastest form; reference: the parity tests' spelled-out "
                         "sum. Default: native on CUDA, reference on the CPU (the anchor of the recorded CPU figures)")
    ap.add_argument("--compile", action="store_true",
                    help="run the model through torch.compile (PyTorch 2; the warm-up steps include the compilation)")
    args = ap.parse_args()
    if args.compile and not hasattr(torch, "compile"):
        print(f"torch_alexnet_bench: --compile needs PyTorch 2 (this is {torch.__version__})", file=sys.stderr)
        return 2
    if args.lrn is None:
        args.lrn = "native" if args.device == "cuda" else "reference"
    if args.lrn == "native":
        assert ta.MODEL_DEFAULTS["lrn"]["n"] % 2 == 1, "PyTorch's LRN windows an even n asymmetrically: --lrn reference"
        ta.lrn_across_channels = lambda x, k, n, alpha, beta: F.local_response_norm(x, n, alpha=alpha * n, beta=beta, k=k)
    cuda = args.device == "cuda"
    if cuda:
        # Its best settings: cuDNN autotuning, channels-last memory format.
        torch.backends.cudnn.benchmark = True
        tf32 = args.precision == "tf32"
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = ta.TorchAlexNet({"num_classes": args.classes, "norm": args.norm, "dropout": 0.5})
    paper_init(model, seed=1)
    model.train()
    params = [(n.replace(".", "/"), p) for n, p in model.named_parameters()]
    velocity = [torch.zeros_like(p) for _, p in params]
    momentum, weight_decay = 0.9, 0.0005
    x = torch.randn(args.batch, 3, 227, 227)
    y = torch.randint(0, args.classes, (args.batch,))
    if cuda:
        model = model.to("cuda", memory_format=torch.channels_last)
        params = [(n.replace(".", "/"), p) for n, p in model.named_parameters()]
        velocity = [torch.zeros_like(p) for _, p in params]
        x = x.to("cuda").contiguous(memory_format=torch.channels_last)
        y = y.to("cuda")

    forward = torch.compile(model) if args.compile else model
    decayed = [i for i, (name, _) in enumerate(params) if ta.decays(name)]
    decayed_v = [velocity[i] for i in decayed]
    decayed_w = [params[i][1] for i in decayed]

    def train_step():
        bf16 = cuda and args.precision == "bf16"
        with torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext():
            loss = F.cross_entropy(forward(x, dropout=True).float(), y)
        model.zero_grad(set_to_none=False)
        loss.backward()
        with torch.no_grad():
            # The paper's rule: v <- m v - wd lr w - lr g (wd on conv/FC weights only); w <- w + v. In
            # PyTorch's multi-tensor form (what its own SGD uses, a few fused launches on CUDA); the same
            # operations in the same order as one tensor at a time.
            torch._foreach_mul_(velocity, momentum)
            torch._foreach_add_(velocity, [p.grad for _, p in params], alpha=-args.lr)
            torch._foreach_add_(decayed_v, decayed_w, alpha=-weight_decay * args.lr)
            torch._foreach_add_([p for _, p in params], velocity)
        if cuda:
            torch.cuda.synchronize()
        return float(loss)

    for _ in range(args.warmup):
        train_step()
    times = []
    for _ in range(args.iters):
        t0 = time.perf_counter()
        loss = train_step()
        times.append(time.perf_counter() - t0)
    median = statistics.median(times)
    print(f"# torch {torch.__version__}, {args.device} {args.precision}, {args.threads} threads, batch {args.batch}, norm {args.norm}, "
          f"{args.classes} classes, LRN {args.lrn}{', torch.compile' if args.compile else ''}; step times {', '.join(f'{t:.3f}' for t in times)} s; last loss {loss:.4f}",
          file=sys.stderr)
    print(f"torch_img_per_s {args.batch / median:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
