"""The only part of detection evaluation that depends on what a region is.

COCO scores boxes (``iou_type="bbox"``) and instance masks (``iou_type="segm"``)
with the same matching and the same averaging; the two differ in three things
only, collected here in one :class:`RegionType` each:

* the key that holds the regions in a prediction or target dict (``boxes`` / ``masks``);
* the pairwise IoU, including COCO's rule for *crowd* regions: a detection that
  falls inside a crowd region is scored by ``intersection / area of the detection``
  (the union would punish it for not covering the whole crowd);
* the area that puts an object in the small / medium / large range.

Everything is computed in float64, the precision of ``pycocotools``, so that a
threshold comparison such as ``IoU >= 0.5`` is decided exactly as COCO decides it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from ...ops._checks import check_boxes
from ...ops.boxes import _inter_union, _safe_div, box_area


def box_iou_crowd(pred_boxes: Tensor, gt_boxes: Tensor, gt_crowd: Tensor) -> Tensor:
    """IoU of every (detection, ground truth) pair, COCO's way for crowd regions.

    Args:
        pred_boxes (Tensor[D, 4]): (x1, y1, x2, y2) detections.
        gt_boxes (Tensor[G, 4]): (x1, y1, x2, y2) ground truths.
        gt_crowd (Tensor[G], bool): True for crowd regions.
    Returns:
        Tensor[D, G] (float64): ``intersection / union``, equal to
        :func:`cv_course.ops.box_iou`, except ``intersection / area(detection)``
        in the columns of crowd regions. 0 where the denominator is 0.
    """
    pred_boxes, gt_boxes = pred_boxes.double(), gt_boxes.double()
    inter, union = _inter_union(pred_boxes, gt_boxes)  # [D, G] each
    pred_area = box_area(pred_boxes)[:, None].expand_as(union)  # [D, G]
    return _safe_div(inter, torch.where(gt_crowd[None, :], pred_area, union))


def mask_iou_crowd(pred_masks: Tensor, gt_masks: Tensor, gt_crowd: Tensor) -> Tensor:
    """IoU of every (detection, ground truth) pair of binary masks, COCO's way for crowds.

    Args:
        pred_masks (Tensor[D, H, W], bool): detected instance masks.
        gt_masks (Tensor[G, H, W], bool): ground-truth masks of the same image.
        gt_crowd (Tensor[G], bool): True for crowd regions.
    Returns:
        Tensor[D, G] (float64): pixel IoU, ``intersection / area(detection)`` for
        crowd columns, 0 where the denominator is 0.
    """
    D, G = pred_masks.shape[0], gt_masks.shape[0]
    if D == 0 or G == 0:
        return pred_masks.new_zeros((D, G), dtype=torch.float64)
    # float64 counts are exact up to 2**53 pixels, so the IoU is the same
    # correctly rounded quotient that pycocotools computes from run lengths.
    p = pred_masks.reshape(D, -1).double()  # [D, H*W]
    g = gt_masks.reshape(G, -1).double()  # [G, H*W]
    inter = p @ g.T  # [D, G]
    pred_area, gt_area = p.sum(1), g.sum(1)  # [D], [G]
    union = pred_area[:, None] + gt_area[None, :] - inter  # [D, G]
    return _safe_div(inter, torch.where(gt_crowd[None, :], pred_area[:, None].expand_as(union), union))


def _mask_area(masks: Tensor) -> Tensor:
    return masks.reshape(masks.shape[0], -1).sum(1).double()  # [N]


def _check_boxes(boxes, name: str) -> None:
    check_boxes(boxes, name, ordered=True)


def _check_masks(masks, name: str) -> None:
    if not isinstance(masks, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(masks).__name__}")
    if masks.dim() != 3 or masks.dtype != torch.bool:
        raise ValueError(
            f"{name} must be a bool Tensor[K, H, W], got {masks.dtype} of shape "
            f"{list(masks.shape)}; a detector's [K, 1, H, W] probabilities become "
            "masks[:, 0] > 0.5"
        )


@dataclass(frozen=True)
class RegionType:
    """What detection evaluation needs to know about one kind of region."""

    key: str  # the dict key holding the regions: "boxes" or "masks"
    check: Callable[[Tensor, str], None]  # raises ValueError that says what to fix
    iou: Callable[[Tensor, Tensor, Tensor], Tensor]  # (pred [D], gt [G], crowd [G]) -> [D, G] float64
    area: Callable[[Tensor], Tensor]  # regions [N, ...] -> [N] float64, for small/medium/large


REGION_TYPES = {
    "bbox": RegionType("boxes", _check_boxes, box_iou_crowd, lambda b: box_area(b.double())),
    "segm": RegionType("masks", _check_masks, mask_iou_crowd, _mask_area),
}


def region_type(iou_type: str) -> RegionType:
    if iou_type not in REGION_TYPES:
        raise ValueError(f"iou_type must be one of {tuple(REGION_TYPES)}, got {iou_type!r}")
    return REGION_TYPES[iou_type]
