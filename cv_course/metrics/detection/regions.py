"""The only part of detection evaluation that depends on what a region is.

COCO scores boxes (``iou_type="bbox"``) and instance masks (``iou_type="segm"``)
with the same matching and the same averaging; the two differ only in

* the key that holds the regions in a prediction or target dict (``boxes`` / ``masks``);
* the pairwise IoU, including COCO's rule for *crowd* regions: a detection inside
  a crowd region is scored by ``intersection / area of the detection`` (the union
  would punish it for not covering the whole crowd);
* the area that puts an object in the small / medium / large range.

Each :class:`RegionType` computes the last two for all images in one call, in
float64, the precision of ``pycocotools``, so that ``IoU >= 0.5`` is decided
exactly as COCO decides it. Boxes are padded and done in one batch; masks differ
in size from image to image and are done image by image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence

from ...ops._checks import check_boxes
from ...ops.boxes import _safe_div, box_area


def box_iou_crowd(pred_boxes: Tensor, gt_boxes: Tensor, gt_crowd: Tensor) -> Tensor:
    """IoU of every (detection, ground truth) pair, COCO's way for crowd regions.

    Args:
        pred_boxes (Tensor[..., D, 4]): (x1, y1, x2, y2) detections (leading dims: a batch of images).
        gt_boxes (Tensor[..., G, 4]): (x1, y1, x2, y2) ground truths.
        gt_crowd (Tensor[..., G], bool): True for crowd regions.
    Returns:
        Tensor[..., D, G]: ``intersection / union``, equal to :func:`cv_course.ops.box_iou`
        image by image, except ``intersection / area(detection)`` in crowd columns;
        0 where the denominator is 0.
    """
    pred_area, gt_area = box_area(pred_boxes), box_area(gt_boxes)  # [..., D], [..., G]
    lt = torch.max(pred_boxes[..., :, None, :2], gt_boxes[..., None, :, :2])  # [..., D, G, 2]
    rb = torch.min(pred_boxes[..., :, None, 2:], gt_boxes[..., None, :, 2:])  # [..., D, G, 2]
    wh = (rb - lt).clamp(min=0)  # [..., D, G, 2]
    inter = wh[..., 0] * wh[..., 1]  # [..., D, G]
    union = pred_area[..., :, None] + gt_area[..., None, :] - inter  # [..., D, G]
    return _safe_div(inter, torch.where(gt_crowd[..., None, :], pred_area[..., :, None], union))


def mask_iou_crowd(pred_masks: Tensor, gt_masks: Tensor, gt_crowd: Tensor) -> Tensor:
    """IoU of every (detection, ground truth) pair of binary masks, COCO's way for crowds.

    Args:
        pred_masks (Tensor[D, H, W], bool): detected instance masks.
        gt_masks (Tensor[G, H, W], bool): ground-truth masks of the same image.
        gt_crowd (Tensor[G], bool): True for crowd regions.
    Returns:
        Tensor[D, G] (float64): pixel IoU, ``intersection / area(detection)`` in crowd
        columns, 0 where the denominator is 0.
    """
    D, G = pred_masks.shape[0], gt_masks.shape[0]
    if D == 0 or G == 0:
        return torch.zeros((D, G), dtype=torch.float64, device=pred_masks.device)
    # float64 pixel counts are exact, so the IoU is the same correctly rounded
    # quotient that pycocotools computes from run-length encodings.
    p = pred_masks.reshape(D, -1).double()  # [D, H*W]
    g = gt_masks.reshape(G, -1).double()  # [G, H*W]
    inter = p @ g.T  # [D, G]
    pred_area = p.sum(1)[:, None].expand(D, G)  # [D, G]
    union = pred_area + g.sum(1)[None, :] - inter  # [D, G]
    return _safe_div(inter, torch.where(gt_crowd[None, :], pred_area, union))


def stack_padded(xs: list[Tensor], dtype: torch.dtype, value: float = 0) -> Tensor:
    """Per-image tensors ``[N_i, ...]`` -> one ``Tensor[I, max N_i, ...]`` of ``dtype``,
    ``value`` after each image's N_i entries (converted once, not image by image)."""
    first = xs[0]
    if any(x.dtype != first.dtype for x in xs):
        xs = [x.to(dtype) for x in xs]
    xs = [x.to(first.device) for x in xs]  # no copy when already there
    return pad_sequence(xs, batch_first=True, padding_value=value).to(dtype)


