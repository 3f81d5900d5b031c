"""The checks of assignment 06 (understanding CNNs) are honest: they pass correct
implementations written in several ways and fail every shortcut we could think
of, with a message that says what to fix."""

from __future__ import annotations

import _thread
import os
import sys
import time

import pytest
import torch
import torch.nn.functional as F
from captum.attr import Saliency
from torch import nn
from torch.overrides import TorchFunctionMode

import cv_course.interpret
from cv_course.experiments.interpret import default_methods
from cv_course.grading import CheckFailed
from cv_course.grading import understanding as G
from cv_course.models.classifier import shapes_classifier


# ------------------------------------------------------------- honest answers
def _eval(model):
    """Eval mode for the block's duration (a context manager written by hand)."""
    class Ctx:
        def __enter__(self):
            self.was = model.training
            model.eval()

        def __exit__(self, *exc):
            model.train(self.was)
    return Ctx()


def honest_saliency(model, images, target):
    with _eval(model), torch.enable_grad():
        x = images.detach().clone().requires_grad_(True)
        (g,) = torch.autograd.grad(model(x).gather(1, target[:, None]).sum(), x)
    return g.abs().amax(dim=1)


def loop_saliency(model, images, target):
    """One image at a time, with backward() and zero_grad(): also correct."""
    outs = []
    with _eval(model):
        for i in range(len(images)):
            x = images[i:i + 1].clone().requires_grad_(True)
            model(x)[0, target[i]].backward()
            outs.append(x.grad.abs().max(dim=1).values)
    model.zero_grad()
    return torch.cat(outs)


def honest_grad_cam(model, layer, images, target, relu=True, average=True):
    store = {}
    handle = layer.register_forward_hook(lambda m, i, o: store.__setitem__("a", o))
    try:
        with _eval(model), torch.enable_grad():
            x = images.detach().clone().requires_grad_(True)
            (g,) = torch.autograd.grad(model(x).gather(1, target[:, None]).sum(), store["a"])
    finally:
        handle.remove()
    weights = g.mean(dim=(2, 3), keepdim=True) if average else g
    out = (weights * store["a"].detach()).sum(dim=1)
    return out.relu() if relu else out


def backward_hook_grad_cam(model, layer, images, target):
    """Full backward hooks and backward(): also correct."""
    acts, grads = {}, {}
    h1 = layer.register_forward_hook(lambda m, i, o: acts.__setitem__("a", o.detach()))
    h2 = layer.register_full_backward_hook(lambda m, gi, go: grads.__setitem__("g", go[0]))
    try:
        with _eval(model):
            x = images.clone().requires_grad_(True)
            out = model(x)
            (out * F.one_hot(target, out.shape[1]).to(out.dtype)).sum().backward()
    finally:
        h1.remove()
        h2.remove()
        model.zero_grad()
    return (grads["g"].mean(dim=(2, 3), keepdim=True) * acts["a"]).sum(1).clamp(min=0)


def honest_fgsm(model, images, labels, eps):
    with _eval(model), torch.enable_grad():
        x = images.detach().clone().requires_grad_(True)
        (g,) = torch.autograd.grad(F.cross_entropy(model(x), labels), x)
    return (images + eps * g.sign()).clamp(0, 1)


def nll_fgsm(model, images, labels, eps):
    """log_softmax + nll_loss, backward(), zero_grad(): also correct."""
    with _eval(model):
        x = images.clone().requires_grad_(True)
        F.nll_loss(F.log_softmax(model(x), dim=1), labels, reduction="sum").backward()
    model.zero_grad()
    return torch.clamp(images + eps * x.grad.sign(), 0.0, 1.0)


HONEST = {"saliency": honest_saliency, "grad_cam": honest_grad_cam, "fgsm": honest_fgsm}  # for test_grading.py


