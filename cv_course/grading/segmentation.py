"""Checks for assignment 01 (segmentation): ``max_unpool2d``, ``conv_transpose2d``,
a U-Net's ``forward``, ``pixel_cross_entropy`` and the trained model.

Visible checks use the lecture's worked examples and say what was expected.
Hidden checks draw fresh random and edge-case inputs at every run and compare
with the ``cv_course`` references on the student's device. The trained model is
scored by mean IoU on scenes generated from fresh seeds; their labels are
generated only after the model has made its predictions.

What a student's code may not use while it is checked (the ``Forbidden`` lists):

* everywhere: the course's own code (every ``cv_course`` subpackage except
  ``grading`` and ``device``: ``ops``, ``models``, ``losses``, ``metrics``,
  ``train``, ``data``, ...), ``torchvision.ops``, ``torchvision.models`` and the
  ``torchvision::`` operators;
* ``max_unpool2d``: torch's unpooling (``aten::max_unpool2d/3d``) and the
  backward of max pooling (``aten::max_pool2d_with_indices_backward``, which
  *is* max unpooling);
* ``conv_transpose2d``: any transposed convolution (``aten::convolution`` or
  ``aten::_convolution`` with ``transposed=True``, ``aten::conv_transpose*``,
  ``aten::slow_conv_transpose*``, ``aten::cudnn_convolution_transpose``), the
  backward of a convolution (``aten::convolution_backward`` and its backend
  variants: autograd of a convolution computes a transposed one), and
  ``F.fold`` (``aten::col2im``), which is exactly the overlap-and-add this
  exercise is about. A regular convolution (``transposed=False``) is allowed:
  convolving a zero-stuffed input with the flipped kernel is a derivation of
  its own;
* ``pixel_cross_entropy``: ``aten::nll_loss*`` and ``aten::cross_entropy_loss``
  (``F.nll_loss``, ``F.cross_entropy``); ``log_softmax`` is allowed.

Only forward passes run under the guard; gradients are then taken by autograd
outside it (the backward of an allowed ``F.conv2d`` is a transposed convolution,
and that is fine there).

The trained model is put in eval mode with ``nn.Module.train(model, False)``
(a redefined ``eval`` cannot keep it training) and run under ``torch.no_grad()``
and the guard on copies of the images (so it cannot run ``cv_course.models`` or
regenerate scenes with ``cv_course.data``, nor change the images); the labels
are generated only after its last prediction; an image alone must get the same
prediction as in a batch (no batch statistics); and ``SCENES``, which the
notebook imports, is read-only.
"""

from __future__ import annotations

import os
import pkgutil
from types import MappingProxyType

import torch
from torch import Tensor, nn

import cv_course

from ..data import NUM_CLASSES, make_scene
from ..losses import pixel_cross_entropy as _reference_loss  # bound at import, before any student code
from ..metrics import mean_iou as _reference_mean_iou
from ..models import UNet as _ReferenceUNet
from ..ops import conv_transpose2d as _reference_conv_transpose2d
from ..ops import max_unpool2d as _reference_max_unpool2d
from .checks import call_student, check_close, check_tensor, fail, fresh_generator
from .failclosed import hidden_check
from .guard import Forbidden

# The scenes of the assignment: training, validation and the grader's held-out
# scenes all come from make_scene(seed, **SCENES). Read-only, because the notebook
# imports this very object: SCENES.update(max_objects=0) would otherwise turn the
# held-out scenes into empty backgrounds that any model segments perfectly. The
# checks read an immutable copy all the same.
SCENES = MappingProxyType({"size": 64, "min_scale": 0.25, "max_scale": 0.5})
_SCENE_ITEMS = tuple(SCENES.items())
# Held-out mean IoU a trained model must reach. The solution's recipe (UNet(3, 5, 6, 3),
# 3072 scenes, 4 epochs of batch 16, Adam with a one-cycle schedule peaking at 1e-2; about a
# minute on one busy CPU thread) reached 0.74-0.81 over five training seeds (mean 0.78)
# on 256 held-out scenes: at least 0.09 above the threshold.
MIOU_THRESHOLD = 0.65
_HELD_OUT_SEEDS = (2**24, 2**32)  # scene seeds of the grader: far above any training/validation seed


def _course_modules() -> tuple[str, ...]:
    """Every part of cv_course that holds reference code (all but grading and device)."""
    return tuple(f"cv_course.{m.name}" for m in pkgutil.iter_modules(cv_course.__path__)
                 if m.name not in ("grading", "device"))


def _short(op_name: str) -> str:
    """'aten::convolution_backward.default' -> 'convolution_backward'."""
    return op_name.split("::")[-1].split(".")[0]


