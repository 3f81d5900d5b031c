"""YOLO v1: detection as one regression from the image to an S x S x (5B + C) grid.

Redmon, Divvala, Girshick, Farhadi, "You Only Look Once: Unified, Real-Time
Object Detection", CVPR 2016. No proposals and no second stage: one forward
pass predicts, for each of the S x S cells, B boxes with a confidence and one
class distribution; score = confidence x class probability, then NMS. The
grid coding and the loss are in :mod:`.yolo_loss`; this file holds the settings,
the network, and the decoding back to boxes.

Shapes for the course's 128 x 128 scenes (S = 8, B = 2, C = 4)::

    images                  N x [3, 128, 128]
    ShapeBackbone, stride 16  [N, 64, 8, 8]      the shape classifier's body + one stage
    YOLOHead                  [N, 8, 8, 14]      14 = 5 * 2 + 4 numbers per cell
    train: yolo_loss          dict(loss_coord, loss_obj, loss_noobj, loss_class)
    eval:  decode_yolo        N x dict(boxes [D, 4], labels [D], scores [D])

Why S = 8: the stride-16 map of a 128-pixel image is 8 x 8, so each cell is one
feature-map position and its features are centred on the cell (no fully
connected layer is needed to reach a grid). A 16-pixel cell is about the
smallest object's size (10-60 pixels), so a cell rarely holds two centres:
of the 2,218 objects of the 500 held-out scenes, S = 8 loses 91 (4.1%) to
shared cells, S = 7 6.0%, S = 4 (32-pixel cells) 15.8%; S = 16 (stride 8) loses
1.0% but gives each cell less context for the largest shapes (:func:`lost_objects`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ...ops import batched_nms
from .backbone import ShapeBackbone
from .transform import _check_inputs
from .yolo_loss import encode_yolo_targets, lost_objects, yolo_loss, yolo_predictions


@dataclass(frozen=True)
class YOLOConfig:
    grid_size: int = 8  # S: cells per side; images must be S * stride pixels (8 * 16 = 128)
    num_boxes: int = 2  # B: boxes predicted per cell (the paper's B = 2)
    num_classes: int = 4  # C: object classes, no background (YOLO's confidence plays its part)
    stride: int = 16  # backbone output stride: 8, 16 or 32 (ShapeBackbone with 2, 3, 4 levels)
    pretrained: bool = True  # start from the trained shape classifier's conv body (transfer)
    head_channels: int = 128  # width of the head's 3x3 conv layers
    head_layers: int = 2  # 3x3 conv + BN + LeakyReLU layers before the 1x1 prediction
    lambda_coord: float = 5.0  # weight of the box terms (paper: 5)
    lambda_noobj: float = 0.5  # weight of the confidence of predictors without an object (0.5)
    rescore: bool = True  # confidence target = IoU with the object (paper) rather than 1
    score_thresh: float = 0.01  # drop detections with conf x class prob below this
    nms_thresh: float = 0.5  # class-aware NMS IoU threshold
    detections_per_img: int = 100  # keep at most this many detections per image

    @property
    def image_size(self) -> int:
        """Height = width of the images the model takes: S * stride."""
        return self.grid_size * self.stride

    def __post_init__(self):
        if self.stride not in (8, 16, 32):
            raise ValueError(f"stride must be 8, 16 or 32 (the ShapeBackbone's levels), "
                             f"got {self.stride}")
        if self.grid_size < 1 or self.num_boxes < 1 or self.num_classes < 1:
            raise ValueError("grid_size, num_boxes and num_classes must be >= 1, got "
                             f"{self.grid_size}, {self.num_boxes}, {self.num_classes}")

    def replace(self, **changes) -> "YOLOConfig":
        """A copy with some fields changed (``dataclasses.replace``)."""
        return dataclasses.replace(self, **changes)


class YOLOHead(nn.Module):
    """Feature map -> raw YOLO grid: a few 3x3 convs, then a 1x1 conv to 5B + C channels.

    The paper ends with two fully connected layers over the whole 7 x 7 map; a
    convolutional head (as in YOLO v2) has far fewer weights for our 1,024
    training scenes, and its cell (i, j) reads the features around position (i, j).
    Shapes: Tensor[N, in_channels, S, S] -> Tensor[N, S, S, 5B + C].
    """

    def __init__(self, in_channels: int, num_boxes: int, num_classes: int,
                 channels: int = 128, layers: int = 2):
        super().__init__()
        convs: list[nn.Module] = []
        for k in range(layers):
            convs += [nn.Conv2d(in_channels if k == 0 else channels, channels, 3, padding=1,
                                bias=False), nn.BatchNorm2d(channels), nn.LeakyReLU(0.1)]
        self.convs = nn.Sequential(*convs)
        self.predict = nn.Conv2d(channels if layers else in_channels,
                                 5 * num_boxes + num_classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.predict(self.convs(x)).permute(0, 2, 3, 1)  # [N, S, S, 5B + C]


def yolo_output_size(grid_size: int = 7, num_boxes: int = 2, num_classes: int = 20,
                     in_channels: int = 64) -> tuple[tuple[int, ...], int]:
    """The output of one image, measured by building the head and running it on a feature map.

    Returns ``(shape, numbers)``; the paper's PASCAL VOC setting (S = 7, B = 2, C = 20)
    gives ``((7, 7, 30), 1470)``. The input is an S x S map of zeros: only shapes matter.
    """
    head = YOLOHead(in_channels, num_boxes, num_classes).eval()
    with torch.no_grad():
        out = head(torch.zeros(1, in_channels, grid_size, grid_size))[0]  # [S, S, 5B + C]
    return tuple(out.shape), out.numel()


def decode_yolo(output: Tensor, num_boxes: int = 2, image_size: tuple[int, int] = (448, 448),
                score_thresh: float = 0.01, nms_thresh: float = 0.5,
                detections_per_img: int = 100) -> dict[str, Tensor]:
    """One image's grid (in :func:`encode_yolo_targets`' format) back to scored boxes.

    Each of the S * S * B boxes gets one score per class, ``conf x Pr(class | object)``
    (the paper's class-specific confidence); (box, class) pairs above ``score_thresh``
    go through class-aware NMS. ``decode_yolo(encode_yolo_targets(b, l, ...))`` gives
    back the boxes the grid kept (score 1), in pixels.

    Args:
        output (Tensor[S, S, 5B + C]): per cell ``[x, y, w, h, conf] * B + class probabilities``
            (:func:`yolo_predictions` of the head's output, or a target).
        image_size ((H, W)): pixels.
    Returns:
        dict: ``boxes`` Tensor[D, 4] (x1, y1, x2, y2) pixels clipped to the image,
        ``labels`` Tensor[D] int64 in 1..C, ``scores`` Tensor[D], by decreasing score.
    """
    if output.dim() != 3 or output.shape[0] != output.shape[1] or output.shape[2] <= 5 * num_boxes:
        raise ValueError(f"output must be one image's Tensor[S, S, 5B + C] with B = {num_boxes}, "
                         f"got {list(output.shape)}")
    S, C = output.shape[0], output.shape[2] - 5 * num_boxes
    H, W = image_size
    box5 = output[..., :5 * num_boxes].unflatten(-1, (num_boxes, 5))  # [S, S, B, 5]
    ij = torch.arange(S, device=output.device, dtype=output.dtype)
    cx = (ij[None, :, None] + box5[..., 0]) * (W / S)  # [S, S, B] column j + offset
    cy = (ij[:, None, None] + box5[..., 1]) * (H / S)  # [S, S, B] row i + offset
    w, h = box5[..., 2] * W, box5[..., 3] * H
    boxes = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1)  # [S, S, B, 4]
    boxes = torch.min(boxes.clamp(min=0), output.new_tensor([W, H, W, H]))
    scores = box5[..., 4, None] * output[:, :, None, 5 * num_boxes:]  # [S, S, B, C]
    scores, boxes = scores.reshape(-1, C), boxes.reshape(-1, 4)  # [S*S*B, C], [S*S*B, 4]
    keep = (scores > score_thresh) & (boxes[:, 2:] > boxes[:, :2]).all(-1, keepdim=True)
    box_idx, cls = keep.nonzero(as_tuple=True)  # [D'] each: (box, class) pairs kept
    boxes, scores, labels = boxes[box_idx], scores[box_idx, cls], cls + 1
    keep = batched_nms(boxes, scores, labels, nms_thresh)[:detections_per_img]
    return {"boxes": boxes[keep], "labels": labels[keep], "scores": scores[keep]}


class YOLOv1(nn.Module):
    """YOLO v1 with the course's detection interface (see the module docstring).

    Args:
        config (YOLOConfig): every setting.
        backbone (ShapeBackbone, optional): with ``stride / 4`` ... levels; default a freshly
            initialised one (``cv_course.experiments.yolo`` builds the pretrained one).
    Shapes:
        forward(images: list of Tensor[3, S * stride, S * stride] in [0, 1], targets: list of
        dict(boxes=Tensor[K_i, 4] (x1, y1, x2, y2) pixels, labels=Tensor[K_i] int64 in 1..C))
        -> dict(loss_coord, loss_obj, loss_noobj, loss_class) in train mode, else a list of
        dict(boxes=Tensor[D_i, 4] pixels, labels=Tensor[D_i] int64, scores=Tensor[D_i]).
    """

    def __init__(self, config: YOLOConfig = YOLOConfig(), backbone: ShapeBackbone | None = None):
        super().__init__()
        self.config = config
        levels = {8: 2, 16: 3, 32: 4}[config.stride]
        backbone = ShapeBackbone(levels) if backbone is None else backbone
        if backbone.strides[-1] != config.stride:
            raise ValueError(f"the backbone's last stride is {backbone.strides[-1]}, the config's "
                             f"{config.stride}; build ShapeBackbone({levels}, ...)")
        self.backbone = backbone
        self.head = YOLOHead(backbone.out_channels[-1], config.num_boxes, config.num_classes,
                             config.head_channels, config.head_layers)

    def forward(self, images: list[Tensor], targets: list[dict] | None = None):
        if self.training and targets is None:
            raise ValueError("in train mode pass targets (a list of dicts with 'boxes' and "
                             "'labels'); for predictions call model.eval() first")
        c = self.config
        self._check(images, targets if self.training else None)
        output = self.head(self.backbone(torch.stack(images))[-1])  # [N, S, S, 5B + C]
        size = (c.image_size, c.image_size)
        if self.training:
            target = torch.stack([encode_yolo_targets(  # per image: K differs
                t["boxes"].to(output.dtype), t["labels"], c.grid_size, c.num_boxes,
                c.num_classes, size) for t in targets])  # [N, S, S, 5B + C]
            return yolo_loss(output, target, c.num_boxes, c.lambda_coord, c.lambda_noobj,
                             c.rescore)
        grids = yolo_predictions(output, c.num_boxes)  # [N, S, S, 5B + C]
        return [decode_yolo(g, c.num_boxes, size, c.score_thresh, c.nms_thresh,
                            c.detections_per_img) for g in grids]  # per image: D differs

    def _check(self, images, targets) -> None:
        """Errors that say what to fix: image size, label range (besides the usual checks)."""
        _check_inputs(images, targets)
        c = self.config
        for i, im in enumerate(images):
            if tuple(im.shape[-2:]) != (c.image_size, c.image_size):
                raise ValueError(
                    f"images[{i}] is {tuple(im.shape[-2:])} but a YOLO grid of {c.grid_size} x "
                    f"{c.grid_size} cells at stride {c.stride} needs {c.image_size} x "
                    f"{c.image_size} images; resize them or change grid_size / stride")
        for i, t in enumerate(targets or []):
            labels = t["labels"]
            if labels.numel() and not bool(((labels >= 1) & (labels <= c.num_classes)).all()):
                raise ValueError(f"targets[{i}]['labels'] must be in 1..{c.num_classes} "
                                 f"(YOLO has no background class), got {labels.tolist()}")


__all__ = ["YOLOConfig", "YOLOHead", "YOLOv1", "decode_yolo", "yolo_output_size",
           "encode_yolo_targets", "yolo_loss", "yolo_predictions", "lost_objects"]
