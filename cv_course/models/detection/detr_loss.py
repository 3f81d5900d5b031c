"""DETR's set loss: match, then score the matched pairs.

Carion et al., "End-to-End Object Detection with Transformers" (DETR), ECCV 2020,
section 3.1 and appendix A.2. A DETR outputs a fixed-size *set* of Q predictions
(class logits with an extra "no object" class, and a normalized (cx, cy, w, h)
box each) for an image with G objects. Training takes two steps:

1. Hungarian matching: pair every object with one prediction so that the total
   pairing cost (:func:`detr_cost_matrix`) is least
   (:func:`cv_course.ops.hungarian_match`).
2. The set loss given the pairs (:func:`detr_set_loss`): cross-entropy on the
   classes of *all* Q predictions (the unmatched ones learn "no object", down-weighted
   by 0.1 because they are most of them), L1 and 1 - GIoU on the matched boxes.

:class:`SetCriterion` does both for a batch (each image matched on its own) and for
every decoder layer (the auxiliary losses of section 3.2), weighted 1, 5, 2.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ...ops import HungarianMatcher
from ...ops._checks import check_tensor
from ...ops.boxes import box_convert, generalized_box_iou


def _check_set(pred_logits: Tensor, pred_boxes: Tensor, tgt_labels: Tensor, tgt_boxes: Tensor):
    """Shapes and label range of one image's predictions and targets; clear errors."""
    for t, name in ((pred_logits, "pred_logits"), (pred_boxes, "pred_boxes"),
                    (tgt_labels, "tgt_labels"), (tgt_boxes, "tgt_boxes")):
        check_tensor(t, name)
    if pred_logits.dim() != 2 or pred_logits.shape[1] < 2:
        raise ValueError("pred_logits must be [Q, C + 1] (C >= 1 classes, then 'no object'), "
                         f"got shape {list(pred_logits.shape)}")
    Q, C1 = pred_logits.shape
    if pred_boxes.shape != (Q, 4):
        raise ValueError(f"pred_boxes must be [Q, 4] = [{Q}, 4] normalized (cx, cy, w, h), "
                         f"got shape {list(pred_boxes.shape)}")
    if tgt_labels.dim() != 1 or tgt_boxes.shape != (len(tgt_labels), 4):
        raise ValueError("tgt_labels must be [G] and tgt_boxes [G, 4], got shapes "
                         f"{list(tgt_labels.shape)} and {list(tgt_boxes.shape)}")
    if tgt_labels.is_floating_point() or tgt_labels.dtype == torch.bool:
        raise ValueError(f"tgt_labels must be integer class indices, got {tgt_labels.dtype}")
    if bool(((tgt_labels < 0) | (tgt_labels >= C1 - 1)).any()):
        raise ValueError(f"tgt_labels must lie in 0..{C1 - 2} (C = {C1 - 1} classes; index "
                         f"{C1 - 1} is 'no object', never a target), got {tgt_labels.tolist()}; "
                         "scene labels 1..C map to 0..C-1")
    if not (pred_boxes.is_floating_point() and tgt_boxes.is_floating_point()):
        raise ValueError("pred_boxes and tgt_boxes must be floating point (normalized cxcywh)")


def detr_cost_matrix(pred_logits: Tensor, pred_boxes: Tensor, tgt_labels: Tensor,
                     tgt_boxes: Tensor, cost_class: float = 1, cost_bbox: float = 5,
                     cost_giou: float = 2) -> Tensor:
    """DETR's matching cost between the Q predictions and the G objects of one image.

    ``C[q, t] = -cost_class * softmax(pred_logits[q])[tgt_labels[t]]
    + cost_bbox * ||pred_boxes[q] - tgt_boxes[t]||_1 - cost_giou * GIoU(q, t)``, the GIoU
    of the boxes as (x1, y1, x2, y2). The probability, not its log, keeps the class
    cost on the scale of the box costs (DETR, 3.1). Equals
    ``HungarianMatcher(cost_class, cost_bbox, cost_giou).cost_matrix`` for a batch of
    one image (this calls it: one implementation of the formula).

    Args:
        pred_logits (Tensor[Q, C + 1]): class logits, the last one "no object".
        pred_boxes (Tensor[Q, 4]): normalized (cx, cy, w, h) in [0, 1].
        tgt_labels (Tensor[G]): int64 classes in 0..C-1.
        tgt_boxes (Tensor[G, 4]): normalized (cx, cy, w, h).
        cost_class, cost_bbox, cost_giou (float): the weights (DETR: 1, 5, 2).
    Returns:
        Tensor[Q, G] in the predictions' dtype (no gradient); [Q, 0] when G = 0.
    """
    _check_set(pred_logits, pred_boxes, tgt_labels, tgt_boxes)
    matcher = HungarianMatcher(cost_class, cost_bbox, cost_giou)
    outputs = {"pred_logits": pred_logits[None], "pred_boxes": pred_boxes[None]}  # B = 1
    return matcher.cost_matrix(outputs, [{"labels": tgt_labels, "boxes": tgt_boxes}])[0]


