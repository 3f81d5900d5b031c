"""The checks of assignment 01 (segmentation) are honest: they pass correct
implementations and fail every shortcut we could think of, with a message that
says what to fix. (The pass path with a *trained* model is exercised end to end
in test_pipeline_segmentation.py, since training takes a while.)"""

from __future__ import annotations

import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import cv_course.losses
import cv_course.models
import cv_course.ops
from cv_course.grading import CheckFailed, policy
from cv_course.grading import segmentation as G
from cv_course.grading.heldout import held_out_seeds

_saved_conv_t = cv_course.ops.conv_transpose2d  # references captured early, as a student might
_saved_loss = cv_course.losses.pixel_cross_entropy


# ------------------------------------------------------------ honest answers
def honest_unpool(x, indices, output_size):
    N, C, h, w = x.shape
    H, W = output_size
    out = x.new_zeros(N, C, H * W).scatter(2, indices.reshape(N, C, h * w), x.reshape(N, C, h * w))
    return out.reshape(N, C, H, W)


def loop_unpool(x, indices, output_size):
    """A slow, obviously correct version: one value at a time."""
    N, C, h, w = x.shape
    out = torch.zeros(N, C, output_size[0] * output_size[1], dtype=x.dtype, device=x.device)
    for n in range(N):
        for c in range(C):
            for i in range(h):
                for j in range(w):
                    out[n, c, indices[n, c, i, j]] = x[n, c, i, j]
    return out.reshape(N, C, *output_size)


def honest_conv_t(x, weight, bias=None, stride=1, padding=0):
    N, _, H, W = x.shape
    _, C_out, kH, kW = weight.shape
    s, p = stride, padding
    contrib = torch.einsum("nchw,coij->noijhw", x, weight)
    full = x.new_zeros(N, C_out, (H - 1) * s + kH, (W - 1) * s + kW)
    for i in range(kH):
        for j in range(kW):
            full[:, :, i:i + (H - 1) * s + 1:s, j:j + (W - 1) * s + 1:s] += contrib[:, :, i, j]
    out = full[:, :, p:full.shape[2] - p, p:full.shape[3] - p]
    return out if bias is None else out + bias[None, :, None, None]


def conv_t_via_conv2d(x, weight, bias=None, stride=1, padding=0):
    """The other derivation: stuff stride - 1 zeros between input pixels, pad by
    k - 1 - padding and convolve with the flipped kernel. Allowed (no transposed op)."""
    N, C_in, H, W = x.shape
    _, C_out, kH, kW = weight.shape
    s = stride
    stuffed = x.new_zeros(N, C_in, (H - 1) * s + 1, (W - 1) * s + 1)
    stuffed[:, :, ::s, ::s] = x
    w = weight.flip(2, 3).transpose(0, 1)  # [C_out, C_in, kH, kW]
    return F.conv2d(stuffed, w, bias, padding=(kH - 1 - padding, kW - 1 - padding))


