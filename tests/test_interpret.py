"""Tests for cv_course.interpret on small random networks the tests build.

References: Captum (Saliency, LayerGradCam) for the gradient maps, finite
differences for saliency, CAM for Grad-CAM (exact relation on GAP + linear),
slow one-position-at-a-time loops for occlusion and the pointing game, and the
FGSM formula written out by hand. The trained classifier is tested in
test_classifier.py.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cv_course.interpret import (
    Regularizer,
    activation_maximization,
    cam,
    deepdream,
    embed_tsne,
    fgsm,
    first_layer_filters,
    grad_cam,
    knn_label_agreement,
    occlusion,
    occlusion_masks,
    occlusion_to_image,
    pgd,
    pointing_game,
    pointing_hits,
    saliency,
    upsample_heatmap,
)


class GapNet(nn.Module):
    """conv body -> global average pooling -> linear, like the course classifier."""

    def __init__(self, num_classes=5, act=nn.ReLU, bn=False, dropout=0.0, inplace=False):
        super().__init__()
        norm = (lambda c: nn.BatchNorm2d(c)) if bn else (lambda c: nn.Identity())
        relu = (lambda: act(inplace=True)) if inplace else act
        self.features = nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1), norm(4), relu(),
            nn.MaxPool2d(2),
            nn.Conv2d(4, 6, 3, padding=1), norm(6), relu(),
        )  # fmt: skip
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(6, num_classes)

    def forward(self, x):
        return self.fc(self.drop(self.features(x).mean(dim=(2, 3))))


def make_net(seed=0, dtype=torch.float64, **kwargs):
    torch.manual_seed(seed)
    return GapNet(**kwargs).to(dtype).eval()


def rand_images(n=3, h=12, w=10, dtype=torch.float64, seed=1, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, h, w, generator=g, dtype=dtype).to(device)


def no_hooks(model):
    return all(
        not (m._forward_hooks or m._backward_hooks or m._forward_pre_hooks)
        for m in model.modules()
    )


# --- saliency -----------------------------------------------------------------


def test_saliency_matches_captum():
    from captum.attr import Saliency

    model, x = make_net(), rand_images()
    t = torch.tensor([0, 3, 4])
    ours = saliency(model, x, t)
    ref = Saliency(model).attribute(x, target=t, abs=True).amax(dim=1)
    assert ours.shape == (3, 12, 10)
    torch.testing.assert_close(ours, ref)
    # an int target means the same class for every image
    torch.testing.assert_close(saliency(model, x, 2), saliency(model, x, torch.full((3,), 2)))


def test_saliency_matches_finite_differences():
    model, x = make_net(act=nn.Tanh), rand_images(n=2, h=6, w=6)
    sal = saliency(model, x, 1)
    h = 1e-6
    for n, i, j in [(0, 0, 0), (1, 3, 2), (0, 5, 4)]:
        grads = []
        for c in range(3):
            e = torch.zeros_like(x)
            e[n, c, i, j] = h
            with torch.no_grad():
                diff = model(x + e)[n, 1] - model(x - e)[n, 1]
            grads.append(abs(float(diff)) / (2 * h))
        assert sal[n, i, j].item() == pytest.approx(max(grads), rel=1e-6, abs=1e-9)


# --- CAM and Grad-CAM -------------------------------------------------------------


@pytest.mark.parametrize("layer", ["features.0", "features.2", "features.4", "features"])
def test_grad_cam_matches_captum(layer):
    from captum.attr import LayerGradCam

    model, x = make_net(), rand_images()
    t = torch.tensor([1, 0, 4])
    module = model.get_submodule(layer)
    ours = grad_cam(model, module, x, t)
    ref = LayerGradCam(model, module).attribute(x, target=t, relu_attributions=True)[:, 0]
    assert ours.shape == ref.shape
    torch.testing.assert_close(ours, ref)
    torch.testing.assert_close(grad_cam(model, layer, x, t), ours)  # dotted name


def test_cam_and_grad_cam_agree_on_gap_linear():
    # dS_c/dA[k, i, j] = w[c, k] / (h w) at every position, so Grad-CAM = ReLU(CAM) / (h w).
    model, x = make_net(), rand_images(n=4)
    t = torch.tensor([0, 1, 2, 4])
    c = cam(model.features, model.fc, x, t)
    g = grad_cam(model, model.features, x, t)
    h, w = c.shape[1:]
    assert (h, w) == (6, 5)
    torch.testing.assert_close(g, c.relu() / (h * w))
    assert (c < 0).any(), "the test should exercise the ReLU"
    # CAM's spatial mean plus the bias is the class score.
    scores = model(x).gather(1, t[:, None])[:, 0]
    torch.testing.assert_close(c.mean(dim=(1, 2)) + model.fc.bias[t], scores)


def test_grad_cam_survives_inplace_relu_after_layer():
    plain, inplace = make_net(), make_net(inplace=True)
    x = rand_images()
    a = grad_cam(plain, "features.0", x, 2)
    b = grad_cam(inplace, "features.0", x, 2)
    torch.testing.assert_close(a, b)


def test_grad_cam_works_inside_no_grad_and_on_empty_batch():
    model, x = make_net(), rand_images()
    with torch.no_grad():
        inside = grad_cam(model, "features", x, 1)
    torch.testing.assert_close(inside, grad_cam(model, "features", x, 1))
    empty = x[:0]
    assert grad_cam(model, "features", empty, 1).shape == (0, 6, 5)
    assert saliency(model, empty, 1).shape == (0, 12, 10)
    assert cam(model.features, model.fc, empty, 1).shape == (0, 6, 5)
    assert occlusion(model, empty, 1, patch=4, stride=4).shape == (0, 3, 2)
    assert fgsm(model, empty, 1, 0.1).shape == (0, 3, 12, 10)
    assert pgd(model, empty, 1, 0.1, 0.05, 2).shape == (0, 3, 12, 10)


def test_upsample_heatmap():
    g = torch.Generator().manual_seed(0)
    h = torch.rand(2, 4, 3, generator=g)
    up = upsample_heatmap(h, (8, 6), normalize=False)
    ref = F.interpolate(h[:, None], size=(8, 6), mode="bilinear", align_corners=False)[:, 0]
    torch.testing.assert_close(up, ref)
    norm = upsample_heatmap(torch.cat([h, torch.full((1, 4, 3), 0.7)]), 8)
    assert norm.shape == (3, 8, 8) and not norm.isnan().any()
    assert norm[:2].amin(dim=(1, 2)).tolist() == [0, 0]
    assert norm[:2].amax(dim=(1, 2)).tolist() == [1, 1]
    assert (norm[2] == 0).all()  # a constant map becomes zeros, not 0/0
    assert upsample_heatmap(h[:0], 8).shape == (0, 8, 8)


# --- occlusion -------------------------------------------------------------------


def occlusion_loop(model, x, t, patch, stride, baseline):
    """One forward pass per image and patch position."""
    (ph, pw), (sh, sw) = patch, stride
    N, C, H, W = x.shape
    rows, cols = range(0, H - ph + 1, sh), range(0, W - pw + 1, sw)
    out = torch.zeros(N, len(rows), len(cols), dtype=x.dtype)
    with torch.no_grad():
        for n in range(N):
            clean = model(x[n : n + 1])[0, t[n]]
            for i, top in enumerate(rows):
                for j, left in enumerate(cols):
                    y = x[n : n + 1].clone()
                    y[..., top : top + ph, left : left + pw] = baseline[..., top : top + ph, left : left + pw]
                    out[n, i, j] = clean - model(y)[0, t[n]]
    return out


@pytest.mark.parametrize("batch_size", [1, 7, 1000])
def test_occlusion_matches_loop(batch_size):
    model, x = make_net(), rand_images(n=2, h=12, w=10)
    t = torch.tensor([3, 1])
    base = torch.tensor([0.2, 0.5, 0.9], dtype=x.dtype)[:, None, None]
    ours = occlusion(model, x, t, patch=(4, 3), stride=(3, 2), baseline=base, batch_size=batch_size)
    ref = occlusion_loop(model, x, t, (4, 3), (3, 2), base.expand(3, 12, 10))
    assert ours.shape == (2, 3, 4)
    torch.testing.assert_close(ours, ref)
    ours0 = occlusion(model, x, t, patch=5, stride=5, baseline=0.0, batch_size=batch_size)
    torch.testing.assert_close(ours0, occlusion_loop(model, x, t, (5, 5), (5, 5), torch.zeros(3, 12, 10, dtype=x.dtype)))


def test_occlusion_masks_geometry():
    m = occlusion_masks(7, 9, patch=(3, 2), stride=(2, 3))
    assert m.shape == (3, 3, 7, 9) and m.dtype == torch.bool
    assert (m.sum(dim=(2, 3)) == 6).all()
    assert m[1, 2, 2:5, 6:8].all() and m[1, 2].sum() == 6


# --- adversarial examples ---------------------------------------------------------------


def test_fgsm_equals_formula():
    model, x = make_net(), rand_images(n=4)
    x[0, 0, 0, :3] = torch.tensor([0.0, 1.0, 0.999])  # pixels at and near the bounds
    y = torch.tensor([0, 1, 2, 3])
    eps = 0.03
    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(model(xg), y), xg)
    expected = torch.clamp(x + eps * grad.sign(), 0, 1)
    adv = fgsm(model, x, y, eps)
    torch.testing.assert_close(adv, expected, rtol=0, atol=0)
    assert fgsm(model, x, y, 0.0).equal(x)


def test_pgd_one_full_step_is_fgsm_and_stays_in_the_ball():
    model, x = make_net(), rand_images(n=4)
    x[:, :, :2] = 0.0
    x[:, :, -2:] = 1.0
    y = torch.tensor([4, 3, 2, 1])
    eps = 0.05
    one = pgd(model, x, y, eps=eps, alpha=eps, steps=1, random_start=False)
    torch.testing.assert_close(one, fgsm(model, x, y, eps), rtol=0, atol=0)
    gen = torch.Generator().manual_seed(0)
    adv = pgd(model, x, y, eps=eps, alpha=0.02, steps=7, random_start=True, generator=gen)
    assert (adv - x).abs().max() <= eps + 1e-12
    assert adv.min() >= 0 and adv.max() <= 1
    assert (adv != x).any()
    # more steps make the loss no smaller here (each step climbs the loss)
    loss = lambda z: F.cross_entropy(model(z), y).item()  # noqa: E731
    assert loss(pgd(model, x, y, eps, eps / 4, 10, random_start=False)) >= loss(x)


# --- side effects: mode, parameters, grads, requires_grad, inputs, hooks -----------


def _calls():
    y = torch.tensor([0, 1, 2])
    return {
        "saliency": lambda m, x: saliency(m, x, y),
        "cam": lambda m, x: cam(m.features, m.fc, x, y),
        "grad_cam": lambda m, x: grad_cam(m, "features.4", x, y),
        "occlusion": lambda m, x: occlusion(m, x, y, patch=4, stride=4, batch_size=5),
        "fgsm": lambda m, x: fgsm(m, x, y, 0.1),
        "pgd": lambda m, x: pgd(m, x, y, 0.1, 0.05, 3),
        "activation_maximization": lambda m, x: activation_maximization(m, "features.4", 1, steps=3, size=8),
        "deepdream": lambda m, x: deepdream(m, m.features, x, steps=3, jitter=2),
    }


@pytest.mark.parametrize("name", list(_calls()))
def test_no_side_effects(name):
    model = make_net(bn=True, dropout=0.5).train()
    model.features[1].eval()  # a mixed train/eval state must come back exactly
    model.features[0].weight.requires_grad_(False)
    model.fc.weight.grad = torch.full_like(model.fc.weight, 0.25)
    state = copy.deepcopy(model.state_dict())  # parameters and BN running stats
    modes = [m.training for m in model.modules()]
    flags = [p.requires_grad for p in model.parameters()]
    grads = [None if p.grad is None else p.grad.clone() for p in model.parameters()]
    x = rand_images().requires_grad_(True)
    x_before = x.detach().clone()

    out = _calls()[name](model, x)

    assert not out.requires_grad
    assert [m.training for m in model.modules()] == modes
    assert [p.requires_grad for p in model.parameters()] == flags
    for p, g in zip(model.parameters(), grads):
        assert (p.grad is None) if g is None else torch.equal(p.grad, g)
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    assert torch.equal(x.detach(), x_before) and x.grad is None
    assert no_hooks(model)


class Boom(nn.Module):
    def forward(self, x):
        raise RuntimeError("boom")


def test_no_hooks_and_mode_restored_after_an_exception():
    model = make_net().train()
    model.fc = nn.Sequential(Boom())  # forward raises after the hooked layer ran
    x = rand_images()
    for call in (
        lambda: grad_cam(model, "features.2", x, 0),
        lambda: activation_maximization(model, "features.2", 0, steps=2, size=8),
        lambda: deepdream(model, "features.2", x, steps=2),
    ):
        with pytest.raises(RuntimeError, match="boom"):
            call()
        assert no_hooks(model)
        assert all(m.training for m in model.modules())


# --- clear errors ----------------------------------------------------------------


def test_clear_errors():
    model, x = make_net(), rand_images()
    with pytest.raises(ValueError, match="not a submodule"):
        grad_cam(model, nn.Conv2d(3, 4, 3), x, 0)
    with pytest.raises(ValueError, match="no submodule named 'features.9'"):
        grad_cam(model, "features.9", x, 0)
    with pytest.raises(ValueError, match=r"feature map \[N, K, h, w\]"):
        grad_cam(model, "fc", x, 0)
    for fn in (
        lambda t: saliency(model, x, t),
        lambda t: grad_cam(model, "features", x, t),
        lambda t: cam(model.features, model.fc, x, t),
        lambda t: occlusion(model, x, t, 4, 4),
        lambda t: fgsm(model, x, t, 0.1),
    ):
        with pytest.raises(ValueError, match=r"in \[0, 5\)"):
            fn(5)
        with pytest.raises(ValueError, match=r"in \[0, 5\)"):
            fn(torch.tensor([0, -1, 2]))
        with pytest.raises(ValueError, match="Tensor\\[3\\]"):
            fn(torch.tensor([0, 1]))
        with pytest.raises(ValueError, match="integer"):
            fn(torch.tensor([0.0, 1.0, 2.0]))
        with pytest.raises(ValueError, match="integer"):
            fn(torch.tensor(1.0))
        with pytest.raises(ValueError, match="int or an integer tensor"):
            fn(1.5)
    for fn in (saliency, lambda m, im, t: grad_cam(m, "features", im, t), lambda m, im, t: fgsm(m, im, t, 0.1)):
        with pytest.raises(ValueError, match=r"\[N, C, H, W\]"):
            fn(model, x[0], 0)
    with pytest.raises(ValueError, match="floating-point"):
        saliency(model, (x * 255).to(torch.uint8), 0)
    with pytest.raises(ValueError, match="does not fit"):
        occlusion(model, x, 0, patch=13, stride=1)
    with pytest.raises(ValueError, match="broadcastable"):
        occlusion(model, x, 0, patch=4, stride=4, baseline=torch.zeros(3))
    with pytest.raises(ValueError, match="eps must be >= 0"):
        fgsm(model, x, 0, -0.1)
    with pytest.raises(ValueError, match="channel must be in"):
        activation_maximization(model, "features.4", 6, steps=1, size=8)
    with pytest.raises(ValueError, match="GAP \\+ linear"):
        cam(model.features, model.features, x, 0)


def test_layer_used_twice_is_rejected():
    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3, padding=1)
            self.fc = nn.Linear(3, 2)

        def forward(self, x):
            return self.fc(self.conv(self.conv(x)).mean(dim=(2, 3)))

    model = Shared()
    with pytest.raises(ValueError, match="ran 2 times"):
        grad_cam(model, model.conv, torch.rand(1, 3, 5, 5), 0)
    assert no_hooks(model)


# --- pointing game -------------------------------------------------------------------


def test_pointing_game_hand_example():
    heat = torch.zeros(3, 4, 4)
    heat[0, 1, 1] = 1.0  # peak in the top-left quarter
    heat[1, 3, 3] = 1.0  # peak in the bottom-right quarter
    masks = torch.zeros(3, 8, 8, dtype=torch.bool)
    masks[0, :4, :4] = True  # hit
    masks[1, :4, :4] = True  # miss (peak at bottom right)
    # image 2 has an empty mask: left out of the count
    assert pointing_hits(heat, masks).tolist() == [True, False, False]
    assert pointing_game(heat, masks) == 0.5
    # growing the mask by enough pixels turns the miss into a hit
    assert pointing_game(heat, masks, tolerance=4) == 1.0
    assert torch.isnan(torch.tensor(pointing_game(heat[2:], masks[2:])))


def test_pointing_game_matches_loop():
    g = torch.Generator().manual_seed(3)
    heat = torch.rand(20, 5, 6, generator=g)
    masks = torch.rand(20, 10, 12, generator=g) < 0.3
    up = F.interpolate(heat[:, None], size=(10, 12), mode="bilinear", align_corners=False)[:, 0]
    hits = 0
    for n in range(20):
        i, j = divmod(int(up[n].argmax()), 12)
        hits += bool(masks[n, i, j])
    assert pointing_game(heat, masks) == pytest.approx(hits / 20)


# --- filters, feature visualization, t-SNE ------------------------------------------


def test_first_layer_filters_grid():
    model = make_net(dtype=torch.float32)
    w = model.features[0].weight.detach()  # [4, 3, 3, 3]
    grid = first_layer_filters(model, nrow=3, padding=1)
    assert grid.shape == (3, 2 * 4 + 1, 3 * 4 + 1)
    assert grid.min() >= 0 and grid.max() <= 1
    k = w[3]  # second row, first column
    expected = (k - k.min()) / (k.max() - k.min())
    torch.testing.assert_close(grid[:, 5:8, 1:4], expected)
    assert (grid[:, 5:8, 5:8] == 1).all()  # blank tile filling the last row
    together = first_layer_filters(model, nrow=4, per_filter=False)
    assert together.min() == 0 and together.max() == 1


def test_activation_maximization_and_deepdream_raise_their_objective():
    model = make_net(dtype=torch.float32)
    layer = model.features[4]

    def channel_mean(img, c):
        acts = {}
        h = layer.register_forward_hook(lambda m, i, o: acts.setdefault("a", o))
        with torch.no_grad():
            model(img)
        h.remove()
        return acts["a"][:, c].mean().item(), acts["a"].pow(2).mean().item()

    img = activation_maximization(model, layer, 2, steps=30, lr=0.05, size=(16, 12), reg=Regularizer(jitter=1))
    assert img.shape == (3, 16, 12) and img.min() >= 0 and img.max() <= 1
    start = 0.5 + 0.05 * torch.randn(1, 3, 16, 12, generator=torch.Generator().manual_seed(0))
    assert channel_mean(img[None], 2)[0] > channel_mean(start, 2)[0] + 0.05
    x = rand_images(n=2, h=16, w=16, dtype=torch.float32)
    dream = deepdream(model, layer, x, steps=10, lr=0.02)
    assert dream.shape == x.shape and dream.min() >= 0 and dream.max() <= 1
    assert channel_mean(dream, 0)[1] > channel_mean(x, 0)[1]


def test_embed_tsne_separates_clusters():
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(3).repeat_interleave(20)
    centres = 10 * torch.randn(3, 8, generator=g)
    feats = centres[labels] + torch.randn(60, 8, generator=g)
    xy = embed_tsne(feats, labels, seed=0)
    assert xy.shape == (60, 2) and xy.dtype == torch.float32
    assert knn_label_agreement(xy, labels, k=5).item() == 1.0
    torch.testing.assert_close(embed_tsne(feats, seed=0), xy)  # same seed, same picture
    with pytest.raises(ValueError, match="labels must have shape"):
        embed_tsne(feats, labels[:10])


def test_knn_label_agreement_matches_loop():
    g = torch.Generator().manual_seed(1)
    pts = torch.randn(30, 2, generator=g)
    labels = torch.randint(0, 3, (30,), generator=g)
    total = 0.0
    for i in range(30):
        d = ((pts - pts[i]) ** 2).sum(1)
        d[i] = float("inf")
        nbrs = d.argsort()[:4]
        total += (labels[nbrs] == labels[i]).float().mean().item()
    assert knn_label_agreement(pts, labels, k=4).item() == pytest.approx(total / 30)


# --- CUDA -----------------------------------------------------------------------------


def test_methods_run_on_the_model_device(device):
    model = make_net(dtype=torch.float32).to(device)
    x = rand_images(dtype=torch.float32, device=device)
    t = torch.tensor([0, 1, 2])
    ref_model, ref_x = make_net(dtype=torch.float32), rand_images(dtype=torch.float32)
    for fn in (
        lambda m, im: saliency(m, im, t.to(im.device)),
        lambda m, im: grad_cam(m, "features", im, t.to(im.device)),
        lambda m, im: cam(m.features, m.fc, im, t.to(im.device)),
        lambda m, im: occlusion(m, im, t.to(im.device), 4, 4),
    ):
        out = fn(model, x)
        assert out.device.type == device.type
        torch.testing.assert_close(out.cpu(), fn(ref_model, ref_x), atol=1e-4, rtol=1e-3)
    # Signs of near-zero gradients may differ between devices: compare loosely.
    adv = fgsm(model, x, t.to(device), 0.05)
    assert adv.device.type == device.type
    assert (adv.cpu() == fgsm(ref_model, ref_x, t, 0.05)).float().mean() > 0.99
    gen = torch.Generator(device=device).manual_seed(0)
    adv = pgd(model, x, t.to(device), 0.05, 0.02, 3, generator=gen)
    assert (adv - x).abs().max() <= 0.05 + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    img = activation_maximization(model, "features.4", 0, steps=2, size=8)
    assert img.device.type == device.type


def _interp_reference(heat, H, W, patch, stride):
    """numpy.interp along each axis between patch centres (constant beyond the ends)."""
    (ph, pw), (sh, sw) = patch, stride
    nh, nw = heat.shape
    cy, cx = np.arange(nh) * sh + (ph - 1) / 2, np.arange(nw) * sw + (pw - 1) / 2
    rows = np.stack([np.interp(np.arange(W), cx, r) for r in heat])  # [nh, W]
    return np.stack([np.interp(np.arange(H), cy, c) for c in rows.T], axis=1)  # [H, W]


@pytest.mark.parametrize("H, W, patch, stride", [(64, 64, (8, 8), (4, 4)), (12, 10, (4, 3), (3, 2)),
                                                 (9, 9, (3, 3), (2, 2)), (10, 7, (10, 3), (1, 2))])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_occlusion_to_image_puts_cells_on_patch_centres(H, W, patch, stride, dtype):
    nh, nw = (H - patch[0]) // stride[0] + 1, (W - patch[1]) // stride[1] + 1
    heat = torch.randn(3, nh, nw, generator=torch.Generator().manual_seed(nh * nw), dtype=dtype)
    up = occlusion_to_image(heat, (H, W), patch, stride)
    assert up.shape == (3, H, W) and up.dtype == dtype
    for n in range(3):
        ref = _interp_reference(heat[n].numpy(), H, W, patch, stride)
        np.testing.assert_allclose(up[n].numpy(), ref, rtol=1e-5, atol=1e-5)


def test_occlusion_to_image_peak_and_errors():
    heat = torch.zeros(1, 15, 15)
    heat[0, 6, 9] = 1.0  # the patch from pixel (24, 36): centre (27.5, 39.5)
    up = occlusion_to_image(heat, 64, patch=8, stride=4)
    y, x = divmod(int(up.argmax()), 64)
    assert y in (27, 28) and x in (39, 40)
    assert upsample_heatmap(heat, 64, normalize=False)[0].argmax() != up[0].argmax()  # the plain resize is off
    assert occlusion_to_image(torch.zeros(0, 15, 15), 64, 8, 4).shape == (0, 64, 64)
    with pytest.raises(ValueError, match="15x15 cells"):
        occlusion_to_image(torch.zeros(1, 16, 16), 64, 8, 4)
    with pytest.raises(ValueError, match=r"\[N, nh, nw\]"):
        occlusion_to_image(torch.zeros(15, 15), 64, 8, 4)
