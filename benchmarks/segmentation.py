"""Segmentation quality for the same budget: FCN-32s/16s/8s and U-Net with and without skips.

Trains each model on generated scenes with ``cv_course.experiments.segmentation``
(the function the segmentation chapter calls) and prints a Markdown table of
held-out mean IoU and training wall time, plus the machine's load average, since
wall times on a shared CPU depend on what else runs.

    .venv/bin/python benchmarks/segmentation.py [--models unet,fcn8s] [--threads 1]
        [--size 64] [--epochs 8] [--n-train 2048] [--device cpu] [--no-amp] [--progress]

Every model sees the same scenes, in the same order, for the same number of
steps, with the same optimiser and schedule (``BENCHMARK_SETUP`` in
``cv_course/experiments/segmentation.py``).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from dataclasses import replace

import torch

from cv_course.experiments.segmentation import (
    BENCHMARK_SETUP,
    MODEL_NAMES,
    format_table,
    make_loaders,
    train_and_evaluate,
)


def main() -> None:
    default = BENCHMARK_SETUP
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODEL_NAMES))
    # One thread by default: on a shared 2-core machine, two OpenMP threads made a
    # training step anywhere from 1.5x faster to 20x slower, depending on the load.
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--size", type=int, default=default.size)
    parser.add_argument("--epochs", type=int, default=default.epochs)
    parser.add_argument("--n-train", type=int, default=default.n_train)
    parser.add_argument("--n-val", type=int, default=default.n_val)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-amp", action="store_true", help="train in float32")
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    setup = replace(default, size=args.size, epochs=args.epochs, n_train=args.n_train,
                    n_val=args.n_val, amp=not args.no_amp)
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, {args.threads} thread(s), device {args.device}")
    print(setup)
    t0 = time.perf_counter()
    loaders = make_loaders(setup)
    print(f"generated {setup.n_train} + {setup.n_val} scenes in {time.perf_counter() - t0:.1f} s")

    results = []
    for name in args.models.split(","):
        load = os.getloadavg()[0]
        r = train_and_evaluate(name, setup, loaders, device=args.device, progress=args.progress)
        results.append(r)
        iou = " ".join(f"{v:.2f}" for v in r.per_class_iou)
        print(f"{name}: mIoU {r.miou:.3f} in {r.train_seconds:.1f} s (IoU per class {iou}; "
              f"load average {load:.1f} -> {os.getloadavg()[0]:.1f})", flush=True)
    print()
    print(format_table(results))


if __name__ == "__main__":
    main()
