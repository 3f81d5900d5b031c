"""The mask branch of Mask R-CNN: its targets, its loss and its head.

He et al., "Mask R-CNN", ICCV 2017, sections 3 and 3.1. On the RoI Align
feature of each positive proposal (``D x 14 x 14``), a small fully
convolutional head predicts one ``M x M`` mask per class (M = 28):

    [R, D, 14, 14] -> 3x3 conv + ReLU (x4, or x2 in the lecture)  -> [R, 256, 14, 14]
                   -> 2x2 transposed conv, stride 2, + ReLU        -> [R, 256, 28, 28]
                   -> 1x1 conv to C channels                       -> [R, C, 28, 28]

Training target of a proposal: its matched ground-truth mask cropped to the
proposal's box and resampled to ``M x M`` with RoI Align. Loss: per-pixel binary
cross-entropy on the mask of the ground-truth class only, so classes do not
compete for a pixel (a softmax over classes would make them), and the class
decision stays with the box head.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...ops.roi_align import roi_align


def project_masks_on_boxes(gt_masks: Tensor, boxes: Tensor, matched_idxs: Tensor,
                           M: int, aligned: bool = False) -> Tensor:
    """Mask targets: each proposal's ground-truth mask, cropped to its box, resized to M x M.

    RoI Align (``aligned=False``, adaptive sampling, as torchvision's
    ``project_masks_on_boxes``) on the masks as a batch of one-channel images:
    proposal p reads image ``matched_idxs[p]``. Values are fractions in [0, 1]
    (bilinear samples of a 0/1 mask), used as soft targets.

    Args:
        gt_masks (Tensor[G, H, W]): bool or float ground-truth instance masks of one image.
        boxes (Tensor[P, 4]): (x1, y1, x2, y2) proposals in image pixels, x1 <= x2, y1 <= y2.
        matched_idxs (Tensor[P] int64): ground-truth index in [0, G) of each proposal.
        M (int): output side (28 in Mask R-CNN).
        aligned (bool): RoI Align's half-pixel shift (Detectron2): with it, a target pasted
            back by ``paste_masks_in_image`` lands on the mask it came from; False (the
            default) is torchvision's target, which pasting grows by about a pixel.
    Returns:
        Tensor[P, M, M] in boxes' dtype and device.
    """
    if gt_masks.dim() != 3:
        raise ValueError(f"gt_masks must have shape [G, H, W], got {list(gt_masks.shape)}")
    if matched_idxs.shape != boxes.shape[:1]:
        raise ValueError(f"matched_idxs must have shape [P] = [{boxes.shape[0]}], got "
                         f"{list(matched_idxs.shape)}: one ground-truth index per proposal")
    G = gt_masks.shape[0]
    if matched_idxs.numel() and bool(((matched_idxs < 0) | (matched_idxs >= G)).any()):
        raise ValueError(f"matched_idxs must index the G = {G} ground-truth masks, got values in "
                         f"[{int(matched_idxs.min())}, {int(matched_idxs.max())}]; pass the "
                         "matcher's indices for positive (foreground) proposals only")
    rois = torch.cat([matched_idxs[:, None].to(boxes), boxes], dim=1)  # [P, 5] (gt index, box)
    images = gt_masks[:, None].to(boxes.dtype)  # [G, 1, H, W]
    return roi_align(images, rois, (M, M), spatial_scale=1.0, aligned=aligned)[:, 0]  # [P, M, M]


def mask_loss(mask_logits: Tensor, proposals: list[Tensor], gt_masks: list[Tensor],
              gt_labels: list[Tensor], matched_idxs: list[Tensor],
              aligned: bool = False) -> dict[str, Tensor]:
    """Mask R-CNN's mask loss: mean binary cross-entropy on the ground-truth class's mask.

    ``L_mask = -1/(P M^2) sum_p sum_ij [y log s(x) + (1 - y) log(1 - s(x))]``, with
    ``x = mask_logits[p, label_p]`` and ``y`` the target from
    :func:`project_masks_on_boxes`. The other C - 1 masks of a proposal get no gradient.

    Args:
        mask_logits (Tensor[P, C, M, M]): the head's output for the positive proposals
            of all images, concatenated in image order.
        proposals (list[Tensor[P_i, 4]]): (x1, y1, x2, y2) positive proposals of each image.
        gt_masks (list[Tensor[G_i, H_i, W_i]]): ground-truth masks of each image.
        gt_labels (list[Tensor[G_i] int64]): their classes, indices into the C channels.
        matched_idxs (list[Tensor[P_i] int64]): matched ground truth of each proposal.
        aligned (bool): passed to :func:`project_masks_on_boxes` (False: torchvision's targets).
    Returns:
        dict: ``loss_mask``, a scalar (0, still connected to ``mask_logits``, when P = 0).
    """
    for name, x in (("proposals", proposals), ("gt_masks", gt_masks), ("gt_labels", gt_labels),
                    ("matched_idxs", matched_idxs)):
        if not isinstance(x, (list, tuple)):
            raise TypeError(f"{name} must be a list with one tensor per image, got "
                            f"{type(x).__name__}; wrap a single image's tensor as [{name}]")
    P, C, M, M2 = mask_logits.shape
    if M != M2:
        raise ValueError(f"mask_logits must be [P, C, M, M], got {list(mask_logits.shape)}")
    labels = torch.cat([lab[idx] for lab, idx in zip(gt_labels, matched_idxs)])  # [P]
    targets = torch.cat([project_masks_on_boxes(m, b, idx, M, aligned).to(mask_logits.dtype)
                         for m, b, idx in zip(gt_masks, proposals, matched_idxs)])  # [P, M, M]
    if targets.shape[0] != P:
        raise ValueError(f"mask_logits has {P} rows but the images have {targets.shape[0]} "
                         "positive proposals in all")
    if P == 0:  # the mean of nothing is NaN; keep the graph so backward still runs
        return {"loss_mask": mask_logits.sum() * 0}
    rows = torch.arange(P, device=labels.device)
    logits = mask_logits[rows, labels]  # [P, M, M]: the ground-truth class's mask only
    return {"loss_mask": F.binary_cross_entropy_with_logits(logits, targets)}


class MaskHead(nn.Module):
    """RoI features Tensor[R, D, S, S] -> mask logits Tensor[R, C, 2S, 2S], one mask per class.

    Args:
        in_channels (int): D, channels of the RoI features (the FPN's width).
        num_classes (int): C, masks per RoI (torchvision counts the background, whose
            mask is never trained; the lecture's COCO example uses C = 80).
        num_convs (int): 3x3 conv + ReLU layers (4 in the paper's FPN head, 2 in the lecture).
        channels (int): width of those layers and of the transposed conv (256 in the paper).
    """

    def __init__(self, in_channels: int, num_classes: int, num_convs: int = 4,
                 channels: int = 256):
        super().__init__()
        layers = []
        for i in range(num_convs):
            layers += [nn.Conv2d(in_channels if i == 0 else channels, channels, 3, padding=1),
                       nn.ReLU(inplace=True)]
        self.convs = nn.Sequential(*layers)
        # 2x2 kernel, stride 2: each input pixel paints its own 2x2 output block (no overlap)
        width = channels if num_convs else in_channels
        self.upsample = nn.ConvTranspose2d(width, channels, 2, stride=2)
        self.predictor = nn.Conv2d(channels, num_classes, 1)
        for m in self.modules():  # as torchvision's MaskRCNNHeads / MaskRCNNPredictor
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor, return_features: bool = False):
        features = {"input": x}
        for i in range(0, len(self.convs), 2):
            x = self.convs[i + 1](self.convs[i](x))  # [R, channels, S, S]
            features[f"conv{i // 2 + 1}"] = x
        x = F.relu(self.upsample(x))  # [R, channels, 2S, 2S]
        features["upsample"] = x
        logits = self.predictor(x)  # [R, C, 2S, 2S]
        features["logits"] = logits
        return (logits, features) if return_features else logits

    def shapes(self, x: Tensor) -> dict[str, tuple[int, ...]]:
        """Shape (RoI dimension included) of every intermediate map for RoI features ``x``.

        Works on a ``meta``-device model and input (no computation), see :func:`mask_head_shapes`.
        """
        _, features = self.forward(x, return_features=True)
        return {k: tuple(v.shape) for k, v in features.items()}


def mask_head_shapes(num_rois: int = 5, in_channels: int = 256, roi_size: int = 14,
                     num_classes: int = 80, num_convs: int = 2,
                     channels: int = 256) -> dict[str, tuple[int, ...]]:
    """The mask head's shapes, walked on the meta device; defaults: the lecture's worked example.

    5 detected objects with 256 x 14 x 14 RoI Align features, two 3x3 convs,
    the transposed conv to 28 x 28, a 1x1 conv to the 80 COCO classes::

        mask_head_shapes()["logits"]  # (5, 80, 28, 28): one 28 x 28 mask per class per object
    """
    with torch.device("meta"):
        head = MaskHead(in_channels, num_classes, num_convs, channels)
        x = torch.empty(num_rois, in_channels, roi_size, roi_size)
    return head.shapes(x)
