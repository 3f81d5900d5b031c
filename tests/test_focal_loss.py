"""sigmoid_focal_loss against torchvision, a per-element loop, float64 gradcheck,
extreme logits, and the lecture's worked example (focal_loss_at)."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision.ops as tvo

from cv_course.ops import focal_loss_at, sigmoid_focal_loss


def loop_focal(x, t, alpha, gamma):
    """Eq. (5) of Lin et al. written out per element with Python floats (float64)."""
    out = []
    for xi, ti in zip(x.double().flatten().tolist(), t.double().flatten().tolist()):
        p = 1 / (1 + math.exp(-xi))
        pt = p * ti + (1 - p) * (1 - ti)
        ce = -(ti * math.log(p) + (1 - ti) * math.log(1 - p))
        a = 1.0 if alpha < 0 else alpha * ti + (1 - alpha) * (1 - ti)
        out.append(a * (1 - pt) ** gamma * ce)
    return torch.tensor(out, dtype=torch.float64).reshape(x.shape)


def _random(shape, dtype, device, seed=0, scale=3.0, soft=False):
    gen = torch.Generator().manual_seed(seed)
    x = (torch.randn(shape, generator=gen, dtype=torch.float64) * scale).to(device, dtype)
    t = torch.rand(shape, generator=gen, dtype=torch.float64)
    t = (t if soft else (t < 0.2).double()).to(device, dtype)
    return x, t


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("alpha,gamma", [(0.25, 2), (0.5, 0), (-1, 2), (0.9, 1.5), (-0.3, 0.5)])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_matches_torchvision_value_and_gradient(dtype, alpha, gamma, reduction, device):
    x, t = _random((4, 9, 5), dtype, device, seed=int(gamma * 10) + 7)
    x1 = x.clone().requires_grad_()
    x2 = x.clone().requires_grad_()
    ours = sigmoid_focal_loss(x1, t, alpha=alpha, gamma=gamma, reduction=reduction)
    # torchvision only accepts alpha == -1 for "off"; any alpha < 0 means the same here.
    ref = tvo.sigmoid_focal_loss(x2, t, alpha=alpha if alpha >= 0 else -1, gamma=gamma,
                                 reduction=reduction)
    assert ours.dtype == dtype and ours.device == x.device and ours.shape == ref.shape
    torch.testing.assert_close(ours, ref)
    w = torch.rand(ours.shape, generator=torch.Generator().manual_seed(1)).to(device, dtype)
    (ours * w).sum().backward()
    (ref * w).sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad)


@pytest.mark.parametrize("alpha,gamma", [(0.25, 2), (-1, 0), (0.75, 3)])
def test_matches_loop_soft_targets(alpha, gamma):
    x, t = _random((6, 7), torch.float64, "cpu", seed=3, soft=True)
    ours = sigmoid_focal_loss(x, t, alpha=alpha, gamma=gamma)
    torch.testing.assert_close(ours, loop_focal(x, t, alpha, gamma), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(ours, tvo.sigmoid_focal_loss(x, t, alpha=alpha, gamma=gamma))


@pytest.mark.parametrize("gamma", [2, 1, 0.5])
def test_gradcheck_float64(gamma):
    x, t = _random((3, 5), torch.float64, "cpu", seed=5, soft=True)
    x.requires_grad_()
    assert torch.autograd.gradcheck(lambda z: sigmoid_focal_loss(z, t, gamma=gamma), (x,))
    assert torch.autograd.gradgradcheck(lambda z: sigmoid_focal_loss(z, t, gamma=2), (x,))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("gamma", [2, 0.5, 0])
def test_extreme_logits_are_finite(dtype, gamma, device):
    big = [-1000.0, -100.0, -30.0, -20.0, 0.0, 20.0, 30.0, 100.0, 1000.0]
    x = torch.tensor(big * 2, dtype=dtype, device=device, requires_grad=True)
    t = torch.tensor([1.0] * len(big) + [0.0] * len(big), dtype=dtype, device=device)
    loss = sigmoid_focal_loss(x, t, gamma=gamma)
    loss.sum().backward()
    assert torch.isfinite(loss).all() and torch.isfinite(x.grad).all()
    # Confidently wrong: p_t ~ e^-100, loss ~ alpha_t * 100 and slope ~ alpha_t.
    i_pos, i_neg = big.index(-100.0), len(big) + big.index(100.0)
    torch.testing.assert_close(loss[[i_pos, i_neg]].double().cpu(),
                               torch.tensor([25.0, 75.0], dtype=torch.float64))
    torch.testing.assert_close(x.grad[[i_pos, i_neg]].double().cpu(),
                               torch.tensor([-0.25, 0.75], dtype=torch.float64))
    # Confidently right: (almost) nothing, and never negative.
    right = [big.index(100.0), len(big) + big.index(-100.0)]
    assert (loss[right] >= 0).all() and (loss[right] < 1e-30).all()
    # Agrees with torchvision where torchvision itself is finite.
    ref = tvo.sigmoid_focal_loss(x.detach(), t, gamma=gamma)
    torch.testing.assert_close(loss.detach(), ref, atol=1e-6, rtol=1e-5)


def test_torchvision_gradient_is_nan_where_ours_is_not():
    """Why the clamp: torchvision's (1 - p_t) ** 0.5 at 1 - p_t == 0 has an infinite
    slope times a zero, i.e. NaN. If torchvision changes, this documents it."""
    x = torch.tensor([100.0], requires_grad=True)
    t = torch.tensor([1.0])
    tvo.sigmoid_focal_loss(x, t, gamma=0.5).sum().backward()
    tv_grad = x.grad.clone()
    x.grad = None
    sigmoid_focal_loss(x, t, gamma=0.5).sum().backward()
    assert torch.isfinite(x.grad).all()
    assert not torch.isfinite(tv_grad).all()


def test_alpha_below_zero_switches_weighting_off():
    x, t = _random((50,), torch.float64, "cpu", seed=9)
    off = sigmoid_focal_loss(x, t, alpha=-1)
    torch.testing.assert_close(sigmoid_focal_loss(x, t, alpha=-0.01), off)
    on = sigmoid_focal_loss(x, t, alpha=0.25)
    torch.testing.assert_close(on, off * torch.where(t > 0, 0.25, 0.75))
    # gamma = 0 without alpha is binary cross-entropy.
    bce = torch.nn.functional.binary_cross_entropy_with_logits(x, t, reduction="none")
    torch.testing.assert_close(sigmoid_focal_loss(x, t, alpha=-1, gamma=0), bce)


def test_non_contiguous_inputs(device):
    x, t = _random((7, 5), torch.float32, device, seed=4)
    xt, tt = x.t(), t.t()  # [5, 7] views, not contiguous
    assert not xt.is_contiguous()
    torch.testing.assert_close(sigmoid_focal_loss(xt, tt), sigmoid_focal_loss(x, t).t())
    torch.testing.assert_close(sigmoid_focal_loss(xt, tt), tvo.sigmoid_focal_loss(xt, tt))


def test_empty_and_reductions(device):
    for dtype in (torch.float32, torch.float64):
        x = torch.zeros(0, 80, dtype=dtype, device=device)
        out = sigmoid_focal_loss(x, x.clone())
        assert out.shape == (0, 80) and out.dtype == dtype and out.device == x.device
        assert sigmoid_focal_loss(x, x.clone(), reduction="sum") == 0
    x, t = _random((8, 3), torch.float64, "cpu", seed=2)
    none = sigmoid_focal_loss(x, t)
    assert sigmoid_focal_loss(x, t, reduction="sum") == pytest.approx(float(none.sum()), rel=1e-12)
    mean = sigmoid_focal_loss(x, t, reduction="mean")
    assert mean == pytest.approx(float(none.mean()), rel=1e-12)


@pytest.mark.parametrize("kwargs,targets,match", [
    ({"reduction": "avg"}, None, "reduction must be one of"),
    ({"alpha": 1.5}, None, "alpha must be in"),
    ({"gamma": -1}, None, "gamma must be >= 0"),
    ({}, torch.zeros(4, 2), "shape of inputs"),
    ({}, torch.zeros(4, 3, dtype=torch.long), "floating point"),
])
def test_clear_errors(kwargs, targets, match):
    x = torch.zeros(4, 3)
    with pytest.raises(ValueError, match=match):
        sigmoid_focal_loss(x, torch.zeros_like(x) if targets is None else targets, **kwargs)


def test_lecture_worked_example():
    """The seeds' numbers (gamma = 2), and which weight each convention puts on an easy negative."""
    ce_easy = focal_loss_at(0.99, alpha=-1, gamma=0)
    ce_hard = focal_loss_at(0.1, alpha=-1, gamma=0)
    assert f"{ce_easy:.2f}" == "0.01" and f"{ce_hard:.2f}" == "2.30"
    assert ce_hard == pytest.approx(-math.log(0.1), rel=1e-12)
    # The lecture weights the easy negative by 0.25 ...
    assert f"{focal_loss_at(0.99, alpha=0.75, positive=False):.1e}" == "2.5e-07"
    assert focal_loss_at(0.99, alpha=0.75, positive=False) == pytest.approx(
        0.25 * 0.01 ** 2 * -math.log(0.99), rel=1e-10)
    # ... RetinaNet and torchvision (and this code) weight negatives by 1 - alpha = 0.75.
    assert f"{focal_loss_at(0.99, positive=False):.1e}" == "7.5e-07"
    assert focal_loss_at(0.99, positive=False) == pytest.approx(3 * focal_loss_at(0.99), rel=1e-10)
    # A hard positive keeps most of its loss: 0.25 * 0.81 * 2.30.
    assert f"{focal_loss_at(0.1):.2f}" == "0.47"
    assert focal_loss_at(0.1) == pytest.approx(0.25 * 0.81 * -math.log(0.1), rel=1e-10)
    with pytest.raises(ValueError, match="probability"):
        focal_loss_at(1.0)
