"""Checks for assignment 06 (understanding CNNs): ``saliency``, ``grad_cam``,
``fgsm``, and the pointing game of the student's Grad-CAM on the trained classifier.

Visible checks use tiny hand-made models whose answer can be worked out on
paper, and a small convolutional net for the properties every answer has
(shape, sign, range, budget, an image's map not depending on the rest of the
batch). Hidden checks build random networks at every run from fresh seeds
(depth, widths, activations, pooling, BatchNorm, dropout and the head all
drawn; float32 and float64; in train or eval mode; frozen or not) and compare
with the ``cv_course.interpret`` references, run on an untouched copy of each
model after the student's function has returned.

Around every call of a student's function the checks require:

* no delegation (the ``Forbidden`` list, :data:`FORBIDDEN`): the course's own
  code (every ``cv_course`` subpackage but ``grading``, ``device``, ``models``
  and ``data``, which only build the classifier and the scenes), this module,
  and the explanation and attack libraries ``captum``, ``pytorch_grad_cam``,
  ``torchcam``, ``torchattacks``, ``foolbox``, ``advertorch``;
* no process or raw thread started (``os.fork``, ``posix_spawn``, ``system``,
  ``exec*``, ``_posixsubprocess.fork_exec``, ``_thread.start_new_thread``): work
  handed to them would run unwatched;
* the model left as it was: parameters and buffers (BatchNorm's running
  statistics), every module's train/eval flag, ``requires_grad`` flags,
  parameters' ``.grad``, no module or tensor hook left behind, no attribute
  added to or replaced in any module; and the inputs unmodified;
* nothing global left behind: no global module hooks, no ``TorchFunctionMode``
  or ``TorchDispatchMode`` left on, no saved-tensor hooks, grad mode as it was.
  A global hook installed before a check (it could change what the reference
  computes) is refused as well.

:func:`check_pointing_game` runs the student's Grad-CAM on the trained classifier
(a fresh ``shapes_classifier()``, not the notebook's copy) over scenes from fresh
seeds; the maps must agree with the reference and hit the object often enough.
"""

from __future__ import annotations

import copy
import functools
import os
import pkgutil
import warnings

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import cv_course

from ..data import make_scene
from ..device import one_thread
from ..interpret import fgsm as _reference_fgsm  # bound at import, before any student code
from ..interpret import grad_cam as _reference_grad_cam
from ..interpret import pointing_game as _reference_pointing_game
from ..interpret import saliency as _reference_saliency
from .checks import call_student, check_close, check_tensor, fail, fresh_generator
from .failclosed import hidden_check
from .guard import PROCESS_STARTERS, Forbidden

LIBRARIES = ("captum", "pytorch_grad_cam", "torchcam", "torchattacks", "foolbox", "advertorch")


def _course_modules() -> tuple[str, ...]:
    """Every part of cv_course that holds reference code (all but grading, device,
    models and data: the classifier's forward pass lives in ``models``)."""
    keep = ("grading", "device", "models", "data")
    return tuple(f"cv_course.{m.name}" for m in pkgutil.iter_modules(cv_course.__path__)
                 if m.name not in keep)


def _process_and_thread_starters() -> tuple:
    """C functions that start a process or a raw thread. Neither would be watched
    by the guard, so work handed to them could call the references unseen.
    (Threads started with ``threading`` are watched: the guard hooks them; the
    guard forbids process starters in every assignment.)"""
    import _thread

    return PROCESS_STARTERS + (_thread.start_new_thread,)


FORBIDDEN = Forbidden(modules=_course_modules() + (__name__,) + LIBRARIES,
                      builtins=_process_and_thread_starters())

# The pointing game: Grad-CAM at the classifier's last feature map, for the true
# class, on fresh scenes; a hit is a peak within TOLERANCE pixels of the object.
# The reference scores 0.986 on average (0.973-0.997 over 20 draws of 300 scenes,
# standard deviation 0.006); a map that always points at the image centre scores
# about 0.72, vanilla saliency about 0.82.
POINTING_THRESHOLD = 0.93
POINTING_TOLERANCE = 4
POINTING_SCENES = 300
# ClassificationScenes' scenes (one object, 0.3-0.7 of a 64-px image), from seeds
# far above those of the classifier's training scenes (0 .. 3999).
_SCENES = dict(size=64, min_objects=1, max_objects=1, min_scale=0.3, max_scale=0.7)
_HELD_OUT_SEEDS = (2**24, 2**32)


