"""What a student's code may not call while it is checked: the one catalogue.

An exercise composes its rules from these parts with ``+``::

    course_code() + TORCHVISION + TRANSPOSED_CONVOLUTION

* :func:`course_code`: the course's own reference code, i.e. every ``cv_course``
  subpackage but ``grading`` and ``device`` (and those an assignment needs, such as
  ``models`` for the classifier whose maps a student explains), and the assignment
  modules of ``cv_course.grading``, which hold the references under other names;
* :data:`TORCHVISION`, :data:`EXPLANATION_LIBRARIES`, :data:`DETECTION_METRICS`: libraries
  that implement exercises;
* operator rules, checked on every operator that reaches PyTorch's dispatcher
  (so ``F.max_unpool2d``, ``nn.MaxUnpool2d`` and ``torch.ops.aten.max_unpool2d``
  are one and the same call): :data:`UNPOOLING`, :data:`TRANSPOSED_CONVOLUTION`,
  :data:`NLL_LOSS`, :data:`BILINEAR_SAMPLING`.

Always refused, whatever the exercise (see ``guard``): switching the monitors
off, starting a process, starting a raw thread (``_thread.start_new_thread``).
"""

from __future__ import annotations

import pkgutil

import cv_course

from .guard import Forbidden

# cv_course.grading's own machinery: a student may call it (it computes no answer).
HARNESS = frozenset({"guard", "checks", "policy", "numerics", "models", "heldout", "exercise",
                     "tamper", "release", "failclosed"})


def course_code(*allowed: str) -> Forbidden:
    """Every part of cv_course that holds reference code, except ``grading``'s
    harness, ``device`` and the subpackages named in ``allowed`` ("models", "data")."""
    keep = {"grading", "device", *allowed}
    import cv_course.grading as grading

    parts = [f"cv_course.{m.name}" for m in pkgutil.iter_modules(cv_course.__path__) if m.name not in keep]
    parts += [f"cv_course.grading.{m.name}" for m in pkgutil.iter_modules(grading.__path__)
              if m.name not in HARNESS]
    return Forbidden(modules=tuple(parts))


TORCHVISION = Forbidden(modules=("torchvision.ops", "torchvision.models"), ops=("torchvision::",))
EXPLANATION_LIBRARIES = Forbidden(modules=("captum", "pytorch_grad_cam", "torchcam", "torchattacks",
                                           "foolbox", "advertorch"))
DETECTION_METRICS = Forbidden(modules=("pycocotools", "torchmetrics"))
# F.grid_sample: bilinear sampling at arbitrary points, the heart of RoI Align.
BILINEAR_SAMPLING = Forbidden(ops=("aten::grid_sampler", "aten::grid_sampler_2d", "aten::grid_sampler_3d",
                                   "aten::cudnn_grid_sampler", "aten::_grid_sampler_2d_cpu_fallback"))


def _short(op_name: str) -> str:
    """'aten::convolution_backward.default' -> 'convolution_backward'."""
    return op_name.split("::")[-1].split(".")[0]


def _unpooling(name: str, args, kwargs) -> str | None:
    short = _short(name)
    if "unpool" in short or ("max_pool" in short and "backward" in short):
        return f"the operator {name} (max unpooling)"
    return None


def _transposed_convolution(name: str, args, kwargs) -> str | None:
    """Any transposed convolution, the backward of a convolution (autograd of a
    convolution computes a transposed one) and ``F.fold`` (``col2im``: the
    overlap-and-add itself). A regular convolution is allowed."""
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


UNPOOLING = Forbidden(op_rules=(_unpooling,))  # aten::max_unpool2d/3d and max pooling's backward
TRANSPOSED_CONVOLUTION = Forbidden(op_rules=(_transposed_convolution,))
NLL_LOSS = Forbidden(op_rules=(_nll,))  # F.nll_loss, F.cross_entropy; log_softmax is allowed
