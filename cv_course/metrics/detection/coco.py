"""COCO evaluation (``COCOeval.evaluate`` + ``accumulate``) on tensors.

For every class k, area range a ("all", "small", "medium", "large"), maximum
number of detections per image m and IoU threshold t, COCO builds one
precision-recall curve and samples its interpolated precision at R recall levels:
the result is ``precision[T, R, K, A, M]``, with ``recall[T, K, A, M]`` the final
recall of each curve. -1 marks a (class, area range) without ground truth.

The steps, each over all images at once:

1. per image: sort detections by score within each class, keep the ``max(m)``
   best, and compute the IoU with the ground truths (``regions.py``: the only
   step that depends on boxes vs. masks);
2. greedy matching for all (image, area range, threshold) (``matching.py``);
3. per class: one sort of all its detections by score, and the precision at
   the recall levels (``accumulate.py``).

Conventions copied from ``pycocotools`` so that the numbers agree: thresholds
built in float64 (:func:`coco_linspace`), stable sorts (equal scores keep image
then input order), area bounds inclusive at both ends, crowd regions ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from .accumulate import accumulate
from .ap import coco_linspace
from .inputs import check_image, check_lists, check_values
from .matching import greedy_match
from .regions import RegionType, region_type, stack_padded

# COCO's area ranges in pixels**2: [low, high], both ends included.
AREA_RANGES = {"all": (0.0, 1e5**2), "small": (0.0, 32.0**2), "medium": (32.0**2, 96.0**2),
               "large": (96.0**2, 1e5**2)}


@dataclass
class CocoEvaluation:
    """What ``COCOeval.accumulate()`` leaves in ``eval``, with the labels of its axes."""

    precision: Tensor  # [T, R, K, A, M] interpolated precision at each recall level, -1: no ground truth
    recall: Tensor  # [T, K, A, M] recall after all detections, -1: no ground truth
    scores: Tensor  # [T, R, K, A, M] score of the detection where each recall level is reached
    iou_thresholds: Tensor  # [T]
    rec_thresholds: Tensor  # [R]
    classes: Tensor  # [K] labels, sorted
    area_ranges: tuple[str, ...]  # [A] names, keys of AREA_RANGES
    max_detections: tuple[int, ...]  # [M] detections per image and class, increasing

    def curve(self, label: int, iou_threshold: float = 0.5, area: str = "all",
              max_detections: int | None = None) -> tuple[Tensor, Tensor]:
        """The interpolated precision-recall curve of one class, to plot.

        Returns:
            recall (Tensor[R]) and precision (Tensor[R]): ``precision[r]`` is the best precision
            at a recall of at least ``recall[r]``; its mean is the class's AP at that threshold.
        """
        k = (self.classes == label).nonzero().flatten()
        t = (self.iou_thresholds == iou_threshold).nonzero().flatten()
        if k.numel() == 0 or t.numel() == 0 or area not in self.area_ranges:
            raise ValueError(f"no curve for label {label}, IoU {iou_threshold}, area {area!r}: labels are "
                             f"{self.classes.tolist()}, thresholds {self.iou_thresholds.tolist()}, "
                             f"areas {self.area_ranges}")
        m = self.max_detections.index(max_detections) if max_detections else len(self.max_detections) - 1
        return self.rec_thresholds, self.precision[t[0], :, k[0], self.area_ranges.index(area), m]


def _thresholds(values, default: Tensor, name: str, device) -> Tensor:
    if values is None:
        return default.to(device)
    t = torch.as_tensor(values, dtype=torch.float64).to(device).reshape(-1)
    if t.numel() == 0 or bool(((t < 0) | (t > 1)).any()):
        raise ValueError(f"{name} must be a non-empty list of values in [0, 1], got {values!r}")
    return t


def _first_device(predictions, targets, key):
    for d in list(predictions) + list(targets):
        if isinstance(d, dict) and isinstance(d.get(key), Tensor):
            return d[key].device
    return torch.device("cpu")


class _Images(NamedTuple):
    """All images' detections [I, N] and ground truths [I, G], padded; float64 geometry."""

    score: Tensor  # [I, N]
    label: Tensor  # [I, N]
    real_det: Tensor  # [I, N] bool, False for padding
    gt_label: Tensor  # [I, G]
    real_gt: Tensor  # [I, G] bool
    crowd: Tensor  # [I, G] bool
    iou: Tensor  # [I, N, G]
    det_area: Tensor  # [I, N]
    gt_area: Tensor  # [I, G]


