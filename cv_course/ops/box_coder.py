"""Box coding: the (tx, ty, tw, th) regression targets of R-CNN.

Girshick et al., "Rich feature hierarchies for accurate object detection and
semantic segmentation" (R-CNN), CVPR 2014, appendix C. A detector does not
predict a box directly but how to move and stretch a reference box (an anchor
or a proposal) of centre (xa, ya) and size (wa, ha) onto it:

    tx = wx * (x - xa) / wa        ty = wy * (y - ya) / ha
    tw = ww * log(w / wa)          th = wh * log(h / ha)

Shifts are measured in box widths and stretches in log-space, so the targets
do not depend on the box's size or position; the weights (wx, wy, ww, wh)
rescale them to similar variances (Fast R-CNN's RoI heads use (10, 10, 5, 5)).

Same numbers as torchvision's ``BoxCoder.encode_single`` / ``decode_single``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ._checks import check_boxes, check_same_length, check_tensor


def _centre_size(boxes: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(cx, cy, w, h) of (x1, y1, x2, y2) boxes, each Tensor[N], torchvision's arithmetic."""
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    return boxes[:, 0] + 0.5 * w, boxes[:, 1] + 0.5 * h, w, h


class BoxCoder:
    """Encode boxes as offsets from reference boxes (anchors), and decode them back.

    Args:
        weights (4 floats): (wx, wy, ww, wh) multiplying (tx, ty, tw, th).
        bbox_xform_clip (float): ``decode`` clamps tw and th to at most this, so that
            ``exp`` cannot blow a box up more than ~62x (log(1000 / 16)).

    ``decode(encode(boxes, anchors), anchors) == boxes`` up to rounding, for boxes
    no more than ``exp(bbox_xform_clip / ww)`` times wider (or taller) than their anchor.
    """

    def __init__(self, weights=(1.0, 1.0, 1.0, 1.0), bbox_xform_clip: float = math.log(1000.0 / 16)):
        if len(weights) != 4 or not all(w > 0 for w in weights):
            raise ValueError(f"weights must be four positive numbers (wx, wy, ww, wh), got {weights!r}")
        self.weights = tuple(float(w) for w in weights)
        self.bbox_xform_clip = bbox_xform_clip

    def __repr__(self) -> str:
        return f"BoxCoder(weights={self.weights}, bbox_xform_clip={self.bbox_xform_clip:.4f})"

    def encode(self, boxes: Tensor, anchors: Tensor) -> Tensor:
        """Regression targets that move each anchor onto its box.

        Args:
            boxes (Tensor[N, 4]): (x1, y1, x2, y2) boxes to reach (the matched ground truth).
            anchors (Tensor[N, 4]): (x1, y1, x2, y2) reference boxes, one per box.
            Both need positive widths and heights (a log of 0 or of a negative width has no meaning).
        Returns:
            Tensor[N, 4]: (tx, ty, tw, th) per row, in the boxes' dtype.
        """
        check_boxes(boxes, "boxes", ordered=True)
        check_boxes(anchors, "anchors", ordered=True)
        check_same_length(boxes, anchors, "boxes", "anchors")
        anchors = anchors.to(boxes.dtype)
        for name, b in (("boxes", boxes), ("anchors", anchors)):
            flat = (b[:, 2] <= b[:, 0]) | (b[:, 3] <= b[:, 1])  # [N]
            if bool(flat.any()):
                i = int(flat.nonzero()[0, 0])
                raise ValueError(f"{name}[{i}] = {b[i].tolist()} has zero width or height; encode needs "
                                 "boxes of positive size (remove degenerate boxes first, e.g. with "
                                 "cv_course.ops.remove_small_boxes)")
        wx, wy, ww, wh = self.weights
        ax, ay, aw, ah = _centre_size(anchors)  # [N] each
        bx, by, bw, bh = _centre_size(boxes)
        tx = wx * (bx - ax) / aw
        ty = wy * (by - ay) / ah
        tw = ww * torch.log(bw / aw)
        th = wh * torch.log(bh / ah)
        return torch.stack((tx, ty, tw, th), dim=1)  # [N, 4]

    def decode(self, deltas: Tensor, anchors: Tensor) -> Tensor:
        """Apply regression outputs to their anchors.

        Args:
            deltas (Tensor[N, 4 * C]): (tx, ty, tw, th) per row, or C such groups per row
                (class-specific regression: one box per class).
            anchors (Tensor[N, 4]): (x1, y1, x2, y2) reference boxes.
        Returns:
            Tensor[N, 4 * C]: (x1, y1, x2, y2) boxes, group c decoded from deltas[:, 4c:4c+4];
            ``.view(N, C, 4)`` gives one box per class.
        """
        check_tensor(deltas, "deltas")
        if deltas.dim() != 2 or deltas.shape[1] == 0 or deltas.shape[1] % 4 != 0:
            raise ValueError(f"deltas must have shape [N, 4] or [N, 4 * C] as (tx, ty, tw, th) groups, "
                             f"got {list(deltas.shape)}")
        check_boxes(anchors, "anchors", ordered=True)
        check_same_length(deltas, anchors, "deltas", "anchors")
        wx, wy, ww, wh = self.weights
        ax, ay, aw, ah = (v[:, None] for v in _centre_size(anchors.to(deltas.dtype)))  # [N, 1] each
        d = deltas.reshape(deltas.shape[0], deltas.shape[1] // 4, 4)  # [N, C, 4]
        # Clamp only the stretches: a large shift is harmless, a large exp overflows.
        tw = (d[..., 2] / ww).clamp(max=self.bbox_xform_clip)
        th = (d[..., 3] / wh).clamp(max=self.bbox_xform_clip)
        cx = d[..., 0] / wx * aw + ax  # [N, C]
        cy = d[..., 1] / wy * ah + ay
        half_w = 0.5 * (torch.exp(tw) * aw)
        half_h = 0.5 * (torch.exp(th) * ah)
        boxes = torch.stack((cx - half_w, cy - half_h, cx + half_w, cy + half_h), dim=2)  # [N, C, 4]
        return boxes.flatten(1)  # [N, 4 * C]
