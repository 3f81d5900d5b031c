"""What the Mask R-CNN chapter shows: one object's mask target and prediction.

He et al., "Mask R-CNN", ICCV 2017, section 3. For one ground-truth object and a
proposal box around it, :func:`mask_example` returns the four stages the
chapter draws side by side: the ground-truth mask in the image, its ``M x M``
training target (the mask cut to the proposal by RoI Align), the model's
``M x M`` prediction for the object's class, and that prediction pasted back
into the image. Everything is computed by the model's own functions
(:func:`cv_course.models.detection.mask_head.project_masks_on_boxes`,
``MaskRoIHeads.mask_logits``, :func:`cv_course.ops.paste_masks_in_image`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..models.detection.mask_head import project_masks_on_boxes
from ..ops.masks import paste_masks_in_image


@dataclass
class MaskExample:
    """One object through the mask branch (M = the model's mask size, 28 by default)."""

    gt_mask: Tensor  # [H, W] bool ground-truth mask in the image
    box: Tensor  # [4] (x1, y1, x2, y2) proposal the mask branch sees, image pixels
    label: int  # ground-truth class, the channel that is trained and read
    target: Tensor  # [M, M] float training target in [0, 1]
    probs: Tensor  # [M, M] predicted probability of the label's mask (sigmoid)
    pasted: Tensor  # [H, W] predicted probability pasted into the image

    @property
    def pasted_iou(self) -> float:
        """IoU of the pasted prediction (thresholded at 0.5) with the ground-truth mask."""
        pred = self.pasted > 0.5
        union = int((pred | self.gt_mask).sum())
        return int((pred & self.gt_mask).sum()) / max(union, 1)


@torch.no_grad()
def mask_example(model, image: Tensor, target: dict, index: int,
                 shift: tuple[float, float, float, float] = (0, 0, 0, 0)) -> MaskExample:
    """Mask target, prediction and pasted mask of object ``index`` of one scene.

    Args:
        model: a trained :class:`cv_course.models.detection.mask_rcnn.MaskRCNN`.
        image (Tensor[3, H, W]): the scene.
        target (dict): ``boxes`` Tensor[K, 4] (x1, y1, x2, y2), ``labels`` Tensor[K],
            ``masks`` Tensor[K, H, W] of the scene.
        index (int): which object.
        shift (4 floats): added to the object's ground-truth box to make the
            proposal (a proposal is rarely the exact box).
    Returns:
        MaskExample.
    """
    H, W = image.shape[-2:]
    box = target["boxes"][index].float() + torch.tensor(shift)  # [4]
    box = torch.stack([box[0].clamp(0, W), box[1].clamp(0, H),
                       box[2].clamp(0, W), box[3].clamp(0, H)])  # [4]
    label = int(target["labels"][index])
    gt_masks = target["masks"].bool()  # [K, H, W]
    M = model.config.mask_size
    aligned = model.config.mask_target_aligned
    idx = torch.tensor([index])
    mask_target = project_masks_on_boxes(gt_masks, box[None], idx, M, aligned)[0]
    was_training = model.training
    model.eval()
    try:
        features, sizes, _ = model.extract_features([image])
        logits = model.roi_heads.mask_logits(features, [box[None]], sizes)  # [1, C, M, M]
    finally:
        model.train(was_training)
    probs = logits[0, label].sigmoid()  # [M, M]
    pasted = paste_masks_in_image(probs[None, None], box[None], (H, W))[0, 0]  # [H, W]
    return MaskExample(gt_masks[index], box, label, mask_target, probs, pasted)


__all__ = ["MaskExample", "mask_example"]
