"""Speed of cv_course's box_iou and nms against torchvision's, in one process.

Two regimes of boxes: (a) scattered, where most boxes are kept, and (b) clustered
around ~20 objects, where few are kept; 1,000 and 5,000 boxes; CPU, and CUDA
when present. Prints medians and the ratio ours / torchvision (< 1: we are faster).

    python benchmarks/ops.py [--threads N] [--repeats R]
"""

from __future__ import annotations

import argparse

import torch
import torch.utils.benchmark as tb
import torchvision.ops as tvo

import cv_course.ops as ours


def scattered(n: int, gen: torch.Generator, size: float = 1000.0):
    xy = torch.rand(n, 2, generator=gen) * size
    wh = torch.rand(n, 2, generator=gen) * 40 + 10
    return torch.cat([xy, xy + wh], 1), torch.rand(n, generator=gen)


def clustered(n: int, gen: torch.Generator, objects: int = 20, size: float = 1000.0):
    centres = torch.rand(objects, 2, generator=gen) * size
    wh0 = torch.rand(objects, 2, generator=gen) * 100 + 40
    pick = torch.randint(objects, (n,), generator=gen)
    ctr = centres[pick] + torch.randn(n, 2, generator=gen) * 8
    wh = wh0[pick] * (1 + 0.1 * torch.randn(n, 2, generator=gen)).clamp(min=0.5)
    return torch.cat([ctr - wh / 2, ctr + wh / 2], 1), torch.rand(n, generator=gen)


def median_ms(fn, *args, repeats: int) -> float:
    timer = tb.Timer(stmt="fn(*args)", globals={"fn": fn, "args": args})
    return timer.blocked_autorange(min_run_time=0.2 * repeats).median * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print(f"torch {torch.__version__}, threads {args.threads}, devices {devices}")
    print(f"{'op':8} {'device':6} {'boxes':>6} {'regime':10} {'kept':>6} "
          f"{'ours ms':>9} {'tv ms':>9} {'ours/tv':>8}")
    for device in devices:
        for n in (1000, 5000):
            for regime, make in (("scattered", scattered), ("clustered", clustered)):
                boxes, scores = make(n, torch.Generator().manual_seed(n))
                boxes, scores = boxes.to(device), scores.to(device)
                keep = ours.nms(boxes, scores, 0.5)
                assert torch.equal(keep, tvo.nms(boxes, scores, 0.5)), "results differ"
                rows = [("nms", ours.nms, tvo.nms, (boxes, scores, 0.5))]
                rows.append(("box_iou", ours.box_iou, tvo.box_iou, (boxes, boxes)))
                for name, mine, theirs, a in rows:
                    t_tv = median_ms(theirs, *a, repeats=args.repeats)
                    t_ours = median_ms(mine, *a, repeats=args.repeats)
                    print(f"{name:8} {device:6} {n:>6} {regime:10} {len(keep):>6} "
                          f"{t_ours:>9.3f} {t_tv:>9.3f} {t_ours / t_tv:>8.2f}")


if __name__ == "__main__":
    main()