def _unpooling(name: str, args, kwargs) -> str | None:
    short = _short(name)
    if "unpool" in short or ("max_pool" in short and "backward" in short):
        return f"the operator {name} (max unpooling)"
    return None


def _transposed_convolution(name: str, args, kwargs) -> str | None:
    short = _short(name)
    if "conv" in short and ("transpose" in short or "backward" in short):
        return f"the operator {name} (a transposed convolution)"
    if short in ("convolution", "_convolution", "convolution_overrideable"):
        transposed = kwargs.get("transposed", args[6] if len(args) > 6 else False)
        if transposed:
            return f"the operator {name} with transposed=True (a transposed convolution)"
    if short == "col2im":
        return f"the operator {name} (F.fold: the overlap-and-add to write yourself)"
    return None


def _nll(name: str, args, kwargs) -> str | None:
    short = _short(name)
    if short.startswith("nll_loss") or short == "cross_entropy_loss":
        return f"the operator {name} (F.nll_loss / F.cross_entropy)"
    return None


COURSE = Forbidden(modules=_course_modules() + ("torchvision.ops", "torchvision.models"),
                   ops=("torchvision::",))
FORBIDDEN_UNPOOL = COURSE + Forbidden(op_rules=(_unpooling,))
FORBIDDEN_CONV_T = COURSE + Forbidden(op_rules=(_transposed_convolution,))
FORBIDDEN_LOSS = COURSE + Forbidden(op_rules=(_nll,))
FORBIDDEN_MODEL = COURSE


def _tol(dtype: torch.dtype, device=None) -> dict:
    """Tolerances for comparing with a reference. A GPU may run float32
    convolutions in TF32 (about 3 significant digits, cuDNN's default), so an
    honest answer built on F.conv2d gets float32 slack there; float64 is exact."""
    if dtype == torch.float64:
        return dict(rtol=1e-9, atol=1e-11)
    if device is not None and torch.device(device).type == "cuda":
        return dict(rtol=1e-2, atol=1e-2)
    return dict(rtol=1e-4, atol=1e-5)


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


# ----------------------------------------------------------------- max_unpool2d
def lecture_unpool_example(device="cpu", dtype=torch.float32) -> tuple[Tensor, Tensor, Tensor]:
    """The lecture's max-unpooling example: the maxima of a 4 x 4 input under 2 x 2
    pooling sit at (1, 1), (0, 2), (3, 0), (3, 3); unpooling [[1, 2], [3, 4]] puts
    each value back there. Returns (values, indices, expected output), all [1, 1, ., .]."""
    x = torch.tensor([[1, 2, 6, 3], [3, 5, 2, 1], [1, 2, 2, 1], [7, 3, 4, 8]], dtype=dtype, device=device)
    _, indices = torch.nn.functional.max_pool2d(x[None, None], 2, return_indices=True)
    values = torch.tensor([[1, 2], [3, 4]], dtype=dtype, device=device)[None, None]
    expected = torch.tensor([[0, 0, 2, 0], [0, 1, 0, 0], [0, 0, 0, 0], [3, 0, 0, 4]], dtype=dtype,
                            device=device)[None, None]
    return values, indices, expected


def _check_unpool_case(fn, values: Tensor, indices: Tensor, size: tuple[int, int], kernel, stride,
                       padding, case: str, show: bool) -> None:
    out = call_student(fn, (values, indices, size), FORBIDDEN_UNPOOL, "max_unpool2d", case)
    N, C = values.shape[:2]
    check_tensor(out, "max_unpool2d", shape=(N, C, *size), dtype=values.dtype, device=values.device,
                 case=case)
    expected = _reference_max_unpool2d(values, indices, kernel, stride, padding, size)
    check_close(out, expected, "max_unpool2d", rtol=0, atol=0, case=case, show=show)


def check_max_unpool2d_visible(max_unpool2d, device) -> None:
    """The lecture's 4 x 4 example, then an odd size where output_size matters."""
    values, indices, expected = lecture_unpool_example(device)
    out = call_student(max_unpool2d, (values, indices, (4, 4)), FORBIDDEN_UNPOOL, "max_unpool2d",
                       "the lecture's 4 x 4 example")
    check_tensor(out, "max_unpool2d", shape=(1, 1, 4, 4), dtype=values.dtype, device=values.device,
                 case="the lecture's 4 x 4 example")
    check_close(out, expected, "max_unpool2d", rtol=0, atol=0, case="the lecture's 4 x 4 example",
                show=True)
    gen = fresh_generator()
    x = torch.randn(2, 3, 7, 9, generator=gen).to(device)
    pooled, idx = torch.nn.functional.max_pool2d(x, 2, return_indices=True)  # [2, 3, 3, 4]
    _check_unpool_case(max_unpool2d, pooled, idx, (7, 9), 2, 2, 0,
                       "a [2, 3, 7, 9] input pooled to [2, 3, 3, 4] and unpooled to output_size (7, 9)",
                       show=False)
    print("max_unpool2d: visible checks passed")


