"""RetinaNet's two subnets and its losses: focal loss, and the two losses it replaced.

Lin, Goyal, Girshick, He, Dollar, "Focal Loss for Dense Object Detection", ICCV
2017, section 4. The same small fully convolutional head runs on every FPN level:
a classification subnet predicts, for each of the A anchors at each position, K
independent sigmoid scores (one per object class; background is "every score
low"), and a box subnet predicts A offsets (tx, ty, tw, th).

The paper's section 3 is the chapter's ablation. A dense detector scores ~10^4
anchors per image of which a handful are objects; with plain binary
cross-entropy (``"bce"``) the sum over the many *easy* negatives swamps the few
positives. Two answers, both here:

- ``"bce_hnm"``: SSD's hard-negative mining (Liu et al., ECCV 2016, section 2.2):
  keep only the negatives with the largest loss, 3 per positive, per image.
- ``"focal"``: keep every anchor but scale each term by ``(1 - p_t) ** gamma``,
  which fades the easy ones out smoothly (:func:`cv_course.ops.sigmoid_focal_loss`).

Every variant is normalised by the number of positive anchors per image, then
averaged over images (as torchvision's ``RetinaNetHead.compute_loss``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...ops import BoxCoder, generalized_box_iou, sigmoid_focal_loss
from .rpn import flatten_anchor_maps

CLS_LOSSES = ("focal", "bce", "bce_hnm")
BOX_LOSSES = ("smooth_l1", "giou")


def _subnet(channels: int, num_convs: int) -> nn.Sequential:
    """``num_convs`` x (3x3 conv + ReLU), keeping ``channels`` (the paper uses 4)."""
    layers = []
    for _ in range(num_convs):
        layers += [nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU()]
    return nn.Sequential(*layers)


class RetinaNetHead(nn.Module):
    """Classification and box subnets, shared by every FPN level.

    Args:
        in_channels (int): channels D of the FPN maps.
        num_anchors (int): anchors A per position.
        num_classes (int): object classes K (no background column: sigmoid scores).
        num_convs (int): 3x3 conv + ReLU layers in each subnet before its output conv.
        prior_probability (float): pi; the classification bias starts at
            ``-log((1 - pi) / pi)`` so every anchor first scores ``sigmoid(b) = pi``.
    Shapes:
        forward(list of Tensor[B, D, H_l, W_l]) -> (Tensor[B, N, K] logits,
        Tensor[B, N, 4] offsets), N = sum of H_l * W_l * A, anchor order (level, y, x, a)
        as :func:`cv_course.ops.grid_anchors` (the layout of torchvision's head).
    """

    def __init__(self, in_channels: int, num_anchors: int, num_classes: int,
                 num_convs: int = 4, prior_probability: float = 0.01):
        super().__init__()
        if not 0 < prior_probability < 1:
            raise ValueError(f"prior_probability must be in (0, 1), got {prior_probability}")
        self.num_classes, self.num_anchors = num_classes, num_anchors
        self.cls_subnet = _subnet(in_channels, num_convs)
        self.cls_logits = nn.Conv2d(in_channels, num_anchors * num_classes, 3, padding=1)
        self.box_subnet = _subnet(in_channels, num_convs)
        self.bbox_pred = nn.Conv2d(in_channels, num_anchors * 4, 3, padding=1)
        for m in self.modules():  # the paper: Gaussian weights, sigma = 0.01, zero bias
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.01)
                nn.init.zeros_(m.bias)
        # Without this prior the ~10^4 background anchors, each at p = 0.5, give a
        # huge, unstable loss in the first iterations (the paper's section 3.3).
        bias = -math.log((1 - prior_probability) / prior_probability)  # pi = 0.01: -4.595
        nn.init.constant_(self.cls_logits.bias, bias)

    def forward(self, features: list[Tensor]) -> tuple[Tensor, Tensor]:
        logits = [flatten_anchor_maps(self.cls_logits(self.cls_subnet(f)), self.num_classes)
                  for f in features]  # [B, H_l * W_l * A, K] each
        deltas = [flatten_anchor_maps(self.bbox_pred(self.box_subnet(f)), 4)
                  for f in features]  # [B, H_l * W_l * A, 4] each
        return torch.cat(logits, dim=1), torch.cat(deltas, dim=1)


def one_hot_targets(labels: Tensor, num_classes: int, dtype: torch.dtype) -> Tensor:
    """Tensor[B, N] anchor labels (1..K object, 0 background, -1 ignored) -> Tensor[B, N, K].

    Row (b, n) is the one-hot vector of class ``labels[b, n]`` (column ``label - 1``),
    all zeros for background and ignored anchors.
    """
    hot = F.one_hot(labels.clamp(min=0), num_classes + 1)  # [B, N, K + 1]: column 0 = background
    return hot[..., 1:].to(dtype)


def hard_negative_mask(negative_loss: Tensor, labels: Tensor, neg_pos_ratio: int = 3) -> Tensor:
    """SSD's hard-negative mining: the ``neg_pos_ratio * P`` negatives with the largest loss.

    Args:
        negative_loss (Tensor[B, N]): each anchor's loss as a negative.
        labels (Tensor[B, N] int64): 1..K object, 0 background, -1 ignored.
        neg_pos_ratio (int): negatives kept per positive (SSD: 3).
    Returns:
        Tensor[B, N] bool: the kept background anchors. Image b keeps exactly
        ``min(neg_pos_ratio * P_b, #background_b)`` of them; equal losses go to the
        lower anchor index; an image without positives keeps none (as SSD and
        torchvision's ``SSD``: it has nothing to balance).
    """
    negative = labels == 0  # [B, N]
    k = (neg_pos_ratio * (labels > 0).sum(dim=1)).clamp(max=negative.sum(dim=1))  # [B]
    # Non-negatives sort last; detach: which anchors are kept is not differentiated.
    loss = negative_loss.detach().masked_fill(~negative, -math.inf)  # [B, N]
    order = loss.argsort(dim=1, descending=True, stable=True)  # [B, N]: hardest first
    rank = order.argsort(dim=1)  # [B, N]: each anchor's place in that order
    return negative & (rank < k[:, None])


def classification_loss(logits: Tensor, labels: Tensor, kind: str = "focal", alpha: float = 0.25,
                        gamma: float = 2.0, neg_pos_ratio: int = 3) -> Tensor:
    """Classification loss of every anchor, per image / its positives, mean over images.

    Args:
        logits (Tensor[B, N, K]): one sigmoid logit per anchor and class.
        labels (Tensor[B, N] int64): 1..K object, 0 background, -1 ignored (between
            the IoU thresholds: no loss).
        kind (str): ``"focal"`` (alpha, gamma), ``"bce"`` (every anchor, unweighted
            cross-entropy) or ``"bce_hnm"`` (positives + 3:1 hardest negatives).
    Returns:
        Tensor[]: the loss.
    """
    terms, kept = classification_terms(logits, labels, kind, alpha, gamma, neg_pos_ratio)
    per_image = torch.where(kept[..., None], terms, 0).sum(dim=(1, 2))  # [B]
    num_pos = (labels > 0).sum(dim=1).clamp(min=1)  # [B]
    return (per_image / num_pos).mean()


def classification_terms(logits: Tensor, labels: Tensor, kind: str = "focal", alpha: float = 0.25,
                         gamma: float = 2.0, neg_pos_ratio: int = 3) -> tuple[Tensor, Tensor]:
    """The loss of each (anchor, class) term, and which anchors the loss counts.

    Returns:
        (Tensor[B, N, K], Tensor[B, N] bool): ``classification_loss`` is the sum of
        the terms of the kept anchors, normalised. Kept: every non-ignored anchor for
        ``"focal"`` and ``"bce"``; positives and mined negatives for ``"bce_hnm"``.
    """
    if kind not in CLS_LOSSES:
        raise ValueError(f"cls_loss must be one of {CLS_LOSSES}, got {kind!r}")
    if logits.dim() != 3 or labels.shape != logits.shape[:2]:
        raise ValueError(f"logits must be [B, N, K] and labels [B, N], got {list(logits.shape)} "
                         f"and {list(labels.shape)}")
    targets = one_hot_targets(labels, logits.shape[-1], logits.dtype)  # [B, N, K]
    if kind == "focal":
        terms = sigmoid_focal_loss(logits, targets, alpha=alpha, gamma=gamma)
    else:
        terms = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    kept = labels >= 0  # [B, N]
    if kind == "bce_hnm":
        kept = (labels > 0) | hard_negative_mask(terms.sum(dim=2), labels, neg_pos_ratio)
    return terms, kept


def box_loss(deltas: Tensor, anchors: Tensor, matched_boxes: Tensor, labels: Tensor,
             box_coder: BoxCoder, kind: str = "smooth_l1", beta: float = 0.0) -> Tensor:
    """Box regression loss of the positive anchors, per image / its positives, mean over images.

    Args:
        deltas (Tensor[B, N, 4]): predicted (tx, ty, tw, th).
        anchors (Tensor[N, 4]): (x1, y1, x2, y2) anchors, the same for every image.
        matched_boxes (Tensor[B, N, 4]): (x1, y1, x2, y2) ground truth of each anchor.
        labels (Tensor[B, N] int64): > 0 marks the positives (the only anchors with a loss).
        kind (str): ``"smooth_l1"`` on the encoded offsets (``beta = 0`` is L1,
            torchvision's RetinaNet) or ``"giou"``: 1 - GIoU of the decoded box.
    Returns:
        Tensor[]: the loss (0 for a batch without positives).
    """
    if kind not in BOX_LOSSES:
        raise ValueError(f"box_loss must be one of {BOX_LOSSES}, got {kind!r}")
    b, a = (labels > 0).nonzero(as_tuple=True)  # [P] image and anchor of each positive
    if kind == "smooth_l1":
        target = box_coder.encode(matched_boxes[b, a], anchors[a])  # [P, 4]
        per_box = F.smooth_l1_loss(deltas[b, a], target, beta=beta, reduction="none").sum(1)
    else:
        boxes = box_coder.decode(deltas[b, a], anchors[a])  # [P, 4]
        # The matched pairs are the diagonal of the pairwise GIoU: P is a few hundred.
        per_box = 1 - generalized_box_iou(boxes, matched_boxes[b, a]).diagonal()  # [P]
    B = labels.shape[0]
    per_image = deltas.new_zeros(B).index_add(0, b, per_box)  # [B]
    num_pos = (labels > 0).sum(dim=1).clamp(min=1)  # [B]
    return (per_image / num_pos).mean()


def loss_shares(logits: Tensor, labels: Tensor, kind: str = "focal", alpha: float = 0.25,
                gamma: float = 2.0, neg_pos_ratio: int = 3, easy_below: float = 0.1) -> dict:
    """Where a classification loss comes from: positives, easy negatives, hard negatives.

    An *easy negative* is a background anchor whose highest class probability is
    below ``easy_below`` (0.1): p_t > 0.9 for each of its K one-vs-all terms, an
    anchor the model already gets right. Shares add up to 1 (of the loss as
    ``classification_loss`` counts it, before normalisation).

    Args:
        logits (Tensor[B, N, K]), labels (Tensor[B, N]): as ``classification_loss``.
    Returns:
        dict of floats: ``easy_negative_share``, ``hard_negative_share``,
        ``positive_share`` of the loss; ``easy_negative_fraction`` (easy negatives /
        counted anchors) and ``anchors`` (counted anchors).
    """
    terms, kept = classification_terms(logits.detach(), labels, kind, alpha, gamma, neg_pos_ratio)
    per_anchor = torch.where(kept[..., None], terms, 0).sum(dim=2)  # [B, N]
    easy = (labels == 0) & kept & (logits.detach().sigmoid().amax(dim=2) < easy_below)  # [B, N]
    hard = (labels == 0) & kept & ~easy
    total = per_anchor.sum().clamp(min=torch.finfo(per_anchor.dtype).tiny)
    return {"easy_negative_share": float(per_anchor[easy].sum() / total),
            "hard_negative_share": float(per_anchor[hard].sum() / total),
            "positive_share": float(per_anchor[labels > 0].sum() / total),
            "easy_negative_fraction": float(easy.sum() / kept.sum().clamp(min=1)),
            "anchors": int(kept.sum())}