def _box_geometry(preds: list[Tensor], gts: list[Tensor], gt_crowd: Tensor):
    pred, gt = stack_padded(preds, torch.float64), stack_padded(gts, torch.float64)  # [I, N, 4], [I, G, 4]
    for name, boxes in (("predictions", pred), ("targets", gt)):
        bad = (boxes[..., 2] < boxes[..., 0]) | (boxes[..., 3] < boxes[..., 1])  # [I, N]
        if bool(bad.any()):
            i, j = bad.nonzero()[0].tolist()
            raise ValueError(f"{name}[{i}]['boxes'][{j}] = {boxes[i, j].tolist()} has x2 < x1 or y2 < y1; "
                             "boxes must be (x1, y1, x2, y2): convert (x, y, w, h) or (cx, cy, w, h) "
                             "boxes with cv_course.ops.box_convert")
    return box_iou_crowd(pred, gt, gt_crowd), box_area(pred), box_area(gt)


def pad_ious(ious: list[Tensor], fill: float = -1.0) -> Tensor:
    """Stack per-image IoU matrices ``Tensor[D_i, G_i]`` into ``Tensor[I, max D, max G]``,
    padded with ``fill``."""
    I = len(ious)
    D = max((m.shape[0] for m in ious), default=0)
    G = max((m.shape[1] for m in ious), default=0)
    device = ious[0].device if ious else None
    out = torch.full((I, D, G), fill, dtype=torch.float64, device=device)
    for i, m in enumerate(ious):  # one copy per image
        out[i, : m.shape[0], : m.shape[1]] = m
    return out


def _mask_area(masks: list[Tensor]) -> Tensor:
    return stack_padded([m.flatten(1).sum(1) for m in masks], torch.float64)  # [I, N] pixels


def _mask_geometry(preds: list[Tensor], gts: list[Tensor], gt_crowd: Tensor):
    # Images differ in size, so masks are compared image by image.
    ious = [mask_iou_crowd(p, g, c[: len(g)]) for p, g, c in zip(preds, gts, gt_crowd)]  # [D_i, G_i]
    return pad_ious(ious, fill=0.0), _mask_area(preds), _mask_area(gts)


def _check_boxes(boxes, name: str) -> None:
    check_boxes(boxes, name)  # shape and dtype; the order x1 <= x2 is checked for all images at once


def _check_masks(masks, name: str) -> None:
    if not isinstance(masks, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(masks).__name__}")
    if masks.dim() != 3 or masks.dtype != torch.bool:
        raise ValueError(f"{name} must be a bool Tensor[K, H, W], got {masks.dtype} of shape "
                         f"{list(masks.shape)}; a detector's [K, 1, H, W] probabilities become "
                         "masks[:, 0] > 0.5")


@dataclass(frozen=True)
class RegionType:
    """What detection evaluation needs to know about one kind of region."""

    key: str  # the dict key holding the regions: "boxes" or "masks"
    check: Callable[[Tensor, str], None]  # shape and dtype of one image's regions; says what to fix
    # (pred regions per image, gt regions per image, gt_crowd [I, G]) ->
    #   IoU [I, N, G], pred area [I, N], gt area [I, G], all float64, padded after each image's regions
    geometry: Callable[[list[Tensor], list[Tensor], Tensor], tuple[Tensor, Tensor, Tensor]]


REGION_TYPES = {
    "bbox": RegionType("boxes", _check_boxes, _box_geometry),
    "segm": RegionType("masks", _check_masks, _mask_geometry),
}


def region_type(iou_type: str) -> RegionType:
    if iou_type not in REGION_TYPES:
        raise ValueError(f"iou_type must be one of {tuple(REGION_TYPES)}, got {iou_type!r}")
    return REGION_TYPES[iou_type]
