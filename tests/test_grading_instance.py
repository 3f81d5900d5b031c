"""The checks of assignment 05 (instance and panoptic segmentation) are honest: they
pass correct answers written in several styles and fail the slips particular to
mask targets, the class-specific mask loss, pasting masks and panoptic quality,
with a message that says what is wrong. (The generic cheat battery runs on these
exercises from test_grading.py, with the honest answers of ``HONEST``.) The worked
examples' stated numbers are checked against the references, and the references
against torchvision and torchmetrics on the checks' own cases."""

from __future__ import annotations

import itertools
import math
import sys

import pytest
import torch
import torch.nn.functional as F
from test_panoptic_quality import pq_loop
from torchvision.models.detection import roi_heads

from cv_course.grading import CheckFailed
from cv_course.grading import instance as G
from cv_course.grading.instance_hints import pq_variant
from cv_course.metrics.panoptic import panoptic_quality
from cv_course.models.detection.mask_head import mask_loss, project_masks_on_boxes
from cv_course.ops import roi_align
from cv_course.ops.masks import paste_masks_in_image


# ------------------------------------------------------------- honest answers
def honest_targets(gt_masks, boxes, matched_idxs, M, aligned=False, *, flip_aligned=False, threshold=False,
                   first_mask=False, ratio=-1):
    idx = torch.zeros_like(matched_idxs) if first_mask else matched_idxs
    rois = torch.cat([idx[:, None].to(boxes.dtype), boxes], dim=1)
    out = roi_align(gt_masks[:, None].to(boxes.dtype), rois, (M, M), 1.0, ratio, aligned != flip_aligned)[:, 0]
    return (out >= 0.5).to(out.dtype) if threshold else out


def targets_by_loop(gt_masks, boxes, matched_idxs, M, aligned=False):
    """Another style: one proposal at a time, boxes given as a list."""
    out = boxes.new_zeros(len(boxes), M, M)
    for p in range(len(boxes)):
        image = gt_masks[matched_idxs[p]][None, None].to(boxes.dtype)
        out[p] = roi_align(image, [boxes[p:p + 1]], M, aligned=aligned)[0, 0]
    return out


def honest_loss(mask_logits, proposals, gt_masks, gt_labels, matched_idxs, aligned=False, *, all_channels=False,
                label_by_position=False, summed=False, per_image=False, flip_aligned=False, nan_empty=False):
    P, C, M, _ = mask_logits.shape
    if P == 0 and not nan_empty:
        return {"loss_mask": mask_logits.sum() * 0}
    a = aligned != flip_aligned
    targets = [honest_targets(m, b, i, M, a).to(mask_logits.dtype) for m, b, i in zip(gt_masks, proposals,
                                                                                        matched_idxs)]
    labels = [lab[torch.arange(len(i), device=i.device) % max(len(lab), 1)] if label_by_position else lab[i]
              for lab, i in zip(gt_labels, matched_idxs)]
    t, lab = torch.cat(targets), torch.cat(labels)
    if all_channels:
        return {"loss_mask": F.binary_cross_entropy_with_logits(mask_logits, t[:, None].expand_as(mask_logits))}
    x = mask_logits[torch.arange(P, device=lab.device), lab]
    if per_image:
        parts = [F.binary_cross_entropy_with_logits(xi, ti) for xi, ti in
                 zip(x.split([len(i) for i in matched_idxs]), targets) if len(ti)]
        return {"loss_mask": torch.stack(parts).mean()}
    return {"loss_mask": F.binary_cross_entropy_with_logits(x, t, reduction="sum" if summed else "mean")}


def loss_by_hand(mask_logits, proposals, gt_masks, gt_labels, matched_idxs, aligned=False):
    """Another style: the cross-entropy written out with log-sigmoids, the class picked by gather."""
    M = mask_logits.shape[-1]
    t = torch.cat([targets_by_loop(m, b, i, M, aligned) for m, b, i in zip(gt_masks, proposals, matched_idxs)])
    lab = torch.cat([lab[i] for lab, i in zip(gt_labels, matched_idxs)])
    x = mask_logits.gather(1, lab[:, None, None, None].expand(-1, 1, M, M))[:, 0]
    ce = -(t.to(x.dtype) * F.logsigmoid(x) + (1 - t.to(x.dtype)) * F.logsigmoid(-x))
    return {"loss_mask": ce.sum() / max(ce.numel(), 1)}


