"""The full pipeline of our Faster R-CNN, stage by stage, and two practical refinements.

The lecture's last worked example follows one 800 x 600 image through a
Faster R-CNN with an FPN (Ren et al., NeurIPS 2015; Lin et al., CVPR 2017) and
counts what each stage produces: anchors, proposals, RoI features, detections.
:func:`trace_faster_rcnn` runs *our* model the same way and keeps every
intermediate tensor; it calls the model's own parts in the order of
``FasterRCNN.forward`` and the test checks that it ends with the same
detections. :func:`full_size_config` is the lecture's configuration in our
classes (256-channel FPN, 3 sizes x 3 ratios per level, 300 proposals, 81
COCO classes).

Two refinements of the lecture's "detection in practice" list, measured in
the book: class-agnostic NMS (:func:`nms_detections`) and test-time
augmentation with horizontal flips (:func:`flip_tta`), merged by NMS or by box
voting (Gidaris and Komodakis, "Object detection via a multi-region and
semantic segmentation-aware CNN model", ICCV 2015).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..models.detection import FasterRCNN, FasterRCNNConfig
from ..models.detection.rpn import flatten_anchor_maps
from ..ops import batched_nms, box_iou, clip_boxes_to_image, nms, remove_small_boxes


def full_size_config(num_classes: int = 81) -> FasterRCNNConfig:
    """The lecture's full-size Faster R-CNN settings in a :class:`FasterRCNNConfig`.

    256-channel FPN, 3 anchor sizes (octaves 2**0, 2**(1/3), 2**(2/3)) x 3 aspect
    ratios per level at strides 4 to 32 (our backbone stops at 32; the lecture's
    ResNet-50 adds stride 64), 1,000 best anchors per level before NMS and 300
    proposals after it, RoI Align to 7 x 7, a 1024-wide box head, score
    threshold 0.05 and the FPN paper's level rule (224 pixels -> stride 16).
    ``pretrained=False``: the shape classifier's weights do not matter for shapes.
    """
    octaves = (1.0, 2 ** (1 / 3), 2 ** (2 / 3))
    sizes = tuple(tuple(round(32 * 2**i * o) for o in octaves) for i in range(4))
    return FasterRCNNConfig(
        num_classes=num_classes, pretrained=False, fpn_channels=256, anchor_sizes=sizes,
        rpn_pre_nms_top_n=(2000, 1000), rpn_post_nms_top_n=(2000, 300),
        canonical_scale=224, canonical_level=4, representation_size=1024,
        box_score_thresh=0.05, detections_per_img=100)


@dataclass
class PipelineTrace:
    """Every intermediate tensor of one image's pass through :class:`FasterRCNN`.

    ``tensors`` maps a stage name to its tensor(s); ``counts`` maps a count
    (anchors, proposals before / after NMS, candidates, detections) to an int.
    """

    tensors: "OrderedDict[str, object]" = field(default_factory=OrderedDict)
    counts: "OrderedDict[str, int]" = field(default_factory=OrderedDict)

    def rows(self) -> list[tuple[str, str]]:
        """(stage, shape) rows for a table: shapes of the tensors, level by level."""
        out = []
        for name, value in self.tensors.items():
            if isinstance(value, dict):  # FPN levels or detections
                for key, t in value.items():
                    out.append((f"{name} {key}", "x".join(map(str, t.shape))))
            else:
                out.append((name, "x".join(map(str, value.shape))))
        return out


@torch.no_grad()
def trace_faster_rcnn(model: FasterRCNN, image: Tensor) -> PipelineTrace:
    """Run ``model`` (eval mode) on one image, keeping each stage's tensors and counts.

    Args:
        model (FasterRCNN): our detector; image (Tensor[3, H, W]) in [0, 1].
    Returns:
        PipelineTrace with tensors ``input`` [1, 3, H', W'] (padded), ``features``
        {level: [1, D, H'/s, W'/s]}, ``anchors`` [N, 4], ``objectness`` [N],
        ``pre_nms`` [K, 4] with ``pre_nms_objectness`` [K] (logits), ``proposals`` [P, 4], ``roi_features`` [P, D, 7, 7],
        ``class_logits`` [P, C], ``box_deltas`` [P, 4C], ``candidates`` and
        ``detections`` (dicts of boxes [M, 4], labels [M], scores [M]).
        ``detections`` equals ``model([image])[0]``. For a Mask R-CNN (a model
        whose RoI heads have ``predict_masks``) also ``mask_roi_features``
        [D, D', 14, 14], ``mask_logits`` [D, C, 28, 28] and ``detections["masks"]``
        [D, 1, H, W] (when something is detected).
    """
    if model.training:
        raise ValueError("trace_faster_rcnn runs the inference path: call model.eval() first")
    c, rpn, t = model.config, model.rpn, PipelineTrace()
    batch, sizes, _ = model.transform([image])
    features = model.backbone(batch)  # {"0": [1, D, H/4, W/4], ...}
    t.tensors["input"], t.tensors["features"] = batch, dict(features)
    # RPN: the same steps as RegionProposalNetwork.forward / filter_proposals (eval).
    logits, offsets = rpn.head(list(features.values()))
    objectness = torch.cat([flatten_anchor_maps(o, 1) for o in logits], 1)[0, :, 0]  # [N]
    deltas = torch.cat([flatten_anchor_maps(d, 4) for d in offsets], 1)[0]  # [N, 4]
    anchors, per_level = rpn.anchors(list(features.values()))  # [N, 4]
    boxes = rpn.box_coder.decode(deltas, anchors)  # [N, 4]
    t.tensors["anchors"], t.tensors["objectness"] = anchors, objectness
    t.counts["anchors"] = anchors.shape[0]
    pre_n, post_n = c.rpn_pre_nms_top_n[1], c.rpn_post_nms_top_n[1]
    top, level, start = [], [], 0
    for i, n in enumerate(per_level):  # the best pre_n anchors of every level
        k = min(pre_n, n)
        top.append(objectness[start:start + n].topk(k).indices + start)
        level.append(torch.full((k,), i, device=anchors.device))
        start += n
    top, level = torch.cat(top), torch.cat(level)  # [K]
    bx = clip_boxes_to_image(boxes[top], sizes[0])  # [K, 4]
    keep = remove_small_boxes(bx, c.rpn_min_size)
    t.tensors["pre_nms"], t.tensors["pre_nms_objectness"] = bx[keep], objectness[top][keep]
    t.counts["proposals before NMS"] = len(keep)
    keep = keep[batched_nms(bx[keep], objectness[top][keep], level[keep], c.rpn_nms_thresh)]
    t.counts["proposals after NMS"] = len(keep)
    proposals = bx[keep[:post_n]]  # [P, 4]
    t.tensors["proposals"] = proposals
    t.counts["proposals kept (top-n)"] = proposals.shape[0]
    # Second stage: RoI Align, two-layer head, class scores and class-specific boxes.
    heads = model.roi_heads
    pooled = heads.box_roi_pool(features, [proposals], sizes)  # [P, D, 7, 7]
    class_logits, box_deltas = heads.box_predictor(heads.box_head(pooled))
    t.tensors["roi_features"] = pooled
    t.tensors["class_logits"], t.tensors["box_deltas"] = class_logits, box_deltas
    cands = second_stage_candidates(heads, class_logits, box_deltas, [proposals], sizes)[0]
    t.tensors["candidates"] = cands
    t.counts["candidates (class, box) pairs"] = proposals.shape[0] * (c.num_classes - 1)
    t.counts["candidates above the score threshold"] = cands["scores"].shape[0]
    dets = nms_detections([cands], c.box_nms_thresh, False, c.detections_per_img)[0]
    t.counts["final detections"] = dets["scores"].shape[0]
    if hasattr(heads, "predict_masks") and len(dets["boxes"]) > 0:  # Mask R-CNN's branch
        t.tensors["mask_roi_features"] = heads.mask_roi_pool(features, [dets["boxes"]], sizes)
        t.tensors["mask_logits"] = heads.mask_head(t.tensors["mask_roi_features"])
        dets = heads.predict_masks(features, [dets], sizes)[0]  # + masks [D, 1, H, W]
    t.tensors["detections"] = dets
    return t


def second_stage_candidates(roi_heads: nn.Module, class_logits: Tensor, box_deltas: Tensor,
                            proposals: list[Tensor], image_sizes) -> list[dict[str, Tensor]]:
    """RoIHeads.postprocess up to (not including) NMS: one candidate per (RoI, class).

    Args:
        class_logits (Tensor[R, C]), box_deltas (Tensor[R, 4C]): the box predictor's
        outputs for the R = sum P_i proposals of the batch, images in order.
    Returns:
        list of B dicts ``boxes`` [M_i, 4] (clipped to the image), ``labels`` [M_i]
        in 1..C-1, ``scores`` [M_i] (softmax, above ``box_score_thresh``, boxes not tiny).
    """
    c = roi_heads.config
    R, C = class_logits.shape
    rois = torch.cat(proposals)  # [R, 4]
    image = torch.repeat_interleave(torch.arange(len(proposals), device=rois.device),
                                    torch.tensor([len(p) for p in proposals],
                                                 device=rois.device))  # [R]
    boxes = roi_heads.box_coder.decode(box_deltas, rois).view(R, C, 4)
    hw = torch.tensor(image_sizes, device=rois.device, dtype=rois.dtype)[image]  # [R, 2]
    boxes = torch.minimum(boxes.clamp(min=0), hw.flip(1).repeat(1, 2)[:, None])
    scores = F.softmax(class_logits, dim=-1)  # [R, C]
    labels = torch.arange(C, device=rois.device).expand(R, C)
    boxes, scores = boxes[:, 1:].reshape(-1, 4), scores[:, 1:].reshape(-1)  # no background
    labels, image = labels[:, 1:].reshape(-1), image[:, None].expand(R, C)[:, 1:].reshape(-1)
    keep = (scores > c.box_score_thresh).nonzero().flatten()
    keep = keep[remove_small_boxes(boxes[keep], 1e-2)]
    return [{"boxes": boxes[keep[image[keep] == i]], "labels": labels[keep[image[keep] == i]],
             "scores": scores[keep[image[keep] == i]]} for i in range(len(proposals))]


@torch.no_grad()
def raw_detections(model: FasterRCNN, images: list[Tensor],
                   batch_size: int = 16) -> list[dict[str, Tensor]]:
    """Our Faster R-CNN's candidates before its final NMS, one dict per image.

    ``nms_detections(raw_detections(m, ims), c.box_nms_thresh, False,
    c.detections_per_img)`` equals ``m(ims)`` (``c = m.config``).
    """
    out = []
    for i in range(0, len(images), batch_size):  # batches: memory stays bounded
        batch, sizes, _ = model.transform(images[i:i + batch_size])
        features = model.backbone(batch)
        proposals, _ = model.rpn(list(features.values()), sizes)
        heads = model.roi_heads
        pooled = heads.box_roi_pool(features, proposals, sizes)
        logits, deltas = heads.box_predictor(heads.box_head(pooled))
        out += second_stage_candidates(heads, logits, deltas, proposals, sizes)
    return out


def nms_detections(candidates: list[dict[str, Tensor]], iou_threshold: float = 0.5,
                   class_agnostic: bool = False,
                   max_detections: int = 100) -> list[dict[str, Tensor]]:
    """Final NMS per image: class-aware (boxes of one class) or class-agnostic (all boxes).

    Class-agnostic NMS lets a confident box of one class suppress an overlapping
    box of another class, so one object cannot be reported twice under two names
    (but two overlapping objects of different classes can no longer both survive).

    Args:
        candidates: dicts ``boxes`` [M, 4] (x1, y1, x2, y2), ``labels`` [M], ``scores`` [M].
    Returns:
        dicts with the kept ``boxes``, ``labels``, ``scores``, in decreasing score,
        at most ``max_detections`` per image.
    """
    out = []
    for d in candidates:  # per image: each has its own number of candidates
        if class_agnostic:
            keep = nms(d["boxes"], d["scores"], iou_threshold)
        else:
            keep = batched_nms(d["boxes"], d["scores"], d["labels"], iou_threshold)
        keep = keep[:max_detections]
        out.append({k: d[k][keep] for k in ("boxes", "labels", "scores")})
    return out


def hflip_boxes(boxes: Tensor, width: int) -> Tensor:
    """Mirror (x1, y1, x2, y2) boxes left-right in an image ``width`` pixels wide.

    ``hflip_boxes(hflip_boxes(b, W), W) == b``. Tensor[N, 4] -> Tensor[N, 4].
    """
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack([width - x2, y1, width - x1, y2], dim=-1)


def box_voting(boxes: Tensor, scores: Tensor, labels: Tensor, kept: Tensor,
               iou_threshold: float = 0.5) -> Tensor:
    """Replace each kept box by the score-weighted mean of its cluster (Gidaris 2015).

    The cluster of kept box k: every box of the same label with IoU >= iou_threshold
    with it, itself included. Args: boxes [M, 4], scores [M], labels [M], kept [K]
    (indices, e.g. from NMS). Returns: Tensor[K, 4], the voted boxes.
    """
    if kept.numel() == 0:
        return boxes.new_zeros(0, 4)
    same = labels[kept][:, None] == labels[None, :]  # [K, M]
    member = same & (box_iou(boxes[kept], boxes) >= iou_threshold)  # [K, M]
    member[torch.arange(len(kept), device=kept.device), kept] = True  # itself, always
    w = member.to(scores.dtype) * scores[None, :]  # [K, M]
    return (w @ boxes) / w.sum(1, keepdim=True)  # [K, 4]; w.sum >= own score > 0


@torch.no_grad()
def mirrored_detections(model: nn.Module, images: list[Tensor],
                        batch_size: int = 16) -> list[dict[str, Tensor]]:
    """Detections on each image's mirror image, mapped back to the original image.

    Args:
        model: any detector with torchvision's interface (eval mode).
        images (list of Tensor[3, H, W]).
    Returns:
        one dict ``boxes`` (x1, y1, x2, y2 in the *original* image), ``labels``,
        ``scores`` per image.
    """
    out = []
    for i in range(0, len(images), batch_size):  # batches: memory stays bounded
        ims = images[i:i + batch_size]
        for im, d in zip(ims, model([im.flip(-1) for im in ims])):
            out.append({**d, "boxes": hflip_boxes(d["boxes"], im.shape[-1])})
    return out


def merge_detections(first: list[dict[str, Tensor]], second: list[dict[str, Tensor]],
                     merge: str = "nms", iou_threshold: float = 0.5,
                     max_detections: int = 100) -> list[dict[str, Tensor]]:
    """Merge two detection sets per image: concatenate, class-aware NMS, optional voting.

    ``merge="nms"`` keeps the NMS survivors as they are; ``merge="vote"`` replaces
    each survivor by the score-weighted mean of its cluster (:func:`box_voting`).
    Scores and labels are the survivors' own.
    """
    if merge not in ("nms", "vote"):
        raise ValueError(f"merge must be 'nms' or 'vote', got {merge!r}")
    out = []
    for a, b in zip(first, second):  # per image: each has its own detections
        boxes = torch.cat([a["boxes"], b["boxes"]])  # [M, 4]
        scores, labels = torch.cat([a["scores"], b["scores"]]), torch.cat([a["labels"],
                                                                          b["labels"]])
        keep = batched_nms(boxes, scores, labels, iou_threshold)[:max_detections]
        kept = box_voting(boxes, scores, labels, keep, iou_threshold) \
            if merge == "vote" else boxes[keep]
        out.append({"boxes": kept, "labels": labels[keep], "scores": scores[keep]})
    return out


@torch.no_grad()
def flip_tta(model: nn.Module, images: list[Tensor], merge: str = "nms",
             iou_threshold: float = 0.5, max_detections: int = 100,
             batch_size: int = 16) -> list[dict[str, Tensor]]:
    """Test-time augmentation: detect on each image and its mirror image, then merge.

    The mirror's boxes are mapped back (:func:`hflip_boxes`) and the two sets
    merged by :func:`merge_detections` (class-aware NMS, or NMS + box voting).
    Costs two forward passes per image.

    Args:
        model: any detector with torchvision's interface (eval mode).
        images (list of Tensor[3, H, W]).
    Returns:
        list of dicts ``boxes``, ``labels``, ``scores``, one per image.
    """
    plain = []
    for i in range(0, len(images), batch_size):  # batches: memory stays bounded
        plain += list(model(images[i:i + batch_size]))
    return merge_detections(plain, mirrored_detections(model, images, batch_size), merge,
                            iou_threshold, max_detections)


__all__ = ["full_size_config", "PipelineTrace", "trace_faster_rcnn",
           "second_stage_candidates", "raw_detections", "nms_detections", "hflip_boxes",
           "box_voting", "mirrored_detections", "merge_detections",
           "flip_tta"]
