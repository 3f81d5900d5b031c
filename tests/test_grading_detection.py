"""The checks of assignment 03 (detection) are honest: they pass correct answers
written in several styles and fail the slips and shortcuts particular to box
coding, RoI Align, anchor labels and AP, with a message that says what to fix.
(The generic cheat battery runs on these exercises from test_grading.py, with
the honest answers of ``HONEST``.) The worked examples' stated numbers are
checked against the references too."""

from __future__ import annotations

import math
import sys

import pytest
import torch
import torch.nn.functional as F
import torchvision

import cv_course.metrics
import cv_course.ops
from cv_course.grading import CheckFailed
from cv_course.grading import detection as G

CLIP = math.log(1000 / 16)


# ------------------------------------------------------------- honest answers
def box_iou(a, b):
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    wh = (torch.min(a[:, None, 2:], b[None, :, 2:]) - torch.max(a[:, None, :2], b[None, :, :2])).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = area(a)[:, None] + area(b)[None] - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-30), torch.zeros_like(inter))


def _centre_size(b):
    w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    return b[:, 0] + 0.5 * w, b[:, 1] + 0.5 * h, w, h


def honest_encode(boxes, anchors, *, swap_wh=False, corner=False):
    ax, ay, aw, ah = _centre_size(anchors)
    bx, by, bw, bh = _centre_size(boxes)
    if corner:  # measures the shift between top-left corners instead of centres
        ax, ay, bx, by = anchors[:, 0], anchors[:, 1], boxes[:, 0], boxes[:, 1]
    if swap_wh:
        aw, ah = ah, aw
    return torch.stack([(bx - ax) / aw, (by - ay) / ah, torch.log(bw / aw), torch.log(bh / ah)], dim=1)


def encode_by_corners(boxes, anchors):
    """Another style: centres as (x1 + x2) / 2, log-ratios as differences of logs."""
    ctr = lambda b: (b[:, :2] + b[:, 2:]) / 2  # noqa: E731
    size = lambda b: b[:, 2:] - b[:, :2]  # noqa: E731
    return torch.cat([(ctr(boxes) - ctr(anchors)) / size(anchors), size(boxes).log() - size(anchors).log()], dim=1)


def honest_decode(deltas, anchors, *, clamp=lambda t: t.clamp(max=CLIP)):
    ax, ay, aw, ah = _centre_size(anchors)
    tx, ty, tw, th = deltas.unbind(dim=1)
    cx, cy, w, h = ax + tx * aw, ay + ty * ah, aw * torch.exp(clamp(tw)), ah * torch.exp(clamp(th))
    return torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=1)


def _bilinear_matrix(coord, size):
    """Tensor[S, size]: the weights with which each sample reads the pixels along one axis."""
    inside = ((coord >= -1) & (coord <= size)).to(coord.dtype)
    coord = coord.clamp(min=0)
    lo = coord.floor().long().clamp(max=size - 1)
    hi = (lo + 1).clamp(max=size - 1)
    frac = torch.where(coord >= size - 1, torch.zeros_like(coord), coord - lo.to(coord.dtype))
    one_hot = lambda i: F.one_hot(i, size).to(coord.dtype)  # noqa: E731
    return ((1 - frac) * inside)[:, None] * one_hot(lo) + (frac * inside)[:, None] * one_hot(hi)


def _grid(sampling_ratio, bin_size, adaptive=True):
    if sampling_ratio > 0:
        return sampling_ratio
    return int(torch.ceil(bin_size)) if adaptive else 1