@pytest.mark.parametrize("saliency,grad_cam,fgsm", [
    (honest_saliency, honest_grad_cam, honest_fgsm),
    (loop_saliency, backward_hook_grad_cam, nll_fgsm),
])
def test_honest_implementations_pass(saliency, grad_cam, fgsm, device):
    G.check_saliency_visible(saliency, device)
    G.check_saliency_hidden(saliency, device)
    G.check_grad_cam_visible(grad_cam, device)
    G.check_grad_cam_hidden(grad_cam, device)
    G.check_fgsm_visible(fgsm, device)
    G.check_fgsm_hidden(fgsm, device)
    assert sys.getprofile() is None  # the guard never outlives a check


# ---------------------------------------------------------------------- cheats
_left_on: list = []  # global hooks and modes a cheat leaves behind, removed after each test


@pytest.fixture(autouse=True)
def _restore_globals():
    yield
    while _left_on:
        undo = _left_on.pop()
        undo()
    torch.set_grad_enabled(True)


def _leave_global_hook(fn):
    def cheat(model, *args):
        handle = torch.nn.modules.module.register_module_forward_hook(lambda m, i, o: None)
        _left_on.append(handle.remove)
        return fn(model, *args)
    return cheat


class _PassThrough(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        return func(*args, **(kwargs or {}))


def _leave_mode_on(fn):
    def cheat(model, *args):
        mode = _PassThrough()
        mode.__enter__()
        _left_on.append(lambda: mode.__exit__(None, None, None))
        return fn(model, *args)
    return cheat


def _leave_eval_mode(fn):
    def cheat(model, *args):
        out = fn(model, *args)
        model.eval()  # forgets to put the mode back
        return out
    return cheat


def _train_mode_saliency(model, images, target):
    x = images.clone().requires_grad_(True)  # no model.eval(): BatchNorm uses batch statistics
    (g,) = torch.autograd.grad(model(x).gather(1, target[:, None]).sum(), x)
    return g.abs().amax(dim=1)


def _grads_left_saliency(model, images, target):
    with _eval(model):
        x = images.clone().requires_grad_(True)
        model(x).gather(1, target[:, None]).sum().backward()  # fills the parameters' .grad too
    return x.grad.abs().amax(dim=1)


def _freezing_saliency(model, images, target):
    model.requires_grad_(False)  # and never unfreezes
    return honest_saliency(model, images, target)


def _softmax_saliency(model, images, target):
    with _eval(model), torch.enable_grad():
        x = images.clone().requires_grad_(True)
        p = model(x).softmax(dim=1).gather(1, target[:, None]).sum()
        (g,) = torch.autograd.grad(p, x)
    return g.abs().amax(dim=1)


def _signed_saliency(model, images, target):
    with _eval(model), torch.enable_grad():
        x = images.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(model(x).gather(1, target[:, None]).sum(), x)
    return g.amax(dim=1)


def _channel_sum_saliency(model, images, target):
    with _eval(model), torch.enable_grad():
        x = images.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(model(x).gather(1, target[:, None]).sum(), x)
    return g.abs().sum(dim=1)


def _grad_off_saliency(model, images, target):
    out = honest_saliency(model, images, target)
    torch.set_grad_enabled(False)  # outside any `with` block: stays off after the function
    return out


def _replacing_forward(model, images, target):
    model.forward = model.forward  # an instance attribute now shadows the class's method
    return honest_saliency(model, images, target)


def _raw_thread_saliency(model, images, target):
    """The reference in a thread started with _thread, which the guard's
    threading hook would not reach."""
    out = []
    _thread.start_new_thread(lambda: out.append(cv_course.interpret.saliency(model, images, target)), ())
    while not out:
        time.sleep(0.01)
    return out[0]


def _forked_saliency(model, images, target):
    """The reference in a child process, sent back through a pipe."""
    read, write = os.pipe()
    if os.fork() == 0:  # the child (never reached: the guard stops the fork)
        try:
            os.write(write, cv_course.interpret.saliency(model, images, target).numpy().tobytes())
        finally:
            os._exit(0)
    data = os.read(read, 1 << 20)
    N, _, H, W = images.shape
    return torch.frombuffer(bytearray(data), dtype=images.dtype).reshape(N, H, W)


CHEATS_SALIENCY = {
    "cv_course reference": (lambda m, x, t: cv_course.interpret.saliency(m, x, t), "cv_course.interpret"),
    "through the chapter's helpers": (lambda m, x, t: default_methods(m)["saliency"](x, t), "cv_course"),
    "captum": (lambda m, x, t: Saliency(m).attribute(x, target=t, abs=True).amax(dim=1), "captum"),
    "softmax probability": (_softmax_saliency, "wrong values"),
    "no absolute value": (_signed_saliency, "wrong values"),
    "sum over channels": (_channel_sum_saliency, "wrong values"),
    "ignores the model": (lambda m, x, t: x.abs().amax(dim=1), "wrong values"),
    "mean of the scores": (lambda m, x, t: honest_saliency(m, x, t) / len(x), "wrong values"),
    "leaves eval mode": (_leave_eval_mode(honest_saliency), "train/eval mode"),
    "no eval mode": (_train_mode_saliency, "buffers"),
    "leaves .grad": (_grads_left_saliency, r"\.grad"),
    "freezes the parameters": (_freezing_saliency, "requires_grad"),
    "replaces forward": (_replacing_forward, "attributes"),
    "float64 output": (lambda m, x, t: honest_saliency(m, x, t).double(), "dtype"),
    "numpy array": (lambda m, x, t: honest_saliency(m, x, t).cpu().numpy(), "torch.Tensor"),
    "modifies the input": (lambda m, x, t: honest_saliency(m, x.clamp_(0.1, 0.9), t), "modified its input"),
    "leaves a global hook": (_leave_global_hook(honest_saliency), "globally"),
    "leaves a torch function mode on": (_leave_mode_on(honest_saliency), "globally"),
    "switches gradients off globally": (_grad_off_saliency, "globally"),
    "not implemented": (lambda m, x, t: (_ for _ in ()).throw(NotImplementedError()), "not implemented"),
    "the reference in a raw thread": (_raw_thread_saliency, "start_new_thread"),
    "the reference in a child process": (_forked_saliency, "fork"),
}


@pytest.mark.parametrize("name", list(CHEATS_SALIENCY))
def test_saliency_shortcuts_fail_with_a_clear_message(name):
    fn, message = CHEATS_SALIENCY[name]
    with pytest.raises(CheckFailed, match=message):
        G.check_saliency_visible(fn, "cpu")
        G.check_saliency_hidden(fn, "cpu")
    assert sys.getprofile() is None


def _cam(model, layer, images, target):
    """CAM with the last linear layer's weights: Grad-CAM only at the last
    feature map of a GAP + linear network."""
    fc = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    store = {}
    handle = layer.register_forward_hook(lambda m, i, o: store.__setitem__("a", o))
    with torch.no_grad(), _eval(model):
        model(images)
    handle.remove()
    return torch.einsum("nk,nkhw->nhw", fc.weight[target], store["a"]).relu()


def _last_map_grad_cam(model, layer, images, target):
    """Ignores ``layer``: always the last 4-D output of the network."""
    last = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d,
                                                          nn.AdaptiveMaxPool2d, nn.AdaptiveAvgPool2d))][-1]
    return honest_grad_cam(model, last, images, target)


