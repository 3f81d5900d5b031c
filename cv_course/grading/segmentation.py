"""Checks for assignment 01 (segmentation): ``max_unpool2d``, ``conv_transpose2d``,
a U-Net's ``forward``, ``pixel_cross_entropy`` and the trained model.

Visible checks use the lecture's worked examples and a small twin of every kind
of hidden case; hidden checks draw fresh random and edge-case inputs at every
run and compare with the ``cv_course`` references on the student's device.

What each exercise may not use (see :mod:`.policy`): the course's own code and
``torchvision.ops``/``models`` everywhere; torch's unpooling and max pooling's
backward in ``max_unpool2d``; any transposed convolution, a convolution's
backward and ``F.fold`` in ``conv_transpose2d`` (a regular convolution of a
zero-stuffed input is allowed: a derivation of its own); ``F.nll_loss`` and
``F.cross_entropy`` in ``pixel_cross_entropy``. Only forward passes run under
the guard; gradients are taken by autograd outside it.

The trained model is put in eval mode with ``nn.Module.train(model, False)`` (a
redefined ``eval`` cannot keep it training) and scored by mean IoU on scenes
from fresh seeds, whose labels are generated only after its last prediction
(:mod:`.heldout`); an image alone must get the same prediction as in a batch;
and ``SCENES``, which the notebook imports, is read-only.
"""

from __future__ import annotations

from types import MappingProxyType

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data import NUM_CLASSES, make_scene
from ..losses import pixel_cross_entropy as _reference_loss  # bound at import, before any student code
from ..metrics import mean_iou as _reference_mean_iou
from ..models import UNet as _ReferenceUNet
from ..ops import conv_transpose2d as _reference_conv_transpose2d
from ..ops import max_unpool2d as _reference_max_unpool2d
from . import models, policy
from .checks import call_student, check_close, check_tensor, fail
from .exercise import Case, Exercise, close, graded
from .heldout import held_out_seeds, predict_then_label
from .numerics import dtype_name

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

COURSE = policy.course_code() + policy.TORCHVISION


def _rand(gen, *shape, dtype=torch.float32, device="cpu", low=-1.0, high=1.0) -> Tensor:
    """Uniform in [low, high), drawn in float64 so that every dtype sees the same numbers."""
    x = low + (high - low) * torch.rand(*shape, generator=gen, dtype=torch.float64)
    return x.to(device=device, dtype=dtype)


def _tags(dtype, *more) -> tuple[str, ...]:
    return ("float64",) * (dtype == torch.float64) + more


# ----------------------------------------------------------------- max_unpool2d
def lecture_unpool_example(device="cpu", dtype=torch.float32) -> tuple[Tensor, Tensor, Tensor]:
    """The lecture's max-unpooling example: the maxima of a 4 x 4 input under 2 x 2
    pooling sit at (1, 1), (0, 2), (3, 0), (3, 3); unpooling [[1, 2], [3, 4]] puts
    each value back there. Returns (values, indices, expected output), all [1, 1, ., .]."""
    x = torch.tensor([[1, 2, 6, 3], [3, 5, 2, 1], [1, 2, 2, 1], [7, 3, 4, 8]], dtype=dtype, device=device)
    _, indices = F.max_pool2d(x[None, None], 2, return_indices=True)
    values = torch.tensor([[1, 2], [3, 4]], dtype=dtype, device=device)[None, None]
    expected = torch.tensor([[0, 0, 2, 0], [0, 1, 0, 0], [0, 0, 0, 0], [3, 0, 0, 4]], dtype=dtype,
                            device=device)[None, None]
    return values, indices, expected