def detr_set_loss(pred_logits: Tensor, pred_boxes: Tensor, tgt_labels: Tensor,
                  tgt_boxes: Tensor, rows: Tensor, cols: Tensor,
                  no_object_weight: float = 0.1) -> dict[str, Tensor]:
    """The set loss of one image given the matched pairs (query ``rows[k]``, object ``cols[k]``).

    Args:
        pred_logits (Tensor[Q, C + 1]), pred_boxes (Tensor[Q, 4]), tgt_labels (Tensor[G]),
            tgt_boxes (Tensor[G, 4]): as in :func:`detr_cost_matrix`.
        rows, cols (Tensor[K]): int64 matched prediction and object indices, each used once.
        no_object_weight (float): class weight of "no object" in the cross-entropy.
    Returns:
        dict of scalar Tensors, unweighted (the caller applies DETR's 1, 5, 2):
        ``loss_ce``: cross-entropy over all Q predictions, target ``tgt_labels[cols]`` at
        ``rows`` and C ("no object") elsewhere, class weights 1 except ``no_object_weight``
        for C, the weighted mean of ``F.cross_entropy(..., weight=w)``;
        ``loss_bbox``: sum over pairs of the L1 distance of the boxes / max(G, 1);
        ``loss_giou``: sum over pairs of 1 - GIoU / max(G, 1).
    """
    _check_set(pred_logits, pred_boxes, tgt_labels, tgt_boxes)
    Q, C1 = pred_logits.shape
    G = len(tgt_labels)
    _check_pairs(rows, cols, Q, G)
    target_classes = torch.full((Q,), C1 - 1, dtype=torch.int64, device=pred_logits.device)
    target_classes[rows] = tgt_labels[cols].to(pred_logits.device)  # [Q]
    weight = torch.ones(C1, dtype=pred_logits.dtype, device=pred_logits.device)
    weight[-1] = no_object_weight  # most of the Q predictions are "no object"
    loss_ce = F.cross_entropy(pred_logits, target_classes, weight=weight)

    src, tgt = pred_boxes[rows], tgt_boxes[cols].to(pred_boxes)  # [K, 4] each, paired
    n = max(G, 1)  # an image without objects has no box loss, not 0 / 0
    loss_bbox = (src - tgt).abs().sum() / n
    giou = generalized_box_iou(box_convert(src, "cxcywh", "xyxy"),
                               box_convert(tgt, "cxcywh", "xyxy")).diagonal()  # [K]: the pairs
    loss_giou = (1 - giou).sum() / n
    return {"loss_ce": loss_ce, "loss_bbox": loss_bbox, "loss_giou": loss_giou}


def _check_pairs(rows: Tensor, cols: Tensor, Q: int, G: int) -> None:
    if rows.dim() != 1 or rows.shape != cols.shape:
        raise ValueError(f"rows and cols must be [K] each, got {list(rows.shape)} and "
                         f"{list(cols.shape)}")
    if rows.is_floating_point() or cols.is_floating_point():
        raise ValueError("rows and cols must be integer indices (int64), as hungarian_match "
                         "returns them")
    if len(rows) > min(Q, G):
        raise ValueError(f"{len(rows)} pairs for Q = {Q} predictions and G = {G} objects: "
                         "at most min(Q, G)")
    if len(rows) and (int(rows.min()) < 0 or int(rows.max()) >= Q or int(cols.min()) < 0
                      or int(cols.max()) >= G):
        raise ValueError(f"rows must lie in 0..{Q - 1} and cols in 0..{G - 1}")
    if len(set(rows.tolist())) != len(rows) or len(set(cols.tolist())) != len(cols):
        raise ValueError("a prediction or an object appears in two pairs: a matching is one-to-one")


