"""A per-region attribute head on our Faster R-CNN's frozen RoI features.

Mask R-CNN (He et al., ICCV 2017) showed that a detector grows new outputs by
adding a small head that reads the same RoI Align features as the box head;
DenseCap (captions), keypoint heads and Mesh R-CNN (3D shapes) follow the same
pattern. Here the new output is an *attribute*: the dominant colour channel of
each shape (red, green or blue: the largest channel of the mean colour of its
visible pixels), something the detector was never trained to report (the scenes
draw colours independently of the class, so the shape classes say nothing
about it). The detector stays frozen; only the head is trained, on the RoI
features of the training scenes' ground-truth boxes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data import DetectionScenes
from ..models.classifier import default_cache_dir
from ..ops import box_iou, roi_align

COLOURS = ("red", "green", "blue")


def dominant_colour(image: Tensor, masks: Tensor) -> Tensor:
    """Index of the largest channel of each object's mean colour (0 red, 1 green, 2 blue).

    Args:
        image (Tensor[3, H, W]); masks (Tensor[K, H, W]) bool or 0/1, visible pixels.
    Returns:
        Tensor[K] int64.
    """
    m = masks.to(image.dtype)  # [K, H, W]
    area = m.sum((1, 2)).clamp(min=1)  # [K]; an empty mask would divide by zero
    mean = torch.einsum("chw,khw->kc", image, m) / area[:, None]  # [K, 3]
    return mean.argmax(1)


@torch.no_grad()
def roi_features(model: nn.Module, images: list[Tensor], boxes: list[Tensor],
                 batch_size: int = 16) -> Tensor:
    """The RoI Align features our Faster R-CNN's box head reads, for given boxes.

    Args:
        model (FasterRCNN): eval mode; images (list of Tensor[3, H, W]);
        boxes (list of Tensor[K_i, 4]) (x1, y1, x2, y2) pixels.
    Returns:
        Tensor[sum K_i, D, 7, 7], images in order.
    """
    out = []
    for i in range(0, len(images), batch_size):  # batches: memory stays bounded
        batch, sizes, _ = model.transform(images[i:i + batch_size])
        features = model.backbone(batch)
        out.append(model.roi_heads.box_roi_pool(features, boxes[i:i + batch_size], sizes))
    return torch.cat(out)


def roi_pixels(images: list[Tensor], boxes: list[Tensor]) -> Tensor:
    """The image itself, RoI-aligned to 7 x 7 per box: Tensor[sum K_i, 3, 7, 7].

    The baseline: a head that sees the pixels rather than the detector's features.
    """
    return torch.cat([roi_align(im[None], [b], 7, sampling_ratio=2, aligned=True)
                      for im, b in zip(images, boxes)])  # per image: its own boxes


class AttributeHead(nn.Module):
    """RoI features -> attribute logits: 1x1 conv, ReLU, flatten, linear.

    The 1x1 conv keeps the head small (D -> ``width`` channels at each of the
    7 x 7 positions). Shapes: forward(Tensor[R, D, 7, 7]) -> Tensor[R, num_attributes].
    """

    def __init__(self, in_channels: int, num_attributes: int, width: int = 16,
                 output_size: int = 7):
        super().__init__()
        self.reduce = nn.Conv2d(in_channels, width, 1)
        self.fc = nn.Linear(width * output_size**2, num_attributes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(F.relu(self.reduce(x)).flatten(1))  # [R, A]


@dataclass(frozen=True)
class AttributeSetup:
    source: str = "features"  # "features" (the detector's RoI features) or "pixels"
    n_train: int = 1024  # training scenes (seed 0); their ground-truth boxes are the RoIs
    steps: int = 300  # full-batch AdamW steps
    lr: float = 3e-3
    weight_decay: float = 1e-3
    seed: int = 0


def scenes_with_colours(n: int, seed: int, size: int = 128):
    """Scenes with boxes and a dominant-colour label per object.

    Returns (images list of Tensor[3, S, S], boxes list of Tensor[K_i, 4],
    colours list of Tensor[K_i] int64).
    """
    ds = DetectionScenes(n, size=size, seed=seed, include_masks=True, max_objects=8)
    items = [ds[i] for i in range(n)]
    images = [im for im, _ in items]
    return (images, [t["boxes"] for _, t in items],
            [dominant_colour(im, t["masks"]) for im, t in items])


def _inputs(model: nn.Module, source: str, images, boxes) -> Tensor:
    if source == "features":
        return roi_features(model, images, boxes)  # [R, D, 7, 7]
    if source == "pixels":
        return roi_pixels(images, boxes)  # [R, 3, 7, 7]
    raise ValueError(f"source must be 'features' or 'pixels', got {source!r}")


def train_attribute_head(model: nn.Module, setup: AttributeSetup = AttributeSetup()):
    """Train an :class:`AttributeHead` on the frozen detector's RoIs of ground-truth boxes.

    Returns:
        (head in eval mode, list of training losses, one per step).
    """
    images, boxes, colours = scenes_with_colours(setup.n_train, 0)
    x, y = _inputs(model, setup.source, images, boxes), torch.cat(colours)  # [R, ...], [R]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(setup.seed)
        head = AttributeHead(x.shape[1], len(COLOURS))
    opt = torch.optim.AdamW(head.parameters(), lr=setup.lr, weight_decay=setup.weight_decay)
    losses = []
    for _ in range(setup.steps):  # full batch: a few thousand RoIs fit at once
        loss = F.cross_entropy(head(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return head.eval(), losses


def trained_attribute_head(model: nn.Module, setup: AttributeSetup = AttributeSetup(),
                           cache_dir=None) -> nn.Module:
    """:func:`train_attribute_head`, cached on disk by a hash of the setup and the detector.

    The detector enters the hash through its weights (a checksum), so a retrained
    detector gets a new head. Returns the head (eval mode) with attribute ``losses``.
    """
    weights = sum(float(p.detach().double().sum()) for p in model.parameters())
    spec = {"setup": dataclasses.asdict(setup), "detector": round(weights, 4)}
    key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
    path = default_cache_dir() if cache_dir is None else Path(cache_dir)
    path = path / f"attribute_head_{setup.source}_{key}.pt"
    if path.exists():
        saved = torch.load(path, map_location="cpu", weights_only=True)
        in_channels = saved["state_dict"]["reduce.weight"].shape[1]
        head = AttributeHead(in_channels, len(COLOURS))
        head.load_state_dict(saved["state_dict"])
        head.losses = saved["losses"]
        return head.eval()
    head, losses = train_attribute_head(model, setup)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save({"state_dict": head.state_dict(), "losses": losses}, tmp)
    os.replace(tmp, path)  # atomic: a concurrent reader never sees half a file
    head.losses = losses
    return head


@torch.no_grad()
def attribute_accuracy(model: nn.Module, head: nn.Module, images: list[Tensor],
                       boxes: list[Tensor], colours: list[Tensor], source: str = "features",
                       detections: list[dict] | None = None,
                       min_score: float = 0.5) -> dict[str, float]:
    """Held-out accuracy of the head on ground-truth boxes and on detected boxes.

    A detection (score >= ``min_score``) is scored against the colour of the
    ground-truth object it overlaps most, if that IoU is >= 0.5; the others
    are not counted (they are detection errors, not attribute errors).
    Returns dict ``gt`` (accuracy on ground-truth boxes), ``majority`` (always
    predicting the most frequent colour), and with ``detections`` also
    ``detected`` and ``n_detected``.
    """
    y = torch.cat(colours)
    pred = head(_inputs(model, source, images, boxes)).argmax(1)
    out = {"gt": (pred == y).float().mean().item(),
           "majority": (y == y.mode().values).float().mean().item(), "n_gt": len(y)}
    if detections is None:
        return out
    det_boxes, det_true = [], []
    for d, b, c in zip(detections, boxes, colours):  # per image: its own objects
        kept = d["boxes"][d["scores"] >= min_score]
        if len(kept) == 0 or len(b) == 0:
            det_boxes.append(kept[:0])
            continue
        iou, j = box_iou(kept, b).max(1)  # [D]: best ground-truth object
        det_boxes.append(kept[iou >= 0.5])
        det_true.append(c[j[iou >= 0.5]])
    pred = head(_inputs(model, source, images, det_boxes)).argmax(1)
    true = torch.cat(det_true)
    out["detected"] = (pred == true).float().mean().item()
    out["n_detected"] = len(true)
    return out


__all__ = ["COLOURS", "dominant_colour", "roi_features", "AttributeHead", "AttributeSetup",
           "scenes_with_colours", "roi_pixels", "train_attribute_head",
           "trained_attribute_head", "attribute_accuracy"]