@hidden_check  # no points under autograde without the course's tamper scan
def check_max_unpool2d_hidden(max_unpool2d, device) -> None:
    """Fresh random maps, several pooling windows (overlapping ones too), odd
    sizes, negative values, other values than the pooled ones, float64 and an
    empty batch, compared with the reference."""
    gen = fresh_generator()
    cases = [  # (N, C, H, W, kernel, stride, padding, dtype)
        (2, 4, 16, 16, 2, 2, 0, torch.float32),
        (3, 2, 11, 13, 3, 3, 0, torch.float32),
        (2, 3, 9, 10, 3, 2, 1, torch.float64),  # overlapping windows, padding
        (1, 5, 6, 7, 2, 1, 0, torch.float32),  # stride 1: a position can be the max of 4 windows
        (0, 3, 8, 8, 2, 2, 0, torch.float32),  # empty batch
    ]
    for N, C, H, W, k, s, p, dtype in cases:
        x = torch.randn(N, C, H, W, generator=gen, dtype=torch.float64).to(device=device, dtype=dtype)
        pooled, idx = torch.nn.functional.max_pool2d(x, k, s, p, return_indices=True)
        case = f"{N}x{C}x{H}x{W} maps, {k}x{k} pooling with stride {s} and padding {p}, {_dtype_name(dtype)}"
        _check_unpool_case(max_unpool2d, pooled, idx, (H, W), k, s, p, case, show=False)
    x = -torch.rand(2, 3, 8, 10, generator=gen).to(device) - 1  # all negative: the rest must stay 0
    pooled, idx = torch.nn.functional.max_pool2d(x, 2, return_indices=True)
    _check_unpool_case(max_unpool2d, pooled, idx, (8, 10), 2, 2, 0, "all-negative maps", show=False)
    other = torch.randn(pooled.shape, generator=gen).to(device)  # e.g. gradients or decoder features
    _check_unpool_case(max_unpool2d, other, idx, (8, 10), 2, 2, 0,
                       "values other than the pooled maxima (same indices)", show=False)
    print("max_unpool2d: hidden checks passed")


# ------------------------------------------------------------- conv_transpose2d
def _check_conv_t_case(fn, x: Tensor, weight: Tensor, bias, stride: int, padding: int, case: str,
                       show: bool) -> None:
    out = call_student(fn, (x, weight, bias, stride, padding), FORBIDDEN_CONV_T, "conv_transpose2d",
                       case)
    expected = _reference_conv_transpose2d(x, weight, bias, stride, padding)
    check_tensor(out, "conv_transpose2d", shape=expected.shape, dtype=x.dtype, device=x.device, case=case)
    check_close(out, expected, "conv_transpose2d", case=case, show=show, **_tol(x.dtype, x.device))


def _random_conv_t_case(gen, N, C_in, C_out, H, W, kH, kW, bias: bool, dtype, device):
    rand = lambda *shape: (2 * torch.rand(*shape, generator=gen, dtype=torch.float64) - 1).to(  # noqa: E731
        device=device, dtype=dtype)
    return rand(N, C_in, H, W), rand(C_in, C_out, kH, kW), rand(C_out) if bias else None


def check_conv_transpose2d_visible(conv_transpose2d, device) -> None:
    """The lecture's 1-D example, two 2-D examples and a shape check."""
    t = lambda rows: torch.tensor(rows, dtype=torch.float32, device=device)  # noqa: E731
    # [a, b] = [2, 3] and kernel [x, y, z] = [1, 10, 100], stride 2:
    # [ax, ay, az + bx, by, bz] = [2, 20, 203, 30, 300]
    _check_conv_t_case(conv_transpose2d, t([[[[2, 3]]]]), t([[[[1, 10, 100]]]]), None, 2, 0,
                       "the lecture's 1-D example: input [a, b] = [2, 3], kernel [x, y, z] = "
                       "[1, 10, 100], stride 2 -> [ax, ay, az + bx, by, bz] = [2, 20, 203, 30, 300]",
                       show=True)
    x = t([[[[1, 2], [3, 4]]]])
    _check_conv_t_case(conv_transpose2d, x, torch.ones(1, 1, 2, 2, device=device), None, 2, 0,
                       "[[1, 2], [3, 4]] with a 2 x 2 kernel of ones, stride 2 (no overlap: "
                       "each value fills its own 2 x 2 block)", show=True)
    _check_conv_t_case(conv_transpose2d, x, torch.ones(1, 1, 3, 3, device=device), None, 1, 0,
                       "[[1, 2], [3, 4]] with a 3 x 3 kernel of ones, stride 1 (overlapping "
                       "copies add up: the centre is 1 + 2 + 3 + 4 = 10)", show=True)
    gen = fresh_generator()
    xs, w, b = _random_conv_t_case(gen, 2, 3, 4, 5, 7, 3, 3, True, torch.float32, device)
    _check_conv_t_case(conv_transpose2d, xs, w, b, 2, 1,
                       "input [2, 3, 5, 7], weight [3, 4, 3, 3], a bias, stride 2, padding 1 "
                       "(output [2, 4, 9, 13])", show=False)
    print("conv_transpose2d: visible checks passed")


