"""RetinaNet on generated scenes: ours, the focal-loss ablation, and torchvision's RetinaNet.

Registered names (see :func:`cv_course.experiments.detection.detector_names`):

- ``"retinanet"``: :class:`cv_course.models.detection.RetinaNet` with focal loss,
  the default budget (``SETUP``, 12 epochs).
- ``"retinanet_focal"``, ``"retinanet_bce"``, ``"retinanet_bce_hnm"``: the same
  model and data with one shorter budget (``ABLATION_SETUP``, 6 epochs) for all
  three, with focal loss, plain binary cross-entropy, and SSD's 3:1
  hard-negative mining: the chapter's ablation (the paper's section 5.1). Its
  measured run, ``benchmarks/results/retinanet_ablation.json``, is written by
  ``python -m cv_course.experiments.retinanet --json FILE``.
- ``"torchvision_retinanet"``: torchvision's ``RetinaNet`` class (``weights=None``,
  nothing downloaded) around the *same* backbone + FPN, anchors and settings,
  trained by the same loop.

:func:`focal_ablation` trains (or loads from the cache) the three variants and
measures held-out mAP and where each one's classification loss comes from.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch
from torch import nn

from ..models.detection import BackboneWithFPN
from ..models.detection.retinanet import RetinaNet, RetinaNetConfig
from .detection import (
    DetectionSetup,
    DetectorSpec,
    _same_anchors,
    build_backbone,
    evaluate_detector,
    make_scenes,
    trained_detector,
)

# The default budget of ours and torchvision's RetinaNet. 12 epochs on one thread:
# mAP@0.5 0.909 (6 epochs: 0.851), the cheapest tried that reaches the 0.90;
# 267 s on a quiet machine, 453 s in a heavy slot at load 3.9
# (benchmarks/results/retinanet.json).
SETUP = DetectionSetup(epochs=12, n_train=1024)
# The ablation's budget, one for its three losses: the 6 epochs it was measured at
# (retinanet_ablation.json). Only the losses differ between its models; 12 epochs
# would cost three more 12-epoch trainings.
ABLATION_SETUP = DetectionSetup(epochs=6, n_train=1024)


def torchvision_retinanet(config: RetinaNetConfig, backbone: BackboneWithFPN,
                          image_size: int = 128) -> nn.Module:
    """torchvision's ``RetinaNet`` with our backbone + FPN and the settings of ``config``.

    Nothing is downloaded. ``min_size = max_size = image_size`` keeps the scenes at
    their size; the anchor generator returns our anchors (centred on
    ``(k + 0.5) * stride``); each subnet is cut to ``config.head_convs`` convs.
    torchvision's head has ``num_classes`` sigmoid columns *including* column 0 for
    the background label, which is never a positive (ours has ``num_classes - 1``).
    Only what torchvision's class can express is accepted: focal loss with alpha
    0.25 and gamma 2, L1 (beta 0), smooth L1 (beta 1) or GIoU box loss, box-coder
    weights (1, 1, 1, 1).
    """
    from torchvision.models.detection import RetinaNet as TVRetinaNet
    from torchvision.models.detection.retinanet import RetinaNetHead as TVRetinaNetHead

    c = config
    if (c.cls_loss, c.focal_alpha, c.focal_gamma) != ("focal", 0.25, 2.0):
        raise ValueError("torchvision's RetinaNet trains with focal loss, alpha 0.25, gamma 2 "
                         f"only; got cls_loss={c.cls_loss!r}, alpha {c.focal_alpha}, gamma "
                         f"{c.focal_gamma}")
    loss_types = {("smooth_l1", 0.0): "l1", ("smooth_l1", 1.0): "smooth_l1"}
    box_type = "giou" if c.box_loss == "giou" else loss_types.get((c.box_loss, c.smooth_l1_beta))
    if box_type is None or tuple(c.bbox_reg_weights) != (1.0, 1.0, 1.0, 1.0):
        raise ValueError("torchvision's RetinaNet supports smooth_l1_beta 0 (L1) or 1, or "
                         "box_loss='giou', and bbox_reg_weights (1, 1, 1, 1); got "
                         f"{c.box_loss!r}, beta {c.smooth_l1_beta}, weights {c.bbox_reg_weights}")
    head = TVRetinaNetHead(backbone.out_channels, c.num_anchors, c.num_classes)
    head.classification_head.conv = head.classification_head.conv[:c.head_convs]
    head.regression_head.conv = head.regression_head.conv[:c.head_convs]
    nn.init.constant_(head.classification_head.cls_logits.bias,
                      -torch.log(torch.tensor((1 - c.prior_probability) / c.prior_probability)))
    head.regression_head._loss_type = box_type
    matcher_kwargs = {}
    if not c.low_quality_matches:
        from torchvision.models.detection._utils import Matcher as TVMatcher
        matcher_kwargs["proposal_matcher"] = TVMatcher(c.fg_iou_thresh, c.bg_iou_thresh, False)
    return TVRetinaNet(
        backbone, c.num_classes, min_size=image_size, max_size=image_size,
        image_mean=list(c.image_mean), image_std=list(c.image_std),
        size_divisible=c.strides[-1], anchor_generator=_same_anchors(c), head=head,
        score_thresh=c.score_thresh, nms_thresh=c.nms_thresh,
        detections_per_img=c.detections_per_img, fg_iou_thresh=c.fg_iou_thresh,
        bg_iou_thresh=c.bg_iou_thresh, topk_candidates=c.topk_candidates, **matcher_kwargs)


def _ours(config: RetinaNetConfig) -> nn.Module:
    return RetinaNet(config, build_backbone(config))


SPECS = {
    "retinanet": DetectorSpec(_ours, RetinaNetConfig(), SETUP),
    "retinanet_focal": DetectorSpec(_ours, RetinaNetConfig(), ABLATION_SETUP),
    "retinanet_bce": DetectorSpec(_ours, RetinaNetConfig(cls_loss="bce"), ABLATION_SETUP),
    "retinanet_bce_hnm": DetectorSpec(_ours, RetinaNetConfig(cls_loss="bce_hnm"),
                                      ABLATION_SETUP),
    "torchvision_retinanet": DetectorSpec(lambda c: torchvision_retinanet(c, build_backbone(c)),
                                          RetinaNetConfig(), SETUP),
}
ABLATION = ("retinanet_focal", "retinanet_bce", "retinanet_bce_hnm")


def focal_ablation(names=ABLATION, n_batch: int = 50, cache_dir=None) -> list[dict]:
    """Held-out mAP and classification-loss shares of the three RetinaNet losses.

    Each model is :func:`trained_detector` (disk cache, else trained on one thread).
    The shares are measured on the first ``n_batch`` held-out scenes, each model
    under its *own* loss and under focal loss and BCE (same predictions, other
    loss), with :meth:`RetinaNet.loss_shares` (easy negative: background anchor
    whose best class probability is below 0.1).

    Returns:
        list of dicts: ``model``, ``cls_loss``, the :func:`evaluate_detector` entries
        (``map``, ``map_50``, ...), ``images_per_second``, ``train_seconds``, ``parameters``,
        ``easy_negative_share`` (own loss), ``easy_negative_share_focal``,
        ``easy_negative_share_bce``, ``hard_negative_share``, ``positive_share``,
        ``easy_negative_fraction``, ``epochs``.
    """
    setup = SPECS[names[0]].setup
    if any(SPECS[name].setup != setup for name in names):
        raise ValueError(f"an ablation compares losses at one budget, but {list(names)} have "
                         "different setups; give them the same DetectionSetup")
    val = make_scenes(setup.n_val, setup.data_seed + 1, setup)
    images, targets = val[0][:n_batch], val[1][:n_batch]
    rows = []
    for name in names:
        model = trained_detector(name, cache_dir=cache_dir)
        m = evaluate_detector(model, *val)
        own = model.loss_shares(images, targets)
        rows.append({"model": name, "cls_loss": model.config.cls_loss, **m,
                     "images_per_second": 1 / m["seconds_per_image"],
                     "train_seconds": model.train_seconds, "epochs": setup.epochs,
                     "parameters": sum(p.numel() for p in model.parameters()),
                     "easy_negative_share": own["easy_negative_share"],
                     "easy_negative_share_focal":
                         model.loss_shares(images, targets, "focal")["easy_negative_share"],
                     "easy_negative_share_bce":
                         model.loss_shares(images, targets, "bce")["easy_negative_share"],
                     "hard_negative_share": own["hard_negative_share"],
                     "positive_share": own["positive_share"],
                     "easy_negative_fraction": own["easy_negative_fraction"],
                     "share_scenes": n_batch})
    return rows


def main(argv: list[str] | None = None) -> None:
    """Measure :func:`focal_ablation` on one thread and write its records to ``--json``."""
    parser = argparse.ArgumentParser(description=focal_ablation.__doc__.splitlines()[0])
    parser.add_argument("--json", required=True, help="write the records to this JSON file")
    parser.add_argument("--n-batch", type=int, default=50, help="scenes for the loss shares")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    load = os.getloadavg()[0]
    rows = focal_ablation(n_batch=args.n_batch)
    source = ("cv_course.experiments.retinanet.focal_ablation: trained_detector (one thread) "
              "+ evaluate_detector on the 500 held-out scenes")
    for row in rows:
        row.update(threads=1, load_before=load, load_after=os.getloadavg()[0],
                   torch=torch.__version__, date=time.strftime("%Y-%m-%d"), source=source)
        print(f"{row['model']:18s} mAP {row['map']:.3f}, mAP@0.5 {row['map_50']:.3f}, "
              f"{row['epochs']} epochs in {row['train_seconds']:.0f} s, easy-negative share "
              f"{row['easy_negative_share']:.3f}", flush=True)
    with open(args.json, "w") as f:
        json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()


__all__ = ["SETUP", "ABLATION_SETUP", "SPECS", "ABLATION", "torchvision_retinanet", "focal_ablation"]