def honest_paste(masks, boxes, img_shape, padding=1, *, no_padding=False, no_grow=False, trunc="long",
                 plus_one=True, align_corners=False):
    H, W = img_shape
    N, _, M, _ = masks.shape
    padded = F.pad(masks[:, 0], (0 if no_padding else padding,) * 4)
    scale = 1.0 if no_grow else (M + 2 * padding) / M
    half = (boxes[:, 2:] - boxes[:, :2]) * 0.5 * scale
    centre = (boxes[:, 2:] + boxes[:, :2]) * 0.5
    grown = torch.cat([centre - half, centre + half], 1)
    corners = {"long": grown, "floor": grown.floor(), "round": grown.round()}[trunc].long()
    out = masks.new_zeros(N, 1, H, W)
    for i, (x1, y1, x2, y2) in enumerate(corners.tolist()):
        h, w = max(y2 - y1 + plus_one, 1), max(x2 - x1 + plus_one, 1)
        r = F.interpolate(padded[i][None, None], size=(h, w), mode="bilinear", align_corners=align_corners)[0, 0]
        top, bottom, left, right = max(y1, 0), min(y1 + h, H), max(x1, 0), min(x1 + w, W)
        if top < bottom and left < right:
            out[i, 0, top:bottom, left:right] = r[top - y1:bottom - y1, left - x1:right - x1]
    return out


def paste_by_matrices(masks, boxes, img_shape, padding=1):
    """Another style: each mask resized by two matrices (F.interpolate of an identity), placed by slicing
    a zero-padded canvas."""
    H, W = img_shape
    N, _, M, _ = masks.shape
    Mp = M + 2 * padding
    padded = F.pad(masks[:, 0], [padding] * 4)
    grown = torch.cat([(boxes[:, 2:] + boxes[:, :2]) * 0.5 - (boxes[:, 2:] - boxes[:, :2]) * 0.5 * (Mp / M),
                       (boxes[:, 2:] + boxes[:, :2]) * 0.5 + (boxes[:, 2:] - boxes[:, :2]) * 0.5 * (Mp / M)], 1)
    eye = torch.eye(Mp, dtype=masks.dtype, device=masks.device)[None]  # [1, Mp, Mp]
    out = masks.new_zeros(N, 1, H, W)
    for i, (x1, y1, x2, y2) in enumerate(grown.long().tolist()):
        Ry = F.interpolate(eye, size=y2 - y1 + 1, mode="linear", align_corners=False)[0].T  # [h, Mp]
        Rx = F.interpolate(eye, size=x2 - x1 + 1, mode="linear", align_corners=False)[0].T  # [w, Mp]
        canvas = masks.new_zeros(H + 2 * (y2 - y1 + 1) + abs(y1), W + 2 * (x2 - x1 + 1) + abs(x1))
        oy, ox = abs(y1) + (y2 - y1 + 1), abs(x1) + (x2 - x1 + 1)  # room for boxes outside the image
        canvas[oy + y1:oy + y2 + 1, ox + x1:ox + x2 + 1] = Ry @ padded[i] @ Rx.T
        out[i, 0] = canvas[oy:oy + H, ox:ox + W]
    return out