def _check_conv_t_gradients(fn, gen, device) -> None:
    """Gradients with respect to input, weight and bias equal the reference's (float64).

    Only the forward pass runs under the guard: the backward pass is autograd's
    (a regular convolution's backward is a transposed one, and is fine there)."""
    case = "gradients (float64, stride 2, padding 1, 3 x 3 kernel)"
    x, w, b = _random_conv_t_case(gen, 2, 3, 2, 4, 5, 3, 3, True, torch.float64, device)
    g = torch.randn(2, 2, 7, 9, generator=gen, dtype=torch.float64).to(device)

    def forward(x, w, b):
        leaves = [t.requires_grad_() for t in (x, w, b)]
        return fn(*leaves, 2, 1), leaves

    out, leaves = call_student(forward, (x, w, b), FORBIDDEN_CONV_T, "conv_transpose2d", case)
    check_tensor(out, "conv_transpose2d", shape=g.shape, dtype=x.dtype, device=x.device, case=case)
    grads = _gradients(out, leaves, g, "conv_transpose2d", ("input", "weight", "bias"))
    refs = [t.clone().requires_grad_() for t in (x, w, b)]
    expected = torch.autograd.grad(_reference_conv_transpose2d(*refs, 2, 1), refs, g)
    for name, got, exp in zip(("input", "weight", "bias"), grads, expected):
        check_close(got, exp, f"the gradient of conv_transpose2d with respect to {name}", case=case,
                    **_tol(torch.float64))


def _gradients(out: Tensor, inputs, grad_out: Tensor, name: str, names) -> list[Tensor]:
    """Gradients of ``(out * grad_out).sum()`` with respect to ``inputs``; fails
    clearly when autograd cannot reach them."""
    if not out.requires_grad:
        fail(f"{name}'s output does not depend on its inputs through autograd (no gradient): it "
             "must be differentiable; compute it with tensor operations, without .detach(), .data, "
             ".item(), torch.no_grad() or NumPy")
    grads = torch.autograd.grad(out, list(inputs), grad_out, allow_unused=True)
    for what, grad in zip(names, grads):
        if grad is None:
            fail(f"{name}: no gradient reaches {what}; it must take part in the computation")
    return list(grads)


@hidden_check  # no points under autograde without the course's tamper scan
def check_conv_transpose2d_hidden(conv_transpose2d, device) -> None:
    """Fresh random inputs over several kernel sizes (even and non-square),
    strides and paddings, with and without bias, float32 and float64, an empty
    batch, and the gradients, compared with the reference."""
    gen = fresh_generator()
    cases = [  # (N, C_in, C_out, H, W, kH, kW, stride, padding, bias, dtype)
        (2, 3, 4, 5, 6, 3, 3, 1, 0, True, torch.float32),
        (2, 3, 2, 4, 4, 3, 3, 2, 1, False, torch.float32),
        (1, 4, 3, 5, 3, 4, 4, 2, 1, True, torch.float64),  # even kernel: 4x4, stride 2, padding 1
        (2, 8, 4, 3, 4, 2, 2, 2, 0, True, torch.float32),  # U-Net's up-step
        (1, 2, 2, 4, 5, 5, 3, 3, 2, True, torch.float64),  # non-square kernel, stride 3
        (3, 2, 3, 6, 6, 1, 1, 1, 0, False, torch.float32),  # 1 x 1 kernel
        (2, 3, 5, 6, 5, 3, 3, 1, 1, True, torch.float32),  # "same" padding
        (1, 3, 2, 3, 3, 3, 3, 4, 1, True, torch.float32),  # stride larger than the kernel: gaps
        (0, 3, 4, 5, 5, 3, 3, 2, 1, True, torch.float32),  # empty batch
    ]
    for N, C_in, C_out, H, W, kH, kW, s, p, bias, dtype in cases:
        x, w, b = _random_conv_t_case(gen, N, C_in, C_out, H, W, kH, kW, bias, dtype, device)
        case = (f"input [{N}, {C_in}, {H}, {W}], a {kH}x{kW} kernel, stride {s}, padding {p}, "
                f"{'with' if bias else 'no'} bias, {_dtype_name(dtype)}")
        _check_conv_t_case(conv_transpose2d, x, w, b, s, p, case, show=False)
    _check_conv_t_gradients(conv_transpose2d, gen, device)
    print("conv_transpose2d: hidden checks passed")


