"""Speed of cv_course's upsampling ops relative to torch's built-in kernels.

Prints, for FCN-sized inputs, the time of our op divided by torch's
(1.0 = as fast; 3.0 = three times slower), forward and forward + backward.

    .venv/bin/python benchmarks/upsample.py [--device cuda] [--threads 1]
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch.utils import benchmark

from cv_course.ops import conv_transpose2d, max_unpool2d, nearest_unpool


def _time(fn, min_run_time: float) -> float:
    """Median seconds per call of ``fn()`` (the Timer synchronizes CUDA)."""
    timer = benchmark.Timer("fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    return timer.blocked_autorange(min_run_time=min_run_time).median


def _fwd_bwd(op, *args):
    def run():
        out = op(*args)
        out.backward(torch.ones_like(out))
    return run


def cases(device: torch.device):
    """(name, ours, torch's) triples; tensors are made once, outside the timing."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 64, 32, 32, generator=g).to(device).requires_grad_()
    w = (0.05 * torch.randn(64, 64, 4, 4, generator=g)).to(device).requires_grad_()
    b = torch.zeros(64, device=device, requires_grad=True)
    ct = dict(stride=2, padding=1)  # FCN's 2x upsampler: kernel 4, stride 2, padding 1
    yield ("conv_transpose2d fwd [8,64,32,32] k4 s2",
           lambda: conv_transpose2d(x, w, b, **ct), lambda: F.conv_transpose2d(x, w, b, **ct))
    yield ("conv_transpose2d fwd+bwd",
           _fwd_bwd(lambda: conv_transpose2d(x, w, b, **ct)),
           _fwd_bwd(lambda: F.conv_transpose2d(x, w, b, **ct)))
    pooled, idx = F.max_pool2d(x.detach(), 2, return_indices=True)
    yield ("max_unpool2d fwd [8,64,16,16] k2",
           lambda: max_unpool2d(pooled, idx, 2), lambda: F.max_unpool2d(pooled, idx, 2))
    xs = x.detach()
    yield ("nearest_unpool fwd x2", lambda: nearest_unpool(xs, 2),
           lambda: F.interpolate(xs, scale_factor=2, mode="nearest"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--min-run-time", type=float, default=1.0, help="seconds per measurement")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    print(f"{'case':42s} {'ours ms':>9s} {'torch ms':>9s} {'ours/torch':>10s}")
    for name, ours, ref in cases(device):
        t_ours, t_ref = _time(ours, args.min_run_time), _time(ref, args.min_run_time)
        print(f"{name:42s} {1e3 * t_ours:9.3f} {1e3 * t_ref:9.3f} {t_ours / t_ref:10.2f}")


if __name__ == "__main__":
    main()