def _unpool_case(gen, device, shape, k, s, p, dtype=torch.float32, tags=(), show=False, values="pooled",
                 name=""):
    """Pool a random map [N, C, H, W] (``values``: "pooled", "negative" maps, or "other"
    values at the same indices) and unpool it back to (H, W)."""
    x = torch.randn(*shape, generator=gen, dtype=torch.float64).to(device=device, dtype=dtype)
    x = -x.abs() - 1 if values == "negative" else x  # all negative: the rest must stay 0
    pooled, idx = F.max_pool2d(x, k, s, p, return_indices=True)
    if values == "other":  # e.g. gradients or decoder features
        pooled = torch.randn(pooled.shape, generator=gen, dtype=torch.float64).to(pooled)
    N, C, H, W = shape
    name = name or f"{N}x{C}x{H}x{W} maps, {k}x{k} pooling with stride {s} and padding {p}, {dtype_name(dtype)}"
    return Case(name, (pooled, idx, (H, W)), _tags(dtype, *tags), show=show,
                reference=lambda v, i, size: _reference_max_unpool2d(v, i, k, s, p, size))


def _unpool_visible(gen, device):
    values, indices, expected = lecture_unpool_example(device)
    yield Case("the lecture's 4 x 4 example", (values, indices, (4, 4)), expected=expected, show=True)
    yield _unpool_case(gen, device, (2, 3, 7, 9), 2, 2, 0, tags=("odd-size",),
                       name="a [2, 3, 7, 9] input pooled to [2, 3, 3, 4] and unpooled to output_size (7, 9)")
    yield _unpool_case(gen, device, (1, 1, 4, 6), 2, 2, 0, torch.float64, show=True)
    yield _unpool_case(gen, device, (1, 1, 5, 5), 3, 2, 1, tags=("overlapping",), show=True)
    yield _unpool_case(gen, device, (0, 2, 4, 4), 2, 2, 0, tags=("empty",), show=True)
    yield _unpool_case(gen, device, (1, 1, 4, 4), 2, 2, 0, tags=("negative",), show=True, values="negative",
                       name="an all-negative 4 x 4 map (the rest of the output stays 0)")
    yield _unpool_case(gen, device, (1, 1, 4, 4), 2, 2, 0, tags=("other-values",), show=True, values="other",
                       name="values other than the pooled maxima, at the pooled indices")


def _unpool_hidden(gen, device):
    yield _unpool_case(gen, device, (2, 4, 16, 16), 2, 2, 0)
    yield _unpool_case(gen, device, (3, 2, 11, 13), 3, 3, 0, tags=("odd-size",))
    yield _unpool_case(gen, device, (2, 3, 9, 10), 3, 2, 1, torch.float64, tags=("overlapping",))
    yield _unpool_case(gen, device, (1, 5, 6, 7), 2, 1, 0, tags=("overlapping",))  # a max of 4 windows
    yield _unpool_case(gen, device, (0, 3, 8, 8), 2, 2, 0, tags=("empty",))
    yield _unpool_case(gen, device, (2, 3, 8, 10), 2, 2, 0, tags=("negative",), values="negative",
                       name="all-negative maps")
    yield _unpool_case(gen, device, (2, 3, 8, 10), 2, 2, 0, tags=("other-values",), values="other",
                       name="values other than the pooled maxima (same indices)")


MAX_UNPOOL2D = Exercise("max_unpool2d", None, COURSE + policy.UNPOOLING, _unpool_visible, _unpool_hidden,
                        close("exact"))
check_max_unpool2d_visible, check_max_unpool2d_hidden = MAX_UNPOOL2D.checks()


# ------------------------------------------------------------- conv_transpose2d
def _conv_t_case(gen, device, N, C_in, C_out, H, W, kH, kW, s, p, bias=True, dtype=torch.float32, tags=(),
                 show=False, grad=()):
    x, w = _rand(gen, N, C_in, H, W, dtype=dtype, device=device), _rand(gen, C_in, C_out, kH, kW, dtype=dtype,
                                                                      device=device)
    b = _rand(gen, C_out, dtype=dtype, device=device) if bias else None
    what = "gradients" if grad else f"input [{N}, {C_in}, {H}, {W}]"
    name = (f"{what}, a {kH}x{kW} kernel, stride {s}, padding {p}, {'with' if bias else 'no'} bias, "
            f"{dtype_name(dtype)}")
    return Case(name, (x, w, b, s, p), _tags(dtype, *tags, *(("no-bias",) * (not bias))), show=show,
                grad=grad)


