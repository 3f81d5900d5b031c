"""How fast are scenes generated? Prints scenes per second for make_scenes.

Usage: python benchmarks/data_speed.py [--n 1000] [--size 128] [--threads 1]

Timing is the best of ``--repeats`` runs of ``make_scenes(n, size=size)`` after one
warm-up scene, on the CPU (scene generation always runs on the CPU, as in a
DataLoader worker). ``--threads`` sets torch's intra-op threads; 1 is what each
DataLoader worker uses by default.
"""

from __future__ import annotations

import argparse
import time

import torch

from cv_course.data import ClassificationScenes, make_scene, make_scenes


def time_it(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    make_scene(0, args.size)  # warm-up

    t = time_it(lambda: make_scenes(args.n, size=args.size), args.repeats)
    print(f"make_scenes: {args.n} scenes of {args.size}x{args.size} in {t:.2f} s "
          f"= {args.n / t:,.0f} scenes/s ({args.threads} thread(s))")
    ds = ClassificationScenes(args.n, size=64)
    t = time_it(lambda: [ds[i] for i in range(len(ds))], args.repeats)
    print(f"ClassificationScenes: {args.n} items of {ds.size}x{ds.size} in {t:.2f} s "
          f"= {args.n / t:,.0f} items/s")


if __name__ == "__main__":
    main()