def _hook_left_grad_cam(model, layer, images, target):
    store = {}
    layer.register_forward_hook(lambda m, i, o: store.__setitem__("a", o))  # never removed
    with _eval(model), torch.enable_grad():
        x = images.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(model(x).gather(1, target[:, None]).sum(), store["a"])
    return (g.mean(dim=(2, 3), keepdim=True) * store["a"].detach()).sum(1).relu()


CHEATS_GRAD_CAM = {
    "cv_course reference": (lambda m, l, x, t: cv_course.interpret.grad_cam(m, l, x, t),
                            "cv_course.interpret"),
    "no ReLU": (lambda m, l, x, t: honest_grad_cam(m, l, x, t, relu=False), "negative values.*ReLU"),
    "gradient times activation, not averaged": (lambda m, l, x, t: honest_grad_cam(m, l, x, t, average=False),
                                                "wrong values"),
    "CAM from the last linear layer": (_cam, "wrong values|raised|shape"),
    "ignores the layer": (_last_map_grad_cam, "wrong values|shape"),
    "upsampled to the image size": (lambda m, l, x, t: F.interpolate(honest_grad_cam(m, l, x, t)[:, None],
                                                                     size=x.shape[2:])[:, 0], "shape"),
    "leaves a hook": (_hook_left_grad_cam, "hook"),
    "leaves eval mode": (_leave_eval_mode(honest_grad_cam), "train/eval mode"),
    "score of the wrong class": (lambda m, l, x, t: honest_grad_cam(m, l, x, (t + 1) % 2), "wrong values"),
}


