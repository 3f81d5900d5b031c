"""Speed of cv_course's box_iou, nms and roi_align against torchvision's, in one process.

NMS and IoU: two regimes of boxes: (a) scattered, where most boxes are kept, and
(b) clustered around ~20 objects, where few are kept; 1,000 and 5,000 boxes.
RoI Align: 1,000 and 10,000 RoIs pooled to 7 x 7 from an FPN level of a
800 x 1088 batch of two (P2: [2, 256, 200, 272], P4: [2, 256, 50, 68]), each
RoI sized for its level as FPN assigns them; sampling_ratio 2 and -1 (adaptive);
forward alone and forward + backward. CPU, and CUDA when present. Prints medians
and the ratio ours / torchvision (< 1: we are faster).

    python benchmarks/ops.py [--threads N] [--repeats R] [--only nms|roi_align]
"""

from __future__ import annotations

import argparse
import time

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
    parser.add_argument("--only", choices=["nms", "roi_align"], default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print(f"torch {torch.__version__}, threads {args.threads}, devices {devices}")
    if args.only != "roi_align":
        bench_nms(devices, args.repeats)
    if args.only != "nms":
        bench_roi_align(devices, args.repeats)


def bench_nms(devices, repeats: int) -> None:
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
                    t_tv = median_ms(theirs, *a, repeats=repeats)
                    t_ours = median_ms(mine, *a, repeats=repeats)
                    print(f"{name:8} {device:6} {n:>6} {regime:10} {len(keep):>6} "
                          f"{t_ours:>9.3f} {t_tv:>9.3f} {t_ours / t_tv:>8.2f}")


def fpn_rois(n: int, level: int, gen: torch.Generator, image=(800, 1088), images: int = 2):
    """[n, 5] RoIs that FPN (canonical 224 px at level 4) sends to ``level``:
    sqrt(area) in [224 * 2**(level - 4), 224 * 2**(level - 3)), aspect ratios 1/2 to 2."""
    side = 224 * 2.0 ** (level - 4 + torch.rand(n, generator=gen))  # [n]
    ratio = 2.0 ** (2 * torch.rand(n, generator=gen) - 1)  # h / w
    wh = torch.stack([side / ratio.sqrt(), side * ratio.sqrt()], 1)  # [n, 2]
    xy = torch.rand(n, 2, generator=gen) * (torch.tensor([image[1], image[0]]) - wh).clamp(min=1)
    batch = torch.randint(images, (n, 1), generator=gen).float()
    return torch.cat([batch, xy, xy + wh], 1)


def slow_ms(fn, *args, repeats: int) -> float:
    """One timed run for calls over two seconds (torchvision's CPU backward on
    10,000 RoIs takes minutes), the median of several otherwise."""
    start = time.perf_counter()
    fn(*args)
    seconds = time.perf_counter() - start
    return seconds * 1e3 if seconds > 2 else median_ms(fn, *args, repeats=repeats)


def bench_roi_align(devices, repeats: int) -> None:
    print(f"\n{'roi_align':10} {'device':6} {'map':>16} {'rois':>6} {'sr':>3} {'pass':8} "
          f"{'ours ms':>9} {'tv ms':>9} {'ours/tv':>8}")
    for device in devices:
        for level, shape in ((2, (2, 256, 200, 272)), (4, (2, 256, 50, 68))):
            gen = torch.Generator().manual_seed(level)
            x = torch.randn(*shape, generator=gen).to(device)
            xg = x.clone().requires_grad_()
            for n in (1000, 10000):
                rois = fpn_rois(n, level, gen).to(device)
                for sr in (2, -1):
                    a = (rois, 7, 2.0 ** -level, sr)
                    grad = torch.randn(n, shape[1], 7, 7, generator=gen).to(device)
                    ok = torch.allclose(ours.roi_align(x, *a), tvo.roi_align(x, *a), atol=1e-5, rtol=1e-4)
                    assert ok, "results differ"
                    for name, run in (("forward", lambda f: f(x, *a)),
                                      ("fwd+bwd", lambda f: torch.autograd.grad(f(xg, *a), xg, grad))):
                        t_tv = slow_ms(run, tvo.roi_align, repeats=repeats)
                        t_ours = slow_ms(run, ours.roi_align, repeats=repeats)
                        print(f"{'roi_align':10} {device:6} {str(list(shape[2:])):>16} {n:>6} {sr:>3} "
                              f"{name:8} {t_ours:>9.1f} {t_tv:>9.1f} {t_ours / t_tv:>8.2f}")


if __name__ == "__main__":
    main()
