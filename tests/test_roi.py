"""RoI Align, RoI Pool and the FPN pooler against torchvision and loop references."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision.ops as tvo
from torchvision.ops.poolers import LevelMapper

import cv_course.ops._bags as bags
from cv_course.ops import MultiScaleRoIAlign, RoIAlign, RoIPool, assign_fpn_levels, roi_align, roi_pool


# ------------------------------------------------------------------ references
def _bilinear(img, y, x):
    """Value of img[C, H, W] at (y, x) with torchvision's border rules, one point."""
    C, H, W = img.shape
    if y < -1 or y > H or x < -1 or x > W:
        return torch.zeros(C, dtype=img.dtype)
    y, x = max(y, 0.0), max(x, 0.0)
    y0, x0 = int(y), int(x)
    y1, ly = (y0 + 1, y - y0) if y0 < H - 1 else (H - 1, 0.0)
    x1, lx = (x0 + 1, x - x0) if x0 < W - 1 else (W - 1, 0.0)
    y0, x0 = min(y0, H - 1), min(x0, W - 1)
    return ((1 - ly) * (1 - lx) * img[:, y0, x0] + (1 - ly) * lx * img[:, y0, x1]
            + ly * (1 - lx) * img[:, y1, x0] + ly * lx * img[:, y1, x1])


def loop_roi_align(x, rois, out_hw, scale, sampling_ratio, aligned):
    x = x.double().cpu()
    (PH, PW), C = out_hw, x.shape[1]
    out = torch.zeros(len(rois), C, PH, PW, dtype=torch.float64)
    for k, (b, x1, y1, x2, y2) in enumerate(rois.double().tolist()):
        off = 0.5 if aligned else 0.0
        x1, y1, x2, y2 = (v * scale - off for v in (x1, y1, x2, y2))
        w, h = x2 - x1, y2 - y1
        if not aligned:
            w, h = max(w, 1.0), max(h, 1.0)
        gh = sampling_ratio if sampling_ratio > 0 else math.ceil(h / PH)
        gw = sampling_ratio if sampling_ratio > 0 else math.ceil(w / PW)
        for ph in range(PH):
            for pw in range(PW):
                for iy in range(gh):
                    for ix in range(gw):
                        y = y1 + ph * h / PH + (iy + 0.5) * h / PH / gh
                        xx = x1 + pw * w / PW + (ix + 0.5) * w / PW / gw
                        out[k, :, ph, pw] += _bilinear(x[int(b)], y, xx)
                out[k, :, ph, pw] /= max(gh * gw, 1)
    return out


def loop_roi_pool(x, rois, out_hw, scale):
    x = x.double().cpu()
    (PH, PW), (C, H, W) = out_hw, x.shape[1:]
    out = torch.zeros(len(rois), C, PH, PW, dtype=torch.float64)
    c_round = lambda v: math.copysign(math.floor(abs(v) + 0.5), v)  # noqa: E731
    for k, (b, x1, y1, x2, y2) in enumerate(rois.double().tolist()):
        x1, y1, x2, y2 = (int(c_round(v * scale)) for v in (x1, y1, x2, y2))
        h, w = max(y2 - y1 + 1, 1), max(x2 - x1 + 1, 1)
        for ph in range(PH):
            top = min(max(math.floor(ph * h / PH) + y1, 0), H)
            bottom = min(max(math.ceil((ph + 1) * h / PH) + y1, 0), H)
            for pw in range(PW):
                left = min(max(math.floor(pw * w / PW) + x1, 0), W)
                right = min(max(math.ceil((pw + 1) * w / PW) + x1, 0), W)
                if bottom > top and right > left:
                    out[k, :, ph, pw] = x[int(b), :, top:bottom, left:right].amax(dim=(1, 2))
    return out


def edge_rois(n, gen, dtype, device, H, W, scale, images=2):
    """[n, 5] RoIs in image pixels: scattered, partly outside the map, tiny
    (zero and sub-pixel sizes), huge, and on the map's border."""
    img_h, img_w = H / scale, W / scale
    xy = torch.rand(n, 2, generator=gen, dtype=torch.float64) * 1.4 - 0.2  # some start outside
    wh = torch.rand(n, 2, generator=gen, dtype=torch.float64) ** 3  # many small boxes
    boxes = torch.cat([xy, xy + wh], 1) * torch.tensor([img_w, img_h, img_w, img_h], dtype=torch.float64)
    special = torch.tensor([[2.0, 3, 2, 3],  # a point
                            [5.0, 1, 5.2, 9],  # a sliver
                            [-3 * img_w, -2 * img_h, 3 * img_w, 2 * img_h],  # covers everything
                            [img_w - 1, img_h - 1, img_w + 8, img_h + 8],  # bottom-right corner
                            [-9.0, -9, -0.5, -0.5],  # just outside
                            [0.0, 0, img_w, img_h]], dtype=torch.float64)
    boxes = torch.cat([special, boxes])[:n]
    batch = torch.randint(images, (len(boxes), 1), generator=gen).to(torch.float64)
    return torch.cat([batch, boxes], 1).to(dtype=dtype, device=device)


