"""Mask R-CNN on generated scenes: ours, ours with RoI Pool, torchvision's; box and mask mAP.

Trains the named detectors of ``cv_course.experiments.mask_rcnn`` (default all three:
``mask_rcnn``, ``mask_rcnn_roi_pool``, ``torchvision_mask_rcnn``) with the same
loop, scenes (with instance masks), batch order, optimiser and schedule, then
scores each on 500 held-out scenes with
:func:`cv_course.experiments.mask_rcnn.evaluate_instance_segmentation`: box mAP,
mask mAP@[.5:.95], @0.5, @0.75, training and inference time.

    .venv/bin/python benchmarks/mask_rcnn.py [--models NAME[,NAME]] [--threads 1]
        [--epochs E] [--n-train N] [--n-val 500] [--cache] [--json benchmarks/results/mask_rcnn.json]

``--cache`` trains a model that runs at its default setup through
``trained_detector`` (one thread, disk cache), so the model measured is the one the
book loads; a cached model is loaded and its recorded training time reported.

``--json`` keeps the records of models not trained in this run, so the three can
be trained by separate runs (one model per ``/work/bench/heavy`` slot). Wall times on
a shared CPU depend on the load, printed with each model.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from dataclasses import replace
from pathlib import Path

import torch

from cv_course.experiments.detection import (DetectionSetup, _cache_key, detector_spec,
                                              train_detector, trained_detector)
from cv_course.experiments.mask_rcnn import SPECS, evaluate_instance_segmentation, make_mask_scenes

COLUMNS = (("box_map_50", "box mAP@0.5"), ("box_map", "box mAP"), ("mask_map", "mask mAP"),
           ("mask_map_50", "mask mAP@0.5"), ("mask_map_75", "mask mAP@0.75"))

MASK_SETTINGS = ("roi_pooler", "mask_target_aligned", "mask_roi_output_size", "mask_head_convs",
                 "mask_head_channels")  # recorded with each model's figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(SPECS))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=None, help="default: each model's own")
    parser.add_argument("--n-train", type=int, default=None, help="default: each model's own")
    parser.add_argument("--n-val", type=int, default=DetectionSetup().n_val)
    parser.add_argument("--cache", action="store_true",
                        help="default setups: train (or load) through trained_detector's cache")
    parser.add_argument("--json", default=None, help="write (merge) the records into this file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    overrides = {k: v for k, v in (("epochs", args.epochs), ("n_train", args.n_train))
                 if v is not None}
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, {args.threads} thread(s), load average "
          f"{os.getloadavg()[0]:.1f}", flush=True)
    val_setup = DetectionSetup()
    val = make_mask_scenes(args.n_val, val_setup.data_seed + 1, val_setup)
    records = {}
    for name in args.models.split(","):
        setup = replace(detector_spec(name).setup, **overrides)
        load = os.getloadavg()[0]
        print(f"--- {name}: {setup}", flush=True)
        config = detector_spec(name).config
        cached = args.cache and setup == detector_spec(name).setup
        if cached:  # the book's model: trained once on one thread, then loaded
            model = trained_detector(name, progress=True)
            train_seconds, steps = model.train_seconds, len(model.history["step_loss"])
        else:
            r = train_detector(name, setup, progress=True)
            model, train_seconds, steps = r.model, r.train_seconds, len(r.history.step_loss)
        seconds_per_step = train_seconds / max(1, steps)
        m = evaluate_instance_segmentation(model, *val)
        settings = {k: getattr(config, k) for k in MASK_SETTINGS}
        if name.startswith("torchvision"):  # its own targets: RoI Align with aligned=False
            settings["mask_target_aligned"] = False
        records[name] = {"model": name, **settings,
                         "mask_positives_per_image": getattr(config, "mask_positives_per_image",
                                                             0),
                         **m, "images_per_second": 1 / m["seconds_per_image"],
                         "train_seconds": train_seconds, "steps": steps,
                         "seconds_per_step": seconds_per_step, "epochs": setup.epochs,
                         "n_train": setup.n_train, "n_val": args.n_val,
                         "parameters": sum(p.numel() for p in model.parameters()), "threads": args.threads,
                         "cache_key": _cache_key(name, setup, config) if cached else None,
                         "load_before": load, "load_after": os.getloadavg()[0],
                         "torch": torch.__version__, "date": time.strftime("%Y-%m-%d")}
        print(f"{name}: " + ", ".join(f"{label} {m[k]:.3f}" for k, label in COLUMNS)
              + f"; train {train_seconds:.0f} s ({seconds_per_step:.3f} s/step); inference "
              f"{1000 * m['seconds_per_image']:.1f} ms/img (load {load:.1f} -> "
              f"{os.getloadavg()[0]:.1f})", flush=True)
        if args.json:  # read just before writing: separate runs may share the file
            path = Path(args.json)
            path.parent.mkdir(parents=True, exist_ok=True)
            saved = {r["model"]: r for r in json.loads(path.read_text())} if path.exists() else {}
            records = {**saved, **records}
            path.write_text(json.dumps(list(records.values()), indent=1))

    print("\n| model | " + " | ".join(label for _, label in COLUMNS)
          + " | train (min) | s/step | inference ms/img |")
    print("|---|" + "---:|" * (len(COLUMNS) + 3))
    for name, rec in records.items():
        print(f"| {name} | " + " | ".join(f"{rec[k]:.3f}" for k, _ in COLUMNS)
              + f" | {rec['train_seconds'] / 60:.1f} | {rec['seconds_per_step']:.3f} | "
              f"{1000 * rec['seconds_per_image']:.1f} |")


if __name__ == "__main__":
    main()