# ------------------------------------------------------------------------ U-Net
def _reference_key(key: str) -> str:
    """The assignment's parameter names -> cv_course.models.UNet's: the notebook
    keeps the up-convolutions (``up.i``) and decoder convs (``dec.i``) in two
    lists where the reference has one block per level (``up.i.up``, ``up.i.conv``)."""
    head, _, rest = key.partition(".")
    level, _, rest = rest.partition(".")
    if head == "up":
        return f"up.{level}.up.{rest}"
    if head == "dec":
        return f"up.{level}.conv.{rest}"
    return key


def _build(UNet, config: tuple[int, int, int, int]) -> nn.Module:
    args = ", ".join(map(str, config))
    try:
        with torch.random.fork_rng(devices=[]):  # leave the notebook's random state alone
            net = UNet(*config)
    except NotImplementedError:
        fail(f"UNet({args}) is not implemented yet (it raised NotImplementedError)")
    except Exception as e:
        fail(f"UNet({args}) raised {type(e).__name__}: {e}; keep __init__ as the assignment gives it")
    if not isinstance(net, nn.Module):
        fail(f"UNet({args}) must build an nn.Module, got {type(net).__name__}")
    return net


def _paired_models(UNet, config, gen, device, dtype=torch.float32) -> tuple[nn.Module, nn.Module]:
    """The student's U-Net and the reference with identical random weights and
    BatchNorm statistics (so that eval mode is not close to the identity)."""
    net = _build(UNet, config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(torch.randint(2**62, (1,), generator=gen)))
        ref = _ReferenceUNet(*config)
        for m in ref.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.data.uniform_(0.5, 1.5)
                m.bias.data.normal_(0, 0.2)
    ref_state = ref.state_dict()
    names = list(net.state_dict())
    mapped = {_reference_key(k) for k in names}
    if mapped != set(ref_state):
        missing = sorted(set(ref_state) - mapped)[:3]
        extra = sorted(k for k in names if _reference_key(k) not in ref_state)[:3]
        fail(f"UNet{config} does not have the layers the assignment defines (unexpected: {extra}, "
             f"missing: {missing}); keep __init__ as given and write only forward")
    try:
        net.load_state_dict({k: ref_state[_reference_key(k)] for k in names})
    except RuntimeError as e:
        fail(f"UNet{config}'s layers have other shapes than the assignment's; keep __init__ as given "
             f"({str(e).splitlines()[-1].strip()})")
    return net.to(device=device, dtype=dtype), ref.to(device=device, dtype=dtype)


def _check_unet_output(net, ref, x: Tensor, case: str, train: bool = False) -> None:
    net.train(train)
    ref.train(train)
    out = call_student(net, (x,), COURSE, "UNet.forward", case)
    with torch.no_grad():
        expected = ref(x)
    check_tensor(out, "UNet.forward", shape=expected.shape, dtype=x.dtype, device=x.device, case=case)
    out = out.detach()
    if torch.isnan(out).any():
        fail(f"UNet.forward returned NaN on {case}")
    tol = dict(rtol=1e-8, atol=1e-10) if x.dtype == torch.float64 else (
        dict(rtol=1e-2, atol=1e-2) if x.is_cuda else dict(rtol=1e-3, atol=1e-4))  # TF32 on GPUs
    if not torch.allclose(out, expected, **tol):
        worst = float((out - expected).abs().max())
        fail(f"UNet.forward returned other logits than a U-Net with the same weights on {case} "
             f"(largest difference {worst:.3g}). Check that each level concatenates "
             "torch.cat([skip, upsampled], dim=1) (skip first), that the skips are used in reverse "
             "order (deepest first), and that the head is applied last")


def _check_unet_shape(UNet, config, x: Tensor, case: str) -> None:
    net = _build(UNet, config).to(x.device).eval()
    out = call_student(net, (x,), COURSE, "UNet.forward", case)
    N, _, H, W = x.shape
    check_tensor(out, "UNet.forward", shape=(N, config[1], H, W), dtype=x.dtype, device=x.device,
                 case=case)