def _conv_t_visible(gen, device):
    t = lambda rows: torch.tensor(rows, dtype=torch.float32, device=device)  # noqa: E731
    # [a, b] = [2, 3] and kernel [x, y, z] = [1, 10, 100], stride 2:
    # [ax, ay, az + bx, by, bz] = [2, 20, 203, 30, 300]
    yield Case("the lecture's 1-D example: input [a, b] = [2, 3], kernel [x, y, z] = [1, 10, 100], stride 2 "
               "-> [ax, ay, az + bx, by, bz] = [2, 20, 203, 30, 300]",
               (t([[[[2, 3]]]]), t([[[[1, 10, 100]]]]), None, 2, 0), ("no-bias",), show=True)
    x, ones = t([[[[1, 2], [3, 4]]]]), lambda k: torch.ones(1, 1, k, k, device=device)
    yield Case("[[1, 2], [3, 4]] with a 2 x 2 kernel of ones, stride 2 (no overlap: each value fills its "
               "own 2 x 2 block)", (x, ones(2), None, 2, 0), show=True)
    yield Case("[[1, 2], [3, 4]] with a 3 x 3 kernel of ones, stride 1 (overlapping copies add up: the "
               "centre is 1 + 2 + 3 + 4 = 10)", (x, ones(3), None, 1, 0), show=True)
    xs, w, b = (_rand(gen, *shape, device=device) for shape in ((2, 3, 5, 7), (3, 4, 3, 3), (4,)))
    yield Case("input [2, 3, 5, 7], weight [3, 4, 3, 3], a bias, stride 2, padding 1 (output [2, 4, 9, 13])",
               (xs, w, b, 2, 1))
    yield _conv_t_case(gen, device, 1, 1, 1, 2, 2, 2, 2, 1, 0, dtype=torch.float64, show=True)
    yield _conv_t_case(gen, device, 1, 1, 1, 2, 3, 4, 4, 2, 1, tags=("even-kernel",), show=True)
    yield _conv_t_case(gen, device, 1, 1, 1, 2, 2, 2, 2, 3, 0, tags=("gaps",), show=True)
    yield _conv_t_case(gen, device, 1, 2, 1, 2, 2, 1, 1, 1, 0, tags=("1x1",), show=True)
    yield _conv_t_case(gen, device, 0, 2, 3, 3, 3, 3, 3, 2, 1, tags=("empty",))
    yield _conv_t_case(gen, device, 1, 2, 2, 3, 3, 3, 3, 2, 1, dtype=torch.float64, tags=("gradient",),
                       grad=(0, 1, 2))


def _conv_t_hidden(gen, device):
    f64 = torch.float64
    yield _conv_t_case(gen, device, 2, 3, 4, 5, 6, 3, 3, 1, 0)
    yield _conv_t_case(gen, device, 2, 3, 2, 4, 4, 3, 3, 2, 1, bias=False)
    yield _conv_t_case(gen, device, 1, 4, 3, 5, 3, 4, 4, 2, 1, dtype=f64, tags=("even-kernel",))
    yield _conv_t_case(gen, device, 2, 8, 4, 3, 4, 2, 2, 2, 0)  # U-Net's up-step
    yield _conv_t_case(gen, device, 1, 2, 2, 4, 5, 5, 3, 3, 2, dtype=f64)  # non-square kernel, stride 3
    yield _conv_t_case(gen, device, 3, 2, 3, 6, 6, 1, 1, 1, 0, bias=False, tags=("1x1",))
    yield _conv_t_case(gen, device, 2, 3, 5, 6, 5, 3, 3, 1, 1)  # "same" padding
    yield _conv_t_case(gen, device, 1, 3, 2, 3, 3, 3, 3, 4, 1, tags=("gaps",))  # stride > kernel
    yield _conv_t_case(gen, device, 0, 3, 4, 5, 5, 3, 3, 2, 1, tags=("empty",))
    yield _conv_t_case(gen, device, 2, 3, 2, 4, 5, 3, 3, 2, 1, dtype=f64, tags=("gradient",), grad=(0, 1, 2))


CONV_TRANSPOSE2D = Exercise("conv_transpose2d", _reference_conv_transpose2d,
                            COURSE + policy.TRANSPOSED_CONVOLUTION, _conv_t_visible, _conv_t_hidden,
                            close("network"))
