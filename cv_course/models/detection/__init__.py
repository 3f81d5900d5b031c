"""Two-stage detectors with torchvision's interface: R-CNN, Fast R-CNN, Faster R-CNN + FPN.

Every detector takes ``images: list[Tensor[3, H, W]]`` and, in training,
``targets: list[dict(boxes=Tensor[K, 4] (x1, y1, x2, y2), labels=Tensor[K] int64)]``;
in train mode it returns a dict of named losses, in eval mode one
``dict(boxes, labels, scores)`` per image. One file per idea: ``config``,
``backbone``, ``fpn``, ``transform``, ``rpn``, ``roi_heads``, ``faster_rcnn``, ``rcnn``.
"""

from .backbone import ShapeBackbone
from .config import FasterRCNNConfig
from .faster_rcnn import FasterRCNN
from .fpn import BackboneWithFPN, FeaturePyramidNetwork
from .rcnn import RCNN, FastRCNN, sliding_window_proposals
from .roi_heads import FastRCNNPredictor, RoIHeads, TwoMLPHead, fastrcnn_loss
from .rpn import RegionProposalNetwork, RPNHead
from .transform import DetectionTransform

__all__ = ["FasterRCNNConfig", "ShapeBackbone", "FeaturePyramidNetwork", "BackboneWithFPN",
           "DetectionTransform", "RPNHead", "RegionProposalNetwork", "TwoMLPHead",
           "FastRCNNPredictor", "RoIHeads", "fastrcnn_loss", "FasterRCNN", "RCNN", "FastRCNN",
           "sliding_window_proposals"]

# Single-stage: RetinaNet and focal loss (issue 10).
from .retinanet import RetinaNet, RetinaNetConfig
from .retinanet_head import RetinaNetHead, classification_loss, hard_negative_mask

__all__ += ["RetinaNetConfig", "RetinaNet", "RetinaNetHead", "classification_loss",
            "hard_negative_mask"]

# Anchor-free one-stage detection: FCOS (issue 10).
from .fcos import FCOS, centerness_of, fcos_locations, fcos_targets
from .fcos_config import FCOSConfig
from .fcos_head import FCOSHead, fcos_loss, ltrb_giou

__all__ += ["FCOS", "FCOSConfig", "FCOSHead", "fcos_locations", "fcos_targets", "centerness_of",
            "fcos_loss", "ltrb_giou"]

# Panoptic segmentation: Panoptic FPN (issue 12).
from .panoptic_fpn import PanopticFPN, PanopticFPNConfig, SemanticHead, panoptic_merge  # noqa: E402

__all__ += ["PanopticFPN", "PanopticFPNConfig", "SemanticHead", "panoptic_merge"]

# Detection as set prediction: DETR (issue 10).
from .detr import DETR, DETRConfig  # noqa: E402
from .detr_loss import SetCriterion, detr_cost_matrix, detr_set_loss  # noqa: E402

__all__ += ["DETR", "DETRConfig", "SetCriterion", "detr_cost_matrix", "detr_set_loss"]

# Single-stage: YOLO v1 (issue 10).
from .yolo import YOLOConfig, YOLOHead, YOLOv1, decode_yolo, yolo_output_size  # noqa: E402
from .yolo_loss import encode_yolo_targets, lost_objects, yolo_loss  # noqa: E402

__all__ += ["YOLOConfig", "YOLOHead", "YOLOv1", "decode_yolo", "yolo_output_size",
            "encode_yolo_targets", "lost_objects", "yolo_loss"]

# Instance segmentation: Mask R-CNN (issue 12).
from .mask_rcnn import MaskRCNN, MaskRCNNConfig, MaskRoIHeads, MultiScaleRoIPool  # noqa: E402

__all__ += ["MaskRCNN", "MaskRCNNConfig", "MaskRoIHeads", "MultiScaleRoIPool"]
from .mask_rcnn import SampledMaskRCNNConfig  # noqa: E402

__all__ += ["SampledMaskRCNNConfig"]
