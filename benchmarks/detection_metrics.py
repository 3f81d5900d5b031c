"""Speed of cv_course's mean_average_precision against pycocotools' COCOeval, in one process.

Synthetic detector output on N images (default 5,000): 3-8 ground truths and
20-100 detections per image over 4 classes; most detections are jittered copies
of a ground truth (sometimes with the wrong class), the rest are scattered boxes.
Times ``mean_average_precision`` (input checks included) against COCOeval's
``evaluate() + accumulate() + summarize()`` (building its in-memory COCO objects
is not timed), prints the ratio and checks that the 12 summary numbers agree.

    python benchmarks/detection_metrics.py [--images N] [--threads N] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import time

import numpy as np
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from cv_course.metrics import mean_average_precision

KEYS = ("map", "map_50", "map_75", "map_small", "map_medium", "map_large",
        "mar_1", "mar_10", "mar_100", "mar_small", "mar_medium", "mar_large")


def synthetic(n_images: int, seed: int = 0, n_classes: int = 4):
    g = torch.Generator().manual_seed(seed)
    preds, targets = [], []
    for _ in range(n_images):
        G = int(torch.randint(3, 9, (1,), generator=g))
        wh = torch.exp(torch.empty(G, 2).uniform_(np.log(8), np.log(200), generator=g))
        xy = torch.rand(G, 2, generator=g) * 400
        boxes = torch.cat([xy, xy + wh], 1)
        labels = torch.randint(0, n_classes, (G,), generator=g)
        D = int(torch.randint(20, 101, (1,), generator=g))
        src = torch.randint(0, G, (D,), generator=g)
        noise = torch.randn(D, 4, generator=g) * wh[src].repeat(1, 2) * 0.15 * torch.rand(D, 1, generator=g)
        det = boxes[src] + noise
        scattered = torch.rand(D, generator=g) < 0.4
        xy = torch.rand(D, 2, generator=g) * 400
        elsewhere = torch.cat([xy, xy + torch.rand(D, 2, generator=g) * 150 + 4], 1)
        det = torch.where(scattered[:, None], elsewhere, det)
        det = torch.cat([det[:, :2].minimum(det[:, 2:]), det[:, :2].maximum(det[:, 2:])], 1)
        wrong = torch.rand(D, generator=g) < 0.2
        det_labels = torch.where(wrong, torch.randint(0, n_classes, (D,), generator=g), labels[src])
        low, high = 0.6 * torch.rand(D, generator=g), 0.3 + 0.7 * torch.rand(D, generator=g)
        scores = torch.where(scattered, low, high)
        targets.append({"boxes": boxes, "labels": labels})
        preds.append({"boxes": det, "scores": scores, "labels": det_labels})
    return preds, targets


def to_coco(preds, targets):
    """In-memory COCO ground truth and results (boxes as (x, y, w, h), ids from 1)."""
    images, anns, dets = [], [], []
    for i, (p, t) in enumerate(zip(preds, targets)):
        images.append({"id": i + 1})
        for box, label in zip(t["boxes"].double().tolist(), t["labels"].tolist()):
            x1, y1, x2, y2 = box
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": label, "iscrowd": 0,
                         "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1)})
        for box, s, label in zip(p["boxes"].double().tolist(), p["scores"].tolist(), p["labels"].tolist()):
            x1, y1, x2, y2 = box
            dets.append({"image_id": i + 1, "category_id": label, "score": s,
                         "bbox": [x1, y1, x2 - x1, y2 - y1]})
    classes = sorted({a["category_id"] for a in anns} | {d["category_id"] for d in dets})
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {"images": images, "annotations": anns, "categories": [{"id": c} for c in classes]}
        gt.createIndex()
        dt = gt.loadRes(dets)
    return gt, dt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    preds, targets = synthetic(args.images)
    n_det = sum(len(p["scores"]) for p in preds)
    n_gt = sum(len(t["labels"]) for t in targets)
    print(f"torch {torch.__version__}, threads {args.threads}, device {args.device}: "
          f"{args.images} images, {n_gt} ground truths, {n_det} detections, 4 classes")
    dev = torch.device(args.device)
    preds_d = [{k: v.to(dev) for k, v in p.items()} for p in preds]
    targets_d = [{k: v.to(dev) for k, v in t.items()} for t in targets]

    mean_average_precision(preds_d[:50], targets_d[:50])  # warm-up (allocator, CUDA context)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    ours = mean_average_precision(preds_d, targets_d)
    ours = {k: float(v) for k, v in ours.items()}  # includes the device sync
    t_ours = time.perf_counter() - start

    gt, dt = to_coco(preds, targets)
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        E = COCOeval(gt, dt, "bbox")
        E.evaluate()
        E.accumulate()
        E.summarize()
    t_coco = time.perf_counter() - start

    diff = max(abs(ours[k] - s) for k, s in zip(KEYS, E.stats))
    print(f"{'':10}" + " ".join(f"{k:>10}" for k in KEYS))
    print(f"{'ours':10}" + " ".join(f"{ours[k]:10.6f}" for k in KEYS))
    print(f"{'COCOeval':10}" + " ".join(f"{s:10.6f}" for s in E.stats))
    print(f"largest difference of the 12 stats: {diff:.2e} ({'agree' if diff < 1e-6 else 'DISAGREE'})")
    print(f"ours {t_ours:.2f} s, COCOeval {t_coco:.2f} s, ours/COCOeval = {t_ours / t_coco:.3f}")


if __name__ == "__main__":
    main()