def honest_roi_align(input, boxes, output_size, spatial_scale=1.0, sampling_ratio=-1, aligned=False, *,
                     adaptive=True, min_size=True, weights=_bilinear_matrix, detach=False):
    """Bilinear interpolation as two matrices: samples = Wy @ f @ Wx^T, one RoI at a time."""
    N, C, H, W = input.shape
    PH, PW = output_size
    pooled = []
    for roi in boxes:  # each RoI has its own sampling grid
        x1, y1, x2, y2 = roi[1:] * spatial_scale - (0.5 if aligned else 0.0)
        roi_w, roi_h = x2 - x1, y2 - y1
        if not aligned and min_size:
            roi_w, roi_h = roi_w.clamp(min=1), roi_h.clamp(min=1)
        bin_h, bin_w = roi_h / PH, roi_w / PW
        gh, gw = _grid(sampling_ratio, bin_h, adaptive), _grid(sampling_ratio, bin_w, adaptive)
        iy = torch.arange(PH * gh, device=input.device)
        ix = torch.arange(PW * gw, device=input.device)
        dt = input.dtype
        y = y1 + (iy // gh).to(dt) * bin_h + ((iy % gh).to(dt) + 0.5) * bin_h / gh  # [PH * gh]
        x = x1 + (ix // gw).to(dt) * bin_w + ((ix % gw).to(dt) + 0.5) * bin_w / gw  # [PW * gw]
        samples = weights(y, H) @ input[int(roi[0])] @ weights(x, W).T  # [C, PH * gh, PW * gw]
        pooled.append(samples.reshape(C, PH, gh, PW, gw).mean(dim=(2, 4)))
    out = torch.stack(pooled) if pooled else input.new_zeros(0, C, PH, PW)
    return out.detach() if detach else out


def roi_align_by_gathering(input, boxes, output_size, spatial_scale=1.0, sampling_ratio=-1, aligned=False):
    """Another style: the four neighbours of every sample gathered by indexing."""
    N, C, H, W = input.shape
    PH, PW = output_size
    out = input.new_zeros(len(boxes), C, PH, PW)
    for k, roi in enumerate(boxes):
        x1, y1, x2, y2 = roi[1:] * spatial_scale - (0.5 if aligned else 0.0)
        roi_w, roi_h = (x2 - x1, y2 - y1) if aligned else ((x2 - x1).clamp(min=1), (y2 - y1).clamp(min=1))
        bin_h, bin_w = roi_h / PH, roi_w / PW
        gh, gw = _grid(sampling_ratio, bin_h), _grid(sampling_ratio, bin_w)
        ph, pw, sy, sx = torch.meshgrid(*(torch.arange(n, device=input.device) for n in (PH, PW, gh, gw)),
                                        indexing="ij")  # [PH, PW, gh, gw] each
        dt = input.dtype
        y = y1 + ph.to(dt) * bin_h + (sy.to(dt) + 0.5) * bin_h / gh
        x = x1 + pw.to(dt) * bin_w + (sx.to(dt) + 0.5) * bin_w / gw
        valid = (y >= -1) & (y <= H) & (x >= -1) & (x <= W)
        y, x = y.clamp(min=0), x.clamp(min=0)
        y0, x0 = y.floor().long().clamp(max=H - 1), x.floor().long().clamp(max=W - 1)
        y1_, x1_ = (y0 + 1).clamp(max=H - 1), (x0 + 1).clamp(max=W - 1)
        ly = torch.where(y >= H - 1, 0.0, y - y0).to(input.dtype)
        lx = torch.where(x >= W - 1, 0.0, x - x0).to(input.dtype)
        f = input[int(roi[0])]  # [C, H, W]
        value = ((1 - ly) * (1 - lx) * f[:, y0, x0] + (1 - ly) * lx * f[:, y0, x1_]
                 + ly * (1 - lx) * f[:, y1_, x0] + ly * lx * f[:, y1_, x1_])  # [C, PH, PW, gh, gw]
        out[k] = (value * valid).mean(dim=(-2, -1))
    return out


def honest_labels(iou, high_threshold=0.7, low_threshold=0.3, *, low_quality="all", high=torch.ge,
                  low=torch.lt):
    G_, N = iou.shape
    if G_ == 0 or N == 0:
        return torch.zeros(N, dtype=torch.int64, device=iou.device)
    best = iou.max(dim=0).values  # [N]
    labels = torch.full((N,), -1, dtype=torch.int64, device=iou.device)
    labels[low(best, low_threshold)] = 0
    labels[high(best, high_threshold)] = 1
    if low_quality == "all":  # every anchor tied for an object's best IoU
        labels[(iou == iou.max(dim=1, keepdim=True).values).any(dim=0)] = 1
    elif low_quality == "argmax":  # one anchor per object only
        labels[iou.argmax(dim=1)] = 1
    return labels


def labels_by_loop(iou, high_threshold=0.7, low_threshold=0.3):
    """Another style: a loop over objects for the low-quality matches."""
    labels = torch.zeros(iou.shape[1], dtype=torch.int64, device=iou.device)
    if iou.numel() == 0:
        return labels
    best = iou.amax(dim=0)
    labels = torch.where(best >= high_threshold, 1, torch.where(best < low_threshold, 0, -1))
    for row in iou:
        labels[row == row.max()] = 1
    return labels


def honest_ap(boxes, scores, gt_boxes, iou_threshold=0.5, *, interpolate=True, voc_rule=False, at=torch.ge,
              duplicates_fp=True, stable=True, eleven=False, dtype=torch.float64):
    order = torch.argsort(scores, descending=True, stable=stable)
    if not stable:  # equal scores in decreasing index order
        order = len(scores) - 1 - torch.argsort(scores.flip(0), descending=True, stable=True)
    iou = box_iou(boxes[order], gt_boxes)  # [D, G]
    D, G_ = iou.shape
    taken = torch.zeros(G_, dtype=torch.bool, device=boxes.device)
    tp = torch.zeros(D, dtype=dtype, device=boxes.device)
    for d in range(D if G_ else 0):  # sequential: each detection sees what is taken
        row = iou[d] if voc_rule or not duplicates_fp else torch.where(taken, -1.0, iou[d])
        g = row.argmax()
        if at(row[g], iou_threshold) and not (voc_rule and taken[g]):
            taken[g], tp[d] = duplicates_fp, 1
    tp = tp.cumsum(0)
    precision = tp / torch.arange(1, D + 1, dtype=dtype, device=boxes.device)
    recall = tp / max(G_, 1)
    if eleven:
        points = torch.arange(11, dtype=dtype, device=boxes.device) / 10
        return torch.stack([precision[recall >= r].max() if (recall >= r).any() else precision.new_zeros(())
                            for r in points]).mean().to(torch.float64)
    envelope = precision.flip(0).cummax(0).values.flip(0) if interpolate else precision
    return (torch.diff(recall, prepend=recall.new_zeros(1)) * envelope).sum().to(torch.float64)


def ap_by_python_loop(boxes, scores, gt_boxes, iou_threshold=0.5):
    """Another style: the VOC devkit's loop in Python floats, wrapped in a tensor at the end."""
    order = torch.argsort(scores, descending=True, stable=True).tolist()
    iou = box_iou(boxes, gt_boxes).tolist()
    taken, hits, rec, prec = set(), 0, [], []
    for k, d in enumerate(order):
        free = [(v, g) for g, v in enumerate(iou[d]) if g not in taken and v >= iou_threshold]
        if free:
            taken.add(max(free, key=lambda pair: pair[0])[1])  # the best free object (first on ties)
            hits += 1
        prec.append(hits / (k + 1))
        rec.append(hits / max(len(gt_boxes), 1))
    ap, previous = 0.0, 0.0
    for k in range(len(rec)):
        ap += (rec[k] - previous) * max(prec[k:])
        previous = rec[k]
    return torch.tensor(ap, dtype=torch.float64, device=boxes.device)


HONEST = {"encode_boxes": honest_encode, "decode_boxes": honest_decode, "roi_align": honest_roi_align,
          "label_anchors": honest_labels, "average_precision": honest_ap}  # for the generic cheat battery
OTHER_STYLES = {"encode_boxes": encode_by_corners, "roi_align": roi_align_by_gathering,
                "label_anchors": labels_by_loop, "average_precision": ap_by_python_loop}


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
    visible, hidden = _checks(name)
    with pytest.raises(CheckFailed, match=message):
        if not hidden_only:
            visible(fn, "cpu")
        hidden(fn, "cpu")
    assert sys.getprofile() is None  # the guard never outlives a check


# ------------------------------------------------------------ the stated numbers
def test_the_worked_examples_state_the_references_numbers():
    t = lambda rows: torch.tensor(rows, dtype=torch.float64)  # noqa: E731
    assert torch.allclose(G._CODER.decode(t(G.DELTAS), t(G.ANCHOR)), t(G.REFINED))
    assert G._CODER.encode(t(G.REFINED), t(G.ANCHOR))[0].tolist() == pytest.approx([-0.12, 0.02, -0.0888, 0.5068],
                                                                                    abs=1e-4)
    assert G._CODER.decode(t([[0, 0, 20, -5]]), t(G.ANCHOR))[0, 2:].sub(G._CODER.decode(
        t([[0, 0, 20, -5]]), t(G.ANCHOR))[0, :2]).tolist() == pytest.approx([2500, 40 * math.exp(-5)])
    f = G.lecture_feature_map(dtype=torch.float64).requires_grad_()
    out = cv_course.ops.roi_align(f, t([[0, 6, 5.3, 7, 6.3]]), (1, 1))
    assert out.item() == pytest.approx(64.5)
    out.sum().backward()
    grad = {tuple(i): round(f.grad[0, 0, i[0], i[1]].item(), 6) for i in f.grad[0, 0].nonzero().tolist()}
    assert grad == {(5, 6): 0.1, (5, 7): 0.1, (6, 6): 0.4, (6, 7): 0.4}  # (y, x)
    assert G._reference_labels(t([[0.85, 0.7, 0.5, 0.3, 0.1]]).float()).tolist() == [1, 1, -1, -1, 0]
    for case in G._ap_visible(torch.Generator().manual_seed(0), torch.device("cpu")):
        stated = [float(s) for s in case.name.replace("=", " ").split() if s.replace(".", "").isdigit()]
        if "AP" in case.name:
            ap = float(G._reference_average_precision(*case.args))
            assert any(math.isclose(ap, s, abs_tol=5e-5) for s in stated), (case.name, ap)
    rising = next(c for c in G._ap_visible(torch.Generator(), torch.device("cpu")) if "interpolation" in c.tags)
    assert float(honest_ap(*rising.args, interpolate=False)) == pytest.approx(0.8042, abs=5e-5)


def test_exact_match_scenes_have_ious_exactly_at_and_below_one_half():
    boxes, _, gt = G.exact_match_scene(torch.Generator().manual_seed(0), 6)
    iou = cv_course.ops.box_iou(boxes, gt)
    assert (iou[:6].diagonal() == 0.5).all() and (iou[6:].diagonal() < 0.5).all()
    assert (iou.max(dim=1).values == iou[torch.arange(12), torch.arange(12) % 6]).all()  # no other overlaps


def test_every_object_of_a_scene_overlaps_some_anchor():
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        assert (G.scene_ious(gen, 8).max(dim=1).values > 0).all()


# ----------------------------------------------------------------- box coding
CHEATS_CODING = {
    "encode swaps w and h": ("encode_boxes", lambda b, a: honest_encode(b, a, swap_wh=True), "wrong values"),
    "encode from the corners, not the centres": ("encode_boxes", lambda b, a: honest_encode(b, a, corner=True),
                                                 "wrong values"),
    "encode with torchvision's BoxCoder": ("encode_boxes", lambda b, a: torchvision.models.detection._utils.BoxCoder(
        (1.0, 1.0, 1.0, 1.0)).encode_single(b, a), "torchvision.models"),
    "encode with cv_course's BoxCoder": ("encode_boxes", lambda b, a: cv_course.ops.BoxCoder().encode(b, a),
                                         "cv_course.ops"),
    "decode without the clamp": ("decode_boxes", lambda d, a: honest_decode(d, a, clamp=lambda t: t),
                                 r"(?s)tw = 20 is clamped.*expected"),
    "decode clamps both ways": ("decode_boxes", lambda d, a: honest_decode(d, a, clamp=lambda t: t.clamp(-CLIP, CLIP)),
                                "th = -5 is not"),
    "decode in float32 always": ("decode_boxes", lambda d, a: honest_decode(d.float(), a.float()), "dtype"),
    "decode returns (cx, cy, w, h)": ("decode_boxes", lambda d, a: cv_course.ops.box_convert(
        honest_decode(d, a), "xyxy", "cxcywh"), "cv_course.ops"),
}


@pytest.mark.parametrize("cheat", list(CHEATS_CODING))
def test_box_coding_slips_and_shortcuts_fail(cheat):
    name, fn, message = CHEATS_CODING[cheat]
    _expect(message, name, fn)


def test_a_decode_that_only_inverts_the_worked_example_fails_the_round_trip():
    def decode_worked_example_only(deltas, anchors):
        return torch.tensor(G.REFINED * len(deltas), dtype=deltas.dtype, device=deltas.device)[:len(deltas)]

    _expect("zero deltas", "decode_boxes", decode_worked_example_only)


# ------------------------------------------------------------------ roi_align
def _nearest(coord, size):
    idx = coord.round().long().clamp(0, size - 1)
    return F.one_hot(idx, size).to(coord.dtype) * ((coord >= -1) & (coord <= size)).to(coord.dtype)[:, None]


def _zero_beyond_last_centre(coord, size):
    w = _bilinear_matrix(coord, size)
    return w * ((coord >= 0) & (coord <= size - 1)).to(coord.dtype)[:, None]  # zero in [-1, 0) and (size-1, size]


def _with_grid_sample(input, boxes, output_size, spatial_scale=1.0, sampling_ratio=-1, aligned=False):
    grid = torch.zeros(len(boxes), *output_size, 2, dtype=input.dtype, device=input.device)
    return F.grid_sample(input[boxes[:, 0].long()], grid, align_corners=True)


CHEATS_ROI = {
    "no adaptive grid (one sample per bin)": (lambda *a: honest_roi_align(*a, adaptive=False), "adaptive grid"),
    "nearest pixel instead of bilinear": (lambda *a: honest_roi_align(*a, weights=_nearest), "64.5"),
    "ignores spatial_scale": (lambda i, b, o, s, r, al: honest_roi_align(i, b, o, 1.0, r, al), "spatial_scale"),
    "ignores aligned": (lambda i, b, o, s, r, al: honest_roi_align(i, b, o, s, r, False), "aligned=True"),
    "no 1 x 1 minimum": (lambda *a: honest_roi_align(*a, min_size=False), "at least 1 x 1"),
    "zero outside the pixel centres": (lambda *a: honest_roi_align(*a, weights=_zero_beyond_last_centre),
                                       "larger than the 8 x 8 map"),
    "detached output": (lambda *a: honest_roi_align(*a, detach=True), "does not depend on its inputs"),
    "F.grid_sample": (_with_grid_sample, "grid_sampler"),
    "torchvision.ops.roi_align": (lambda i, b, *a: torchvision.ops.roi_align(i, b, *a), "torchvision.ops"),
    "torch.ops.torchvision.roi_align": (lambda i, b, o, s, r, al: torch.ops.torchvision.roi_align(
        i, b, s, o[0], o[1], r, al), "torchvision::roi_align"),
    "the course's RoIAlign module": (lambda i, b, o, s, r, al: cv_course.ops.RoIAlign(o, s, r, al)(i, b),
                                     "cv_course.ops"),
}


@pytest.mark.parametrize("cheat", list(CHEATS_ROI))
def test_roi_align_slips_and_shortcuts_fail(cheat):
    fn, message = CHEATS_ROI[cheat]
    _expect(message, "roi_align", fn)


def test_a_wrong_gradient_fails_even_with_the_right_forward():
    def roi_align_wrong_grad(input, boxes, output_size, spatial_scale=1.0, sampling_ratio=-1, aligned=False):
        out = honest_roi_align(input, boxes, output_size, spatial_scale, sampling_ratio, aligned)
        return out + 0.5 * (input.sum() - input.sum().detach())  # the same values, another gradient

    _expect("the gradient of roi_align with respect to input", "roi_align", roi_align_wrong_grad)


def test_a_float64_roi_align_with_float32_sample_positions_is_told_why():
    def float32_positions(input, boxes, output_size, spatial_scale=1.0, sampling_ratio=-1, aligned=False):
        if input.dtype != torch.float64:
            return honest_roi_align(input, boxes, output_size, spatial_scale, sampling_ratio, aligned)
        out = honest_roi_align(input, boxes.float().double(), output_size, spatial_scale, sampling_ratio, aligned)
        return out

    with pytest.raises(CheckFailed, match=r"float32 precision only.*torch.arange\(n\) \+ 0.5"):
        G.check_roi_align_hidden(float32_positions, "cpu")


def test_hidden_roi_align_catches_the_slips_too():
    for fn, message in [(lambda *a: honest_roi_align(*a, adaptive=False), "random boxes"),
                        (lambda *a: honest_roi_align(*a, min_size=False), "wrong values")]:
        with pytest.raises(CheckFailed, match=message):
            G.check_roi_align_hidden(fn, "cpu")


# -------------------------------------------------------------- label_anchors
CHEATS_LABELS = {
    "no low-quality matches": (lambda i, h=0.7, lo=0.3: honest_labels(i, h, lo, low_quality="none"),
                               "(?s)overlapping at most 0.25.*expected: \\[1, 0, 1, -1\\]"),
    "one low-quality anchor per object (ties ignored)": (
        lambda i, h=0.7, lo=0.3: honest_labels(i, h, lo, low_quality="argmax"), "shared by two anchors"),
    "IoU > 0.7 instead of >= 0.7": (lambda i, h=0.7, lo=0.3: honest_labels(i, h, lo, high=torch.gt), "0.3 itself"),
    "IoU <= 0.3 negative": (lambda i, h=0.7, lo=0.3: honest_labels(i, h, lo, low=torch.le), "0.3 itself"),
    "thresholds hard-coded": (lambda i, h=0.7, lo=0.3: honest_labels(i), "RetinaNet"),
    "labels as float": (lambda i, h=0.7, lo=0.3: honest_labels(i, h, lo).float(), "dtype"),
    "labels from torchvision's Matcher": (lambda i, h=0.7, lo=0.3: torchvision.models.detection._utils.Matcher(
        h, lo, True)(i).clamp(max=1), "torchvision.models"),
}


@pytest.mark.parametrize("cheat", list(CHEATS_LABELS))
def test_label_anchors_slips_and_shortcuts_fail(cheat):
    fn, message = CHEATS_LABELS[cheat]
    _expect(message, "label_anchors", fn)


def test_hidden_label_failures_count_the_wrong_anchors_without_the_data():
    with pytest.raises(CheckFailed) as info:
        G.check_label_anchors_hidden(lambda i, h=0.7, lo=0.3: honest_labels(i, h, lo, low_quality="argmax"), "cpu")
    message = str(info.value)
    assert "anchors wrongly on" in message and "should be 1 (positive)" in message
    assert "tensor" not in message


# ---------------------------------------------------------- average_precision
CHEATS_AP = {
    "no interpolation": (lambda *a: honest_ap(*a, interpolate=False), "(?s)rises again.*got:\n0.804"),
    "VOC's matching rule": (lambda *a: honest_ap(*a, voc_rule=True), "A is taken"),
    "duplicates counted as true positives": (lambda *a: honest_ap(*a, duplicates_fp=False), "(?s)example.*0.8667"),
    "11-point AP": (lambda *a: honest_ap(*a, eleven=True), "(?s)0.8667.*expected"),
    "IoU > threshold": (lambda *a: honest_ap(*a, at=torch.gt), "exactly 0.5"),
    "ties in reverse index order": (lambda *a: honest_ap(*a, stable=False), "tied scores"),
    "float32 result": (lambda *a: honest_ap(*a).float(), "dtype"),
    "float32 counts": (lambda *a: honest_ap(*a, dtype=torch.float32), "float32 precision only"),
    "cv_course.metrics": (lambda b, s, g, t=0.5: cv_course.metrics.average_precision(
        *cv_course.metrics.precision_recall(b, s, g, t)[:2], "voc"), "cv_course.metrics"),
    "torchvision's box_iou": (lambda b, s, g, t=0.5: (torchvision.ops.box_iou(b, g), honest_ap(b, s, g, t))[1],
                              "torchvision.ops"),
}


@pytest.mark.parametrize("cheat", list(CHEATS_AP))
def test_average_precision_slips_and_shortcuts_fail(cheat):
    fn, message = CHEATS_AP[cheat]
    _expect(message, "average_precision", fn)


def test_hidden_ap_catches_the_matching_slips_too():
    for fn, message in [(lambda *a: honest_ap(*a, at=torch.gt), "exactly 0.5"),
                        (lambda *a: honest_ap(*a, stable=False), "tied-score"),
                        (lambda *a: honest_ap(*a, interpolate=False), "scene")]:
        with pytest.raises(CheckFailed, match=message):
            G.check_average_precision_hidden(fn, "cpu")


# ---------------------------------------------------------------- every check
def test_visible_failure_shows_expected_and_got():
    with pytest.raises(CheckFailed, match=r"(?s)64\.5.*expected:.*got:"):
        G.check_roi_align_visible(lambda i, b, o, *a: torch.zeros(len(b), i.shape[1], *o, device=i.device), "cpu")


def test_hidden_inputs_differ_between_runs():
    seen = []
    spy = lambda iou, *a: (seen.append(iou.sum().item()), honest_labels(iou, *a))[1]  # noqa: E731
    G.check_label_anchors_hidden(spy, "cpu")
    first, seen[:] = list(seen), []
    G.check_label_anchors_hidden(spy, "cpu")
    assert first[0] != seen[0]


def test_the_reference_is_computed_after_the_students_function_returns():
    def peek(*args):
        frame = sys._getframe(1)
        while frame is not None:
            assert "expected" not in frame.f_locals
            frame = frame.f_back
        return honest_ap(*args)

    G.check_average_precision_visible(peek, "cpu")
