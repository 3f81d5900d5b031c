"""YOLO v1's grid coding and loss: a scene as an S x S x (5B + C) tensor, and back.

Redmon, Divvala, Girshick, Farhadi, "You Only Look Once: Unified, Real-Time
Object Detection", CVPR 2016, section 2. The image is cut into an S x S grid;
the cell holding an object's centre is responsible for it. Each cell predicts
B boxes ``(x, y, w, h, confidence)`` and one set of C class probabilities:

- x, y: the centre's offset inside its cell, in [0, 1);
- w, h: the box's width and height as fractions of the image's;
- confidence: Pr(object) x IoU(predicted box, true box);
- classes: Pr(class | object), one distribution per cell (not per box).

The loss (equation 3 of the paper), summed over cells and divided by the number
of images; 1_ij^obj marks predictor j of cell i when the cell holds an object and
j's box has the highest IoU with it among the B (it is "responsible")::

    lambda_coord * sum 1_ij^obj [(x - x^)^2 + (y - y^)^2 + (sqrt w - sqrt w^)^2 + (sqrt h - sqrt h^)^2]
                 + sum 1_ij^obj (C - C^)^2 + lambda_noobj * sum (1 - 1_ij^obj) C^2
                 + sum_i 1_i^obj sum_c (p(c) - p^(c))^2

The square roots make an error of 2 pixels cost more on a small box than on a
large one; lambda_coord = 5 lifts the few box terms, lambda_noobj = 0.5 lowers
the many empty cells' confidences, which would otherwise swamp the gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ...ops._checks import check_boxes


def encode_yolo_targets(boxes: Tensor, labels: Tensor, grid_size: int = 7, num_boxes: int = 2,
                        num_classes: int = 20, image_size: tuple[int, int] = (448, 448)) -> Tensor:
    """One scene's ground truth as YOLO v1's target tensor.

    The object goes to the cell (row i, column j) holding its centre:
    ``j = floor(cx / (W / S))``, ``i = floor(cy / (H / S))``, clamped to [0, S - 1].
    A cell's channels are ``[x, y, w, h, 1] * B + one_hot(label - 1, C)``, the same
    ``(x, y, w, h, 1)`` in all B slots (the loss decides which predictor is
    responsible). When several centres fall in one cell the cell keeps the object
    of largest area (ties: the earlier one); the others are lost, YOLO v1's
    one-object-per-cell limit (:func:`lost_objects` counts them).

    Args:
        boxes (Tensor[K, 4]): (x1, y1, x2, y2) in pixels, floating point.
        labels (Tensor[K], int64): classes in 1..C (0 is not a class: YOLO has no background).
        grid_size (int): S. num_boxes (int): B. num_classes (int): C.
        image_size ((H, W)): the image's height and width in pixels.
    Returns:
        Tensor[S, S, 5B + C] of ``boxes.dtype``: x, y in [0, 1) (1 only for a centre on
        the far edge), w, h in (0, 1], empty cells all zero; all zero when K = 0.
    """
    check_boxes(boxes, ordered=True)
    if labels.shape != boxes.shape[:1] or labels.is_floating_point():
        raise ValueError(f"labels must be an integer Tensor[K] matching the {boxes.shape[0]} "
                         f"boxes, got {labels.dtype} {list(labels.shape)}")
    if labels.numel() and not bool(((labels >= 1) & (labels <= num_classes)).all()):
        raise ValueError(f"labels must be in 1..{num_classes} (YOLO has no background class), "
                         f"got {labels.tolist()}")
    S, B, C = grid_size, num_boxes, num_classes
    H, W = image_size
    target = boxes.new_zeros(S, S, 5 * B + C)
    if boxes.shape[0] == 0:
        return target
    cell_w, cell_h = W / S, H / S
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2  # [K]
    j = torch.floor(cx / cell_w).clamp(0, S - 1)  # [K] column
    i = torch.floor(cy / cell_h).clamp(0, S - 1)  # [K] row
    winner = _largest_per_cell(i.long() * S + j.long(), boxes, S * S)  # [K] bool
    box5 = torch.stack([cx / cell_w - j, cy / cell_h - i, (boxes[:, 2] - boxes[:, 0]) / W,
                        (boxes[:, 3] - boxes[:, 1]) / H, torch.ones_like(cx)], dim=1)  # [K, 5]
    onehot = F.one_hot(labels - 1, C).to(boxes.dtype)  # [K, C]
    channels = torch.cat([box5.repeat(1, B), onehot], dim=1)  # [K, 5B + C]
    # index_put with unique (row, column) pairs: the winners, one per occupied cell.
    target[i.long()[winner], j.long()[winner]] = channels[winner]
    return target


def _largest_per_cell(cell: Tensor, boxes: Tensor, num_cells: int) -> Tensor:
    """Tensor[K] bool: is each object the one its cell keeps (largest area, ties: earliest)?"""
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])  # [K]
    order = torch.sort(area, descending=True, stable=True).indices  # ties keep list order
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order), device=cell.device)  # [K] 0 = largest
    best = torch.full((num_cells,), len(order), dtype=rank.dtype, device=cell.device)
    best = best.scatter_reduce(0, cell, rank, reduce="amin")  # lowest rank in each cell
    return rank == best[cell]


def split_yolo_output(output: Tensor, num_boxes: int = 2):
    """The head's raw output as YOLO's quantities, each in its range.

    The paper's last layer is linear; here x, y, sqrt(w), sqrt(h) and the
    confidence go through a sigmoid (they live in [0, 1]) and the class scores
    through a softmax, so that an untrained head already predicts valid boxes and
    probabilities and the squared errors stay bounded early in training. The
    network predicts sqrt(w) directly, so the loss never differentiates a square
    root at 0.

    Args:
        output (Tensor[..., S, S, 5B + C]): raw head output.
    Returns:
        xy (Tensor[..., S, S, B, 2]), sqrt_wh (Tensor[..., S, S, B, 2]),
        conf (Tensor[..., S, S, B]), probs (Tensor[..., S, S, C]).
    """
    B = num_boxes
    boxes = output[..., :5 * B].unflatten(-1, (B, 5)).sigmoid()  # [..., S, S, B, 5]
    probs = output[..., 5 * B:].softmax(dim=-1)  # [..., S, S, C]
    return boxes[..., 0:2], boxes[..., 2:4], boxes[..., 4], probs


def yolo_predictions(output: Tensor, num_boxes: int = 2) -> Tensor:
    """Raw head output -> a tensor in :func:`encode_yolo_targets`' format (w, not sqrt w).

    Args:
        output (Tensor[..., S, S, 5B + C]): raw head output.
    Returns:
        Tensor[..., S, S, 5B + C]: per cell ``[x, y, w, h, conf] * B + class probabilities``,
        what :func:`cv_course.models.detection.yolo.decode_yolo` reads.
    """
    xy, sqrt_wh, conf, probs = split_yolo_output(output, num_boxes)
    boxes = torch.cat([xy, sqrt_wh**2, conf[..., None]], dim=-1)  # [..., S, S, B, 5]
    return torch.cat([boxes.flatten(-2), probs], dim=-1)


def cell_boxes_iou(xy1: Tensor, wh1: Tensor, xy2: Tensor, wh2: Tensor, grid_size: int) -> Tensor:
    """Elementwise IoU of boxes given in cell coordinates (offset in the cell, size / image).

    Both boxes of a pair sit in the same cell, so the cell's corner cancels: centres
    are compared as ``offset / S`` in image fractions. Returns IoU in [0, 1], 0 (not
    NaN) for an empty union. Shapes broadcast: xy, wh [..., 2] -> Tensor[...].
    """
    c1, c2 = xy1 / grid_size, xy2 / grid_size  # centres, fractions of the image
    lt = torch.max(c1 - wh1 / 2, c2 - wh2 / 2)  # [..., 2]
    rb = torch.min(c1 + wh1 / 2, c2 + wh2 / 2)  # [..., 2]
    inter = (rb - lt).clamp(min=0).prod(-1)  # [...]
    union = wh1.prod(-1) + wh2.prod(-1) - inter
    return torch.where(union > 0, inter / torch.where(union > 0, union, 1.0), 0.0)


def yolo_loss(output: Tensor, target: Tensor, num_boxes: int = 2, lambda_coord: float = 5.0,
              lambda_noobj: float = 0.5, rescore: bool = True) -> dict[str, Tensor]:
    """YOLO v1's sum-squared loss (Redmon et al. 2016, eq. 3), divided by the number of images.

    Args:
        output (Tensor[N, S, S, 5B + C]): raw head output (see :func:`split_yolo_output`).
        target (Tensor[N, S, S, 5B + C]): :func:`encode_yolo_targets` of each image.
        lambda_coord, lambda_noobj (float): the paper's weights, 5 and 0.5.
        rescore (bool): the confidence target of the responsible predictor is its IoU
            with the object (the paper's definition, darknet's ``rescore=1``), so the
            confidence ranks boxes by how well they fit; ``False``: the target is 1.
    Returns:
        dict of scalar Tensors, each already weighted, summing to the paper's loss:
        ``loss_coord``, ``loss_obj``, ``loss_noobj``, ``loss_class``.
    """
    if output.shape != target.shape or output.dim() != 4:
        raise ValueError(f"output and target must both be Tensor[N, S, S, 5B + C], got "
                         f"{list(output.shape)} and {list(target.shape)}")
    N, S = output.shape[0], output.shape[1]
    xy, sqrt_wh, conf, probs = split_yolo_output(output, num_boxes)  # [N, S, S, B, 2], ...
    t_xy, t_wh = target[..., None, 0:2], target[..., None, 2:4]  # [N, S, S, 1, 2]
    has_obj = target[..., 4] > 0  # [N, S, S]
    with torch.no_grad():  # the choice of predictor and the IoU target are not trained through
        iou = cell_boxes_iou(xy, sqrt_wh**2, t_xy, t_wh, S)  # [N, S, S, B]
        best = F.one_hot(iou.argmax(dim=-1), num_boxes).bool()  # ties: the first predictor
    resp = (best & has_obj[..., None]).to(output.dtype)  # [N, S, S, B] 1_ij^obj
    coord = ((xy - t_xy)**2).sum(-1) + ((sqrt_wh - t_wh.sqrt())**2).sum(-1)  # [N, S, S, B]
    conf_target = iou if rescore else torch.ones_like(iou)
    t_probs = target[..., 5 * num_boxes:]  # [N, S, S, C]
    cls = ((probs - t_probs)**2).sum(-1) * has_obj  # [N, S, S]
    return {"loss_coord": lambda_coord * (resp * coord).sum() / N,
            "loss_obj": (resp * (conf - conf_target)**2).sum() / N,
            "loss_noobj": lambda_noobj * ((1 - resp) * conf**2).sum() / N,
            "loss_class": cls.sum() / N}


def lost_objects(boxes: Tensor | list[Tensor], grid_size: int,
                 image_size: tuple[int, int]) -> int:
    """How many objects YOLO v1 cannot learn because a larger one's centre shares their cell.

    Args:
        boxes (Tensor[K, 4] or list of them): (x1, y1, x2, y2) pixels, one tensor per scene.
        grid_size (int): S. image_size ((H, W)): the images' size.
    Returns:
        int: objects minus occupied cells, summed over the scenes.
    """
    scenes = [boxes] if isinstance(boxes, Tensor) else list(boxes)
    lost = 0
    for b in scenes:  # per scene: each has its own grid
        cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2  # [K]
        j = torch.floor(cx / (image_size[1] / grid_size)).clamp(0, grid_size - 1)
        i = torch.floor(cy / (image_size[0] / grid_size)).clamp(0, grid_size - 1)
        lost += b.shape[0] - int(torch.unique(i * grid_size + j).numel())
    return lost


__all__ = ["encode_yolo_targets", "split_yolo_output", "yolo_predictions", "cell_boxes_iou",
           "yolo_loss", "lost_objects"]
