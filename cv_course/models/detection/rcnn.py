"""R-CNN and Fast R-CNN, minimal versions for the chapter's comparison with Faster R-CNN.

R-CNN: Girshick, Donahue, Darrell, Malik, "Rich feature hierarchies for accurate
object detection and semantic segmentation", CVPR 2014. Every region proposal
is cropped from the *image*, warped to the CNN's input size and run through the
whole CNN: about 2,000 CNN passes per image.

Fast R-CNN: Girshick, ICCV 2015. The CNN runs *once* per image; each proposal's
features are cut from the shared feature map by RoI Pool.

Both take their proposals from outside the network, here a fixed set of about
2,000 sliding windows (a stand-in for selective search, which the papers used),
and both reuse :class:`RoIHeads` (sampling, the two losses, post-processing):
the three detectors differ only in where the per-region features come from.
Simplifications: R-CNN is trained end to end with Fast R-CNN's losses (the paper
fine-tuned the CNN, then trained SVMs and a box regressor separately).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ...ops import clip_boxes_to_image, grid_anchors, remove_small_boxes, roi_align, roi_pool
from ..classifier import ClassifierConfig, ShapeClassifier
from .config import FasterRCNNConfig
from .roi_heads import RoIHeads
from .transform import DetectionTransform

# (stride, sizes, aspect ratios) of the sliding windows: 1,984 boxes on a 128 x 128 image.
DEFAULT_WINDOWS = ((4, (16,), (1.0,)), (8, (32,), (0.5, 1.0, 2.0)), (16, (64,), (0.5, 1.0, 2.0)))


def sliding_window_proposals(image_size: tuple[int, int], windows=DEFAULT_WINDOWS,
                             device=None, dtype: torch.dtype = torch.float32) -> Tensor:
    """Boxes of several sizes slid over the image, clipped to it: fixed region proposals.

    Args:
        image_size ((int, int)): (height, width).
        windows: tuples (stride, sizes, aspect_ratios), as :func:`cv_course.ops.grid_anchors`.
    Returns:
        Tensor[N, 4]: (x1, y1, x2, y2) boxes at least 2 pixels wide and high.
    """
    H, W = image_size
    boxes = torch.cat([grid_anchors((-(-H // s), -(-W // s)), s, sizes, ratios, device=device,
                                    dtype=dtype) for s, sizes, ratios in windows])  # [N, 4]
    boxes = clip_boxes_to_image(boxes, (H, W))
    return boxes[remove_small_boxes(boxes, 2.0)]


class CropAndWarp(nn.Module):
    """R-CNN's per-region features: warp each box's image crop, run the CNN on it, average.

    ``roi_align`` on the image itself is the crop-and-warp: it resamples the box
    to ``crop_size x crop_size`` pixels bilinearly. Shapes: forward({"image":
    Tensor[B, 3, H, W]}, boxes list of Tensor[R_i, 4], image_sizes) -> Tensor[R, C, 1, 1].
    """

    def __init__(self, cnn: nn.Module, crop_size: int = 64, chunk: int = 256):
        super().__init__()
        self.cnn, self.crop_size, self.chunk = cnn, crop_size, chunk

    def forward(self, features: dict, boxes: list[Tensor], image_sizes) -> Tensor:
        crops = roi_align(features["image"], boxes, self.crop_size, sampling_ratio=2,
                          aligned=True)  # [R, 3, s, s]
        # One CNN pass per region, in chunks: 2,000 crops at once would not fit in memory.
        out = [self.cnn(c).mean(dim=(2, 3)) for c in crops.split(self.chunk)]  # [r, C] each
        return torch.cat(out)[:, :, None, None]  # [R, C, 1, 1]


class SingleLevelRoIPool(nn.Module):
    """Fast R-CNN's per-region features: RoI Pool on one stride-``stride`` map.

    Shapes: forward({"0": Tensor[B, C, H/s, W/s]}, boxes list of Tensor[R_i, 4],
    image_sizes) -> Tensor[R, C, output_size, output_size].
    """

    def __init__(self, output_size: int, stride: int):
        super().__init__()
        self.output_size, self.stride = output_size, stride

    def forward(self, features: dict, boxes: list[Tensor], image_sizes) -> Tensor:
        return roi_pool(features["0"], boxes, self.output_size, spatial_scale=1 / self.stride)


class _ExternalProposalDetector(nn.Module):
    """Shared forward of R-CNN and Fast R-CNN: proposals come from outside the network."""

    def _features(self, batch: Tensor) -> dict:
        raise NotImplementedError

    def forward(self, images: list[Tensor], targets: list[dict] | None = None,
                proposals: list[Tensor] | None = None):
        """Args: images, targets as :class:`FasterRCNN`; proposals (list of Tensor[P_i, 4],
        optional): default :func:`sliding_window_proposals` of each image."""
        if self.training and targets is None:
            raise ValueError("in train mode pass targets; for predictions call model.eval()")
        batch, image_sizes, targets = self.transform(images, targets if self.training else None)
        if proposals is None:
            proposals = [sliding_window_proposals(size, self.windows, batch.device, batch.dtype)
                         for size in image_sizes]
        detections, losses = self.roi_heads(self._features(batch), proposals, image_sizes,
                                            targets)
        return losses if self.training else detections


class RCNN(_ExternalProposalDetector):
    """R-CNN: one CNN pass per proposal (crop, warp to ``crop_size``, classify, regress).

    Args:
        num_classes (int): classes including background.
        config (FasterRCNNConfig): RoI sampling, losses, post-processing settings.
        classifier (ShapeClassifier, optional): the CNN whose body is run on each
            crop (default: a fresh one); ``crop_size`` is its input size.
        windows: the sliding windows used as proposals (see :func:`sliding_window_proposals`).
    """

    def __init__(self, num_classes: int = 5, config: FasterRCNNConfig = FasterRCNNConfig(),
                 classifier: ShapeClassifier | None = None, crop_size: int = 64,
                 windows=DEFAULT_WINDOWS):
        super().__init__()
        config = config.replace(num_classes=num_classes)
        classifier = classifier or ShapeClassifier(ClassifierConfig())
        self.windows = windows
        self.transform = DetectionTransform(config.image_mean, config.image_std, size_divisible=1)
        pool = CropAndWarp(classifier.features, crop_size)
        self.roi_heads = RoIHeads(config, pool, classifier.config.widths[-1])

    def _features(self, batch: Tensor) -> dict:
        return {"image": batch}  # R-CNN has no shared features: the pooler sees pixels


class FastRCNN(_ExternalProposalDetector):
    """Fast R-CNN: one CNN pass per image, RoI Pool of each proposal on its stride-8 map.

    Args: as :class:`RCNN` (without ``crop_size``); the CNN is the classifier's body
    (output stride 8).
    """

    def __init__(self, num_classes: int = 5, config: FasterRCNNConfig = FasterRCNNConfig(),
                 classifier: ShapeClassifier | None = None, windows=DEFAULT_WINDOWS):
        super().__init__()
        config = config.replace(num_classes=num_classes)
        classifier = classifier or ShapeClassifier(ClassifierConfig())
        if classifier.config.pools != 3:
            raise ValueError("FastRCNN expects the classifier body's output stride 8 (3 pools), "
                             f"got {classifier.config.pools} pools")
        self.windows = windows
        self.transform = DetectionTransform(config.image_mean, config.image_std, size_divisible=8)
        self.body = classifier.features  # [B, C, H/8, W/8]
        pool = SingleLevelRoIPool(config.roi_output_size, stride=8)
        self.roi_heads = RoIHeads(config, pool,
                                  classifier.config.widths[-1] * config.roi_output_size**2)

    def _features(self, batch: Tensor) -> dict:
        return {"0": self.body(batch)}
