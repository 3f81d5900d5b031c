"""Faster R-CNN + FPN on generated scenes: ours against torchvision's, same backbone and budget.

Trains our :class:`cv_course.models.detection.FasterRCNN` and torchvision's
``FasterRCNN`` class (built around the same backbone + FPN, every setting
matched, nothing downloaded) with the same loop, data, batch order, optimiser
and schedule, prints one progress line per epoch, then the COCO mAP of each on
500 held-out scenes, the training time, images/s and the ratios ours/theirs.
Finally the R-CNN / Fast R-CNN / Faster R-CNN inference-time comparison.

    .venv/bin/python benchmarks/detection.py [--threads 2] [--epochs E] [--n-train N]
        [--models faster_rcnn,torchvision] [--no-two-stage-timing] [--json FILE]

Any name of ``cv_course.experiments.detection.detector_names()`` can be listed in
``--models``; each trains with its own default setup (``DetectorSpec.setup``) unless
``--epochs`` / ``--n-train`` override it. ``--json`` writes one record per model
(mAP, training time, inference images/s, parameters, machine load) for the book's
speed/accuracy table to read. ``--cached`` gets each model from
``trained_detector`` instead (the disk cache the book loads from, else trained by
the same loop on one thread and cached): a model already trained is then only
measured, and its record says so (``source``) with the training time recorded
when it was trained.

Wall times on a shared CPU depend on what else runs: the load average is printed
with each model, and only the ratios (measured in one process) compare the models.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from dataclasses import replace

import torch

from cv_course.experiments.detection import (
    MODEL_NAMES,
    DetectionSetup,
    DetectionResult,
    detector_spec,
    evaluate_detector,
    make_scenes,
    time_two_stage,
    train_detector,
    trained_detector,
)
from cv_course.train_detection import DetectionHistory
from cv_course.models.detection import FasterRCNNConfig


def cached_result(name: str, setup: DetectionSetup) -> tuple[DetectionResult, str]:
    """``trained_detector(name, setup)`` as a :class:`DetectionResult`, and where it came from."""
    start = time.perf_counter()
    model = trained_detector(name, setup)
    history = DetectionHistory(**model.history)
    steps = max(1, len(history.step_loss))
    trained_now = time.perf_counter() - start > 0.5 * model.train_seconds  # a load takes ~1 s
    source = ("trained_detector: trained in this run (one thread), now in the disk cache"
              if trained_now else "trained_detector: loaded from the disk cache (train_seconds "
              "as measured when it was trained; load_before/after are this run's)")
    return DetectionResult(name, history, model, model.train_seconds,
                           model.train_seconds / steps,
                           sum(p.numel() for p in model.parameters())), source


def main() -> None:
    default = DetectionSetup()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODEL_NAMES))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=None, help="default: each model's own")
    parser.add_argument("--n-train", type=int, default=None, help="default: each model's own")
    parser.add_argument("--n-val", type=int, default=default.n_val)
    parser.add_argument("--no-two-stage-timing", action="store_true")
    parser.add_argument("--json", default=None, help="write the results to this JSON file")
    parser.add_argument("--cached", action="store_true",
                        help="load each model from trained_detector's disk cache "
                             "(train on one thread and cache it on a miss)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    overrides = {k: v for k, v in (("epochs", args.epochs), ("n_train", args.n_train))
                 if v is not None}
    setup = replace(default, n_val=args.n_val, **overrides)
    config = FasterRCNNConfig()
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, {args.threads} thread(s), load average "
          f"{os.getloadavg()[0]:.1f}")
    print(setup)
    t0 = time.perf_counter()
    n_train = 0 if args.cached else setup.n_train  # trained_detector makes its own scenes
    train = make_scenes(n_train, setup.data_seed, setup)
    val = make_scenes(setup.n_val, setup.data_seed + 1, setup)
    print(f"generated {n_train} + {setup.n_val} scenes in {time.perf_counter() - t0:.1f} s",
          flush=True)

    rows, records = {}, []
    for name in args.models.split(","):
        load = os.getloadavg()[0]
        model_setup = replace(detector_spec(name).setup, **overrides)
        print(f"--- {name}: {model_setup}", flush=True)
        spec = detector_spec(name)
        data = train
        if (spec.scenes is not None or model_setup.n_train != setup.n_train
                or model_setup.scene_kwargs != setup.scene_kwargs):
            data = None  # train_detector makes the spec's own scenes (masks, stuff, ...)
        if args.cached:
            r, source = cached_result(name, model_setup)
        else:
            r = train_detector(name, model_setup, data=data, progress=True)
            source = "benchmarks/detection.py: trained in this run"
        m = evaluate_detector(r.model, *val)
        rows[name] = (r, m)
        records.append({"model": name, **{k: v for k, v in m.items()},
                        "images_per_second": 1 / m["seconds_per_image"],
                        "train_seconds": r.train_seconds, "steps": len(r.history.step_loss),
                        "epochs": model_setup.epochs, "parameters": r.parameters,
                        "threads": args.threads, "load_before": load,
                        "load_after": os.getloadavg()[0], "torch": torch.__version__,
                        "date": time.strftime("%Y-%m-%d"), "source": source})
        if args.json:
            with open(args.json, "w") as f:
                json.dump(records, f, indent=1)
        print(f"{name}: mAP {m['map']:.3f}, mAP@0.5 {m['map_50']:.3f}, mAP@0.75 {m['map_75']:.3f}; "
              f"train {r.train_seconds:.0f} s ({r.history.images_per_second:.1f} img/s, "
              f"{r.seconds_per_step:.3f} s/step); inference {1000 * m['seconds_per_image']:.1f} "
              f"ms/img (load average {load:.1f} -> {os.getloadavg()[0]:.1f})", flush=True)

    print("\n| model | mAP@[.5:.95] | mAP@0.5 | train (s) | img/s | s/step | inference ms/img "
          "| inference img/s | parameters |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, (r, m) in rows.items():
        print(f"| {name} | {m['map']:.3f} | {m['map_50']:.3f} | {r.train_seconds:.0f} | "
              f"{r.history.images_per_second:.1f} | {r.seconds_per_step:.3f} | "
              f"{1000 * m['seconds_per_image']:.1f} | {1 / m['seconds_per_image']:.1f} | "
              f"{r.parameters:,} |")
    if {"faster_rcnn", "torchvision"} <= rows.keys():
        (ours, mo), (theirs, mt) = rows["faster_rcnn"], rows["torchvision"]
        print(f"\nours / torchvision: mAP {mo['map'] - mt['map']:+.3f} (difference), "
              f"mAP@0.5 {mo['map_50'] - mt['map_50']:+.3f}, time per training step "
              f"{ours.seconds_per_step / theirs.seconds_per_step:.2f}x, inference per image "
              f"{mo['seconds_per_image'] / mt['seconds_per_image']:.2f}x")

    if not args.no_two_stage_timing and "faster_rcnn" in rows:
        print("\n| detector | proposals / image | CNN passes / image | inference s/img |")
        print("|---|---:|---:|---:|")
        for row in time_two_stage(rows["faster_rcnn"][0].model, val[0][:8], config=config):
            print(f"| {row['name']} | {row['proposals_per_image']} | "
                  f"{row['cnn_passes_per_image']} | {row['seconds_per_image']:.3f} |", flush=True)


if __name__ == "__main__":
    main()
