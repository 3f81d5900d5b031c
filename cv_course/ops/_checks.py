"""Input validation shared by the ops: clear errors that say what to fix."""

from __future__ import annotations

import torch
from torch import Tensor


def check_tensor(x, name: str) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")


def check_boxes(boxes, name: str = "boxes", ordered: bool = False) -> None:
    """Raise ValueError unless ``boxes`` is a Tensor[N, 4].

    With ``ordered=True`` also require x1 <= x2 and y1 <= y2, the check that
    catches (x, y, w, h) or (cx, cy, w, h) boxes passed where (x1, y1, x2, y2)
    is expected.
    """
    check_tensor(boxes, name)
    if boxes.dim() != 2 or boxes.shape[-1] != 4:
        raise ValueError(
            f"{name} must have shape [N, 4] as (x1, y1, x2, y2), got {list(boxes.shape)}"
        )
    if not boxes.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got {boxes.dtype}")
    if ordered and boxes.numel() > 0:
        bad = (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])  # [N]
        if bool(bad.any()):
            i = int(bad.nonzero()[0, 0])
            raise ValueError(
                f"{name}[{i}] = {boxes[i].tolist()} has x2 < x1 or y2 < y1; boxes must be "
                "(x1, y1, x2, y2). If they are (x, y, w, h) or (cx, cy, w, h), convert them "
                "first with cv_course.ops.box_convert."
            )


def check_same_length(a: Tensor, b: Tensor, name_a: str, name_b: str) -> None:
    if a.shape[0] != b.shape[0]:
        raise ValueError(
            f"{name_a} and {name_b} must have the same length, got {a.shape[0]} and {b.shape[0]}"
        )