def check_unet_visible(UNet, device) -> None:
    """Number of parameters, logits of the input's size (odd sizes too), and the
    same logits as a reference U-Net with the same weights."""
    config = (3, NUM_CLASSES, 8, 3)
    net = _build(UNet, config)
    with torch.device("meta"):  # only the shapes: no memory, no random numbers
        expected_count = sum(p.numel() for p in _ReferenceUNet(*config).parameters())
    count = sum(p.numel() for p in net.parameters())
    if count != expected_count:
        fail(f"UNet{config} has {count:,} parameters, expected {expected_count:,}; keep __init__ as given")
    print(f"UNet{config}: {count:,} parameters, as expected")
    gen = fresh_generator()
    for shape in ((2, 3, 64, 64), (1, 3, 37, 50), (2, 3, 45, 27)):
        x = torch.rand(shape, generator=gen).to(device)
        _check_unet_shape(UNet, config, x, f"an input of shape {list(shape)} "
                          f"(expected logits {[shape[0], NUM_CLASSES, *shape[2:]]})")
    net, ref = _paired_models(UNet, config, gen, device)
    x = torch.rand(2, 3, 32, 32, generator=gen).to(device)
    _check_unet_output(net, ref, x, "an input [2, 3, 32, 32] in eval mode")
    print("UNet: visible checks passed")


@hidden_check  # no points under autograde without the course's tamper scan
def check_unet_hidden(UNet, device) -> None:
    """Fresh random weights and inputs for several widths and depths, train and
    eval mode, float64, an empty batch and odd sizes, compared with the
    reference; in training mode the gradients of every parameter too."""
    gen = fresh_generator()
    cases = [  # (config, input shape, train mode, dtype)
        ((3, 5, 8, 3), (2, 3, 32, 48), False, torch.float32),
        ((1, 2, 4, 2), (3, 1, 12, 20), False, torch.float64),
        ((3, 4, 4, 4), (1, 3, 32, 32), False, torch.float32),
        ((2, 3, 4, 1), (2, 2, 6, 10), True, torch.float32),
        ((3, 5, 8, 3), (0, 3, 16, 16), False, torch.float32),  # empty batch
    ]
    for config, shape, train, dtype in cases:
        net, ref = _paired_models(UNet, config, gen, device, dtype)
        x = torch.rand(shape, generator=gen, dtype=torch.float64).to(device=device, dtype=dtype)
        case = (f"UNet{config} on an input of shape {list(shape)}, {'training' if train else 'eval'} "
                f"mode, {_dtype_name(dtype)}")
        _check_unet_output(net, ref, x, case, train)
    _check_unet_gradients(UNet, gen, device)
    for config, shape in (((3, 5, 4, 3), (1, 3, 37, 50)), ((1, 2, 4, 2), (2, 1, 13, 7)),
                          ((3, 3, 4, 4), (1, 3, 70, 33))):
        x = torch.rand(shape, generator=gen).to(device)
        _check_unet_shape(UNet, config, x, f"UNet{config} on an input of odd size {list(shape)}")
    print("UNet: hidden checks passed")


def _check_unet_gradients(UNet, gen, device) -> None:
    """One training step's gradients reach every parameter, as in the reference."""
    config, case = (3, 5, 4, 2), "the gradients of a training step (UNet(3, 5, 4, 2), float64)"
    net, ref = _paired_models(UNet, config, gen, device, torch.float64)
    x = torch.rand(2, 3, 16, 16, generator=gen, dtype=torch.float64).to(device)
    g = torch.randn(2, 5, 16, 16, generator=gen, dtype=torch.float64).to(device)
    net.train()
    ref.train()
    out = call_student(net, (x,), COURSE, "UNet.forward", case)
    check_tensor(out, "UNet.forward", shape=g.shape, dtype=x.dtype, device=x.device, case=case)
    params = dict(net.named_parameters())
    grads = _gradients(out, params.values(), g, "UNet.forward", [f"parameter {k}" for k in params])
    ref_params = dict(ref.named_parameters())
    expected = torch.autograd.grad(ref(x), [ref_params[_reference_key(k)] for k in params], g)
    for name, got, exp in zip(params, grads, expected):
        check_close(got, exp, f"the gradient of {name}", case=case, rtol=1e-7, atol=1e-9)


# ------------------------------------------------------------ pixel_cross_entropy
def _check_loss_case(fn, logits: Tensor, target: Tensor, ignore_index: int | None, case: str,
                     show: bool) -> None:
    args = (logits, target) if ignore_index is None else (logits, target, ignore_index)
    out = call_student(fn, args, FORBIDDEN_LOSS, "pixel_cross_entropy", case)
    check_tensor(out, "pixel_cross_entropy", shape=(), dtype=logits.dtype, device=logits.device, case=case)
    if not torch.isfinite(out):
        hint = ("guard the division when no pixel counts" if "ignored" in case or "empty" in case
                else "use log_softmax: log(softmax(z)) overflows for large logits")
        fail(f"pixel_cross_entropy returned {float(out)} on {case}; {hint}")
    expected = _reference_loss(logits, target, 255 if ignore_index is None else ignore_index)
    tol = dict(rtol=1e-5, atol=1e-6) if logits.dtype == torch.float32 else dict(rtol=1e-10, atol=1e-12)
    check_close(out, expected, "pixel_cross_entropy", case=case, show=show, **tol)