def _stack(predictions: list[dict], targets: list[dict], region: RegionType, device) -> _Images:
    """Check the values and pad every per-image field into one tensor."""
    def stack(xs, dtype):
        return stack_padded(xs, dtype).to(device)

    score = stack([p["scores"] for p in predictions], torch.float64)  # [I, N]
    # Optional fields: an image without one lends its labels as a placeholder, masked out here.
    given = {key: torch.tensor([t.get(key) is not None for t in targets], device=device)[:, None]
             for key in ("iscrowd", "area")}  # [I, 1] each
    crowd, area = (stack([t[key] if t.get(key) is not None else t["labels"] for t in targets],
                         torch.float64).where(given[key], 0) for key in ("iscrowd", "area"))  # [I, G]
    check_values(score, crowd, area)
    n_det = torch.tensor([len(p["labels"]) for p in predictions], device=device)  # [I]
    n_gt = torch.tensor([len(t["labels"]) for t in targets], device=device)  # [I]
    crowd = crowd.bool()
    iou, det_area, gt_area = region.geometry([p[region.key].to(device) for p in predictions],
                                             [t[region.key].to(device) for t in targets], crowd)
    return _Images(
        score=score, label=stack([p["labels"] for p in predictions], torch.long),
        real_det=torch.arange(score.shape[1], device=device) < n_det[:, None],
        gt_label=stack([t["labels"] for t in targets], torch.long),
        real_gt=torch.arange(crowd.shape[1], device=device) < n_gt[:, None], crowd=crowd,
        iou=iou, det_area=det_area,
        gt_area=torch.where(given["area"], area, gt_area))  # COCO uses the annotation's area if given


def _sort_and_cap(score: Tensor, label: Tensor, real: Tensor, max_det: int):
    """Order each image's detections by class, then by decreasing score, and keep the
    ``max_det`` best of each class (as COCO does per image and class).

    Args: score, label, real (Tensor[I, N]): padded detections (``real`` marks the non-padding).
    Returns:
        index (Tensor[I, D]): positions in N of the kept detections, kept ones first.
        kept (Tensor[I, D], bool): which entries of ``index`` are real.
        rank (Tensor[I, D]): rank of each kept detection within its image and class.
    """
    I, N = score.shape
    order = torch.sort(score, dim=1, descending=True, stable=True).indices  # [I, N] by score...
    group = torch.where(real, label, label.max() + 1 if N else 0).gather(1, order)  # padding last
    by_class = torch.sort(group, dim=1, stable=True)  # ...within each class (stable: ties keep order)
    order, group = order.gather(1, by_class.indices), by_class.values  # [I, N]
    position = torch.arange(N, device=score.device).expand(I, N)  # [I, N]
    start = torch.ones_like(group, dtype=torch.bool)
    start[:, 1:] = group[:, 1:] != group[:, :-1]  # [I, N] first detection of each class
    rank = position - torch.where(start, position, 0).cummax(1).values  # [I, N]
    keep = (rank < max_det) & real.gather(1, order)  # [I, N]
    front = torch.sort((~keep).byte(), dim=1, stable=True).indices  # [I, N] kept ones first
    D = int(keep.sum(1).max()) if I and N else 0
    front = front[:, :D]
    return order.gather(1, front), keep.gather(1, front), rank.gather(1, front)


def _outside(area: Tensor) -> Tensor:
    """Tensor[...] -> Tensor[..., A]: True where the area is outside each of COCO's ranges."""
    low, high = (area.new_tensor(b) for b in zip(*AREA_RANGES.values()))  # [A] each
    return (area[..., None] < low) | (area[..., None] > high)