def honest_pq(preds, target, things, stuffs, *, ge=False, keep_void=False, stuff_ids=False, zero_average=False):
    dev = preds.device
    cats = torch.tensor(list(things) + list(stuffs), device=dev)
    stuff = torch.tensor(list(stuffs), dtype=cats.dtype, device=dev)
    C = len(cats)
    tp, fp, fn, iou_sum = (torch.zeros(C, dtype=torch.float64, device=dev) for _ in range(4))

    def segments(m):
        cat, inst = m[..., 0].flatten(), m[..., 1].flatten()
        if not stuff_ids:
            inst = torch.where(torch.isin(cat, stuff), torch.zeros_like(inst), inst)
        keys, seg = torch.unique(torch.stack([cat, inst], 1), dim=0, return_inverse=True)
        onehot = seg[None, :] == torch.arange(len(keys), device=dev)[:, None]
        known = torch.isin(keys[:, 0], cats)
        return onehot[known], keys[known, 0]

    for b in range(preds.shape[0]):
        P, p_cat = segments(preds[b])
        Gm, g_cat = segments(target[b])
        void = ~torch.isin(target[b, ..., 0].flatten(), cats)
        inter = P.double() @ Gm.double().T
        p_area = P.sum(1).double()
        p_void = torch.zeros_like(p_area) if keep_void else (P & void).sum(1).double()
        iou = inter / ((p_area - p_void)[:, None] + Gm.sum(1).double()[None] - inter).clamp(min=1)
        match = ((iou >= 0.5) if ge else (iou > 0.5)) & (p_cat[:, None] == g_cat[None])
        g_of, p_of = (g_cat[:, None] == cats).double(), (p_cat[:, None] == cats).double()
        tp += match.any(0).double() @ g_of
        iou_sum += (iou * match).sum(0) @ g_of
        fn += (~match.any(0)).double() @ g_of
        fp += (~match.any(1) & (2 * p_void <= p_area)).double() @ p_of
    sq = torch.where(tp > 0, iou_sum / tp.clamp(min=1), 0.0)
    d = tp + fp / 2 + fn / 2
    rq = torch.where(d > 0, tp / d.clamp(min=0.5), 0.0)
    pq, valid = sq * rq, (d > 0) | zero_average
    thing = torch.arange(C, device=dev) < len(things)
    return {n + s: v[g].mean() for s, g in (("", valid), ("_things", valid & thing), ("_stuff", valid & ~thing))
            for n, v in (("pq", pq), ("sq", sq), ("rq", rq))}


def pq_by_loop(preds, target, things, stuffs):
    """Another style: pixel and segment-pair loops (panopticapi's, from test_panoptic_quality), as tensors."""
    return {k: torch.tensor(v, dtype=torch.float64, device=preds.device)
            for k, v in pq_loop(preds.cpu(), target.cpu(), set(things), set(stuffs))[0].items()}


HONEST = {"project_masks_on_boxes": honest_targets, "mask_loss": honest_loss,
          "paste_masks_in_image": honest_paste, "panoptic_quality": honest_pq}  # for the generic cheat battery
OTHER_STYLES = {"project_masks_on_boxes": targets_by_loop, "mask_loss": loss_by_hand,
                "paste_masks_in_image": paste_by_matrices, "panoptic_quality": pq_by_loop}


def _checks(name):
    return getattr(G, f"check_{name}_visible"), getattr(G, f"check_{name}_hidden")


@pytest.mark.parametrize("name", sorted(HONEST))
def test_honest_answers_pass(name, device):
    for check in _checks(name):
        check(HONEST[name], device)


@pytest.mark.parametrize("name", sorted(OTHER_STYLES))
def test_honest_answers_in_other_styles_pass(name):
    for check in _checks(name):
        check(OTHER_STYLES[name], "cpu")


def _expect(message, name, fn, hidden_only=False):
    """Both checks fail (the visible one with ``message``; hidden_only: the hidden one)."""
    visible, hidden = _checks(name)
    if not hidden_only:
        with pytest.raises(CheckFailed, match=message):
            visible(fn, "cpu")
    with pytest.raises(CheckFailed, match=None if not hidden_only else message):
        hidden(fn, "cpu")
    assert sys.getprofile() is None  # the guard never outlives a check


# ------------------------------------------------------------ the stated numbers
def test_the_worked_examples_state_the_references_numbers():
    assert project_masks_on_boxes(*G.square_example(False)).tolist() == [[[1.0, 0.75], [0.75, 0.5625]]]
    assert project_masks_on_boxes(*G.square_example(True)).tolist() == [[[1.0, 1.0], [1.0, 1.0]]]
    assert float(mask_loss(*G.loss_example())["loss_mask"]) == pytest.approx(math.log(2))
    assert float(mask_loss(*G.loss_example(aligned=True))["loss_mask"]) == pytest.approx(math.log(2))
    cases = list(G._paste_visible(torch.Generator().manual_seed(0), "cpu"))
    copied = paste_masks_in_image(*cases[0].args)[0, 0]
    assert copied[2:4, 2:4].tolist() == [[1, 2], [3, 4]] and copied.sum() == 10
    one = paste_masks_in_image(*cases[1].args)[0, 0]
    assert one[4:6, 4:6].flatten().tolist() == [0.390625] * 4 and float(one.sum()) == pytest.approx(4 * 0.390625)
    r = panoptic_quality(*G.worked_scene(), (1,), (5,))
    assert [round(float(r[k]), 3) for k in ("sq_things", "rq_things", "pq_things", "pq_stuff", "pq")] == \
        [0.817, 0.667, 0.544, 0.75, 0.647]
    named = {c.tags: c for c in G._pq_visible(torch.Generator().manual_seed(0), "cpu")}
    assert float(panoptic_quality(*named[("tie",)].args)["pq_things"]) == 0.0
    void = panoptic_quality(*named[("void", "nan")].args)
    assert float(void["pq_things"]) == 1.0 and math.isnan(float(void["pq_stuff"]))
    assert all(math.isnan(float(v)) for v in panoptic_quality(*named[("all-void", "nan")].args).values())