def _exact_float32():
    """No TF32 on GPUs while comparing (cuDNN would otherwise run float32
    convolutions with ~3 significant digits)."""
    return torch.backends.cudnn.flags(enabled=torch.backends.cudnn.enabled, allow_tf32=False)


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def _map_tol(expected: Tensor) -> dict:
    """Tolerances for heatmaps, relative to the largest value of the batch."""
    scale = float(expected.abs().max()) if expected.numel() else 0.0
    if expected.dtype == torch.float64:
        return dict(rtol=1e-7, atol=max(1e-9 * scale, 1e-14))
    return dict(rtol=1e-3, atol=max(1e-4 * scale, 1e-7))


# ------------------------------------------------------------ side-effect checks
def _hook_dicts(obj) -> dict[str, tuple]:
    return {k: tuple(v) for k, v in vars(obj).items() if "hook" in k and isinstance(v, dict)}


def _snapshot(model: nn.Module) -> dict:
    """Everything about ``model`` that a student's function must leave as it was."""
    params = list(model.parameters())
    return dict(
        tensors={k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()},
        training=[(n, m.training) for n, m in model.named_modules()],
        requires_grad=[p.requires_grad for p in params],
        grads=[None if p.grad is None else p.grad.clone() for p in params],
        hooks=[(n, _hook_dicts(m)) for n, m in model.named_modules()],
        tensor_hooks=[(len(p._backward_hooks or {}),
                       len(getattr(p, "_post_accumulate_grad_hooks", None) or {})) for p in params],
        layout=[(n, type(m), tuple(vars(m))) for n, m in model.named_modules()],
    )


def _require_unchanged(model: nn.Module, before: dict, name: str, case: str) -> None:
    after = _snapshot(model)
    where = f" on {case}"
    if after["hooks"] != before["hooks"] or after["tensor_hooks"] != before["tensor_hooks"]:
        fail(f"{name} left a hook on the model{where}; keep the handle that register_*_hook "
             "returns and call handle.remove() before returning (in a finally: block)")
    if after["layout"] != before["layout"]:
        fail(f"{name} changed the model's modules or their attributes{where}; work with the "
             "model as it is")
    if after["training"] != before["training"]:
        fail(f"{name} changed the model's train/eval mode{where}: remember model.training "
             "before calling model.eval() and put it back with model.train(was_training)")
    if after["tensors"].keys() != before["tensors"].keys() or any(
            not torch.equal(after["tensors"][k], v) for k, v in before["tensors"].items()):
        fail(f"{name} changed the model's parameters or buffers{where} (in train mode, "
             "BatchNorm updates its running statistics at every forward pass): run the model "
             "in eval mode and do not change its weights")
    if after["requires_grad"] != before["requires_grad"]:
        fail(f"{name} changed the requires_grad flags of the model's parameters{where}; "
             "make the input require grad instead, and leave the parameters alone")
    for g0, g1 in zip(before["grads"], after["grads"]):
        if (g0 is None) != (g1 is None) or (g0 is not None and not torch.equal(g0, g1)):
            fail(f"{name} left gradients in the model's parameters (.grad){where}; use "
                 "torch.autograd.grad(score, x), which computes only the gradient you ask for")


def _call(fn, name: str, model: nn.Module, args: tuple, case: str):
    """Call ``fn(model, *args)`` under the guard and check what it left behind
    (``call_student`` checks the global state; this checks the model's)."""
    before = _snapshot(model)
    with _exact_float32():
        out = call_student(fn, (model, *args), FORBIDDEN, name, case)
    _require_unchanged(model, before, name, case)
    return out


def _quiet(check):
    """Run a public check with warnings silenced: a warning written to stderr
    would cost the whole test cell."""

    @functools.wraps(check)
    def run(*args, **kwargs):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return check(*args, **kwargs)

    return run