check_conv_transpose2d_visible, check_conv_transpose2d_hidden = CONV_TRANSPOSE2D.checks()


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


def _reference_unet(config, gen) -> nn.Module:
    """A reference U-Net with random weights and BatchNorm statistics (so that
    eval mode is not close to the identity)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(torch.randint(2**62, (1,), generator=gen)))
        return models.randomize_batchnorm(_ReferenceUNet(*config), gen)


def _unet_case(gen, device, config, shape, train=False, dtype=torch.float32, tags=(), values=True) -> Case:
    """The student's UNet(*config) with the weights of a random reference, on a random input."""
    ref = _reference_unet(config, gen).to(device=device, dtype=dtype).train(train)

    def build(UNet):
        net = models.build(UNet, config, "UNet")
        return models.copy_weights(net, ref, _reference_key, f"UNet{config}").to(device, dtype).train(train)

    x = _rand(gen, *shape, dtype=dtype, device=device, low=0.0)
    mode = "training" if train else "eval"
    name = f"UNet{config} on an input of shape {list(shape)}, {mode} mode, {dtype_name(dtype)}"
    return Case(name, (x,), _tags(dtype, *tags, *(("train",) * train)), reference=ref, build=build,
                values=values)


def _count_parameters(UNet, gen, device, hidden: bool) -> None:
    """The student's __init__ is the assignment's: as many parameters as the reference."""
    if hidden:
        return
    config = (3, NUM_CLASSES, 8, 3)
    with torch.device("meta"):  # only the shapes: no memory, no random numbers
        expected = sum(p.numel() for p in _ReferenceUNet(*config).parameters())
    count = sum(p.numel() for p in models.build(UNet, config, "UNet").parameters())
    if count != expected:
        fail(f"UNet{config} has {count:,} parameters, expected {expected:,}; keep __init__ as given")
    print(f"UNet{config}: {count:,} parameters, as expected")


def _unet_gradients(UNet, gen, device, hidden: bool) -> None:
    """One training step's gradients reach every parameter, as in the reference."""
    if not hidden:
        return
    case = _unet_case(gen, device, (3, 5, 4, 2), (2, 3, 16, 16), train=True, dtype=torch.float64)
    net, ref, (x,) = case.build(UNet), case.reference, case.args
    where = "the gradients of a training step (UNet(3, 5, 4, 2), float64)"
    out = call_student(net, (x,), COURSE, "UNet.forward", where)
    check_tensor(out, "UNet.forward", shape=(2, 5, 16, 16), dtype=x.dtype, device=x.device, case=where)
    g = torch.randn(out.shape, generator=gen, dtype=torch.float64).to(out)
    params = dict(net.named_parameters())
    grads = models.gradients(out, params.values(), g, "UNet.forward", [f"parameter {k}" for k in params])
    ref_params = dict(ref.named_parameters())
    expected = torch.autograd.grad(ref(x), [ref_params[_reference_key(k)] for k in params], g)
    for name, got, exp in zip(params, grads, expected):
        check_close(got, exp, f"the gradient of {name}", kind="network", case=where)


def _unet_visible(gen, device):
    config = (3, NUM_CLASSES, 8, 3)
    for shape in ((2, 3, 64, 64), (1, 3, 37, 50), (2, 3, 45, 27)):
        yield _unet_case(gen, device, config, shape, tags=("odd-size",), values=False)
    yield _unet_case(gen, device, config, (2, 3, 32, 32))
    yield _unet_case(gen, device, (3, 2, 4, 2), (2, 3, 8, 12), train=True)
    yield _unet_case(gen, device, (1, 2, 4, 1), (1, 1, 6, 10), dtype=torch.float64)
    yield _unet_case(gen, device, (3, 2, 4, 2), (0, 3, 8, 8), tags=("empty",))


