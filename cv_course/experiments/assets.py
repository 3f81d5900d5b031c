"""Train every model the book's chapters load, into the disk cache: ``make book-assets``.

``python -m cv_course.experiments.assets [--jobs 2] [--list]``

The chapters never train: they call :func:`cv_course.experiments.detection.trained_detector`
or :func:`cv_course.experiments.segmentation.cached_train_and_evaluate`, which load the
weights from the cache (``$CV_COURSE_CACHE`` or ``~/.cache/cv_course``) and train only on
a miss. This command fills the cache first, outside the notebooks' execution timeout:
``--jobs`` worker processes (default 2, the CI machine's cores), one math thread each,
the longest trainings first (so the last one to start is a short one and the two
workers finish close together). A model already in the cache costs a load. Each line
printed says which model, whether it was trained or found, and how long it took.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context

# Detectors the chapters load, long trainings first (single-thread minutes in a cold CI
# run, two workers: panoptic_fpn ~8, detr ~13, mask_rcnn ~7.5, retinanet ~4.5, faster_rcnn
# ~4.5; each of the four segmentation models ~1): the order only decides which worker
# starts what, and either of the first two first gives the same schedule. The
# single-stage chapter reads its detectors' measurements from benchmarks/results/*.json
# and trains none, so YOLO, FCOS and the RetinaNet loss ablation are not here.
BOOK_DETECTORS = ("panoptic_fpn", "detr", "mask_rcnn", "retinanet", "faster_rcnn")


def _segmentation(name: str) -> str:
    from .segmentation import CHAPTER_SETUP, cached_train_and_evaluate

    r = cached_train_and_evaluate(name, CHAPTER_SETUP)
    how = "found in the cache" if r.from_cache else f"trained in {r.train_seconds:.0f} s"
    return f"segmentation {name}: {how}, mIoU {r.miou:.3f}"


def _attribute_heads(model) -> str:
    """The Beyond 2D chapter's colour heads on the Faster R-CNN (cached by its weights)."""
    from .attributes import AttributeSetup, trained_attribute_head

    start = time.perf_counter()
    for source in ("features", "pixels"):
        trained_attribute_head(model, AttributeSetup(source=source))
    return f"; its attribute heads in {time.perf_counter() - start:.0f} s"


# What a chapter trains on top of a detector, run in the detector's own task, after it:
# run elsewhere, it could train the same detector a second time in the other worker.
FOLLOWERS = {"faster_rcnn": _attribute_heads}


def _detector(name: str) -> str:
    from .detection import trained_detector

    start = time.perf_counter()
    model = trained_detector(name)
    if time.perf_counter() - start < 0.5 * model.train_seconds:  # a load takes a second or two
        line = f"detector {name}: found in the cache (trained in {model.train_seconds:.0f} s)"
    else:
        line = f"detector {name}: trained in {model.train_seconds:.0f} s"
    return line + (FOLLOWERS[name](model) if name in FOLLOWERS else "")


def _task(kind: str, name: str) -> tuple[str, float]:
    import torch

    torch.set_num_threads(1)
    start = time.perf_counter()
    line = _segmentation(name) if kind == "segmentation" else _detector(name)
    return line, time.perf_counter() - start


def tasks() -> list[tuple[str, str]]:
    """(kind, name) of every model the book loads, longest first."""
    from .detection import detector_names
    from .segmentation import CHAPTER_MODELS

    known = set(detector_names())
    detectors = [("detector", n) for n in BOOK_DETECTORS if n in known]
    missing = [n for n in BOOK_DETECTORS if n not in known]
    if missing:
        raise SystemExit(f"book-assets: no detector registered as {missing}; see "
                         "cv_course.experiments.detection._SPEC_MODULES")
    segmentation = [("segmentation", n) for n in CHAPTER_MODELS]
    return detectors + segmentation


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
    p.add_argument("--list", action="store_true", help="list the models and exit")
    args = p.parse_args(argv)
    todo = tasks()
    if args.list:
        print("\n".join(f"{kind} {name}" for kind, name in todo))
        return 0
    os.environ.update({k: "1" for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")})
    start = time.perf_counter()
    failed = []
    with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn")) as pool:
        futures = {pool.submit(_task, kind, name): f"{kind} {name}" for kind, name in todo}
        for future in as_completed(futures):
            try:
                line, seconds = future.result()
                print(f"{line} [{seconds:.0f} s wall]", flush=True)
            except Exception as e:  # noqa: BLE001 (report every failure, then fail)
                failed.append(futures[future])
                print(f"{futures[future]}: FAILED: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
    print(f"book-assets: {len(todo) - len(failed)} of {len(todo)} models ready in "
          f"{time.perf_counter() - start:.0f} s", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