class HonestUNet(nn.Module):
    """The assignment's layers (as the notebook gives them) with a correct forward."""

    def __init__(self, in_channels=3, num_classes=5, base_channels=8, depth=3, skip_first=True,
                 pad=True):
        super().__init__()
        self.depth, self.skip_first, self.pad = depth, skip_first, pad
        widths = [base_channels * 2**i for i in range(depth + 1)]
        ins = [in_channels] + widths[:-2]
        self.down = nn.ModuleList(_double(i, o) for i, o in zip(ins, widths[:-1]))
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = _double(widths[-2], widths[-1])
        self.up = nn.ModuleList(nn.ConvTranspose2d(w, w // 2, 2, stride=2) for w in reversed(widths[1:]))
        self.dec = nn.ModuleList(_double(w, w // 2) for w in reversed(widths[1:]))
        self.head = nn.Conv2d(base_channels, num_classes, 1)

    def forward(self, x):
        H, W = x.shape[-2:]
        m = 2**self.depth
        if self.pad:
            x = F.pad(x, (0, (-W) % m, 0, (-H) % m))
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottleneck(x)
        for up, dec, skip in zip(self.up, self.dec, reversed(skips)):
            x = up(x)
            if x.shape[-2:] != skip.shape[-2:]:  # only without padding
                x = F.interpolate(x, size=skip.shape[-2:])
            x = dec(torch.cat([skip, x] if self.skip_first else [x, skip], dim=1))
        return self.head(x)[..., :H, :W]


def _double(i, o):
    return nn.Sequential(nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True),
                         nn.Conv2d(o, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True))


class ResizingUNet(HonestUNet):
    """Another correct way to allow odd sizes: no padding; resize to each skip."""

    def __init__(self, *args):
        super().__init__(*args, pad=False)


def honest_loss(logits, target, ignore_index=255):
    valid = target != ignore_index
    safe = torch.where(valid, target, torch.zeros_like(target))
    nll = -logits.log_softmax(1).gather(1, safe[:, None]).squeeze(1)
    return torch.where(valid, nll, torch.zeros_like(nll)).sum() / valid.sum().clamp(min=1)


HONEST = {"max_unpool2d": honest_unpool, "conv_transpose2d": honest_conv_t, "unet": HonestUNet,
          "pixel_cross_entropy": honest_loss}  # for the generic cheat battery (test_grading.py)


def test_slow_loop_reference_agrees_with_the_checks_reference():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 7, 9, generator=gen)
    pooled, idx = F.max_pool2d(x, 3, 2, 1, return_indices=True)
    expected = cv_course.ops.max_unpool2d(pooled, idx, 3, 2, 1, (7, 9))
    assert torch.equal(loop_unpool(pooled, idx, (7, 9)), expected)


def test_honest_answers_pass_every_check(device):
    G.check_max_unpool2d_visible(honest_unpool, device)
    G.check_max_unpool2d_hidden(honest_unpool, device)
    G.check_conv_transpose2d_visible(honest_conv_t, device)
    G.check_conv_transpose2d_hidden(honest_conv_t, device)
    G.check_unet_visible(HonestUNet, device)
    G.check_unet_hidden(HonestUNet, device)
    G.check_pixel_cross_entropy_visible(honest_loss, device)
    G.check_pixel_cross_entropy_hidden(honest_loss, device)


def test_other_honest_routes_pass():
    G.check_max_unpool2d_hidden(loop_unpool, "cpu")
    G.check_conv_transpose2d_visible(conv_t_via_conv2d, "cpu")  # a regular convolution is allowed
    G.check_conv_transpose2d_hidden(conv_t_via_conv2d, "cpu")
    G.check_unet_visible(ResizingUNet, "cpu")
    G.check_unet_hidden(ResizingUNet, "cpu")


def _expect(message, check, fn):
    with pytest.raises(CheckFailed, match=message):
        getattr(G, f"check_{check}_visible")(fn, "cpu")
        getattr(G, f"check_{check}_hidden")(fn, "cpu")
    assert sys.getprofile() is None  # the guard never outlives a check


def _zeroing(fn, which):
    def cheat(*args):
        out = fn(*args)
        args[which].zero_()
        return out
    return cheat


# ---------------------------------------------------------------- max_unpool2d
def _unpool_by_pool_backward(x, indices, size):
    N, C = x.shape[:2]
    return torch.ops.aten.max_pool2d_with_indices_backward(
        x, x.new_zeros(N, C, *size), [2, 2], [2, 2], [0, 0], [1, 1], False, indices)


def _lecture_only(x, indices, size):
    if tuple(x.shape) == (1, 1, 2, 2):
        return torch.tensor([[0, 0, 2, 0], [0, 1, 0, 0], [0, 0, 0, 0], [3, 0, 0, 4]], dtype=x.dtype,
                            device=x.device)[None, None]
    return torch.zeros(*x.shape[:2], *size, dtype=x.dtype, device=x.device)


CHEATS_UNPOOL = {
    "F.max_unpool2d": (lambda x, i, s: F.max_unpool2d(x, i, 2, output_size=s), "aten::max_unpool2d"),
    "nn.MaxUnpool2d": (lambda x, i, s: nn.MaxUnpool2d(2)(x, i, output_size=s), "max unpooling"),
    "cv_course reference": (lambda x, i, s: cv_course.ops.max_unpool2d(x, i, 2, output_size=s),
                            "cv_course.ops"),
    "max pooling's backward": (_unpool_by_pool_backward, "max_pool2d_with_indices_backward"),
    "hard-coded lecture answer": (_lecture_only, "wrong values"),
    "ignores output_size": (lambda x, i, s: honest_unpool(x, i, (2 * x.shape[2], 2 * x.shape[3])),
                            "raised RuntimeError on .* output_size"),
    "wrong dtype": (lambda x, i, s: honest_unpool(x, i, s).double(), "dtype"),
    "wrong device": (lambda x, i, s: honest_unpool(x, i, s).to("meta"), "device"),
    "NumPy array": (lambda x, i, s: honest_unpool(x, i, s).numpy(), "torch.Tensor"),
    "modifies its input": (_zeroing(honest_unpool, 0), "modified its input"),
    "not implemented": (lambda x, i, s: (_ for _ in ()).throw(NotImplementedError()), "not implemented"),
}


@pytest.mark.parametrize("name", list(CHEATS_UNPOOL))
def test_unpool_shortcuts_fail(name):
    fn, message = CHEATS_UNPOOL[name]
    _expect(message, "max_unpool2d", fn)


def test_unpool_visible_twin_catches_the_empty_batch_slip():
    # A common slip: reshape(N, C, -1) is ambiguous for an empty batch. The hidden
    # checks have an empty batch, so the visible ones have a small one too.
    def no_empty_batch(x, indices, size):
        N, C = x.shape[:2]
        out = x.new_zeros(N, C, size[0] * size[1])
        out = out.scatter(2, indices.reshape(N, C, -1), x.reshape(N, C, -1))
        return out.reshape(N, C, *size)

    for check, case in ((G.check_max_unpool2d_visible, "0x2x4x4 maps"),
                        (G.check_max_unpool2d_hidden, "0x3x8x8 maps")):
        with pytest.raises(CheckFailed, match=rf"raised RuntimeError on {case}.*\(in no_empty_batch, line"):
            check(no_empty_batch, "cpu")


# ------------------------------------------------------------- conv_transpose2d
def _conv_t_by_autograd(x, weight, bias=None, stride=1, padding=0):
    N, _, H, W = x.shape
    _, C_out, kH, kW = weight.shape
    z = x.new_zeros(N, C_out, (H - 1) * stride - 2 * padding + kH, (W - 1) * stride - 2 * padding + kW)
    z.requires_grad_()
    out = torch.autograd.grad(F.conv2d(z, weight, stride=stride, padding=padding), z, x, create_graph=True)[0]
    return out if bias is None else out + bias[None, :, None, None]


def _conv_t_by_fold(x, weight, bias=None, stride=1, padding=0):
    N, C_in, H, W = x.shape
    _, C_out, kH, kW = weight.shape
    cols = weight.reshape(C_in, -1).T @ x.reshape(N, C_in, H * W)
    full = F.fold(cols, ((H - 1) * stride + kH, (W - 1) * stride + kW), (kH, kW), stride=stride)
    out = full[:, :, padding:full.shape[2] - padding, padding:full.shape[3] - padding]
    return out if bias is None else out + bias[None, :, None, None]


def _conv_t_by_aten(x, weight, bias=None, stride=1, padding=0):
    return torch.ops.aten.convolution(x, weight, bias, [stride] * 2, [padding] * 2, [1, 1], True, [0, 0], 1)


def _conv_t_by_layer(x, weight, bias=None, stride=1, padding=0):
    layer = nn.ConvTranspose2d(weight.shape[0], weight.shape[1], weight.shape[2:], stride, padding,
                               bias=bias is not None)
    with torch.no_grad():
        layer.weight.copy_(weight)
    return layer.to(x.dtype)(x)


def _conv_t_detached(x, weight, bias=None, stride=1, padding=0):
    bias = None if bias is None else bias.detach()
    return honest_conv_t(x.detach(), weight.detach(), bias, stride, padding)


CHEATS_CONV_T = {
    "F.conv_transpose2d": (lambda x, w, b=None, s=1, p=0: F.conv_transpose2d(x, w, b, s, p),
                           "transposed=True"),
    "nn.ConvTranspose2d": (_conv_t_by_layer, "transposed"),
    "aten::convolution directly": (_conv_t_by_aten, "transposed=True"),
    "slow_conv_transpose2d": (lambda x, w, b=None, s=1, p=0: torch._C._nn.slow_conv_transpose2d(
        x, w, w.shape[2:], b, s, p), "transposed convolution"),
    "autograd of conv2d": (_conv_t_by_autograd, "convolution_backward"),
    "torch.nn.grad.conv2d_input": (lambda x, w, b=None, s=1, p=0: torch.nn.grad.conv2d_input(
        [x.shape[0], w.shape[1], *((n - 1) * s - 2 * p + k for n, k in zip(x.shape[2:], w.shape[2:]))],
        w, x, s, p), "convolution_backward"),
    "F.fold": (_conv_t_by_fold, "col2im"),
    "saved cv_course reference": (lambda x, w, b=None, s=1, p=0: _saved_conv_t(x, w, b, s, p),
                                  "cv_course.ops"),
    "no padding crop": (lambda x, w, b=None, s=1, p=0: honest_conv_t(x, w, b, s, 0), "shape"),
    "hard-coded 1-D example": (lambda x, w, b=None, s=1, p=0: torch.tensor([[[[2.0, 20, 203, 30, 300]]]]),
                               "shape"),
    "flipped kernel": (lambda x, w, b=None, s=1, p=0: honest_conv_t(x, w.flip(2, 3), b, s, p),
                       "wrong values"),
    "ignores the bias": (lambda x, w, b=None, s=1, p=0: honest_conv_t(x, w, None, s, p), "wrong values"),
    "float32 always": (lambda x, w, b=None, s=1, p=0: honest_conv_t(x, w, b, s, p).float(), "dtype"),
    "modifies the weight": (_zeroing(honest_conv_t, 1), "modified its input"),
    "not differentiable": (_conv_t_detached, "differentiable"),
}


@pytest.mark.parametrize("name", list(CHEATS_CONV_T))
def test_conv_transpose_shortcuts_fail(name):
    fn, message = CHEATS_CONV_T[name]
    _expect(message, "conv_transpose2d", fn)


def test_conv_transpose_visible_failure_shows_expected_and_got():
    # Forgets to sum the overlaps: the last copy wins.
    def overwrite(x, weight, bias=None, stride=1, padding=0):
        N, _, H, W = x.shape
        _, C_out, kH, kW = weight.shape
        contrib = torch.einsum("nchw,coij->noijhw", x, weight)
        full = x.new_zeros(N, C_out, (H - 1) * stride + kH, (W - 1) * stride + kW)
        for i in range(kH):
            for j in range(kW):
                rows = slice(i, i + (H - 1) * stride + 1, stride)
                cols = slice(j, j + (W - 1) * stride + 1, stride)
                full[:, :, rows, cols] = contrib[:, :, i, j]
        return full[:, :, padding:full.shape[2] - padding, padding:full.shape[3] - padding]

    with pytest.raises(CheckFailed, match=r"(?s)1-D example.*expected:.*203.*got:.*20\., +200\."):
        G.check_conv_transpose2d_visible(overwrite, "cpu")


# ---------------------------------------------------------------------- U-Net
class DelegatingUNet(HonestUNet):
    def forward(self, x):
        ref = cv_course.models.UNet(3, 5, 8, 3).to(x.device)
        ref.load_state_dict({G._reference_key(k): v for k, v in self.state_dict().items()})
        return ref.train(self.training)(x)


class CatOrderUNet(HonestUNet):
    def __init__(self, *args):
        super().__init__(*args, skip_first=False)


class NoPadUNet(HonestUNet):
    def __init__(self, *args):
        super().__init__(*args, pad=False)

    def forward(self, x):  # neither pads nor resizes: fails on odd sizes
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottleneck(x)
        for up, dec, skip in zip(self.up, self.dec, reversed(skips)):
            x = dec(torch.cat([skip, up(x)], dim=1))
        return self.head(x)


class BiggerUNet(HonestUNet):
    def __init__(self, in_channels=3, num_classes=5, base_channels=8, depth=3):
        super().__init__(in_channels, num_classes, 2 * base_channels, depth)


class DetachedUNet(HonestUNet):
    def forward(self, x):
        return super().forward(x).detach()


class NotImplementedUNet(HonestUNet):
    def forward(self, x):
        raise NotImplementedError()


CHEATS_UNET = {
    "runs cv_course's UNet": (DelegatingUNet, "cv_course.models"),
    "concatenates [upsampled, skip]": (CatOrderUNet, "skip first"),
    "fails on odd sizes": (NoPadUNet, "raised RuntimeError"),
    "changed __init__": (BiggerUNet, "parameters"),
    "forward not implemented": (NotImplementedUNet, "not implemented"),
}


@pytest.mark.parametrize("name", list(CHEATS_UNET))
def test_unet_shortcuts_fail(name):
    cls, message = CHEATS_UNET[name]
    _expect(message, "unet", cls)


def test_unet_without_gradients_fails_the_hidden_check():
    G.check_unet_visible(DetachedUNet, "cpu")
    with pytest.raises(CheckFailed, match="does not depend on its inputs through autograd"):
        G.check_unet_hidden(DetachedUNet, "cpu")


# -------------------------------------------------------------- the loss
def _naive_loss(logits, target, ignore_index=255):  # log(softmax): overflows
    valid = target != ignore_index
    safe = torch.where(valid, target, torch.zeros_like(target))
    p = logits.exp() / logits.exp().sum(1, keepdim=True)
    nll = -p.gather(1, safe[:, None]).squeeze(1).log()
    return torch.where(valid, nll, torch.zeros_like(nll)).sum() / valid.sum().clamp(min=1)


def _nan_when_all_ignored(logits, target, ignore_index=255):
    valid = target != ignore_index
    safe = torch.where(valid, target, torch.zeros_like(target))
    nll = -logits.log_softmax(1).gather(1, safe[:, None]).squeeze(1)
    return torch.where(valid, nll, torch.zeros_like(nll)).sum() / valid.sum()


def _mean_over_all_pixels(logits, target, ignore_index=255):
    valid = target != ignore_index
    safe = torch.where(valid, target, torch.zeros_like(target))
    nll = -logits.log_softmax(1).gather(1, safe[:, None]).squeeze(1)
    return torch.where(valid, nll, torch.zeros_like(nll)).mean()


CHEATS_LOSS = {
    "F.cross_entropy": (lambda z, t, i=255: F.cross_entropy(z, t, ignore_index=i), "nll_loss"),
    "F.nll_loss": (lambda z, t, i=255: F.nll_loss(z.log_softmax(1), t, ignore_index=i), "nll_loss"),
    "nn.CrossEntropyLoss": (lambda z, t, i=255: nn.CrossEntropyLoss(ignore_index=i)(z, t), "nll_loss"),
    "saved cv_course reference": (lambda z, t, i=255: _saved_loss(z, t, i), "cv_course.losses"),
    "log of softmax": (_naive_loss, "log_softmax"),
    "NaN when every pixel is ignored": (_nan_when_all_ignored, "guard the division"),
    "counts ignored pixels in the mean": (_mean_over_all_pixels, "wrong values"),
    "hard-coded log 4": (lambda z, t, i=255: torch.tensor(1.3863, dtype=z.dtype, device=z.device), "1.2395"),
    "a Python float": (lambda z, t, i=255: float(honest_loss(z, t, i)), "torch.Tensor"),
    "shape [1]": (lambda z, t, i=255: honest_loss(z, t, i).reshape(1), "shape"),
    "float32 always": (lambda z, t, i=255: honest_loss(z, t, i).float(), "dtype"),
    "a new tensor (no gradient)": (lambda z, t, i=255: torch.tensor(float(honest_loss(z, t, i)),
                                                                    dtype=z.dtype), "differentiable"),
    "modifies the logits": (_zeroing(honest_loss, 0), "modified its input"),
}


@pytest.mark.parametrize("name", list(CHEATS_LOSS))
def test_loss_shortcuts_fail(name):
    fn, message = CHEATS_LOSS[name]
    _expect(message, "pixel_cross_entropy", fn)


def test_loss_visible_failure_shows_expected_and_got():
    with pytest.raises(CheckFailed, match=r"(?s)expected:.*1\.38.*got:"):
        G.check_pixel_cross_entropy_visible(lambda z, t, i=255: z.sum() * 0, "cpu")


# -------------------------------------------------------------- trained model
@pytest.fixture
def no_threshold(monkeypatch):
    """The checks' mechanics with an untrained model: any mean IoU passes."""
    monkeypatch.setattr(G, "MIOU_THRESHOLD", 0.0)


def _untrained():
    torch.manual_seed(0)
    return HonestUNet(3, 5, 4, 2)


def test_untrained_model_is_below_the_threshold():
    with pytest.raises(CheckFailed, match=r"mean IoU on 128 new scenes is 0\.\d+, below"):
        G.check_trained_model_visible(_untrained(), "cpu")


def test_model_checks_pass_an_honest_model(no_threshold, device):
    model = _untrained().to(device)
    model.train()  # the check puts it in eval mode itself
    G.check_trained_model_visible(model, device)
    G.check_trained_model_hidden(model, device)


class BatchStatistics(nn.Module):
    """Compares each image with the batch's mean image: its answers depend on the other images."""

    def __init__(self):
        super().__init__()
        self.net = _untrained()

    def forward(self, x):
        logits = self.net(x)
        brighter = (x - x.mean(dim=0, keepdim=True)).mean(dim=1)  # [N, H, W], zero for one image
        return logits + 100 * torch.stack([brighter] + [torch.zeros_like(brighter)] * 4, dim=1)


class PeekingModel(nn.Module):
    """On its first call, looks through the caller's frames for label maps."""

    def __init__(self):
        super().__init__()
        self.net = _untrained()
        self.calls, self.found = 0, []

    def forward(self, x):
        self.calls += 1
        frame = sys._getframe(1)
        while frame is not None and self.calls == 1:
            for v in frame.f_locals.values():
                if isinstance(v, torch.Tensor) and not v.is_floating_point() and v.shape[-2:] == x.shape[-2:]:
                    self.found.append(v)
            frame = frame.f_back
        return self.net(x)


def test_labels_do_not_exist_while_the_model_runs(no_threshold):
    # (The grader's frames are out of a notebook's reach anyway: the tamper scan
    # flags sys, inspect, frames and f_locals.)
    model = PeekingModel()
    G.check_trained_model_hidden(model, "cpu")
    assert model.calls > 1 and model.found == []


def _trained_reference():
    torch.manual_seed(0)
    return cv_course.models.UNet(3, 5, 4, 2)


class ModifiesImages(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = _untrained()

    def forward(self, x):
        out = self.net(x)
        x.zero_()
        return out


CHEATS_MODEL = {
    "cv_course's UNet": (_trained_reference, "cv_course.models"),
    "batch statistics": (BatchStatistics, "alone than in a batch"),
    "modifies the images": (ModifiesImages, "modified its input"),
    "returns labels": (lambda: _Labels(), "shape"),
    "a function, not a module": (lambda: (lambda x: x), "nn.Module"),
    "parameters on another device": (lambda: _untrained().to("meta"), "model is on meta"),
}


class _Labels(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = _untrained()

    def forward(self, x):
        return self.net(x).argmax(dim=1)


@pytest.mark.parametrize("name", list(CHEATS_MODEL))
def test_model_shortcuts_fail(name, no_threshold):
    make, message = CHEATS_MODEL[name]
    with pytest.raises(CheckFailed, match=message):
        G.check_trained_model_visible(make(), "cpu")
        G.check_trained_model_hidden(make(), "cpu")


# -------------------------------------------------------------- the rules
def test_forbidden_lists_cover_the_course_and_the_ops():
    modules = set(G.COURSE.modules)
    assert {"cv_course.ops", "cv_course.models", "cv_course.losses", "cv_course.metrics",
            "cv_course.train", "cv_course.data", "cv_course.grading.segmentation"} <= modules
    assert not any(m.startswith(("cv_course.grading.checks", "cv_course.device")) for m in modules)
    conv = policy._transposed_convolution
    assert conv("aten::convolution", (None,) * 6 + (True,), {})
    assert not conv("aten::convolution", (None,) * 6 + (False,), {})  # a regular convolution is fine
    assert conv("aten::cudnn_convolution_transpose", (), {}) and conv("aten::convolution_backward", (), {})
    assert conv("aten::col2im", (), {}) and not conv("aten::im2col", (), {})
    assert policy._unpooling("aten::max_unpool2d", (), {})
    assert not policy._unpooling("aten::max_pool2d_with_indices", (), {})
    assert policy._nll("aten::nll_loss2d_forward", (), {}) and not policy._nll("aten::_log_softmax", (), {})


def test_hidden_failure_names_the_case_not_the_data():
    with pytest.raises(CheckFailed) as info:
        G.check_conv_transpose2d_hidden(CHEATS_CONV_T["ignores the bias"][0], "cpu")
    message = str(info.value)
    assert "kernel" in message and "tensor(" not in message and "[[" not in message


def test_scene_settings_cannot_be_changed_from_the_notebook():
    with pytest.raises(AttributeError):
        G.SCENES.update(max_objects=0)  # would make every held-out scene an empty background
    with pytest.raises(TypeError):
        G.SCENES["max_objects"] = 0
    assert dict(G._SCENE_ITEMS) == dict(G.SCENES)


def test_held_out_seeds_are_fresh_and_far_from_training_seeds():
    a, b = held_out_seeds(64), held_out_seeds(64)
    assert a != b and min(a + b) >= 2**24 and max(a + b) < 2**32