# ------------------------------------------------- the references against oracles
def _all_cases(ex, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return itertools.chain(ex.visible(gen, torch.device("cpu")), ex.hidden(gen, torch.device("cpu")))


def test_the_mask_references_are_torchvisions_on_every_case():
    for case in _all_cases(G.TARGETS):
        masks, boxes, idx, M, aligned = case.args
        if not aligned and len(boxes):
            theirs = roi_heads.project_masks_on_boxes(masks, boxes, idx, M)
            assert torch.allclose(project_masks_on_boxes(*case.args), theirs, atol=1e-6), case.name
    for case in _all_cases(G.LOSS):
        logits, props, masks, labels, idxs, aligned = case.args
        if not aligned and len(logits):
            theirs = roi_heads.maskrcnn_loss(logits, props, masks, labels, idxs)
            assert torch.allclose(mask_loss(*case.args)["loss_mask"], theirs, atol=1e-6), case.name
    for case in _all_cases(G.PASTE):
        if len(case.args[0]):
            theirs = roi_heads.paste_masks_in_image(*case.args)
            assert torch.allclose(paste_masks_in_image(*case.args), theirs.to(case.args[0].dtype), atol=1e-5), \
                case.name


def test_the_pq_reference_is_torchmetrics_and_a_loop_on_every_case():
    from torchmetrics.detection import PanopticQuality

    for case in _all_cases(G.PQ):
        preds, target, things, stuffs = case.args
        ours = panoptic_quality(*case.args)
        loop = pq_variant(*case.args)
        assert all(math.isnan(loop[k]) and math.isnan(float(v)) or float(v) == pytest.approx(loop[k], abs=1e-12)
                   for k, v in ours.items()), case.name
        if not all(math.isnan(float(v)) for v in ours.values()):  # torchmetrics: predictions never void here
            theirs = PanopticQuality(things=set(things), stuffs=set(stuffs), return_sq_and_rq=True)(preds, target)
            assert torch.allclose(torch.stack([ours["pq"], ours["sq"], ours["rq"]]), theirs.double()), case.name


def test_the_hidden_cases_hold_the_edge_cases_they_promise():
    for case in G.TARGETS.hidden(torch.Generator().manual_seed(1), torch.device("cpu")):
        masks, boxes, idx, M, aligned = case.args
        if "outside" in case.tags:
            assert ((boxes[:, :2] < 0).any(1) | (boxes[:, 2] > masks.shape[2]) | (boxes[:, 3] > masks.shape[1])).any()
        if "degenerate" in case.tags:
            assert ((boxes[:, 2] == boxes[:, 0]) | (boxes[:, 3] == boxes[:, 1])).any()
        if "matched" in case.tags:
            assert len(idx.unique()) > 1
    for case in G.PASTE.hidden(torch.Generator().manual_seed(1), torch.device("cpu")):
        masks, boxes, (H, W), padding = case.args
        if "outside" in case.tags:
            assert ((boxes[:, :2] < 0).any(1) | (boxes[:, 2] > W) | (boxes[:, 3] > H)).any()
    for case in G.PQ.hidden(torch.Generator().manual_seed(1), torch.device("cpu")):
        preds, target, things, stuffs = case.args
        if "tie" in case.tags:
            assert pq_variant(*case.args, ge=True) != pq_variant(*case.args)
        if "void" in case.tags:
            assert (target[..., 0] == 0).any()
        if "all-void" in case.tags:
            assert (target[..., 0] == 0).flatten(1).all(1).any()


# ---------------------------------------------------------------- mask targets
def _targets(**bug):
    return lambda *a: honest_targets(*a, **bug)


CHEATS_TARGETS = {
    "the other aligned": (_targets(flip_aligned=True), r"(?s)0.5625.*Likely cause: these are the targets of "
                                                       r"aligned=True: pass `aligned` on to roi_align"),
    "thresholded targets": (_targets(threshold=True), r"(?s)Likely cause: .*the targets are thresholded"),
    "every proposal reads the first mask": (_targets(first_mask=True), r"(?s)matched to \[1, 0, 1\].*Likely cause: "
                                                                       r"proposal p must read its own ground truth"),
    "a fixed sampling ratio": (_targets(ratio=1), r"(?s)Likely cause: .*sampling_ratio=1: use roi_align's adaptive"),
    "float32 always": (lambda m, b, *a: honest_targets(m, b.float(), *a), "dtype"),
    "the course's targets": (lambda *a: project_masks_on_boxes(*a), "cv_course.models"),
    "torchvision's targets": (lambda m, b, i, M, al=False: roi_heads.project_masks_on_boxes(m, b, i, M),
                              "torchvision"),
}


@pytest.mark.parametrize("cheat", list(CHEATS_TARGETS))
def test_mask_target_slips_and_shortcuts_fail(cheat):
    fn, message = CHEATS_TARGETS[cheat]
    _expect(message, "project_masks_on_boxes", fn)


# ------------------------------------------------------------------- mask loss
def _loss(**bug):
    return lambda *a: honest_loss(*a, **bug)


CHEATS_LOSS = {
    "every class's mask": (_loss(all_channels=True), r"(?s)ln 2.*Likely cause: the loss covers every class's mask"),
    "the label of the p-th object": (_loss(label_by_position=True), r"Likely cause: the class of proposal p is "
                                                                    r"gt_labels\[matched_idxs\[p\]\]"),
    "a sum": (_loss(summed=True), "Likely cause: the loss is a sum"),
    "a mean of per-image means": (_loss(per_image=True), "Likely cause: a mean of per-image means"),
    "the other aligned": (_loss(flip_aligned=True), r"(?s)ln 2.*aligned=True.*gradient.*aligned=False: pass `aligned` on to your "
                                                        r"project_masks_on_boxes"),
    "NaN without positives": (_loss(nan_empty=True), r"(?s)NaN.*Likely cause: with no positive proposals"),
    "detached": (lambda *a: {"loss_mask": honest_loss(*a)["loss_mask"].detach()}, "does not depend on"),
    "the course's loss": (lambda *a: mask_loss(*a), "cv_course.models"),
    "torchvision's loss": (lambda lg, p, m, lab, i, al=False: {"loss_mask": roi_heads.maskrcnn_loss(lg, p, m, lab, i)},
                           "torchvision"),
}


@pytest.mark.parametrize("cheat", list(CHEATS_LOSS))
def test_mask_loss_slips_and_shortcuts_fail(cheat):
    fn, message = CHEATS_LOSS[cheat]
    _expect(message, "mask_loss", fn)


def test_a_loss_whose_gradient_reaches_other_classes_fails_with_the_right_values():
    def leaky(logits, *a):
        out = honest_loss(logits, *a)
        return {"loss_mask": out["loss_mask"] + 0.1 * (logits.sum() - logits.sum().detach())}

    _expect(r"(?s)the gradient of mask_loss\['loss_mask'\].*sends gradient to the masks of other classes",
            "mask_loss", leaky)


def test_a_loss_that_calls_broken_targets_is_told_to_fix_them_first():
    namespace = {"F": F, "torch": torch, "project_masks_on_boxes": _targets(flip_aligned=True)}
    exec("def mask_loss(mask_logits, proposals, gt_masks, gt_labels, matched_idxs, aligned=False):\n"
         "    M = mask_logits.shape[-1]\n"
         "    if not len(mask_logits):\n        return {'loss_mask': mask_logits.sum() * 0}\n"
         "    t = torch.cat([project_masks_on_boxes(m, b, i, M, aligned) for m, b, i in "
         "zip(gt_masks, proposals, matched_idxs)])\n"
         "    lab = torch.cat([l[i] for l, i in zip(gt_labels, matched_idxs)])\n"
         "    x = mask_logits[torch.arange(len(lab)), lab]\n"
         "    return {'loss_mask': F.binary_cross_entropy_with_logits(x, t.to(x.dtype))}\n", namespace)
    with pytest.raises(CheckFailed, match="calls your project_masks_on_boxes, which fails its own checks"):
        G.check_mask_loss_visible(namespace["mask_loss"], "cpu")


# ---------------------------------------------------------------- paste masks
def _paste(**bug):
    return lambda *a: honest_paste(*a, **bug)


CHEATS_PASTE = {
    "no padding": (_paste(no_padding=True, no_grow=True), r"(?s)0.390625.*Likely cause: the mask is not padded"),
    "padded, box not grown": (_paste(no_grow=True), "Likely cause: the mask is padded but its box is not grown"),
    "floor": (_paste(trunc="floor"), r"(?s)toward zero.*Likely cause: the grown box's corners are rounded down"),
    "round": (_paste(trunc="round"), "Likely cause: the grown box's corners are rounded to the nearest integer"),
    "x2 - x1 pixels": (_paste(plus_one=False), r"(?s)\[\[1, 2\], \[3, 4\]\].*Likely cause: the box from pixel x1 to "
                                               r"pixel x2 covers x2 - x1 \+ 1 pixels"),
    "align_corners=True": (_paste(align_corners=True), "Likely cause: resize with F.interpolate"),
    "the course's paste": (lambda *a: paste_masks_in_image(*a), "cv_course.ops"),
    "torchvision's paste": (lambda *a: roi_heads.paste_masks_in_image(*a), "torchvision.models"),
}


@pytest.mark.parametrize("cheat", list(CHEATS_PASTE))
def test_paste_slips_and_shortcuts_fail(cheat):
    fn, message = CHEATS_PASTE[cheat]
    _expect(message, "paste_masks_in_image", fn)


# ------------------------------------------------------------ panoptic quality
def _pq(**bug):
    return lambda *a: honest_pq(*a, **bug)


def _torchmetrics_pq(preds, target, things, stuffs):
    from torchmetrics.detection import PanopticQuality

    v = PanopticQuality(things=set(things), stuffs=set(stuffs), return_sq_and_rq=True)(preds, target).double()
    return {n + s: v[k] for s in ("", "_things", "_stuff") for k, n in enumerate(("pq", "sq", "rq"))}


CHEATS_PQ = {
    "IoU >= 0.5": (_pq(ge=True), r"(?s)exactly 0.5.*pq_things +expected 0.0000 +got 0.5000.*Likely cause: a match "
                                 r"needs IoU > 0.5, strictly"),
    "void not ignored": (_pq(keep_void=True), r"(?s)void.*Likely cause: void pixels are not ignored"),
    "stuff instance ids": (_pq(stuff_ids=True), r"Likely cause: stuff has one segment per category and image"),
    "absent categories averaged as 0": (_pq(zero_average=True), r"Likely cause: a category with TP \+ FP \+ FN = 0"),
    "the course's PQ": (lambda *a: panoptic_quality(*a), "cv_course.metrics"),
    "torchmetrics": (_torchmetrics_pq, "torchmetrics"),
}


@pytest.mark.parametrize("cheat", list(CHEATS_PQ))
def test_pq_slips_and_shortcuts_fail(cheat):
    fn, message = CHEATS_PQ[cheat]
    _expect(message, "panoptic_quality", fn)


def test_pq_matched_across_the_batch_is_told_why():
    def one_image(preds, target, things, stuffs):  # the batch stacked into one tall image
        return honest_pq(preds.reshape(1, -1, *preds.shape[2:]), target.reshape(1, -1, *target.shape[2:]),
                         things, stuffs)

    _expect("Likely cause: segments are matched within their own image", "panoptic_quality", one_image,
            hidden_only=True)


def test_hidden_failures_name_the_slip_without_the_data():
    for name, fn, message in [("project_masks_on_boxes", _targets(flip_aligned=True), "pass `aligned` on"),
                              ("mask_loss", _loss(all_channels=True), "every class's mask"),
                              ("paste_masks_in_image", _paste(trunc="floor"), "rounded down"),
                              ("panoptic_quality", _pq(ge=True), "IoU > 0.5, strictly"),
                              ("panoptic_quality", _pq(keep_void=True), "void pixels are not ignored")]:
        with pytest.raises(CheckFailed, match=message) as info:
            _checks(name)[1](fn, "cpu")
        assert "tensor(" not in str(info.value) and "expected:" not in str(info.value)


def test_the_reference_is_computed_after_the_students_function_returns():
    def peek(*args):
        frame = sys._getframe(1)
        while frame is not None:
            assert "expected" not in frame.f_locals
            frame = frame.f_back
        return honest_paste(*args)

    G.check_paste_masks_in_image_visible(peek, "cpu")
