"""DETR: detection as set prediction with a transformer.

Carion, Massa, Synnaeve, Usunier, Kirillov, Zagoruyko, "End-to-End Object Detection
with Transformers", ECCV 2020. No anchors, no proposals, no NMS: a fixed number Q of
learned *object queries* each predict one (class, box) or "no object", and the set
loss (:mod:`.detr_loss`) pairs each object with exactly one query, so a duplicate is
trained away instead of suppressed. Shapes for a 128 x 128 scene (stride 8, d = d_model)::

    images (list of [3, 128, 128])         stacked            [B, 3, 128, 128]
    ShapeBackbone (classifier body)        stride-8 map       [B, 64, 16, 16]
    1x1 conv, flatten                      one token per cell [B, 256, d]
    + 2D sine position encoding, encoder   self-attention     [B, 256, d]
    decoder: Q queries attend to the map   each layer         [L, B, Q, d]
    class head / 3-layer MLP + sigmoid     per layer          [L, B, Q, C + 1] / [L, B, Q, 4]

The attention layers are torch's ``nn.MultiheadAttention`` arranged as in DETR: the
position encoding is added to the queries and keys of *every* layer (not only to the
input), which is what lets cross-attention find where an object is.

Plain DETR needs hundreds of epochs: at first every query attends everywhere and
predicts the mean box whatever the image. Two later fixes make it learn our scenes in
minutes (``DETRConfig(reference_points=False, attention_sigma=0, box_refine=False)`` is
the plain model): each query owns a learned *reference point* around which it predicts its
box (Deformable DETR, Zhu et al. 2021), its cross-attention starts as a Gaussian around
that point (SMCA, Gao et al. 2021), so a query sees its neighbourhood from the first step.
``box_refine=True`` also re-centres both, layer by layer, on the previous layer's box
(Deformable DETR's iterative refinement), ``query_selection=True`` starts the points at the
encoder's most confident boxes of each image (Deformable DETR's two-stage variant, DINO), and
``groups > 1`` trains several one-to-one query groups side by side, running one at inference
(Group DETR). ``cv_course.experiments.detr`` says which of these the registered model uses
and what they measured.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ...ops import HungarianMatcher
from ...ops.boxes import box_convert
from .backbone import ShapeBackbone
from .detr_layers import (MLP, DecoderLayer, EncoderLayer, cell_centres, reference_grid,
                          sine_point_encoding, sine_position_encoding)
from .detr_loss import SetCriterion


@dataclass(frozen=True)
class DETRConfig:
    num_classes: int = 4  # real classes C (scene labels 1..C); the head adds "no object"
    pretrained: bool = True  # start the backbone from the trained shape classifier's body
    feature_stride: int = 8  # which backbone map feeds the transformer: 8 or 16 (16 adds a stage)
    num_queries: int = 16  # Q object queries: at most Q detections (scenes have <= 8 objects)
    d_model: int = 64  # width of the transformer
    heads: int = 4  # attention heads (d_model divisible by heads)
    encoder_layers: int = 2
    decoder_layers: int = 3  # each adds an auxiliary loss
    dim_feedforward: int = 128  # hidden width of each layer's 2-layer MLP
    dropout: float = 0.0  # DETR uses 0.1; on small, clean data it only slows learning
    # The set criterion (DETR, section 3.1 and appendix A.2)
    cost_class: float = 1.0  # matching cost weights ...
    cost_bbox: float = 5.0
    cost_giou: float = 2.0
    weight_ce: float = 1.0  # ... and loss weights (the same in DETR)
    weight_bbox: float = 5.0
    weight_giou: float = 2.0
    no_object_weight: float = 0.1  # class weight of "no object" in the cross-entropy
    aux_loss: bool = True  # a set loss after every decoder layer, not only the last
    # Each query owns a learned reference point (x, y), starting on a grid: its boxes are
    # predicted around it and its position code is added to the query (the reference points
    # of Deformable DETR / Anchor DETR). False: plain DETR, boxes from scratch.
    reference_points: bool = True
    # Cross-attention of a query starts local: its logits get -d^2 / (2 sigma^2), d the distance
    # (image widths) of a cell from the query's reference point (SMCA, Gao et al., ICCV 2021, a
    # Gaussian prior that speeds up DETR's convergence). 0: no prior (needs reference_points).
    attention_sigma: float = 0.1
    # Each decoder layer moves the reference point to the centre the previous layer predicted
    # (Deformable DETR's iterative box refinement); needs reference_points.
    box_refine: bool = False
    # Group DETR (Chen et al., "Group DETR: Fast DETR Training with Group-Wise One-to-Many
    # Assignment", ICCV 2023): in training, ``groups`` independent sets of Q queries, each
    # matched one-to-one with the objects and attending only to its own group, so every object
    # trains ``groups`` queries per step; inference keeps group 0 only (same cost, no NMS).
    # The losses are averaged over the groups (the paper sums them: a constant factor).
    groups: int = 1
    # Query selection ("two-stage" Deformable DETR, Zhu et al. 2021; DINO's mixed query
    # selection, Zhang et al., ICLR 2023): every encoder cell also predicts a (class, box),
    # trained with its own set loss (``loss_*_enc``), and the decoder's reference points
    # start at the centres of the Q most confident of these boxes instead of a learned grid;
    # the queries' content (``query_pos``) stays learned. Needs box_refine.
    query_selection: bool = False

    def __post_init__(self):
        if self.num_classes < 1 or self.num_queries < 1:
            raise ValueError("num_classes and num_queries must be >= 1, got "
                             f"{self.num_classes} and {self.num_queries}")
        if self.d_model % self.heads or self.d_model % 4:
            raise ValueError(f"d_model must be divisible by heads and by 4 (the sine encoding "
                             f"splits it over x and y, sin and cos), got {self.d_model}, "
                             f"{self.heads} heads")
        if self.attention_sigma < 0 or (self.attention_sigma and not self.reference_points):
            raise ValueError("attention_sigma must be >= 0, and > 0 only with reference_points "
                             f"(the prior is centred on them), got {self.attention_sigma}")
        if self.box_refine and not self.reference_points:
            raise ValueError("box_refine moves the reference points: set reference_points=True")
        if self.query_selection and not self.box_refine:
            raise ValueError("query_selection starts the refinement from the encoder's boxes: "
                             "set box_refine=True")
        if self.groups < 1:
            raise ValueError(f"groups must be >= 1 (1: plain one-to-one DETR), got {self.groups}")
        if self.feature_stride not in (8, 16):
            raise ValueError(f"feature_stride must be 8 or 16, got {self.feature_stride}")

    def replace(self, **changes) -> "DETRConfig":
        """A copy with some fields changed (``dataclasses.replace``)."""
        return dataclasses.replace(self, **changes)


class DETR(nn.Module):
    """DEtection TRansformer with torchvision's detection interface.

    Args:
        config (DETRConfig): every setting.
        backbone (ShapeBackbone, optional): default a freshly initialised one
            (``cv_course.experiments.detr`` passes the pretrained one).
    Shapes:
        forward(images: list of Tensor[3, H, W] in [0, 1], all the same size, H and W
        multiples of ``config.feature_stride``; targets: list of dict(boxes=Tensor[K_i, 4]
        (x1, y1, x2, y2) pixels, labels=Tensor[K_i] int64 in 1..C)) -> dict of weighted
        scalar losses (train mode: ``loss_ce``, ``loss_bbox``, ``loss_giou`` and
        ``loss_ce_i``, ... for decoder layer i < L - 1) or, in eval mode, one
        dict(boxes=Tensor[Q, 4] xyxy pixels, labels=Tensor[Q] int64 in 1..C,
        scores=Tensor[Q]) per image: every query, score = its highest probability
        over the real classes. No NMS.
    """

    def __init__(self, config: DETRConfig = DETRConfig(), backbone: ShapeBackbone | None = None):
        super().__init__()
        self.config = c = config
        levels = 2 if c.feature_stride == 8 else 3  # ShapeBackbone: strides 4, 8 (, 16)
        self.backbone = ShapeBackbone(levels) if backbone is None else backbone
        if self.backbone.strides[-1] != c.feature_stride:
            raise ValueError(f"the backbone's last stride is {self.backbone.strides[-1]}, "
                             f"config.feature_stride is {c.feature_stride}")
        self.input_proj = nn.Conv2d(self.backbone.out_channels[-1], c.d_model, 1)
        args = (c.d_model, c.heads, c.dim_feedforward, c.dropout)
        self.encoder = nn.ModuleList(EncoderLayer(*args) for _ in range(c.encoder_layers))
        self.decoder = nn.ModuleList(DecoderLayer(*args) for _ in range(c.decoder_layers))
        self.decoder_norm = nn.LayerNorm(c.d_model)
        n = c.groups * c.num_queries  # queries in training; inference keeps the first Q
        self.query_pos = nn.Embedding(n, c.d_model)  # the learned object queries
        if c.reference_points:  # in logit space, on a grid covering the image, once per group
            grid = torch.logit(reference_grid(c.num_queries)).repeat(c.groups, 1)  # [n, 2]
            self.reference = nn.Parameter(grid)
        self.class_head = nn.Linear(c.d_model, c.num_classes + 1)
        self.box_head = MLP(c.d_model, c.d_model, 4, 3)
        if c.query_selection:  # one (class, box) per encoder cell, the box around the cell
            self.enc_class_head = nn.Linear(c.d_model, c.num_classes + 1)
            self.enc_box_head = MLP(c.d_model, c.d_model, 4, 3)
        self.criterion = SetCriterion(
            c.num_classes, HungarianMatcher(c.cost_class, c.cost_bbox, c.cost_giou),
            c.weight_ce, c.weight_bbox, c.weight_giou, c.no_object_weight)

    def forward(self, images: list[Tensor], targets: list[dict] | None = None):
        x = self._stack(images)  # [B, 3, H, W]
        if self.training:
            if targets is None:
                raise ValueError("in train mode DETR needs targets (call model.eval() to predict)")
            out, targets = self.predict_sets(x), self._normalize(targets, x)
            losses = {}
            if "enc_outputs" in out:  # the encoder's proposals get a set loss of their own
                enc = self.criterion.layer_loss(out.pop("enc_outputs"), targets)
                losses = {f"{k}_enc": self.criterion.weights[k] * v for k, v in enc.items()}
            if self.config.groups > 1:  # each group is matched on its own, like another image
                out = _split_groups(out, self.config.groups)
                targets = [t for t in targets for _ in range(self.config.groups)]
            return {**self.criterion(out, targets), **losses}
        return self.postprocess(self.predict_sets(x), x.shape[-2:])

    def _queries(self, device) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """The queries of this mode: position codes [n, d], reference logits [n, 2] (or None)
        and the self-attention mask [n, n] (None for one group); n = groups * Q in training,
        Q in eval mode (group 0)."""
        Q = self.config.num_queries
        n = Q * self.config.groups if self.training else Q
        ref = self.reference[:n] if self.config.reference_points else None
        group = torch.arange(n, device=device) // Q  # [n]
        mask = group[:, None] != group[None, :] if n > Q else None  # [n, n]: other groups
        return self.query_pos.weight[:n], ref, mask

    def predict_sets(self, x: Tensor) -> dict:
        """Raw outputs: ``pred_logits`` [B, Q, C + 1], ``pred_boxes`` [B, Q, 4] (normalized
        cxcywh) of the last decoder layer and ``aux_outputs``, the earlier layers' (if
        ``config.aux_loss``), for a batch ``x`` [B, 3, H, W]."""
        B = x.shape[0]
        f = self.input_proj(self.backbone(x)[-1])  # [B, d, h, w]
        _, d, h, w = f.shape
        pos = sine_position_encoding(h, w, d, device=f.device, dtype=f.dtype)  # [h*w, d]
        memory = f.flatten(2).transpose(1, 2)  # [B, h*w, d]: one token per cell
        for layer in self.encoder:
            memory = layer(memory, pos)
        query_pos, ref_logit, self_mask = self._queries(f.device)  # [Q, d], [Q, 2], [Q, Q]
        prior = None
        if self.config.reference_points:
            ref = ref_logit.sigmoid()  # [Q, 2] (x, y) in (0, 1)
            query_pos = query_pos + sine_point_encoding(ref, d)  # where the query looks first
        if self.config.attention_sigma:
            cells = cell_centres(h, w, device=f.device, dtype=f.dtype)  # [h*w, 2]
            d2 = (cells[None] - ref[:, None]).square().sum(-1)  # [Q, h*w]
            prior = -d2 / (2 * self.config.attention_sigma**2)
        if self.config.query_selection:
            enc, ref_logit = self._select(memory, h, w, query_pos.shape[0])  # ref [B, n, 2]
            out = self._refine(memory, pos, h, w, ref_logit, self_mask)
            if self.training:
                out["enc_outputs"] = enc
            return out
        if self.config.box_refine:
            return self._refine(memory, pos, h, w, ref_logit, self_mask)
        t = torch.zeros(B, *query_pos.shape, device=f.device, dtype=f.dtype)  # [B, Q, d]
        states = []
        for layer in self.decoder:
            t = layer(t, query_pos, memory, pos, prior, self_mask)
            states.append(self.decoder_norm(t))
        hs = torch.stack(states)  # [L, B, Q, d]
        logits, boxes = self.class_head(hs), self.box_head(hs)  # [L, B, Q, C+1], [L, B, Q, 4]
        if self.config.reference_points:  # the centre is an offset from the reference point
            boxes = torch.cat([boxes[..., :2] + ref_logit, boxes[..., 2:]], -1)
        boxes = boxes.sigmoid()  # normalized (cx, cy, w, h)
        out = {"pred_logits": logits[-1], "pred_boxes": boxes[-1]}
        if self.config.aux_loss:
            out["aux_outputs"] = [{"pred_logits": a, "pred_boxes": b}
                                  for a, b in zip(logits[:-1], boxes[:-1])]
        return out

    def _refine(self, memory: Tensor, pos: Tensor, h: int, w: int, ref_logit: Tensor,
                self_mask: Tensor | None) -> dict:
        """The decoder with iterative refinement: layer l looks around, and predicts its box
        relative to, the centre that layer l - 1 predicted (the learned point for l = 0)."""
        B, N, d = memory.shape
        cells = cell_centres(h, w, device=memory.device, dtype=memory.dtype)  # [N, 2]
        ref = ref_logit.sigmoid().expand(B, -1, -1)  # [B, Q, 2]
        query_weight = self.query_pos.weight[:ref.shape[1]]  # [Q, d]
        t = torch.zeros(B, ref.shape[1], d, device=memory.device, dtype=memory.dtype)
        heads = self.config.heads
        layers = []
        for layer in self.decoder:
            query_pos = query_weight + sine_point_encoding(ref, d)  # [B, Q, d]
            d2 = (cells[None, None] - ref[:, :, None]).square().sum(-1)  # [B, Q, N]
            prior = (-d2 / (2 * self.config.attention_sigma**2)).repeat_interleave(heads, 0)
            t = layer(t, query_pos, memory, pos,
                      prior if self.config.attention_sigma else None, self_mask)
            hs = self.decoder_norm(t)  # [B, Q, d]
            delta = self.box_head(hs)  # [B, Q, 4]
            centre = delta[..., :2] + torch.logit(ref, eps=1e-4)  # an offset from ref
            boxes = torch.cat([centre, delta[..., 2:]], -1).sigmoid()  # [B, Q, 4] cxcywh
            layers.append({"pred_logits": self.class_head(hs), "pred_boxes": boxes})
            ref = boxes[..., :2].detach()  # no gradient through the next layer's anchor
        out = dict(layers[-1])
        if self.config.aux_loss:
            out["aux_outputs"] = layers[:-1]
        return out

    def _select(self, memory: Tensor, h: int, w: int, n: int) -> tuple[dict, Tensor]:
        """Query selection: a (class, box) per encoder cell, the box centre an offset from the
        cell's centre, and the logit centres [B, n, 2] of the Q most confident boxes (the same
        Q for every query group), detached as in Deformable DETR's two-stage variant."""
        B, N, _ = memory.shape
        cells = cell_centres(h, w, device=memory.device, dtype=memory.dtype)  # [N, 2]
        delta = self.enc_box_head(memory)  # [B, N, 4]
        centre = delta[..., :2] + torch.logit(cells)  # [B, N, 2], around each cell
        enc = {"pred_logits": self.enc_class_head(memory),  # [B, N, C + 1]
               "pred_boxes": torch.cat([centre, delta[..., 2:]], -1).sigmoid()}  # [B, N, 4]
        Q = self.config.num_queries
        score = enc["pred_logits"].softmax(-1)[..., :-1].max(-1).values  # [B, N]
        top = score.topk(Q, dim=1).indices  # [B, Q]
        ref = centre.gather(1, top[..., None].expand(-1, -1, 2)).detach()  # [B, Q, 2]
        return enc, ref.repeat(1, n // Q, 1)  # [B, n, 2]

    @staticmethod
    def postprocess(out: dict, size) -> list[dict]:
        """Every query as a detection: pixel xyxy box clipped to the image, best real class (1..C)
        and its probability."""
        H, W = size
        prob = out["pred_logits"].softmax(-1)[..., :-1]  # [B, Q, C]: "no object" left out
        scores, labels = prob.max(-1)  # [B, Q]
        scale = torch.tensor([W, H, W, H], device=prob.device, dtype=out["pred_boxes"].dtype)
        boxes = box_convert(out["pred_boxes"], "cxcywh", "xyxy") * scale  # [B, Q, 4]
        boxes = torch.minimum(boxes.clamp(min=0), scale)  # a box may reach past the border
        return [{"boxes": b, "labels": lab + 1, "scores": s}
                for b, lab, s in zip(boxes, labels, scores)]

    def _stack(self, images: list[Tensor]) -> Tensor:
        if not isinstance(images, (list, tuple)) or not images:
            raise ValueError("images must be a non-empty list of Tensor[3, H, W]")
        sizes = {tuple(im.shape) for im in images}
        if len(sizes) != 1 or len(images[0].shape) != 3 or images[0].shape[0] != 3:
            raise ValueError(f"images must all be Tensor[3, H, W] of one size (this DETR does "
                             f"not pad), got shapes {sorted(sizes)}")
        H, W = images[0].shape[-2:]
        s = self.config.feature_stride
        if H % s or W % s:
            raise ValueError(f"image height and width must be multiples of {s}, got {H} x {W}")
        return torch.stack(list(images))

    def _normalize(self, targets: list[dict], x: Tensor) -> list[dict]:
        """Pixel xyxy boxes and labels 1..C -> normalized cxcywh and classes 0..C-1."""
        if len(targets) != len(x):
            raise ValueError(f"got {len(x)} images but {len(targets)} targets")
        H, W = x.shape[-2:]
        scale = torch.tensor([W, H, W, H], device=x.device, dtype=x.dtype)
        out = []
        for i, t in enumerate(targets):
            labels = t["labels"].to(x.device)
            if bool(((labels < 1) | (labels > self.config.num_classes)).any()):
                raise ValueError(f"targets[{i}]['labels'] must lie in 1..{self.config.num_classes}"
                                 f" (0 is background), got {labels.tolist()}")
            boxes = box_convert(t["boxes"].to(x), "xyxy", "cxcywh") / scale  # [K, 4]
            out.append({"labels": labels - 1, "boxes": boxes})
        return out


def _split_groups(out: dict, groups: int) -> dict:
    """Outputs of B images with ``groups`` query groups, [B, groups * Q, ...], as outputs of
    B * groups images with Q queries, [B * groups, Q, ...] (image-major: image b's group k is
    row b * groups + k), so that each group is matched to the objects on its own."""
    def split(t: Tensor) -> Tensor:
        B, n = t.shape[:2]
        return t.reshape(B * groups, n // groups, *t.shape[2:])
    res = {k: split(out[k]) for k in ("pred_logits", "pred_boxes")}
    if "aux_outputs" in out:
        res["aux_outputs"] = [{k: split(a[k]) for k in a} for a in out["aux_outputs"]]
    return res


__all__ = ["DETRConfig", "DETR", "sine_point_encoding", "sine_position_encoding", "reference_grid"]