def feature_map(gen, dtype, device, shape=(2, 3, 11, 14)):
    return torch.randn(*shape, generator=gen, dtype=torch.float64).to(dtype=dtype, device=device)


ALIGN_CASES = [(-1, False), (-1, True), (2, False), (2, True), (1, True), (3, False)]


# -------------------------------------------------------------- against torchvision
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("sampling_ratio,aligned", ALIGN_CASES)
def test_roi_align_matches_torchvision_forward_and_backward(dtype, sampling_ratio, aligned, device):
    gen = torch.Generator().manual_seed(sampling_ratio + 10 * aligned)
    for scale, out_hw in ((1.0, (3, 4)), (0.25, (7, 7)), (0.5, (2, 5))):
        x = feature_map(gen, dtype, device).requires_grad_()
        rois = edge_rois(40, gen, dtype, device, 11, 14, scale)
        ours = roi_align(x, rois, out_hw, scale, sampling_ratio, aligned)
        theirs = tvo.roi_align(x, rois, out_hw, scale, sampling_ratio, aligned)
        assert ours.shape == (40, 3) + out_hw and ours.dtype == dtype and ours.device == x.device
        torch.testing.assert_close(ours, theirs)
        grad_out = torch.randn(ours.shape, generator=gen, dtype=torch.float64).to(ours)
        g_ours, = torch.autograd.grad(ours, x, grad_out)
        g_theirs, = torch.autograd.grad(theirs, x, grad_out)
        torch.testing.assert_close(g_ours, g_theirs)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_roi_pool_matches_torchvision_forward_and_backward(dtype, device):
    gen = torch.Generator().manual_seed(1)
    for scale, out_hw, ties in ((1.0, (3, 4), False), (0.25, (7, 7), True), (0.5, (2, 5), True)):
        x = feature_map(gen, dtype, device)
        if ties:  # few distinct values: the gradient must go to the same (first) maximum
            x = (x * 2).round()
        x.requires_grad_()
        rois = edge_rois(40, gen, dtype, device, 11, 14, scale)
        ours = roi_pool(x, rois, out_hw, scale)
        theirs = tvo.roi_pool(x, rois, out_hw, scale)
        assert ours.shape == (40, 3) + out_hw and ours.dtype == dtype and ours.device == x.device
        assert torch.equal(ours, theirs)
        grad_out = torch.randn(ours.shape, generator=gen, dtype=torch.float64).to(ours)
        g_ours, = torch.autograd.grad(ours, x, grad_out)
        g_theirs, = torch.autograd.grad(theirs, x, grad_out)
        torch.testing.assert_close(g_ours, g_theirs)


def test_roi_pool_rounds_halves_away_from_zero():
    # 2.5 -> 3 and -0.5 -> -1 (C's round), not 2 and 0 (round half to even)
    x = torch.arange(2 * 36, dtype=torch.float64).reshape(1, 2, 6, 6)
    rois = torch.tensor([[0, 2.5, 0.5, 4.5, 3.5], [0, -0.5, -1.5, 1.5, 2.5], [0, 1.25, 1.75, 3.5, 4.5]],
                        dtype=torch.float64)
    for scale in (1.0, 0.5, 2.0):
        assert torch.equal(roi_pool(x, rois, 2, scale), tvo.roi_pool(x, rois, 2, scale))
        assert torch.equal(roi_pool(x, rois, 2, scale), loop_roi_pool(x, rois, (2, 2), scale))


# ------------------------------------------------------------- against the loops
@pytest.mark.parametrize("sampling_ratio,aligned", ALIGN_CASES)
def test_roi_align_matches_loop_reference(sampling_ratio, aligned):
    gen = torch.Generator().manual_seed(2)
    x = feature_map(gen, torch.float64, "cpu", (2, 2, 7, 9))
    rois = edge_rois(12, gen, torch.float64, "cpu", 7, 9, 0.5)
    ours = roi_align(x, rois, (3, 2), 0.5, sampling_ratio, aligned)
    torch.testing.assert_close(ours, loop_roi_align(x, rois, (3, 2), 0.5, sampling_ratio, aligned),
                               rtol=1e-12, atol=1e-12)


def test_roi_pool_matches_loop_reference():
    gen = torch.Generator().manual_seed(3)
    x = feature_map(gen, torch.float64, "cpu", (2, 2, 7, 9))
    rois = edge_rois(12, gen, torch.float64, "cpu", 7, 9, 0.5)
    assert torch.equal(roi_pool(x, rois, (3, 2), 0.5), loop_roi_pool(x, rois, (3, 2), 0.5))


