"""pixel_cross_entropy against a per-pixel loop and against F.cross_entropy."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from cv_course.losses import pixel_cross_entropy


def _loop_ce(logits, target, ignore_index=255, weight=None):
    num, den = 0.0, 0.0
    N, C, H, W = logits.shape
    for n in range(N):
        for h in range(H):
            for w in range(W):
                t = int(target[n, h, w])
                if t == ignore_index:
                    continue
                z = logits[n, :, h, w].tolist()
                m = max(z)
                log_p = z[t] - m - math.log(sum(math.exp(v - m) for v in z))
                wt = 1.0 if weight is None else float(weight[t])
                num += -log_p * wt
                den += wt
    return num / den if den else 0.0


def _inputs(seed, N=2, C=4, H=5, W=6, ignore_frac=0.0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(N, C, H, W, generator=g, dtype=dtype) * 3
    target = torch.randint(0, C, (N, H, W), generator=g)
    if ignore_frac:
        target[torch.rand(N, H, W, generator=g) < ignore_frac] = 255
    return logits, target


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("ignore_frac", [0.0, 0.4])
def test_matches_loop_reference(seed, ignore_frac):
    logits, target = _inputs(seed, ignore_frac=ignore_frac)
    ours = pixel_cross_entropy(logits, target)
    assert math.isclose(float(ours), _loop_ce(logits, target), rel_tol=1e-12)


def test_matches_loop_with_class_weights():
    logits, target = _inputs(3, ignore_frac=0.3)
    weight = torch.tensor([0.2, 1.0, 3.0, 0.5], dtype=torch.float64)
    ours = pixel_cross_entropy(logits, target, weight=weight)
    assert math.isclose(float(ours), _loop_ce(logits, target, weight=weight), rel_tol=1e-12)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_matches_torch(reduction):
    logits, target = _inputs(4, N=3, C=6, H=7, W=3, ignore_frac=0.25, dtype=torch.float32)
    weight = torch.rand(6) + 0.1
    ours = pixel_cross_entropy(logits, target, weight=weight, reduction=reduction)
    ref = F.cross_entropy(logits, target, weight=weight, ignore_index=255, reduction=reduction)
    torch.testing.assert_close(ours, ref)


def test_gradcheck_float64():
    logits, target = _inputs(5, N=1, C=3, H=3, W=4, ignore_frac=0.3)
    logits.requires_grad_(True)
    weight = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda z: pixel_cross_entropy(z, target, weight=weight), (logits,))


def test_all_ignored_gives_zero_not_nan():
    logits, _ = _inputs(0)
    logits.requires_grad_(True)
    target = torch.full((2, 5, 6), 255)
    loss = pixel_cross_entropy(logits, target)
    assert float(loss.detach()) == 0.0
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def test_confident_correct_prediction_has_near_zero_loss():
    target = torch.randint(0, 3, (1, 4, 4))
    logits = F.one_hot(target, 3).permute(0, 3, 1, 2).double() * 50
    assert float(pixel_cross_entropy(logits, target)) < 1e-12


def test_bad_inputs():
    logits, target = _inputs(0)
    with pytest.raises(ValueError, match="shape"):
        pixel_cross_entropy(logits[0], target)
    with pytest.raises(ValueError, match="target must have shape"):
        pixel_cross_entropy(logits, target[:, :2])
    with pytest.raises(ValueError, match="integer"):
        pixel_cross_entropy(logits, target.double())
    with pytest.raises(ValueError, match="outside"):
        pixel_cross_entropy(logits, target + 4)
    with pytest.raises(ValueError, match="weight"):
        pixel_cross_entropy(logits, target, weight=torch.ones(3))


def test_on_device(device):
    logits, target = _inputs(1, ignore_frac=0.2, dtype=torch.float32)
    ours = pixel_cross_entropy(logits.to(device), target.to(device))
    assert ours.device.type == device.type
    assert math.isclose(float(ours), _loop_ce(logits, target), rel_tol=1e-5)