@pytest.mark.parametrize("name", list(CHEATS_GRAD_CAM))
def test_grad_cam_shortcuts_fail_with_a_clear_message(name):
    fn, message = CHEATS_GRAD_CAM[name]
    with pytest.raises(CheckFailed, match=message):
        G.check_grad_cam_visible(fn, "cpu")
        G.check_grad_cam_hidden(fn, "cpu")


def _loss_step(model, images, labels, eps, clamp=True):
    with _eval(model), torch.enable_grad():
        x = images.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(F.cross_entropy(model(x), labels), x)
    out = images + eps * g.sign()
    return out.clamp(0, 1) if clamp else out


def _grads_left_fgsm(model, images, labels, eps):
    with _eval(model):
        x = images.clone().requires_grad_(True)
        F.cross_entropy(model(x), labels).backward()  # the tutorial's way, without zero_grad
    return (images + eps * x.grad.sign()).clamp(0, 1)


def _in_place_fgsm(model, images, labels, eps):
    step = honest_fgsm(model, images, labels, eps) - images
    return images.add_(step)  # the caller's tensor is changed


def _score_fgsm(model, images, labels, eps):
    """Descends the true class's score instead of ascending the loss."""
    with _eval(model), torch.enable_grad():
        x = images.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(model(x).gather(1, labels[:, None]).sum(), x)
    return (images - eps * g.sign()).clamp(0, 1)


def _gradient_step_fgsm(model, images, labels, eps):
    with _eval(model), torch.enable_grad():
        x = images.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(F.cross_entropy(model(x), labels), x)
    g = g / g.abs().amax(dim=(1, 2, 3), keepdim=True)  # a scaled gradient, not its sign
    return (images + eps * g).clamp(0, 1)


CHEATS_FGSM = {
    "cv_course reference": (lambda m, x, y, e: cv_course.interpret.fgsm(m, x, y, e), "cv_course.interpret"),
    "the grader's own helper": (lambda m, x, y, e: (x + e * G._loss_gradient(m, x, y).sign()).clamp(0, 1),
                                "cv_course.grading.understanding"),
    "no clamping": (lambda m, x, y, e: _loss_step(m, x, y, e, clamp=False), r"\[0, 1\]"),
    "descends the loss": (lambda m, x, y, e: _loss_step(m, x, y, -e), "wrong values"),
    "the score, not the loss": (_score_fgsm, "wrong values"),
    "the gradient, not its sign": (_gradient_step_fgsm, "less than eps|wrong values"),
    "random signs": (lambda m, x, y, e: (x + e * torch.randn_like(x).sign()).clamp(0, 1), "wrong values"),
    "a fixed eps": (lambda m, x, y, e: honest_fgsm(m, x, y, 8 / 255), "wrong values|(more|less) than eps"),
    "changes the images in place": (_in_place_fgsm, "modified its input"),
    "leaves .grad": (_grads_left_fgsm, r"\.grad"),
    "no eval mode": (lambda m, x, y, e: _grads_left_fgsm(m.train(), x, y, e), r"mode|buffers|\.grad"),
}