def check_pixel_cross_entropy_visible(pixel_cross_entropy, device) -> None:
    """Uniform logits (loss log C), a worked two-pixel example, an ignored pixel."""
    zeros = torch.zeros(2, 4, 3, 3, device=device)
    target = torch.randint(0, 4, (2, 3, 3), generator=fresh_generator()).to(device)
    _check_loss_case(pixel_cross_entropy, zeros, target, None,
                     "all-zero logits for 4 classes (every class has probability 1/4: loss log 4 = 1.386)",
                     show=True)
    # pixel 1: logits (2, 0, 0), class 0 -> log(1 + 2 e^-2) = 0.2395
    # pixel 2: logits (0, 0, 2), class 1 -> log(2 + e^2) = 2.2395; mean 1.2395
    logits = torch.tensor([[2.0, 0.0], [0.0, 0.0], [0.0, 2.0]], device=device)  # [C=3, 2 pixels]
    logits = logits[None, :, None, :]  # [1, 3, 1, 2]
    _check_loss_case(pixel_cross_entropy, logits, torch.tensor([[[0, 1]]], device=device), None,
                     "two pixels with logits (2, 0, 0), class 0 and (0, 0, 2), class 1: "
                     "mean of 0.2395 and 2.2395 = 1.2395", show=True)
    _check_loss_case(pixel_cross_entropy, logits, torch.tensor([[[0, 255]]], device=device), None,
                     "the same two pixels with the second one ignored (label 255): 0.2395", show=True)
    print("pixel_cross_entropy: visible checks passed")


@hidden_check  # no points under autograde without the course's tamper scan
def check_pixel_cross_entropy_hidden(pixel_cross_entropy, device) -> None:
    """Fresh random logits and labels with ignored pixels, float32 and float64,
    large logits, another ignore_index, all pixels ignored, an empty batch and
    the gradient, compared with the reference."""
    gen = fresh_generator()

    def labels(N, C, H, W, ignore, frac=0.2):
        t = torch.randint(0, C, (N, H, W), generator=gen)
        return torch.where(torch.rand(N, H, W, generator=gen) < frac, ignore, t).to(device)

    def logits(N, C, H, W, dtype, scale=3.0):
        return (scale * torch.randn(N, C, H, W, generator=gen, dtype=torch.float64)).to(device, dtype)

    fn = pixel_cross_entropy
    _check_loss_case(fn, logits(4, 5, 16, 16, torch.float32), labels(4, 5, 16, 16, 255), None,
                     "random logits [4, 5, 16, 16], 20% of pixels ignored, float32", show=False)
    _check_loss_case(fn, logits(2, 3, 7, 9, torch.float64), labels(2, 3, 7, 9, 255), None,
                     "random logits [2, 3, 7, 9], 20% of pixels ignored, float64", show=False)
    _check_loss_case(fn, logits(2, 21, 8, 8, torch.float32), labels(2, 21, 8, 8, 255, 0.0), None,
                     "21 classes, no ignored pixel", show=False)
    _check_loss_case(fn, logits(2, 4, 6, 6, torch.float32, 500.0), labels(2, 4, 6, 6, 255), None,
                     "large logits (up to about 2000): must stay finite", show=False)
    _check_loss_case(fn, logits(2, 4, 6, 6, torch.float32), labels(2, 4, 6, 6, -100), -100,
                     "ignore_index=-100 (another label to skip)", show=False)
    _check_loss_case(fn, logits(1, 3, 4, 4, torch.float32), torch.full((1, 4, 4), 255, device=device),
                     None, "every pixel ignored (the loss is 0, not 0/0 = NaN)", show=False)
    _check_loss_case(fn, logits(0, 3, 4, 4, torch.float32), labels(0, 3, 4, 4, 255), None,
                     "an empty batch (the loss is 0)", show=False)
    _check_loss_gradient(fn, logits(2, 5, 6, 7, torch.float64), labels(2, 5, 6, 7, 255))
    print("pixel_cross_entropy: hidden checks passed")


