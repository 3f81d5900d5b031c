"""Segmentation models: shapes on odd sizes, the lecture's U-Net walkthrough,
gradient flow, the no-skip ablation, FCN variants and the bilinear initialisation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cv_course.losses import pixel_cross_entropy
from cv_course.models import FCN, UNet, bilinear_upsampler

SMALL_FCN = dict(channels=(4, 8, 8, 16, 16), convs_per_stage=1, head_channels=16)



def _unet(**kw):
    return UNet(3, 5, **{"base_channels": 4, "depth": 3, **kw})


@pytest.mark.parametrize("size", [(100, 75), (64, 64), (5, 7), (1, 1)])
@pytest.mark.parametrize("skip", [True, False])
def test_unet_any_size(size, skip):
    torch.manual_seed(0)
    net = _unet(skip_connections=skip).eval()  # eval: BatchNorm works on 1x1 maps
    y = net(torch.rand(2, 3, *size))
    assert y.shape == (2, 5, *size)
    assert torch.isfinite(y).all()


def test_unet_full_size_walkthrough():
    # The lecture's example, on the meta device: shapes only, no computation.
    with torch.device("meta"):
        net, x = UNet(3, 7), torch.empty(1, 3, 256, 256)
    s = net.shapes(x)
    assert [s[f"enc{i}"] for i in range(1, 5)] == [
        (64, 256, 256), (128, 128, 128), (256, 64, 64), (512, 32, 32)]
    assert s["bottleneck"] == (1024, 16, 16)
    assert s["up4"] == (512, 32, 32) and s["cat4"] == (1024, 32, 32) and s["dec4"] == (512, 32, 32)
    assert s["dec3"] == (256, 64, 64) and s["dec2"] == (128, 128, 128)
    assert s["cat1"] == (128, 256, 256) and s["dec1"] == (64, 256, 256)
    assert s["logits"] == (7, 256, 256)
    assert list(s)[-1] == "logits"


def test_unet_no_skip_has_no_concatenation():
    with_skip, without = _unet(), _unet(skip_connections=False)
    s1 = with_skip.eval().shapes(torch.rand(1, 3, 32, 32))
    s2 = without.eval().shapes(torch.rand(1, 3, 32, 32))
    assert "cat1" in s1 and not any(k.startswith("cat") for k in s2)
    # The first decoder conv sees twice the channels when the skip is concatenated.
    for a, b in zip(with_skip.up, without.up):
        assert a.conv[0].in_channels == 2 * b.conv[0].in_channels
    assert sum(p.numel() for p in with_skip.parameters()) > sum(p.numel() for p in without.parameters())


def test_unet_skip_carries_information():
    # With skips, perturbing one input pixel changes the logits at that pixel through
    # the full-resolution path even if the bottleneck is zeroed out; without, it cannot.
    torch.manual_seed(0)
    for skip, expect_change in ((True, True), (False, False)):
        net = _unet(skip_connections=skip).eval()
        net.bottleneck.register_forward_hook(lambda m, i, o: torch.zeros_like(o))
        x = torch.rand(1, 3, 16, 16)
        x2 = x.clone()
        x2[..., 5, 5] += 1
        changed = not torch.allclose(net(x)[..., 5, 5], net(x2)[..., 5, 5])
        assert changed == expect_change


@pytest.mark.parametrize("make", [lambda: _unet(), lambda: _unet(skip_connections=False),
                                  lambda: FCN(5, "32s", **SMALL_FCN), lambda: FCN(5, "16s", **SMALL_FCN),
                                  lambda: FCN(5, "8s", **SMALL_FCN)])
def test_gradients_reach_every_parameter(make):
    torch.manual_seed(0)
    net = make()
    x = torch.rand(2, 3, 20, 18, requires_grad=True)
    loss = pixel_cross_entropy(net(x), torch.randint(0, 5, (2, 20, 18)))
    loss.backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for name, p in net.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
    # Zero-initialised skip scores still receive a gradient, so they can learn.
    if isinstance(net, FCN) and net.config.variant != "32s":
        assert net.score_pool4.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("variant", ["32s", "16s", "8s"])
@pytest.mark.parametrize("size", [(100, 75), (32, 32), (7, 3)])
def test_fcn_full_resolution_logits(variant, size):
    torch.manual_seed(0)
    net = FCN(4, variant, **SMALL_FCN).eval()
    y, feats = net(torch.rand(2, 3, *size), return_features=True)
    assert y.shape == (2, 4, *size)
    fused = {"32s": [], "16s": ["score16"], "8s": ["score16", "score8"]}[variant]
    assert [k for k in feats if k.startswith("score")] == ["score32"] + fused


def test_fcn_feature_strides():
    net = FCN(3, "8s", **SMALL_FCN).eval()
    _, f = net(torch.rand(1, 3, 64, 96), return_features=True)
    assert f["pool3"].shape[-2:] == (8, 12) and f["pool4"].shape[-2:] == (4, 6)
    assert f["score32"].shape[-2:] == (2, 3) and f["score8"].shape[-2:] == (8, 12)


def test_fcn_skips_start_as_fcn32s():
    # Zero-initialised skip scores: before training FCN-16s computes up16(up2(score32)),
    # two bilinear upsamplings that nearly equal FCN-32s's one x32 step away from the
    # border (not exactly: the x2 step samples the x32 interpolant's kinks).
    torch.manual_seed(0)
    a = FCN(3, "32s", **SMALL_FCN).eval()
    torch.manual_seed(0)
    b = FCN(3, "16s", **SMALL_FCN).eval()
    x = torch.rand(1, 3, 128, 128)
    ya, fa = a(x, return_features=True)
    yb, fb = b(x, return_features=True)
    torch.testing.assert_close(fa["score32"], fb["score32"])
    torch.testing.assert_close(fb["score16"], b.upsample_pool5(fb["score32"]))
    torch.testing.assert_close(ya[..., 48:80, 48:80], yb[..., 48:80, 48:80], atol=1e-3, rtol=0)


def test_bad_arguments():
    with pytest.raises(ValueError, match="variant"):
        FCN(3, "4s")
    with pytest.raises(ValueError, match="depth"):
        UNet(3, 2, depth=0)
    with pytest.raises(ValueError, match="expected input"):
        _unet()(torch.rand(1, 1, 8, 8))
    with pytest.raises(ValueError, match="expected input"):
        FCN(3)(torch.rand(3, 8, 8))


@pytest.mark.parametrize("factor", [2, 8, 32])
def test_bilinear_upsampler_matches_interpolate(factor):
    torch.manual_seed(0)
    x = torch.rand(2, 3, 6, 5, dtype=torch.float64)
    up = bilinear_upsampler(3, factor).double()
    ours = up(x)
    ref = F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)
    assert ours.shape == ref.shape == (2, 3, 6 * factor, 5 * factor)
    m = factor  # away from the border (where the transposed conv sees implicit zeros)
    torch.testing.assert_close(ours[..., m:-m, m:-m], ref[..., m:-m, m:-m])


def test_models_run_in_float64():
    net = _unet().double().eval()
    assert net(torch.rand(1, 3, 9, 9, dtype=torch.float64)).dtype == torch.float64
    fcn = FCN(2, **SMALL_FCN).double().eval()
    assert fcn(torch.rand(1, 3, 9, 9, dtype=torch.float64)).dtype == torch.float64


def test_models_on_device(device):
    for net in (_unet(), FCN(5, "8s", **SMALL_FCN)):
        net = net.to(device).eval()
        assert net(torch.rand(1, 3, 33, 20, device=device)).shape == (1, 5, 33, 20)