# --------------------------------------------------------------- random models
def random_classifier(gen: torch.Generator, *, in_channels: int = 3, num_classes: int = 4,
                      size: tuple[int, int] = (16, 16), head: str = "gap",
                      batchnorm: bool = True) -> nn.Sequential:
    """A random small CNN ``Sequential(features, head)`` in train mode, float32, on the CPU.

    ``features``: 2-3 stages ``Sequential(conv, [BatchNorm], activation)``,
    each but the last maybe followed by a 2x max or average pool; BatchNorm gets
    random running statistics, so eval and train mode differ. ``head``: "gap"
    (global average pooling + linear), "flatten" (flatten + dropout + linear, not
    CAM-compatible) or "mlp" (2x2 max pooling + a two-layer MLP with dropout).
    """
    seed = int(torch.randint(2**62, (1,), generator=gen))
    pick = lambda options: options[int(torch.randint(len(options), (1,), generator=gen))]  # noqa: E731
    with torch.random.fork_rng(devices=[]):  # seeded init without touching global state
        torch.manual_seed(seed)
        stages, c = [], in_channels
        n_stages = int(torch.randint(2, 4, (1,), generator=gen))
        for i in range(n_stages):
            c_out, k = int(torch.randint(4, 9, (1,), generator=gen)), pick((3, 3, 5))
            act = pick((nn.ReLU, lambda: nn.LeakyReLU(0.1), nn.GELU, nn.ELU, nn.Tanh))
            layers = [nn.Conv2d(c, c_out, k, padding=k // 2, bias=not batchnorm)]
            layers += [nn.BatchNorm2d(c_out)] if batchnorm else []
            stages.append(nn.Sequential(*layers, act()))
            if i < n_stages - 1 and min(size) >= 12 and bool(torch.rand(1, generator=gen) < 0.7):
                stages.append(pick((nn.MaxPool2d, nn.AvgPool2d))(2))
                size = (size[0] // 2, size[1] // 2)
            c = c_out
        features = nn.Sequential(*stages)
        if head == "gap":
            top = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, num_classes))
        elif head == "flatten":
            top = nn.Sequential(nn.Flatten(), nn.Dropout(0.3), nn.Linear(c * size[0] * size[1], num_classes))
        else:
            top = nn.Sequential(nn.AdaptiveMaxPool2d(2), nn.Flatten(), nn.Linear(4 * c, 16), nn.ReLU(),
                                nn.Dropout(0.2), nn.Linear(16, num_classes))
        model = nn.Sequential()
        model.add_module("features", features)
        model.add_module("head", top)
    return _random_batchnorm(model, gen)


def _random_batchnorm(model: nn.Module, gen: torch.Generator) -> nn.Module:
    """Random running statistics and affine parameters for every BatchNorm, so
    that a forward pass in train mode (batch statistics) differs from eval mode."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(0.3 * torch.randn(n, generator=gen))
                m.running_var.copy_(0.5 + 1.5 * torch.rand(n, generator=gen))
                m.weight.copy_(0.5 + torch.rand(n, generator=gen))
                m.bias.copy_(0.2 * torch.randn(n, generator=gen))
    return model


def _prepare(model: nn.Module, *, device, dtype=torch.float32, train: bool = False,
             frozen: str = "none") -> nn.Module:
    """Move, set the mode and freeze ("none", "first": the first stage, "all")."""
    model = model.to(device=device, dtype=dtype).train(train)
    if frozen == "all":
        model.requires_grad_(False)
    elif frozen == "first":
        model.features[0].requires_grad_(False)
    return model


def _random_images(gen, n: int, c: int, size, *, device, dtype=torch.float32,
                   extremes: bool = False) -> Tensor:
    """Tensor[n, c, H, W] uniform in [0, 1]; with ``extremes``, a quarter of the
    pixels exactly 0 or 1 (so that clamping matters)."""
    x = torch.rand(n, c, *size, generator=gen, dtype=torch.float64)
    if extremes:
        u = torch.rand(x.shape, generator=gen, dtype=torch.float64)
        x = torch.where(u < 0.125, 0.0, torch.where(u > 0.875, 1.0, x))
    return x.to(device=device, dtype=dtype)


def _random_targets(gen, n: int, num_classes: int, device) -> Tensor:
    return torch.randint(num_classes, (n,), generator=gen).to(device)


def _layer_name(model: nn.Module, layer: nn.Module) -> str:
    return next(n for n, m in model.named_modules() if m is layer)


def _hidden_case(gen, device, dtype, train, frozen, head, n, c=3, num_classes=4):
    """A random model prepared as asked, its input size and a description of the case.
    Models in train mode always have BatchNorm (so that forgetting eval mode shows);
    the others have it half of the time."""
    H, W = (int(v) for v in torch.randint(12, 21, (2,), generator=gen))
    batchnorm = train or bool(torch.rand(1, generator=gen) < 0.5)
    model = random_classifier(gen, in_channels=c, num_classes=num_classes, size=(H, W), head=head,
                              batchnorm=batchnorm)
    model = _prepare(model, device=device, dtype=dtype, train=train, frozen=frozen)
    mode = "train" if train else "eval"
    kind = {"gap": "global average pooling", "flatten": "flatten + linear", "mlp": "an MLP head"}[head]
    frozen_text = {"none": "", "first": ", first stage frozen", "all": ", all parameters frozen"}[frozen]
    norm = "BatchNorm" if batchnorm else "no BatchNorm"
    case = (f"a random {len(model.features)}-block CNN ({norm}) with {kind}, {mode} mode{frozen_text}, "
            f"{n} image(s) of {c}x{H}x{W}, {_dtype_name(dtype)}")
    return model, (H, W), case


# -------------------------------------------------------------------- saliency
def _check_saliency_case(saliency, model, images, target, case, show=False):
    ref_model = copy.deepcopy(model)  # untouched by the student's call
    out = _call(saliency, "saliency", model, (images, target), case)
    N, _, H, W = images.shape
    check_tensor(out, "saliency", shape=(N, H, W), dtype=images.dtype, device=images.device, case=case)
    if (out < 0).any():
        fail(f"saliency returned negative values on {case}: take the absolute value of the gradient")
    with _exact_float32():
        expected = _reference_saliency(ref_model, images, target)
    check_close(out, expected, "saliency", case=case, show=show, **_map_tol(expected))
    return out


def linear_saliency_example(device="cpu") -> tuple[nn.Module, Tensor, Tensor, Tensor]:
    """A linear classifier on 2 x 2 images with 2 channels: its score gradient is
    its weight, so the saliency is ``max_c |W[target, c]|`` for any image.
    Returns (model, images [2, 2, 2, 2], target [2], expected [2, 2, 2])."""
    w = torch.tensor([
        [[[1.0, -2.0], [0.5, 0.0]], [[-3.0, 1.0], [0.25, -0.5]]],  # class 0 -> [[3, 2], [0.5, 0.5]]
        [[[0.0, 4.0], [-1.0, 1.0]], [[2.0, -1.0], [1.0, -2.0]]],  # class 1 -> [[2, 4], [1, 2]]
        [[[0.1, 0.2], [0.3, 0.4]], [[-0.4, -0.3], [-0.2, -0.1]]],  # class 2 -> [[0.4, 0.3], [0.3, 0.4]]
    ])  # [3 classes, 2 channels, 2, 2]
    model = nn.Sequential(nn.Flatten(), nn.Linear(8, 3))
    with torch.no_grad():
        model[1].weight.copy_(w.reshape(3, 8))
        model[1].bias.copy_(torch.tensor([0.5, -0.5, 0.0]))
    images = torch.tensor([[[[0.2, 0.9], [0.4, 0.1]], [[0.7, 0.3], [0.5, 0.6]]],
                           [[[0.0, 1.0], [0.3, 0.8]], [[0.6, 0.2], [0.9, 0.4]]]])
    target = torch.tensor([0, 1])
    expected = torch.tensor([[[3.0, 2.0], [0.5, 0.5]], [[2.0, 4.0], [1.0, 2.0]]])
    f32 = dict(device=device, dtype=torch.float32)
    return model.to(**f32), images.to(**f32), target.to(device), expected.to(**f32)


def _visible_net(device) -> tuple[nn.Module, Tensor, Tensor]:
    """A fixed small CNN in train mode, float32, and 3 images of 3 x 16 x 12 with targets:
    ``features`` = conv-BN-ReLU, 2x max pool (``features[1]``), conv-BN-ReLU; ``head`` =
    2x2 max pooling, linear, ReLU, dropout, linear to 4 classes."""
    gen = torch.Generator().manual_seed(6)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(6)
        features = nn.Sequential(
            nn.Sequential(nn.Conv2d(3, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6), nn.ReLU()),
            nn.MaxPool2d(2),
            nn.Sequential(nn.Conv2d(6, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU()),
        )
        head = nn.Sequential(nn.AdaptiveMaxPool2d(2), nn.Flatten(), nn.Linear(32, 16), nn.ReLU(),
                             nn.Dropout(0.2), nn.Linear(16, 4))
        model = nn.Sequential()
        model.add_module("features", features)
        model.add_module("head", head)
    model = _prepare(_random_batchnorm(model, gen), device=device, dtype=torch.float32, train=True)
    images = _random_images(gen, 3, 3, (16, 12), device=device)
    return model, images, torch.tensor([2, 0, 3], device=device)


def _require_batch_independent(out: Tensor, alone: Tensor, name: str) -> None:
    if not torch.allclose(out[:1], alone, rtol=1e-4, atol=1e-6 * max(float(out.abs().max()), 1e-6)):
        fail(f"{name} of an image changes when other images are in the batch: run the model "
             "in eval mode (model.eval(), then restore its mode), so that BatchNorm uses its "
             "running statistics and dropout is off")


@_quiet
def check_saliency_visible(saliency, device) -> None:
    """The linear example, then shape, sign, batch independence and side effects
    on a small CNN in train mode."""
    model, images, target, expected = linear_saliency_example(device)
    out = _call(saliency, "saliency", model, (images, target), "the linear example")
    check_tensor(out, "saliency", shape=(2, 2, 2), dtype=torch.float32, device=images.device,
                 case="the linear example")
    check_close(out, expected, "saliency", rtol=1e-5, atol=1e-6, show=True,
                case="the linear example (targets 0 and 1; the gradient of a linear score is its weight)")
    model, images, target = _visible_net(device)
    case = "a small CNN in train mode, 3 images of 3x16x12"
    out = _call(saliency, "saliency", model, (images, target), case)
    check_tensor(out, "saliency", shape=(3, 16, 12), dtype=images.dtype, device=images.device, case=case)
    if (out < 0).any():
        fail(f"saliency returned negative values on {case}: take the absolute value of the gradient")
    if not (out > 0).any():
        fail(f"saliency returned all zeros on {case}")
    alone = _call(saliency, "saliency", model, (images[:1], target[:1]), "the first image alone")
    _require_batch_independent(out, alone, "the saliency")
    print("saliency: visible checks passed")


@_quiet
@hidden_check  # no points under autograde without the course's tamper scan
def check_saliency_hidden(saliency, device) -> None:
    """Fresh random CNNs (train/eval, float32/float64, frozen or not) against the reference."""
    gen = fresh_generator()
    for dtype, train, frozen, head, n, c in [(torch.float32, True, "none", "gap", 3, 3),
                                             (torch.float64, False, "first", "flatten", 2, 3),
                                             (torch.float32, False, "all", "mlp", 4, 1),
                                             (torch.float64, True, "none", "mlp", 1, 3)]:
        model, size, case = _hidden_case(gen, device, dtype, train, frozen, head, n, c)
        images = _random_images(gen, n, c, size, device=device, dtype=dtype)
        _check_saliency_case(saliency, model, images, _random_targets(gen, n, 4, device), case)
    print("saliency: hidden checks passed")


# -------------------------------------------------------------------- grad_cam
def _check_grad_cam_case(grad_cam, model, layer, images, target, case, show=False):
    ref_model = copy.deepcopy(model)
    ref_layer = ref_model.get_submodule(_layer_name(model, layer))
    out = _call(grad_cam, "grad_cam", model, (layer, images, target), case)
    with _exact_float32():
        expected = _reference_grad_cam(ref_model, ref_layer, images, target)
    check_tensor(out, "grad_cam", shape=expected.shape, dtype=images.dtype, device=images.device, case=case)
    if (out < 0).any():
        fail(f"grad_cam returned negative values on {case}: Grad-CAM ends with a ReLU")
    check_close(out, expected, "grad_cam", case=case, show=show, **_map_tol(expected))
    return out


def handmade_grad_cam_example(device="cpu") -> tuple[nn.Module, nn.Module, Tensor, Tensor, Tensor]:
    """A 1x1 convolution (the layer) with activations ``A0 = x`` and ``A1 = -x``,
    then flatten + linear without bias. ``dS_c / dA_k[i, j] = W[c, k, i, j]``, so
    ``alpha_k`` is the mean of ``W[c, k]`` and the map is ``ReLU((alpha_0 - alpha_1) x)``.
    Class 0: alpha = (2, 0), map ReLU(2x); class 1: alpha = (0, 1), map ReLU(-x).
    Returns (model, layer, images [2, 1, 2, 2], target [2], expected [2, 2, 2])."""
    model = nn.Sequential(nn.Conv2d(1, 2, 1, bias=False), nn.Flatten(), nn.Linear(8, 2, bias=False))
    w = torch.tensor([
        [[[1.0, 3.0], [2.0, 2.0]], [[0.0, 1.0], [0.0, -1.0]]],  # class 0: means 2 and 0
        [[[0.0, 0.0], [1.0, -1.0]], [[1.0, 1.0], [1.0, 1.0]]],  # class 1: means 0 and 1
    ])  # [2 classes, 2 channels, 2, 2]
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([1.0, -1.0]).reshape(2, 1, 1, 1))
        model[2].weight.copy_(w.reshape(2, 8))
    images = torch.tensor([[[[1.0, -1.0], [0.5, 2.0]]], [[[-1.0, 2.0], [0.5, -3.0]]]])
    target = torch.tensor([0, 1])
    expected = torch.tensor([[[2.0, 0.0], [1.0, 4.0]], [[1.0, 0.0], [0.0, 3.0]]])
    f32 = dict(device=device, dtype=torch.float32)
    model = model.to(**f32)
    return model, model[0], images.to(**f32), target.to(device), expected.to(**f32)


@_quiet
def check_grad_cam_visible(grad_cam, device) -> None:
    """The hand-made example, then shape, sign, batch independence and no hooks
    left on a small CNN in train mode."""
    model, layer, images, target, expected = handmade_grad_cam_example(device)
    case = "the hand-made example (maps ReLU(2x) for class 0 and ReLU(-x) for class 1)"
    out = _call(grad_cam, "grad_cam", model, (layer, images, target), case)
    check_tensor(out, "grad_cam", shape=(2, 2, 2), dtype=torch.float32, device=images.device, case=case)
    check_close(out, expected, "grad_cam", rtol=1e-5, atol=1e-6, show=True, case=case)
    model, images, target = _visible_net(device)
    layer = model.features[1]  # after the first pooling: half the image size
    case = "a small CNN in train mode, layer features[1] (output 8x6), 3 images"
    out = _call(grad_cam, "grad_cam", model, (layer, images, target), case)
    check_tensor(out, "grad_cam", shape=(3, 8, 6), dtype=images.dtype, device=images.device, case=case)
    if (out < 0).any():
        fail(f"grad_cam returned negative values on {case}: Grad-CAM ends with a ReLU")
    alone = _call(grad_cam, "grad_cam", model, (layer, images[:1], target[:1]), "the first image alone")
    _require_batch_independent(out, alone, "the Grad-CAM map")
    print("grad_cam: visible checks passed")


@_quiet
@hidden_check  # no points under autograde without the course's tamper scan
def check_grad_cam_hidden(grad_cam, device) -> None:
    """Fresh random CNNs and layers (a block, a convolution, a BatchNorm, an
    activation, a pooling, the whole body) against the reference."""
    gen = fresh_generator()
    for dtype, train, frozen, head, n, which in [(torch.float32, True, "none", "gap", 3, "any"),
                                                 (torch.float64, False, "none", "flatten", 2, "last"),
                                                 (torch.float32, False, "all", "gap", 3, "body"),
                                                 (torch.float64, True, "first", "mlp", 2, "any"),
                                                 (torch.float32, False, "none", "flatten", 1, "first")]:
        model, size, case = _hidden_case(gen, device, dtype, train, frozen, head, n)
        candidates = [m for m in model.features.modules()]  # the body, its blocks and their layers
        layer = {"any": candidates[int(torch.randint(1, len(candidates), (1,), generator=gen))],
                 "last": model.features[-1], "body": model.features,
                 "first": model.features[0][0]}[which]
        layer_case = f"{case}, layer {_layer_name(model, layer)} ({type(layer).__name__})"
        images = _random_images(gen, n, 3, size, device=device, dtype=dtype)
        _check_grad_cam_case(grad_cam, model, layer, images, _random_targets(gen, n, 4, device), layer_case)
    print("grad_cam: hidden checks passed")


# ---------------------------------------------------------------- pointing game
def held_out_scenes(n: int, device) -> tuple[Tensor, Tensor, list[int]]:
    """``n`` scenes from seeds drawn from the operating system: (images [n, 3, 64, 64],
    labels [n], seeds). The masks are made later, from the seeds."""
    lo, hi = _HELD_OUT_SEEDS
    seeds = [lo + int.from_bytes(os.urandom(8), "little") % (hi - lo) for _ in range(n)]
    with one_thread():
        scenes = [make_scene(s, **_SCENES) for s in seeds]
    images = torch.stack([s.image for s in scenes]).to(device)
    labels = torch.stack([s.labels[0] - 1 for s in scenes]).to(device)
    return images, labels, seeds


def _masks(seeds: list[int], device) -> Tensor:
    """The object mask of each scene, Tensor[n, 64, 64] bool."""
    with one_thread():
        return torch.stack([make_scene(s, **_SCENES).masks[0] for s in seeds]).to(device)


@_quiet
def check_pointing_game(grad_cam, device, classifier: nn.Module | None = None) -> None:
    """The student's Grad-CAM at the trained classifier's last feature map, for the
    true class, on fresh scenes: it must be Grad-CAM of that model (agree with the
    reference) and its peak must land on the object often enough.

    ``classifier`` defaults to a fresh ``shapes_classifier()`` (trained if not cached)."""
    if classifier is None:
        from ..models.classifier import shapes_classifier

        classifier = shapes_classifier()
    model = classifier.to(device).eval()
    ref_model = copy.deepcopy(model)
    images, labels, seeds = held_out_scenes(POINTING_SCENES, device)
    case = f"the trained classifier, layer features, {POINTING_SCENES} new scenes"
    outs, refs = [], []
    for x, t in zip(images.split(100), labels.split(100)):
        out = _call(grad_cam, "grad_cam", model, (model.features, x, t), case)
        check_tensor(out, "grad_cam", shape=(len(x), 8, 8), dtype=x.dtype, device=x.device, case=case)
        outs.append(out.detach())
        with _exact_float32():
            refs.append(_reference_grad_cam(ref_model, ref_model.features, x, t))
    out, expected = torch.cat(outs), torch.cat(refs)
    check_close(out, expected, "grad_cam", case=case, **_map_tol(expected))
    # The object masks are made only now, after every map has been computed.
    masks = _masks(seeds, device)
    rate = _reference_pointing_game(out, masks, tolerance=POINTING_TOLERANCE)
    reference = _reference_pointing_game(expected, masks, tolerance=POINTING_TOLERANCE)
    exact = _reference_pointing_game(out, masks)
    print(f"pointing game on {POINTING_SCENES} new scenes ({POINTING_TOLERANCE} px tolerance): "
          f"your Grad-CAM {rate:.3f}, the reference {reference:.3f} (required: {POINTING_THRESHOLD}); "
          f"without tolerance: {exact:.3f}")
    if rate < POINTING_THRESHOLD:
        fail(f"your Grad-CAM's peak lands on the object in {rate:.3f} of the scenes, below the "
             f"{POINTING_THRESHOLD} required")
    print("pointing game: passed")


# ------------------------------------------------------------------------ fgsm
def _loss_gradient(model: nn.Module, images: Tensor, labels: Tensor) -> Tensor:
    """d CE / d images in eval mode on a copy of the model, Tensor[N, C, H, W]."""
    model = copy.deepcopy(model).eval()
    x = images.detach().clone().requires_grad_(True)
    with torch.enable_grad(), _exact_float32():
        loss = F.cross_entropy(model(x), labels, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x)
    return grad


def _require_range_and_budget(out: Tensor, images: Tensor, eps: float, case: str) -> None:
    if (out < 0).any() or (out > 1).any():
        fail(f"fgsm returned pixels outside [0, 1] on {case}: clamp the adversarial image")
    tiny = 1e-6 if images.dtype == torch.float32 else 1e-12
    if ((out - images).abs() > eps + tiny).any():
        fail(f"fgsm changed a pixel by more than eps = {eps:g} on {case}")


def _check_fgsm_case(fgsm, model, images, labels, eps, case, show=False):
    ref_model = copy.deepcopy(model)
    out = _call(fgsm, "fgsm", model, (images, labels, eps), case)
    check_tensor(out, "fgsm", shape=images.shape, dtype=images.dtype, device=images.device, case=case)
    tiny = 1e-6 if images.dtype == torch.float32 else 1e-12
    _require_range_and_budget(out, images, eps, case)
    with _exact_float32():
        expected = _reference_fgsm(ref_model, images, labels, eps)
    # Where the gradient is ~0 its sign is decided by rounding: any sign is right there.
    g = _loss_gradient(ref_model, images, labels).abs()
    rel = 1e-4 if images.dtype == torch.float32 else 1e-9
    ambiguous = g <= rel * g.amax(dim=(1, 2, 3), keepdim=True)
    wrong = ((out - expected).abs() > tiny) & ~ambiguous
    if wrong.any():
        if show:
            fail(f"fgsm returned the wrong values on {case}.\nexpected:\n{expected}\ngot:\n{out}")
        fail(f"fgsm returned the wrong values on {case} ({int(wrong.sum())} of {wrong.numel()} "
             "pixels differ: step along the sign of the gradient of the cross-entropy loss)")
    return out


def linear_fgsm_example(device="cpu") -> tuple[nn.Module, Tensor, Tensor, float, Tensor]:
    """Two classes, a linear model on 2 x 2 one-channel images. With label 0 the
    loss gradient is ``p1 (W1 - W0)``, so FGSM moves each pixel by eps along
    ``sign(W1 - W0) = (+, -, +, -)``; with label 1, the other way. eps = 0.1.
    Returns (model, images [2, 1, 2, 2], labels [2], eps, expected [2, 1, 2, 2])."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([[1.0, 1.0, -1.0, 0.0], [2.0, -1.0, 0.0, -1.0]]))
        model[1].bias.zero_()
    images = torch.tensor([[[[0.5, 0.0], [1.0, 0.3]]], [[[0.05, 0.95], [0.5, 0.5]]]])
    labels = torch.tensor([0, 1])
    expected = torch.tensor([[[[0.6, 0.0], [1.0, 0.2]]], [[[0.0, 1.0], [0.4, 0.6]]]])
    f32 = dict(device=device, dtype=torch.float32)
    return model.to(**f32), images.to(**f32), labels.to(device), 0.1, expected.to(**f32)


@_quiet
def check_fgsm_visible(fgsm, device) -> None:
    """The linear example, then range, budget, eps = 0 and side effects on a small CNN."""
    model, images, labels, eps, expected = linear_fgsm_example(device)
    case = "the linear example (eps 0.1; pixels move along sign(W1 - W0), then are clamped)"
    out = _call(fgsm, "fgsm", model, (images, labels, eps), case)
    check_tensor(out, "fgsm", shape=(2, 1, 2, 2), dtype=torch.float32, device=images.device, case=case)
    _require_range_and_budget(out, images, eps, case)
    check_close(out, expected, "fgsm", rtol=0, atol=1e-6, show=True, case=case)
    model, images, labels = _visible_net(device)
    for eps in (8 / 255, 0.0):
        case = f"a small CNN in train mode, eps {eps:.4f}"
        out = _call(fgsm, "fgsm", model, (images, labels, eps), case)
        check_tensor(out, "fgsm", shape=images.shape, dtype=images.dtype, device=images.device, case=case)
        _require_range_and_budget(out, images, eps, case)
        step = (out - images).abs()
        moved = (step - eps).abs() < 1e-6  # every pixel moves by exactly eps unless clamped
        if not (moved | (out == 0) | (out == 1) | (step < 1e-7)).all():
            fail(f"fgsm moved some pixels by less than eps (and not because of clamping) on {case}: "
                 "step by eps * sign(gradient), not by a multiple of the gradient")
    alone = _call(fgsm, "fgsm", model, (images[:1], labels[:1], 8 / 255), "the first image alone")
    batch = _call(fgsm, "fgsm", model, (images, labels, 8 / 255), "3 images")
    if not torch.allclose(batch[:1], alone, atol=1e-6):
        fail("fgsm changes an image differently when other images are in the batch: run the model "
             "in eval mode (model.eval(), then restore its mode)")
    print("fgsm: visible checks passed")


@_quiet
@hidden_check  # no points under autograde without the course's tamper scan
def check_fgsm_hidden(fgsm, device) -> None:
    """Fresh random CNNs, budgets from 0 to 1, images with saturated pixels,
    against the reference."""
    gen = fresh_generator()
    eps_random = float(0.01 + 0.09 * torch.rand(1, generator=gen))
    for dtype, train, frozen, head, n, eps in [(torch.float32, True, "none", "gap", 4, eps_random),
                                               (torch.float64, False, "first", "flatten", 3, 8 / 255),
                                               (torch.float32, False, "all", "mlp", 2, 0.03),
                                               (torch.float64, True, "none", "gap", 2, 0.0),
                                               (torch.float32, False, "none", "mlp", 2, 1.0)]:
        model, size, case = _hidden_case(gen, device, dtype, train, frozen, head, n)
        images = _random_images(gen, n, 3, size, device=device, dtype=dtype, extremes=True)
        labels = _random_targets(gen, n, 4, device)
        _check_fgsm_case(fgsm, model, images, labels, eps, f"{case}, eps {eps:.4f}")
    print("fgsm: hidden checks passed")
