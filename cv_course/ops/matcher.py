"""Labelling anchors and proposals: match each to a ground-truth box by IoU,
then sample a balanced mini-batch of positives and negatives.

Ren et al., "Faster R-CNN", NeurIPS 2015, section 3.1.2: an anchor is positive
if its IoU with some ground-truth box is at least 0.7, or if it is the best
anchor of a ground-truth box that no anchor reaches 0.7 with; negative if its
IoU is below 0.3 with every box; anything in between is ignored. Each image
then contributes 256 anchors to the loss, at most half of them positive.

Same semantics as torchvision's ``det_utils.Matcher`` and
``BalancedPositiveNegativeSampler``, except for an image without ground truth
(see ``Matcher``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._checks import check_tensor


class Matcher:
    """Assign each of N predictions (anchors, proposals) to one of G ground-truth boxes.

    Args:
        high_threshold (float): IoU >= high: matched (foreground).
        low_threshold (float): IoU < low: ``BELOW_LOW_THRESHOLD`` (background);
            in between: ``BETWEEN_THRESHOLDS`` (ignored by the losses).
        allow_low_quality_matches (bool): also match, to its best box, every
            prediction that is the best one for some ground-truth box, so that no
            box is left without a positive (Faster R-CNN's second rule).

    Differs from torchvision in one place: with G == 0 (an image without
    objects) every prediction is background (-1); torchvision raises.
    """

    BELOW_LOW_THRESHOLD = -1
    BETWEEN_THRESHOLDS = -2

    def __init__(self, high_threshold: float, low_threshold: float, allow_low_quality_matches: bool = False):
        if low_threshold > high_threshold:
            raise ValueError(f"low_threshold ({low_threshold}) must not exceed high_threshold ({high_threshold})")
        self.high_threshold = high_threshold
        self.low_threshold = low_threshold
        self.allow_low_quality_matches = allow_low_quality_matches

    def __repr__(self) -> str:
        return (f"Matcher(high_threshold={self.high_threshold}, low_threshold={self.low_threshold}, "
                f"allow_low_quality_matches={self.allow_low_quality_matches})")

    def __call__(self, iou: Tensor) -> Tensor:
        """Match every prediction.

        Args:
            iou (Tensor[G, N]): IoU of each ground-truth box (rows) with each prediction (columns).
        Returns:
            Tensor[N] int64: index in [0, G) of the matched box, or -1 (below ``low``)
            or -2 (between the thresholds). Ties go to the lowest box index.
        """
        check_tensor(iou, "iou")
        if iou.dim() != 2:
            raise ValueError(f"iou must be a Tensor[G, N] (ground truth x predictions), got {list(iou.shape)}")
        G, N = iou.shape
        if G == 0 or N == 0:  # no objects: everything is background, and no error
            return torch.full((N,), self.BELOW_LOW_THRESHOLD, dtype=torch.int64, device=iou.device)
        best_iou, best_box = iou.max(dim=0)  # [N], [N]: first maximum on ties
        matches = torch.where(best_iou < self.high_threshold, self.BETWEEN_THRESHOLDS, best_box)  # [N]
        matches = torch.where(best_iou < self.low_threshold, self.BELOW_LOW_THRESHOLD, matches)
        if self.allow_low_quality_matches:
            # Every prediction tied for the best IoU of some box gets back its own
            # best box (which, on ties between boxes, may be another box than that one).
            best_per_box = iou.max(dim=1).values  # [G]
            is_best = (iou == best_per_box[:, None]).any(dim=0)  # [N]
            matches = torch.where(is_best, best_box, matches)
        return matches


def sample_labels(labels: Tensor, batch_size_per_image: int, positive_fraction: float,
                  generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Pick a random, balanced subset of positives and negatives of one image.

    Takes ``min(#positives, int(batch_size_per_image * positive_fraction))``
    positives and fills the rest of the batch with negatives, as many as there are.

    Args:
        labels (Tensor[N] int): >= 1 positive (1, or a class index), 0 negative, -1 ignored.
        batch_size_per_image (int): predictions to sample (256 for the RPN, 512 for RoI heads).
        positive_fraction (float): largest share of positives (0.5 for the RPN, 0.25 for RoI heads).
        generator (torch.Generator, optional): source of randomness; None uses torch's global
            one, and then draws exactly what torchvision's sampler draws.
    Returns:
        (Tensor[N] bool, Tensor[N] bool): sampled positives and sampled negatives, disjoint.
    """
    check_tensor(labels, "labels")
    if labels.dim() != 1 or labels.is_floating_point():
        raise ValueError(f"labels must be an integer Tensor[N], got {labels.dtype} {list(labels.shape)}")
    if not 0 <= positive_fraction <= 1 or batch_size_per_image < 0:
        raise ValueError("need 0 <= positive_fraction <= 1 and batch_size_per_image >= 0, got "
                         f"{positive_fraction} and {batch_size_per_image}")
    positive = torch.where(labels >= 1)[0]
    negative = torch.where(labels == 0)[0]
    num_pos = min(positive.numel(), int(batch_size_per_image * positive_fraction))
    num_neg = min(negative.numel(), batch_size_per_image - num_pos)
    masks = []
    for idx, n in ((positive, num_pos), (negative, num_neg)):  # two draws, as torchvision
        where = labels.device if generator is None else generator.device
        perm = torch.randperm(idx.numel(), generator=generator, device=where)[:n].to(labels.device)
        mask = torch.zeros_like(labels, dtype=torch.bool)
        mask[idx[perm]] = True
        masks.append(mask)
    return masks[0], masks[1]