@pytest.mark.parametrize("name", list(CHEATS_FGSM))
def test_fgsm_shortcuts_fail_with_a_clear_message(name):
    fn, message = CHEATS_FGSM[name]
    with pytest.raises(CheckFailed, match=message):
        G.check_fgsm_visible(fn, "cpu")
        G.check_fgsm_hidden(fn, "cpu")


# ------------------------------------------------------------- the pointing game
@pytest.fixture(scope="module")
def classifier(request):
    cache = os.environ.get("CV_COURSE_CACHE") or request.config.cache.mkdir("cv_course")
    return shapes_classifier(seed=0, cache_dir=cache)


def test_pointing_game_passes_grad_cam_and_reports_both_rates(classifier, capsys):
    G.check_pointing_game(honest_grad_cam, "cpu", classifier=classifier)
    printed = capsys.readouterr().out
    assert "your Grad-CAM" in printed and "the reference" in printed and "passed" in printed
    rate = float(printed.split("your Grad-CAM ")[1].split(",")[0])
    assert rate >= G.POINTING_THRESHOLD


def _contrast_map(model, layer, images, target):
    """Where the image differs most from its mean colour, at 8 x 8: finds the
    object without asking the model."""
    far = (images - images.mean(dim=(2, 3), keepdim=True)).norm(dim=1)  # [N, H, W]
    return F.adaptive_avg_pool2d(far[:, None], 8)[:, 0]


def test_pointing_game_needs_the_models_grad_cam(classifier, monkeypatch):
    monkeypatch.setattr(G, "POINTING_SCENES", 100)
    with pytest.raises(CheckFailed, match="wrong values"):
        G.check_pointing_game(_contrast_map, "cpu", classifier=classifier)
    with pytest.raises(CheckFailed, match="wrong values"):  # right peaks, wrong values
        G.check_pointing_game(lambda m, l, x, t: honest_grad_cam(m, l, x, t, relu=False), "cpu",
                              classifier=classifier)
    monkeypatch.setattr(G, "POINTING_THRESHOLD", 1.01)
    with pytest.raises(CheckFailed, match="below the 1.01 required"):
        G.check_pointing_game(honest_grad_cam, "cpu", classifier=classifier)


# ------------------------------------------------------------------- the rest
def test_a_global_hook_installed_before_the_check_is_refused():
    handle = torch.nn.modules.module.register_module_forward_hook(lambda m, i, o: None)
    try:
        with pytest.raises(CheckFailed, match="global module hook"):
            G.check_saliency_visible(honest_saliency, "cpu")
    finally:
        handle.remove()


def test_visible_failure_shows_expected_and_got():
    with pytest.raises(CheckFailed, match=r"(?s)expected:.*got:.*-2\.0000"):
        G.check_grad_cam_visible(lambda m, l, x, t: honest_grad_cam(m, l, x, t, relu=False), "cpu")


def test_hidden_failure_names_the_case_not_the_data():
    with pytest.raises(CheckFailed) as info:
        G.check_fgsm_hidden(lambda m, x, y, e: (x + e * torch.randn_like(x).sign()).clamp(0, 1), "cpu")
    message = str(info.value)
    assert "random" in message and "CNN" in message and "tensor(" not in message


def test_hidden_models_differ_between_runs():
    seen = []

    def spy(model, images, target):
        seen.append((images.shape, float(next(model.parameters()).sum())))
        return honest_saliency(model, images, target)

    G.check_saliency_hidden(spy, "cpu")
    first = list(seen)
    seen.clear()
    G.check_saliency_hidden(spy, "cpu")
    assert first != seen


def test_random_models_depend_on_the_mode_and_the_head():
    gen = torch.Generator().manual_seed(0)
    for head in ("gap", "flatten", "mlp"):
        model = G.random_classifier(gen, size=(14, 18), head=head)
        x = torch.rand(3, 3, 14, 18, generator=gen)
        assert model(x).shape == (3, 4)
        with torch.no_grad():
            train_out = model(x)
            assert not torch.allclose(model.eval()(x), train_out)  # BatchNorm statistics matter