def _unet_hidden(gen, device):
    yield _unet_case(gen, device, (3, 5, 8, 3), (2, 3, 32, 48))
    yield _unet_case(gen, device, (1, 2, 4, 2), (3, 1, 12, 20), dtype=torch.float64)
    yield _unet_case(gen, device, (3, 4, 4, 4), (1, 3, 32, 32))
    yield _unet_case(gen, device, (2, 3, 4, 1), (2, 2, 6, 10), train=True)
    yield _unet_case(gen, device, (3, 5, 8, 3), (0, 3, 16, 16), tags=("empty",))
    for config, shape in (((3, 5, 4, 3), (1, 3, 37, 50)), ((1, 2, 4, 2), (2, 1, 13, 7)),
                          ((3, 3, 4, 4), (1, 3, 70, 33))):
        yield _unet_case(gen, device, config, shape, tags=("odd-size",), values=False)


UNET = Exercise("unet", None, COURSE, _unet_visible, _unet_hidden, title="UNet.forward",
                compare=close("network", hint="Check that each level concatenates torch.cat([skip, "
                              "upsampled], dim=1) (skip first), that the skips are used in reverse order "
                              "(deepest first), and that the head is applied last"),
                extra=(_count_parameters, _unet_gradients))
check_unet_visible, check_unet_hidden = UNET.checks()


# ------------------------------------------------------------ pixel_cross_entropy
def _loss_case(gen, device, name, N, C, H, W, *, dtype=torch.float32, scale=3.0, ignored=0.2, ignore=None,
               tags=(), show=False, grad=()):
    logits = (scale * torch.randn(N, C, H, W, generator=gen, dtype=torch.float64)).to(device, dtype)
    label = torch.randint(0, C, (N, H, W), generator=gen)
    label = torch.where(torch.rand(N, H, W, generator=gen) < ignored, 255 if ignore is None else ignore, label)
    args = (logits, label.to(device)) + (() if ignore is None else (ignore,))
    return Case(name, args, _tags(dtype, *tags), show=show, grad=grad)


def _require_finite(out: Tensor, case: Case, name: str) -> None:
    if not torch.isfinite(out).all():
        hint = ("guard the division when no pixel counts" if {"all-ignored", "empty"} & set(case.tags)
                else "use log_softmax: log(softmax(z)) overflows for large logits")
        fail(f"{name} returned {float(out)} on {case.name}; {hint}")


def _loss_visible(gen, device):
    zeros = torch.zeros(2, 4, 3, 3, device=device)
    target = torch.randint(0, 4, (2, 3, 3), generator=gen).to(device)
    yield Case("all-zero logits for 4 classes (every class has probability 1/4: loss log 4 = 1.386)",
               (zeros, target), show=True)
    # pixel 1: logits (2, 0, 0), class 0 -> log(1 + 2 e^-2) = 0.2395
    # pixel 2: logits (0, 0, 2), class 1 -> log(2 + e^2) = 2.2395; mean 1.2395
    logits = torch.tensor([[2.0, 0.0], [0.0, 0.0], [0.0, 2.0]], device=device)[None, :, None, :]  # [1, 3, 1, 2]
    two = "two pixels with logits (2, 0, 0), class 0 and (0, 0, 2), class 1"
    yield Case(f"{two}: mean of 0.2395 and 2.2395 = 1.2395", (logits, torch.tensor([[[0, 1]]], device=device)),
               show=True)
    yield Case("the same two pixels with the second one ignored (label 255): 0.2395",
               (logits, torch.tensor([[[0, 255]]], device=device)), show=True)
    yield Case(f"{two}, in float64: 1.2395", (logits.double(), torch.tensor([[[0, 1]]], device=device)),
               ("float64",), show=True)
    yield Case("the same two pixels with logits x 500 (finite: 0.5 * 1000 = 500)",
               (500 * logits, torch.tensor([[[0, 1]]], device=device)), ("large",), show=True)
    yield Case("the same two pixels with ignore_index=-100 and the first one ignored: 2.2395",
               (logits, torch.tensor([[[-100, 1]]], device=device), -100), ("ignore-index",), show=True)
    yield Case("the same two pixels, both ignored: the loss is 0, not 0/0 = NaN",
               (logits, torch.tensor([[[255, 255]]], device=device)), ("all-ignored",), show=True)
    no_labels = torch.zeros(0, 1, 2, dtype=torch.int64, device=device)
    yield Case("an empty batch (logits [0, 3, 1, 2]): the loss is 0", (logits[:0], no_labels), ("empty",),
               show=True)
    yield _loss_case(gen, device, "the gradient with respect to small random logits [1, 3, 2, 2], float64",
                     1, 3, 2, 2, dtype=torch.float64, tags=("gradient",), grad=(0,))