class SetCriterion:
    """DETR's training loss for a batch: per-image matching, set loss, auxiliary layers.

    Args:
        num_classes (int): C, real classes (the logits have C + 1, "no object" last).
        matcher (HungarianMatcher): DETR's is ``HungarianMatcher(1, 5, 2)``.
        weight_ce, weight_bbox, weight_giou (float): loss weights (DETR: 1, 5, 2).
        no_object_weight (float): class weight of "no object" (DETR: 0.1).

    ``criterion(outputs, targets)``: ``outputs`` has ``pred_logits`` [B, Q, C + 1],
    ``pred_boxes`` [B, Q, 4] (the last decoder layer) and optionally ``aux_outputs``, a
    list of such dicts for the earlier layers; ``targets`` is B dicts with ``labels``
    [G_b] in 0..C-1 and ``boxes`` [G_b, 4] normalized cxcywh. Returns the *weighted*
    losses ``loss_ce``, ``loss_bbox``, ``loss_giou`` of the last layer and
    ``loss_ce_i``, ... of earlier layer i, so their sum is the training objective.
    Each layer is matched on its own (section 3.2); each image's queries only take that
    image's objects (the block diagonal of the batch cost matrix), and the box losses
    are averaged over the objects of the whole batch.
    """

    def __init__(self, num_classes: int, matcher: HungarianMatcher | None = None,
                 weight_ce: float = 1, weight_bbox: float = 5, weight_giou: float = 2,
                 no_object_weight: float = 0.1):
        self.num_classes = num_classes
        self.matcher = HungarianMatcher() if matcher is None else matcher
        self.weights = {"loss_ce": weight_ce, "loss_bbox": weight_bbox, "loss_giou": weight_giou}
        self.no_object_weight = no_object_weight

    def layer_loss(self, outputs: dict, targets: list[dict]) -> dict[str, Tensor]:
        """Unweighted set loss of one decoder layer's predictions for the batch."""
        logits, boxes = outputs["pred_logits"], outputs["pred_boxes"]
        B, Q, C1 = logits.shape
        if C1 != self.num_classes + 1:
            raise ValueError(f"pred_logits has {C1} classes, expected num_classes + 1 = "
                             f"{self.num_classes + 1}")
        indices = self.matcher(outputs, targets)  # B x (rows, cols), one assignment per image
        # The batch as one set of B * Q predictions and G_0 + ... objects: offsets keep each
        # pair inside its image, and F.cross_entropy's weighted mean and the 1 / max(G, 1)
        # then run over the whole batch, as in DETR.
        sizes = [len(t["labels"]) for t in targets]
        starts = torch.tensor([0] + sizes[:-1], device=logits.device).cumsum(0)  # [B]
        rows = torch.cat([r + b * Q for b, (r, _) in enumerate(indices)])  # [K]
        cols = torch.cat([c + starts[b] for b, (_, c) in enumerate(indices)])  # [K]
        tgt_labels = torch.cat([t["labels"] for t in targets]).to(logits.device)  # [G]
        tgt_boxes = torch.cat([t["boxes"] for t in targets]).to(boxes)  # [G, 4]
        return detr_set_loss(logits.flatten(0, 1), boxes.flatten(0, 1), tgt_labels, tgt_boxes,
                             rows, cols, self.no_object_weight)

    def __call__(self, outputs: dict, targets: list[dict]) -> dict[str, Tensor]:
        layers = [*outputs.get("aux_outputs", []), outputs]
        losses = {}
        for i, layer in enumerate(layers):
            suffix = "" if i == len(layers) - 1 else f"_{i}"  # the last layer has no suffix
            for name, value in self.layer_loss(layer, targets).items():
                losses[name + suffix] = self.weights[name] * value
        return losses


__all__ = ["detr_cost_matrix", "detr_set_loss", "SetCriterion"]