def _match(im: _Images, iou_thr: Tensor, max_det: int):
    """True positives and counted detections at every (area range, threshold).

    Returns:
        score, label, rank (Tensor[N']): the detections kept (``max_det`` per image and class),
            image by image; ``rank`` within their image and class.
        tp, counted (Tensor[N', A, T], bool): true positive, and not ignored.
        gt_counted (Tensor[G', A], bool): the real ground truths, and whether each counts.
    """
    index, kept, rank = _sort_and_cap(im.score, im.label, im.real_det, max_det)  # [I, D] each
    (I, D), G = index.shape, im.gt_label.shape[1]
    label = im.label.gather(1, index)  # [I, D]
    iou = im.iou.gather(1, index[:, :, None].expand(I, D, G))  # [I, D, G]
    never = (label[:, :, None] != im.gt_label[:, None, :]) | ~kept[:, :, None] | ~im.real_gt[:, None, :]
    iou = iou.masked_fill(never, -1.0)  # other classes and padding never match
    gt_ignore = im.crowd[..., None] | _outside(im.gt_area) | ~im.real_gt[..., None]  # [I, G, A]
    gt_ignore = gt_ignore.transpose(1, 2)  # [I, A, G]
    matched, matched_ignored = greedy_match(iou, iou_thr, gt_ignore, im.crowd)  # [I, D, A, T] each

    where = kept.flatten().nonzero().flatten()  # [N'] the kept detections, image by image
    pick = lambda x: x.flatten(0, 1).index_select(0, where)  # noqa: E731  [I, D, ...] -> [N', ...]
    matched, matched_ignored = pick(matched), pick(matched_ignored)  # [N', A, T]
    det_area = pick(im.det_area.gather(1, index))  # [N']
    # Unmatched detections outside the area range are ignored too, not false positives.
    ignored = matched_ignored | (~matched & _outside(det_area)[:, :, None])  # [N', A, T]
    return (pick(im.score.gather(1, index)), pick(label), pick(rank), matched & ~ignored, ~ignored,
            ~gt_ignore.transpose(1, 2)[im.real_gt])


def evaluate(predictions: list[dict], targets: list[dict], iou_type: str = "bbox",
             iou_thresholds=None, rec_thresholds=None,
             max_detection_thresholds=(1, 10, 100)) -> CocoEvaluation:
    """COCO evaluation of detections: the precision-recall table of every class.

    Args:
        predictions (list[dict]): per image, ``boxes`` (Tensor[N, 4], (x1, y1, x2, y2))
            or ``masks`` (Tensor[N, H, W] bool) for ``iou_type="segm"``, ``scores``
            (Tensor[N]) and ``labels`` (Tensor[N] int).
        targets (list[dict]): per image, ``boxes`` or ``masks`` (Tensor[K, ...]),
            ``labels`` (Tensor[K] int), optional ``iscrowd`` (Tensor[K] 0/1) and ``area``
            (Tensor[K], default: box or mask area).
        iou_type (str): ``"bbox"`` or ``"segm"``.
        iou_thresholds (list[float], optional): default 0.5, 0.55, ..., 0.95.
        rec_thresholds (list[float], optional): default 0, 0.01, ..., 1.
        max_detection_thresholds (tuple[int, ...]): detections per image scored, default (1, 10, 100).
    Returns:
        CocoEvaluation: ``precision`` Tensor[T, R, K, A, M] (as ``COCOeval.eval['precision']``),
        ``recall`` Tensor[T, K, A, M], ``scores``, and the axis labels.
    """
    region = region_type(iou_type)
    check_lists(predictions, targets)
    for i, (p, t) in enumerate(zip(predictions, targets)):
        check_image(p, t, i, region)
    max_dets = tuple(sorted(int(m) for m in max_detection_thresholds))
    if not max_dets or max_dets[0] < 1:
        raise ValueError(f"max_detection_thresholds must be positive ints, got {max_detection_thresholds!r}")
    device = _first_device(predictions, targets, region.key)
    iou_thr = _thresholds(iou_thresholds, coco_linspace(0.5, 0.95, 0.05), "iou_thresholds", device)
    rec_thr = _thresholds(rec_thresholds, coco_linspace(0.0, 1.0, 0.01), "rec_thresholds", device)
    A, T = len(AREA_RANGES), len(iou_thr)
    if predictions:
        images = _stack(predictions, targets, region, device)
        score, label, rank, tp, counted, gt_counted = _match(images, iou_thr, max_dets[-1])
        gt_label = images.gt_label[images.real_gt]  # [G']
    else:  # no image at all: no class, every number undefined
        empty = torch.zeros(0, dtype=torch.long, device=device)
        score, label, rank, gt_label = empty.double(), empty, empty, empty
        tp = counted = torch.zeros(0, A, T, dtype=torch.bool, device=device)
        gt_counted = torch.zeros(0, A, dtype=torch.bool, device=device)
    classes = torch.unique(torch.cat([label, gt_label]))  # [K], sorted
    num_gt = torch.zeros(len(classes), A, dtype=torch.float64, device=device)
    num_gt.index_add_(0, torch.searchsorted(classes, gt_label), gt_counted.double())  # [K, A]
    tables = accumulate(score, torch.searchsorted(classes, label), rank, tp, counted, num_gt,
                        rec_thr, max_dets)
    return CocoEvaluation(*tables, iou_thr, rec_thr, classes, tuple(AREA_RANGES), max_dets)
