"""Faster R-CNN with a Feature Pyramid Network.

Ren, He, Girshick, Sun, "Faster R-CNN: Towards Real-Time Object Detection with
Region Proposal Networks", NeurIPS 2015, with the FPN of Lin et al., CVPR 2017,
and RoI Align from He et al., "Mask R-CNN", ICCV 2017. The pieces, one file each::

    images (list of [3, H_i, W_i])
      -> DetectionTransform    normalise, pad to a batch      [B, 3, H, W] + image sizes
      -> BackboneWithFPN       shape-classifier body + FPN     {"0": [B, D, H/4, W/4], ...}
      -> RegionProposalNetwork anchors, objectness, offsets    B x [P_i, 4] proposals
      -> RoIHeads              RoI Align, 2-layer MLP, classes B x dict(boxes, labels, scores)

In train mode ``model(images, targets)`` returns the four losses of the lecture:
``loss_objectness`` and ``loss_rpn_box_reg`` (RPN), ``loss_classifier`` and
``loss_box_reg`` (second stage). In eval mode ``model(images)`` returns one
dict per image, the interface of torchvision's detectors.
"""

from __future__ import annotations

from torch import Tensor, nn

from ...ops import MultiScaleRoIAlign
from .backbone import ShapeBackbone
from .config import FasterRCNNConfig
from .fpn import BackboneWithFPN
from .roi_heads import RoIHeads
from .rpn import RegionProposalNetwork
from .transform import DetectionTransform


class FasterRCNN(nn.Module):
    """Two-stage detector: RPN proposals, then RoI classification and box refinement.

    Args:
        num_classes (int, optional): classes including background; overrides
            ``config.num_classes``.
        config (FasterRCNNConfig): every other setting.
        backbone (BackboneWithFPN, optional): default a freshly initialised
            :class:`ShapeBackbone` + FPN (``cv_course.experiments.detection.build_backbone``
            makes the pretrained one).
    Shapes:
        forward(images: list of Tensor[3, H_i, W_i] in [0, 1], targets: list of
        dict(boxes=Tensor[K_i, 4] (x1, y1, x2, y2) pixels, labels=Tensor[K_i] int64
        in 1..num_classes-1)) -> dict of 4 scalar losses (train mode) or a list of
        dict(boxes=Tensor[D_i, 4], labels=Tensor[D_i] int64, scores=Tensor[D_i])
        (eval mode), boxes in the input images' pixel coordinates.
    """

    def __init__(self, num_classes: int | None = None,
                 config: FasterRCNNConfig = FasterRCNNConfig(),
                 backbone: BackboneWithFPN | None = None):
        super().__init__()
        if num_classes is not None:
            config = config.replace(num_classes=num_classes)
        self.config = config
        levels = len(config.anchor_sizes)
        if backbone is None:
            backbone = BackboneWithFPN(ShapeBackbone(levels), config.fpn_channels)
        if list(backbone.strides) != list(config.strides):
            raise ValueError(f"backbone strides {backbone.strides} do not match the anchor "
                             f"levels' strides {config.strides}")
        self.transform = DetectionTransform(config.image_mean, config.image_std,
                                            size_divisible=config.strides[-1])
        self.backbone = backbone
        self.rpn = RegionProposalNetwork(config)
        pooler = MultiScaleRoIAlign([str(i) for i in range(levels)], config.roi_output_size,
                                    config.roi_sampling_ratio, canonical_scale=config.canonical_scale,
                                    canonical_level=config.canonical_level)
        self.roi_heads = RoIHeads(config, pooler,
                                  backbone.out_channels * config.roi_output_size**2)

    def forward(self, images: list[Tensor], targets: list[dict] | None = None):
        if self.training and targets is None:
            raise ValueError("in train mode pass targets (a list of dicts with 'boxes' and "
                             "'labels'); for predictions call model.eval() first")
        batch, image_sizes, targets = self.transform(images, targets if self.training else None)
        features = self.backbone(batch)  # {"0": [B, D, H/4, W/4], "1": ..., ...}
        proposals, rpn_losses = self.rpn(list(features.values()), image_sizes, targets)
        detections, roi_losses = self.roi_heads(features, proposals, image_sizes, targets)
        if self.training:
            return {**rpn_losses, **roi_losses}
        return detections