def _loss_hidden(gen, device):
    f64 = torch.float64
    yield _loss_case(gen, device, "random logits [4, 5, 16, 16], 20% of pixels ignored, float32", 4, 5, 16, 16)
    yield _loss_case(gen, device, "random logits [2, 3, 7, 9], 20% of pixels ignored, float64", 2, 3, 7, 9,
                     dtype=f64)
    yield _loss_case(gen, device, "21 classes, no ignored pixel", 2, 21, 8, 8, ignored=0.0)
    yield _loss_case(gen, device, "large logits (up to about 2000): must stay finite", 2, 4, 6, 6, scale=500.0,
                     tags=("large",))
    yield _loss_case(gen, device, "ignore_index=-100 (another label to skip)", 2, 4, 6, 6, ignore=-100,
                     tags=("ignore-index",))
    yield _loss_case(gen, device, "every pixel ignored (the loss is 0, not 0/0 = NaN)", 1, 3, 4, 4, ignored=1.0,
                     tags=("all-ignored",))
    yield _loss_case(gen, device, "an empty batch (the loss is 0)", 0, 3, 4, 4, tags=("empty",))
    yield _loss_case(gen, device, "the gradient with respect to the logits (float64, 20% ignored)", 2, 5, 6, 7,
                     dtype=f64, tags=("gradient",), grad=(0,))


PIXEL_CROSS_ENTROPY = Exercise("pixel_cross_entropy", _reference_loss, COURSE + policy.NLL_LOSS, _loss_visible,
                               _loss_hidden, close("arithmetic"), require=_require_finite)
check_pixel_cross_entropy_visible, check_pixel_cross_entropy_hidden = PIXEL_CROSS_ENTROPY.checks()


# ------------------------------------------------------------------ trained model
def _predict(model: nn.Module, images: Tensor, case: str) -> Tensor:
    """The student's model in eval mode, without gradients, under the guard.
    Returns the predicted labels [N, H, W]."""
    logits = call_student(models.without_grad(model), (images,), COURSE, "model", case, names=["the images"])
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
    where = models.module_device(model)
    if where is not None and where != device:
        fail(f"model is on {where}, expected it on {device}; train it with "
             "device=device (or call model.to(device))")
    nn.Module.train(model, False)  # eval mode, even if a subclass redefines eval()/train()
    kwargs = dict(_SCENE_ITEMS)

    def predict(images: list[Tensor]) -> tuple[Tensor, Tensor]:
        images = torch.stack(images).to(device)  # [n, 3, H, W]
        preds = [_predict(model, chunk, f"{n} new scenes") for chunk in images.split(batch_size)]
        return images, torch.cat(preds)  # [n, H, W]

    (images, preds), labels = predict_then_label(held_out_seeds(n), lambda s: make_scene(s, **kwargs).image,
                                                 predict, lambda s: make_scene(s, **kwargs).semantic)
    labels = torch.stack(labels).to(device)  # [n, H, W]
    return float(_reference_mean_iou(preds, labels, NUM_CLASSES)), images, preds


def _require_threshold(miou: float, n: int) -> None:
    if miou < MIOU_THRESHOLD:
        fail(f"the model's mean IoU on {n} new scenes is {miou:.3f}, below the {MIOU_THRESHOLD} "
             "required; train longer (more epochs or scenes) or with a better learning rate, "
             "and check the model in eval mode on a validation set")


@graded
def check_trained_model_visible(model, device) -> None:
    """The model returns logits [N, C, H, W] on the device and reaches the
    threshold on 128 new scenes."""
    miou, _, _ = _evaluate(model, device, 128)
    print(f"mean IoU on 128 new scenes: {miou:.3f} (required: {MIOU_THRESHOLD})")
    _require_threshold(miou, 128)
    print("trained model: visible checks passed")


@graded
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