def _check_loss_gradient(fn, logits: Tensor, target: Tensor) -> None:
    case = "the gradient with respect to the logits (float64, 20% ignored)"

    def forward(logits, target):
        logits.requires_grad_()
        return fn(logits, target), logits

    out, leaf = call_student(forward, (logits, target), FORBIDDEN_LOSS, "pixel_cross_entropy", case)
    check_tensor(out, "pixel_cross_entropy", shape=(), dtype=logits.dtype, device=logits.device, case=case)
    (grad,) = _gradients(out, [leaf], torch.ones_like(out), "pixel_cross_entropy", ["the logits"])
    ref = logits.clone().requires_grad_()
    expected = torch.autograd.grad(_reference_loss(ref, target), ref)[0]
    check_close(grad, expected, "the gradient of pixel_cross_entropy", case=case, rtol=1e-8, atol=1e-10)


# ------------------------------------------------------------------ trained model
def held_out_seeds(n: int) -> list[int]:
    """``n`` scene seeds drawn from the operating system: new at every grading run,
    and never a seed of ``SegmentationScenes(..., seed=s)`` for a small ``s``."""
    lo, hi = _HELD_OUT_SEEDS
    return [lo + int.from_bytes(os.urandom(8), "little") % (hi - lo) for _ in range(n)]


def _model_device(model: nn.Module) -> torch.device | None:
    p = next(model.parameters(), None)
    return None if p is None else p.device


def _predict(model: nn.Module, images: Tensor, case: str) -> Tensor:
    """The student's model in eval mode, without gradients, under the guard.
    Returns the predicted labels [N, H, W]."""

    def forward(images):
        with torch.no_grad():
            return model(images)

    logits = call_student(forward, (images,), FORBIDDEN_MODEL, "model", case)
    N, _, H, W = images.shape
    check_tensor(logits, "model", shape=(N, NUM_CLASSES, H, W), device=images.device, case=case)
    if not logits.is_floating_point():
        fail(f"model must return floating-point logits [N, {NUM_CLASSES}, H, W], got {logits.dtype}")
    return logits.argmax(dim=1)


def _evaluate(model, device, n: int, batch_size: int = 32) -> tuple[float, Tensor, Tensor]:
    """mIoU of ``model`` on ``n`` fresh scenes; also the images and predictions."""
    if not isinstance(model, nn.Module):
        fail(f"model must be an nn.Module (your trained U-Net), got {type(model).__name__}")
    device = torch.empty(0, device=device).device  # "cuda" -> "cuda:0", as a parameter reports it
    where = _model_device(model)
    if where is not None and where != device:
        fail(f"model is on {where}, expected it on {device}; train it with "
             "device=device (or call model.to(device))")
    nn.Module.train(model, False)  # eval mode, even if a subclass redefines eval()/train()
    seeds = held_out_seeds(n)
    kwargs = dict(_SCENE_ITEMS)
    images = torch.stack([make_scene(s, **kwargs).image for s in seeds]).to(device)  # [n, 3, H, W]
    preds = torch.cat([_predict(model, chunk, f"{n} new scenes")
                       for chunk in images.split(batch_size)])  # [n, H, W]
    # The labels are made only now, after every prediction: nothing the model could read.
    labels = torch.stack([make_scene(s, **kwargs).semantic for s in seeds]).to(device)  # [n, H, W]
    return float(_reference_mean_iou(preds, labels, NUM_CLASSES)), images, preds


def _require_threshold(miou: float, n: int) -> None:
    if miou < MIOU_THRESHOLD:
        fail(f"the model's mean IoU on {n} new scenes is {miou:.3f}, below the {MIOU_THRESHOLD} "
             "required; train longer (more epochs or scenes) or with a better learning rate, "
             "and check the model in eval mode on a validation set")


def check_trained_model_visible(model, device) -> None:
    """The model returns logits [N, C, H, W] on the device and reaches the
    threshold on 128 new scenes."""
    miou, _, _ = _evaluate(model, device, 128)
    print(f"mean IoU on 128 new scenes: {miou:.3f} (required: {MIOU_THRESHOLD})")
    _require_threshold(miou, 128)
    print("trained model: visible checks passed")


@hidden_check  # no points under autograde without the course's tamper scan
def check_trained_model_hidden(model, device) -> None:
    """Predictions that do not depend on the other images in a batch, and the
    threshold on 256 new scenes."""
    miou, images, preds = _evaluate(model, device, 256)
    alone = torch.cat([_predict(model, images[i:i + 1], "single images") for i in range(4)])
    agree = float((alone == preds[:4]).double().mean())
    if agree < 0.99:
        fail(f"the model predicts {100 * (1 - agree):.1f}% of pixels differently when an image is "
             "alone than in a batch of 32: in eval mode its output for an image must not depend on "
             "the other images (BatchNorm must use its running statistics: model.eval())")
    _require_threshold(miou, 256)
    print("trained model: hidden checks passed")