def test_roi_align_is_exact_on_a_linear_map():
    # Bilinear interpolation reproduces a linear function, so with every sample
    # inside the map each bin is the function at the bin's centre.
    H, W = 12, 16
    ys, xs = torch.meshgrid(torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64),
                            indexing="ij")
    x = (3 * ys + 2 * xs + 1)[None, None]  # [1, 1, H, W]; pixel (y, x) centred at (y + .5, x + .5)
    rois = torch.tensor([[0, 2.0, 3.0, 10.0, 9.0], [0, 4.5, 1.25, 13.0, 11.5]], dtype=torch.float64)
    out = roi_align(x, rois, (3, 4), 1.0, 2, aligned=True)  # [2, 1, 3, 4]
    for k, (_, x1, y1, x2, y2) in enumerate(rois.tolist()):
        cy = y1 + (torch.arange(3, dtype=torch.float64) + 0.5) * (y2 - y1) / 3 - 0.5  # [3]
        cx = x1 + (torch.arange(4, dtype=torch.float64) + 0.5) * (x2 - x1) / 4 - 0.5  # [4]
        torch.testing.assert_close(out[k, 0], 3 * cy[:, None] + 2 * cx[None, :] + 1)


# ----------------------------------------------------------------------- gradcheck
@pytest.mark.parametrize("sampling_ratio,aligned", [(-1, False), (2, True)])
def test_gradcheck_roi_align(sampling_ratio, aligned):
    gen = torch.Generator().manual_seed(4)
    x = feature_map(gen, torch.float64, "cpu", (2, 2, 5, 6)).requires_grad_()
    rois = edge_rois(6, gen, torch.float64, "cpu", 5, 6, 0.5)
    assert torch.autograd.gradcheck(lambda t: roi_align(t, rois, 3, 0.5, sampling_ratio, aligned), (x,))


def test_gradcheck_roi_pool():
    gen = torch.Generator().manual_seed(5)
    x = feature_map(gen, torch.float64, "cpu", (2, 2, 5, 6)).requires_grad_()  # distinct values: no ties
    rois = edge_rois(6, gen, torch.float64, "cpu", 5, 6, 0.5)
    assert torch.autograd.gradcheck(lambda t: roi_pool(t, rois, 3, 0.5), (x,))


# ------------------------------------------------------------ formats and layouts
@pytest.mark.parametrize("op", ["align", "pool"])
def test_box_list_and_layouts_agree(op, device):
    gen = torch.Generator().manual_seed(6)
    fn = (lambda x, b: roi_align(x, b, (2, 3), 0.5, -1, True)) if op == "align" \
        else (lambda x, b: roi_pool(x, b, (2, 3), 0.5))
    x = feature_map(gen, torch.float32, device, (3, 4, 9, 10))
    rois = edge_rois(20, gen, torch.float32, device, 9, 10, 0.5, images=3)
    rois = rois[rois[:, 0].argsort(stable=True)]  # image by image, as a list gives them
    as_list = [rois[rois[:, 0] == i, 1:] for i in range(3)]
    expected = fn(x, rois)
    assert torch.equal(fn(x, as_list), expected)
    assert torch.equal(fn(x.contiguous(memory_format=torch.channels_last), rois), expected)
    wide = torch.randn(3, 8, 9, 10, generator=gen).to(device)
    wide[:, ::2] = x
    assert torch.equal(fn(wide[:, ::2], rois), expected)  # a non-contiguous view
    module = RoIAlign((2, 3), 0.5, -1, True) if op == "align" else RoIPool((2, 3), 0.5)
    assert torch.equal(module(x, rois), expected) and "output_size=(2, 3)" in repr(module)


@pytest.mark.parametrize("op", ["align", "pool"])
def test_chunks_give_the_same_result(op, monkeypatch):
    gen = torch.Generator().manual_seed(7)
    x = feature_map(gen, torch.float64, "cpu").requires_grad_()
    rois = edge_rois(30, gen, torch.float64, "cpu", 11, 14, 0.5)
    fn = (lambda: roi_align(x, rois, 3, 0.5)) if op == "align" else (lambda: roi_pool(x, rois, 3, 0.5))
    whole = fn()
    g_whole, = torch.autograd.grad(whole.sum(), x)
    monkeypatch.setattr(bags, "MAX_ENTRIES", 50)  # many chunks, and RoIs larger than one chunk
    chunked = fn()
    g_chunked, = torch.autograd.grad(chunked.sum(), x)
    torch.testing.assert_close(chunked, whole, rtol=0, atol=0)
    torch.testing.assert_close(g_chunked, g_whole)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_empty_box_lists(dtype, device):
    x = torch.randn(2, 3, 8, 8, dtype=dtype, device=device, requires_grad=True)
    for boxes in (torch.zeros(0, 5, dtype=dtype, device=device),
                  [torch.zeros(0, 4, dtype=dtype, device=device)] * 2, []):
        for out in (roi_align(x, boxes, 7, 0.5), roi_pool(x, boxes, (7, 5), 0.5)):
            assert out.shape[:2] == (0, 3) and out.dtype == dtype and out.device == x.device
            out.sum().backward()  # an image without proposals must still train
            assert x.grad.abs().sum() == 0


