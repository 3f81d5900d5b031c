"""Checks for assignment 06 (understanding CNNs): ``saliency``, ``grad_cam``,
``fgsm``, and the pointing game of the student's Grad-CAM on the trained classifier.

Visible checks use tiny hand-made models whose answer can be worked out on
paper, a small convolutional net in train mode (whose maps must not depend on
the rest of the batch), and small twins of the hidden cases. Hidden checks build
random networks at every run from fresh seeds (depth, widths, activations,
pooling, BatchNorm, dropout and the head all drawn; float32 and float64; in
train or eval mode; frozen or not) and compare with the ``cv_course.interpret``
references, run on the original model after the student's function has
returned on its copy.

Around every call ``call_student`` requires: no delegation (the course's code
but ``models`` and ``data``, which only build the classifier and the scenes,
the grading modules, and the explanation and attack libraries: see
:mod:`.policy`), no process or raw thread started, the model's copy left as it
was (weights, BatchNorm statistics, modes, ``requires_grad``, ``.grad``, hooks,
attributes), the inputs unmodified, and nothing global left behind.

:func:`check_pointing_game` runs the student's Grad-CAM on the trained classifier
(a fresh ``shapes_classifier()``, not the notebook's copy) over scenes from fresh
seeds; the maps must agree with the reference and hit the object often enough.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data import make_scene
from ..device import one_thread
from ..interpret import fgsm as _reference_fgsm  # bound at import, before any student code
from ..interpret import grad_cam as _reference_grad_cam
from ..interpret import pointing_game as _reference_pointing_game
from ..interpret import saliency as _reference_saliency
from . import models, policy
from .checks import call_student, check_close, check_tensor, fail
from .exercise import Case, Exercise, close, graded
from .heldout import held_out_seeds, predict_then_label
from .numerics import RTOL, dtype_name, exact_float32

FORBIDDEN = policy.course_code("models", "data") + policy.EXPLANATION_LIBRARIES

# The pointing game: Grad-CAM at the classifier's last feature map, for the true
# class, on fresh scenes; a hit is a peak within TOLERANCE pixels of the object.
# The reference scores 0.986 on average (0.973-0.997 over 20 draws of 300 scenes,
# standard deviation 0.006); a map that always points at the image centre scores
# about 0.72, vanilla saliency about 0.82.
POINTING_THRESHOLD = 0.93
POINTING_TOLERANCE = 4
POINTING_SCENES = 300
# ClassificationScenes' scenes (one object, 0.3-0.7 of a 64-px image), from held-out
# seeds, far above those of the classifier's training scenes (0 .. 3999).
_SCENES = dict(size=64, min_objects=1, max_objects=1, min_scale=0.3, max_scale=0.7)


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
    return models.randomize_batchnorm(model, gen)


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


def _layer_name(model: nn.Module, layer: nn.Module) -> str:
    return next(n for n, m in model.named_modules() if m is layer)


def _random_case(gen, device, *, dtype=torch.float32, train=False, frozen="none", head="gap", n=3, c=3,
                 extremes=False):
    """A random CNN prepared as asked, images and targets for it, its description and tags.
    Models in train mode always have BatchNorm (so that forgetting eval mode shows);
    the others have it half of the time."""
    H, W = (int(v) for v in torch.randint(12, 21, (2,), generator=gen))
    batchnorm = train or bool(torch.rand(1, generator=gen) < 0.5)
    model = random_classifier(gen, in_channels=c, size=(H, W), head=head, batchnorm=batchnorm)
    model = _prepare(model, device=device, dtype=dtype, train=train, frozen=frozen)
    images = _random_images(gen, n, c, (H, W), device=device, dtype=dtype, extremes=extremes)
    targets = torch.randint(4, (n,), generator=gen).to(device)
    kind = {"gap": "global average pooling", "flatten": "flatten + linear", "mlp": "an MLP head"}[head]
    frozen_text = {"none": "", "first": ", first stage frozen", "all": ", all parameters frozen"}[frozen]
    name = (f"a random {len(model.features)}-block CNN ({'BatchNorm' if batchnorm else 'no BatchNorm'}) "
            f"with {kind}, {'train' if train else 'eval'} mode{frozen_text}, {n} image(s) of {c}x{H}x{W}, "
            f"{dtype_name(dtype)}")
    tags = (dtype_name(dtype), "train" if train else "eval", f"frozen-{frozen}", f"head-{head}", f"{c}-channel")
    return model, images, targets, name, tags + ("saturated",) * extremes


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
    model = _prepare(models.randomize_batchnorm(model, gen), device=device, dtype=torch.float32, train=True)
    images = _random_images(gen, 3, 3, (16, 12), device=device)
    return model, images, torch.tensor([2, 0, 3], device=device)


def _require_non_negative(what: str):
    def require(out: Tensor, case: Case, name: str) -> None:
        if (out < 0).any():
            fail(f"{name} returned negative values on {case.name}: {what}")
    return require


_F32, _F64 = torch.float32, torch.float64
_SMALL_NET = ("float32", "train", "frozen-none", "head-mlp", "3-channel")  # the tags of _visible_net's cases


# -------------------------------------------------------------------- saliency
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


def _saliency_case(gen, device, **kw) -> Case:
    model, images, targets, name, tags = _random_case(gen, device, **kw)
    return Case(name, (model, images, targets), tags)


def _saliency_visible(gen, device):
    model, images, target, expected = linear_saliency_example(device)
    yield Case("the linear example (targets 0 and 1; the gradient of a linear score is its weight)",
               (model, images, target), expected=expected, show=True)
    model, images, target = _visible_net(device)
    yield Case("a small CNN in train mode, 3 images of 3x16x12", (model, images, target), _SMALL_NET,
               alone=True)
    yield _saliency_case(gen, device, dtype=_F64, frozen="first", head="flatten", n=2)
    yield _saliency_case(gen, device, frozen="all", head="mlp", n=2, c=1)
    yield _saliency_case(gen, device, train=True, head="gap", n=2)


def _saliency_hidden(gen, device):
    for dtype, train, frozen, head, n, c in [(_F32, True, "none", "gap", 3, 3),
                                             (_F64, False, "first", "flatten", 2, 3),
                                             (_F32, False, "all", "mlp", 4, 1),
                                             (_F64, True, "none", "mlp", 1, 3)]:
        yield _saliency_case(gen, device, dtype=dtype, train=train, frozen=frozen, head=head, n=n, c=c)


SALIENCY = Exercise("saliency", _reference_saliency, FORBIDDEN, _saliency_visible, _saliency_hidden,
                    close("network"), require=_require_non_negative("take the absolute value of the gradient"),
                    batched=(1, 2))
check_saliency_visible, check_saliency_hidden = SALIENCY.checks()


# -------------------------------------------------------------------- grad_cam
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


def _grad_cam_case(gen, device, which: str, **kw) -> Case:
    """A random CNN and one of its layers: "any" (drawn), "last" block, "body", "first" convolution."""
    model, images, targets, name, tags = _random_case(gen, device, **kw)
    candidates = list(model.features.modules())  # the body, its blocks and their layers
    layer = {"any": candidates[int(torch.randint(1, len(candidates), (1,), generator=gen))],
             "last": model.features[-1], "body": model.features, "first": model.features[0][0]}[which]
    name = f"{name}, layer {_layer_name(model, layer)} ({type(layer).__name__})"
    return Case(name, (model, layer, images, targets), tags + (f"layer-{which}",))


def _grad_cam_visible(gen, device):
    model, layer, images, target, expected = handmade_grad_cam_example(device)
    yield Case("the hand-made example (maps ReLU(2x) for class 0 and ReLU(-x) for class 1)",
               (model, layer, images, target), expected=expected, show=True)
    model, images, target = _visible_net(device)
    yield Case("a small CNN in train mode, layer features[1] (output 8x6), 3 images",
               (model, model.features[1], images, target), _SMALL_NET + ("layer-any",), alone=True)
    yield _grad_cam_case(gen, device, "last", dtype=_F64, head="flatten", n=2)
    yield _grad_cam_case(gen, device, "body", frozen="all", n=2)
    yield _grad_cam_case(gen, device, "first", dtype=_F64, train=True, frozen="first", head="mlp", n=2)


def _grad_cam_hidden(gen, device):
    for dtype, train, frozen, head, n, which in [(_F32, True, "none", "gap", 3, "any"),
                                                 (_F64, False, "none", "flatten", 2, "last"),
                                                 (_F32, False, "all", "gap", 3, "body"),
                                                 (_F64, True, "first", "mlp", 2, "any"),
                                                 (_F32, False, "none", "flatten", 1, "first")]:
        yield _grad_cam_case(gen, device, which, dtype=dtype, train=train, frozen=frozen, head=head, n=n)


GRAD_CAM = Exercise("grad_cam", _reference_grad_cam, FORBIDDEN, _grad_cam_visible, _grad_cam_hidden,
                    close("network"), require=_require_non_negative("Grad-CAM ends with a ReLU"),
                    batched=(2, 3))
check_grad_cam_visible, check_grad_cam_hidden = GRAD_CAM.checks()


# ------------------------------------------------------------------------ fgsm
def _loss_gradient(model: nn.Module, images: Tensor, labels: Tensor) -> Tensor:
    """d CE / d images in eval mode on a copy of the model, Tensor[N, C, H, W]."""
    model = copy.deepcopy(model).eval()
    x = images.detach().clone().requires_grad_(True)
    with torch.enable_grad(), exact_float32():
        loss = F.cross_entropy(model(x), labels, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x)
    return grad


def _undetermined(case: Case, expected: Tensor) -> Tensor:
    """Where the gradient is ~0, its sign is decided by rounding: any step is right there."""
    model, images, labels, _ = case.args
    g = _loss_gradient(model, images, labels).abs()
    return g <= RTOL["network"][images.dtype] * g.amax(dim=(1, 2, 3), keepdim=True)


def _require_fgsm(out: Tensor, case: Case, name: str) -> None:
    """In [0, 1], within the budget, and every pixel moved by exactly eps unless clamped."""
    _, images, _, eps = case.args
    if (out < 0).any() or (out > 1).any():
        fail(f"{name} returned pixels outside [0, 1] on {case.name}: clamp the adversarial image")
    tiny = 1e-6 if images.dtype != torch.float64 else 1e-12
    step = (out - images).abs()
    if (step > eps + tiny).any():
        fail(f"{name} changed a pixel by more than eps = {eps:g} on {case.name}")
    moved = (step - eps).abs() < 1e-6
    if not (moved | (out == 0) | (out == 1) | (step < tiny)).all():
        fail(f"{name} moved some pixels by less than eps (and not because of clamping) on {case.name}: "
             "step by eps * sign(gradient), not by a multiple of the gradient")


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


def _fgsm_case(gen, device, eps: float, **kw) -> Case:
    model, images, labels, name, tags = _random_case(gen, device, **kw)
    eps_tags = ("eps-0",) if eps == 0 else ("eps-1",) if eps >= 1 else ()
    return Case(f"{name}, eps {eps:.4f}", (model, images, labels, eps), tags + eps_tags)


def _fgsm_visible(gen, device):
    model, images, labels, eps, expected = linear_fgsm_example(device)
    yield Case("the linear example (eps 0.1; pixels move along sign(W1 - W0), then are clamped)",
               (model, images, labels, eps), expected=expected, show=True)
    model, images, labels = _visible_net(device)
    for eps in (8 / 255, 0.0):
        yield Case(f"a small CNN in train mode, eps {eps:.4f}", (model, images, labels, eps),
                   _SMALL_NET + ("eps-0",) * (eps == 0), alone=True)
    yield _fgsm_case(gen, device, 0.05, dtype=_F64, frozen="first", head="flatten", n=2, extremes=True)
    yield _fgsm_case(gen, device, 1.0, frozen="all", head="gap", n=2, extremes=True)


def _fgsm_hidden(gen, device):
    eps_random = float(0.01 + 0.09 * torch.rand(1, generator=gen))
    for dtype, train, frozen, head, n, eps in [(_F32, True, "none", "gap", 4, eps_random),
                                               (_F64, False, "first", "flatten", 3, 8 / 255),
                                               (_F32, False, "all", "mlp", 2, 0.03),
                                               (_F64, True, "none", "gap", 2, 0.0),
                                               (_F32, False, "none", "mlp", 2, 1.0)]:
        yield _fgsm_case(gen, device, eps, dtype=dtype, train=train, frozen=frozen, head=head, n=n,
                         extremes=True)


FGSM = Exercise("fgsm", _reference_fgsm, FORBIDDEN, _fgsm_visible, _fgsm_hidden,
                close("arithmetic", free=_undetermined), require=_require_fgsm, batched=(1, 2))
check_fgsm_visible, check_fgsm_hidden = FGSM.checks()


# ---------------------------------------------------------------- pointing game
def _scene_input(seed: int) -> tuple[Tensor, Tensor]:
    with one_thread():
        scene = make_scene(seed, **_SCENES)
    return scene.image, scene.labels[0] - 1  # the image and its class


def _scene_mask(seed: int) -> Tensor:
    with one_thread():
        return make_scene(seed, **_SCENES).masks[0]  # [64, 64] bool


@graded
def check_pointing_game(grad_cam, device, classifier: nn.Module | None = None) -> None:
    """The student's Grad-CAM at the trained classifier's last feature map, for the
    true class, on fresh scenes: it must be Grad-CAM of that model (agree with the
    reference) and its peak must land on the object often enough.

    ``classifier`` defaults to a fresh ``shapes_classifier()`` (trained if not cached)."""
    if classifier is None:
        from ..models.classifier import shapes_classifier

        classifier = shapes_classifier()
    model = classifier.to(device).eval()
    case = f"the trained classifier, layer features, {POINTING_SCENES} new scenes"

    def maps(inputs: list) -> tuple[Tensor, Tensor]:
        images = torch.stack([x for x, _ in inputs]).to(device)  # [n, 3, 64, 64]
        labels = torch.stack([t for _, t in inputs]).to(device)  # [n]
        outs, refs = [], []
        for x, t in zip(images.split(100), labels.split(100)):
            out = call_student(grad_cam, (model, model.features, x, t), FORBIDDEN, "grad_cam", case)
            check_tensor(out, "grad_cam", shape=(len(x), 8, 8), dtype=x.dtype, device=x.device, case=case)
            outs.append(out.detach())
            refs.append(_reference_grad_cam(model, model.features, x, t))  # after the student's call
        return torch.cat(outs), torch.cat(refs)

    # The object masks are made only after every map has been computed.
    seeds = held_out_seeds(POINTING_SCENES)
    (out, expected), masks = predict_then_label(seeds, _scene_input, maps, _scene_mask)
    check_close(out, expected, "grad_cam", kind="network", case=case)
    masks = torch.stack(masks).to(device)
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
