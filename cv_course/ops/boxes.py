"""Box geometry: areas, format conversion, IoU and generalized IoU.

Boxes are ``(x1, y1, x2, y2)`` in absolute pixels unless a name says otherwise.
Signatures follow ``torchvision.ops`` so that a student can move between the two.
Generalized IoU: Rezatofighi et al., "Generalized Intersection over Union", CVPR 2019.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._checks import check_boxes, check_tensor

_FORMATS = ("xyxy", "xywh", "cxcywh")


def box_area(boxes: Tensor) -> Tensor:
    """Area of each box.

    Args:
        boxes (Tensor[..., 4]): (x1, y1, x2, y2) boxes.
    Returns:
        Tensor[...]: area, zero for degenerate (empty or inverted) boxes.
    """
    check_tensor(boxes, "boxes")
    if boxes.shape[-1] != 4:
        raise ValueError(f"boxes must have last dimension 4, got shape {list(boxes.shape)}")
    wh = (boxes[..., 2:] - boxes[..., :2]).clamp(min=0)  # [..., 2]
    return wh[..., 0] * wh[..., 1]


def box_convert(boxes: Tensor, in_fmt: str, out_fmt: str) -> Tensor:
    """Convert boxes between ``'xyxy'``, ``'xywh'`` and ``'cxcywh'``.

    ``xyxy`` is (x1, y1, x2, y2); ``xywh`` is (x1, y1, width, height);
    ``cxcywh`` is (centre x, centre y, width, height).

    Args:
        boxes (Tensor[..., 4]): boxes in ``in_fmt``.
        in_fmt, out_fmt (str): one of ``'xyxy'``, ``'xywh'``, ``'cxcywh'``.
    Returns:
        Tensor[..., 4]: a new tensor in ``out_fmt``;
        ``box_convert(box_convert(b, f, g), g, f) == b`` up to rounding.
    """
    check_tensor(boxes, "boxes")
    for name, fmt in (("in_fmt", in_fmt), ("out_fmt", out_fmt)):
        if fmt not in _FORMATS:
            raise ValueError(f"{name} must be one of {_FORMATS}, got {fmt!r}")
    if boxes.shape[-1] != 4:
        raise ValueError(f"boxes must have last dimension 4, got shape {list(boxes.shape)}")
    if in_fmt == out_fmt:
        return boxes.clone()
    a, b, c, d = boxes.unbind(-1)
    if in_fmt == "xywh":
        xyxy = (a, b, a + c, b + d)
    elif in_fmt == "cxcywh":
        xyxy = (a - c / 2, b - d / 2, a + c / 2, b + d / 2)
    else:
        xyxy = (a, b, c, d)
    x1, y1, x2, y2 = xyxy
    if out_fmt == "xywh":
        out = (x1, y1, x2 - x1, y2 - y1)
    elif out_fmt == "cxcywh":
        out = ((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1)
    else:
        out = (x1, y1, x2, y2)
    return torch.stack(out, dim=-1)


def _inter_union(boxes1: Tensor, boxes2: Tensor) -> tuple[Tensor, Tensor]:
    """Pairwise intersection and union areas, both Tensor[N, M]."""
    area1 = box_area(boxes1)  # [N]
    area2 = box_area(boxes2)  # [M]
    lt = torch.max(boxes1[:, None, :2], boxes2[None, :, :2])  # [N, M, 2]
    rb = torch.min(boxes1[:, None, 2:], boxes2[None, :, 2:])  # [N, M, 2]
    wh = (rb - lt).clamp(min=0)  # [N, M, 2]
    inter = wh[..., 0] * wh[..., 1]  # [N, M]
    union = area1[:, None] + area2[None, :] - inter  # [N, M]
    return inter, union


def _safe_div(num: Tensor, den: Tensor) -> Tensor:
    # where(), not a clamp of the denominator, so 0/0 is exactly 0 and the
    # gradient of the masked branch is zero rather than NaN.
    ok = den > 0
    return torch.where(ok, num / torch.where(ok, den, torch.ones_like(den)), torch.zeros_like(num))


def box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Intersection over union of every pair of boxes.

    Args:
        boxes1 (Tensor[N, 4]): (x1, y1, x2, y2) boxes.
        boxes2 (Tensor[M, 4]): (x1, y1, x2, y2) boxes.
    Returns:
        Tensor[N, M]: IoU in [0, 1]; 0 where the union is empty (never NaN).
        Inverted boxes (x2 < x1) count as empty.
    """
    check_boxes(boxes1, "boxes1")
    check_boxes(boxes2, "boxes2")
    inter, union = _inter_union(boxes1, boxes2)
    return _safe_div(inter, union)


def generalized_box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Generalized IoU of every pair: IoU minus the share of the enclosing box
    that the union does not cover (Rezatofighi et al., 2019).

    Args:
        boxes1 (Tensor[N, 4]): (x1, y1, x2, y2) boxes with x1 <= x2, y1 <= y2.
        boxes2 (Tensor[M, 4]): (x1, y1, x2, y2) boxes with x1 <= x2, y1 <= y2.
    Returns:
        Tensor[N, M]: GIoU in [-1, 1].
    Raises:
        ValueError: if a box has x2 < x1 or y2 < y1 (the enclosing box would be wrong).
    """
    check_boxes(boxes1, "boxes1", ordered=True)
    check_boxes(boxes2, "boxes2", ordered=True)
    inter, union = _inter_union(boxes1, boxes2)
    iou = _safe_div(inter, union)
    lt = torch.min(boxes1[:, None, :2], boxes2[None, :, :2])  # [N, M, 2]
    rb = torch.max(boxes1[:, None, 2:], boxes2[None, :, 2:])  # [N, M, 2]
    wh = (rb - lt).clamp(min=0)  # [N, M, 2]
    hull = wh[..., 0] * wh[..., 1]  # [N, M]
    return iou - _safe_div(hull - union, hull)


def clip_boxes_to_image(boxes: Tensor, size: tuple[int, int]) -> Tensor:
    """Clip boxes so they lie inside an image of ``size = (height, width)``.

    Args:
        boxes (Tensor[N, 4]): (x1, y1, x2, y2) boxes.
        size (tuple[int, int]): (height, width) of the image.
    Returns:
        Tensor[N, 4]: clipped boxes (a new tensor).
    """
    check_boxes(boxes)
    if len(size) != 2:
        raise ValueError(f"size must be (height, width), got {size!r}")
    height, width = size
    x = boxes[:, 0::2].clamp(min=0, max=width)  # [N, 2]
    y = boxes[:, 1::2].clamp(min=0, max=height)  # [N, 2]
    return torch.stack((x[:, 0], y[:, 0], x[:, 1], y[:, 1]), dim=1)


def remove_small_boxes(boxes: Tensor, min_size: float) -> Tensor:
    """Indices of the boxes whose width and height are both at least ``min_size``.

    Args:
        boxes (Tensor[N, 4]): (x1, y1, x2, y2) boxes.
        min_size (float): minimum side length.
    Returns:
        Tensor[K] (int64): indices of the boxes kept, in increasing order.
    """
    check_boxes(boxes)
    wh = boxes[:, 2:] - boxes[:, :2]  # [N, 2]
    keep = (wh >= min_size).all(dim=1)  # [N]
    return keep.nonzero().flatten()