def test_bad_inputs_say_what_to_fix():
    x = torch.randn(2, 3, 8, 8)
    with pytest.raises(ValueError, match=r"Tensor\[K, 5\]"):
        roi_align(x, torch.rand(4, 4), 7)
    with pytest.raises(ValueError, match=r"\[L, 4\]"):
        roi_pool(x, [torch.rand(4, 5)], 7)
    with pytest.raises(ValueError, match="x2 < x1"):
        roi_align(x, torch.tensor([[0, 5.0, 5, 2, 9]]), 7)
    with pytest.raises(ValueError, match=r"batch indices in \[0, 2\)"):
        roi_pool(x, torch.tensor([[2, 0.0, 0, 4, 4]]), 7)
    with pytest.raises(ValueError, match=r"Tensor\[N, C, H, W\]"):
        roi_align(x[0], torch.zeros(0, 5), 7)
    with pytest.raises(ValueError, match="output_size"):
        roi_align(x, torch.zeros(0, 5), (7, 0))
    with pytest.raises(ValueError, match="only N = 2"):
        roi_align(x, [torch.zeros(0, 4)] * 3, 7)


# ---------------------------------------------------------------------- FPN levels
def test_assign_fpn_levels_matches_level_mapper():
    gen = torch.Generator().manual_seed(8)
    xy = torch.rand(500, 2, generator=gen, dtype=torch.float64) * 800
    wh = torch.rand(500, 2, generator=gen, dtype=torch.float64) ** 2 * 800
    sides = torch.tensor([0.0, 1, 55.99, 56, 112, 224, 448, 896, 1e4], dtype=torch.float64)  # exact powers
    boxes = torch.cat([torch.cat([xy, xy + wh], 1), torch.stack([0 * sides, 0 * sides, sides, sides], 1)])
    for dtype in (torch.float32, torch.float64):
        for k_min, k_max, scale, level in ((2, 5, 224, 4), (2, 6, 56, 4), (3, 4, 32, 3)):
            b = boxes.to(dtype)
            ours = assign_fpn_levels(b, k_min, k_max, scale, level)
            assert ours.dtype == torch.int64 and ours.min() >= k_min and ours.max() <= k_max
            assert torch.equal(ours - k_min, LevelMapper(k_min, k_max, scale, level)([b]))
    assert assign_fpn_levels(boxes[-4:-1], 2, 6).tolist() == [4, 5, 6]  # 224 -> 4, then one per doubling
    assert assign_fpn_levels(torch.zeros(0, 4), 2, 5).shape == (0,)


@pytest.mark.parametrize("names", [["p2", "p3", "p4", "p5"], ["p3"], ["p2", "p4"]])
@pytest.mark.parametrize("canonical_scale", [224, 48])
def test_multiscale_roi_align_matches_torchvision(names, canonical_scale, device):
    gen = torch.Generator().manual_seed(9)
    features = {f"p{k}": torch.randn(3, 4, 128 >> k, 128 >> k, generator=gen).to(device).requires_grad_()
                for k in (2, 3, 4, 5)}
    boxes = []
    for n in (25, 0, 7):
        xy = torch.rand(n, 2, generator=gen) * 120
        wh = torch.rand(n, 2, generator=gen) ** 2 * 128 + 0.5
        boxes.append(torch.cat([xy, xy + wh], 1).to(device))
    sizes = [(128, 128), (128, 120), (120, 128)]
    ours = MultiScaleRoIAlign(names, 7, 2, canonical_scale=canonical_scale)(features, boxes, sizes)
    theirs = tvo.MultiScaleRoIAlign(names, 7, 2, canonical_scale=canonical_scale)(features, boxes, sizes)
    assert ours.shape == (32, 4, 7, 7)
    torch.testing.assert_close(ours, theirs)
    leaves = [features[n] for n in names]
    torch.testing.assert_close(torch.autograd.grad(ours.sum(), leaves), torch.autograd.grad(theirs.sum(), leaves))


def test_multiscale_roi_align_errors():
    pooler = MultiScaleRoIAlign(["p2", "p3"], 7, 2)
    with pytest.raises(KeyError, match="p3"):
        pooler({"p2": torch.zeros(1, 2, 32, 32)}, [torch.zeros(0, 4)], [(128, 128)])
    with pytest.raises(ValueError, match="non-empty list"):
        MultiScaleRoIAlign("p2", 7, 2)
