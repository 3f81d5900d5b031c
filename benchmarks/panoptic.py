"""Panoptic FPN on scenes with stuff: train cold, then PQ / SQ / RQ on 500 held-out scenes.

Trains ``"panoptic_fpn"`` (:mod:`cv_course.experiments.panoptic`: our Mask R-CNN +
a semantic head on the shared FPN, the heuristic merge) with its default setup
through :func:`cv_course.experiments.detection.train_detector`, prints one line per
epoch, then panoptic quality overall, for things and for stuff (issue 12's target:
PQ >= 0.70), the training minutes and the inference time per image.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/panoptic.py [--threads 1] [--epochs E]
        [--n-train N] [--n-val 500] [--val-n 100] [--json benchmarks/results/panoptic.json]

Run it through ``/work/bench/heavy`` on the shared machine (one math thread): the
training minutes are then the single-thread figure CI pays (``make book-assets``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import time

import torch

from cv_course.experiments.detection import detector_spec, train_detector
from cv_course.experiments.panoptic import evaluate_panoptic, make_panoptic_eval

NAME = "panoptic_fpn"


def main() -> None:
    spec = detector_spec(NAME)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=None, help="default: the spec's")
    parser.add_argument("--n-train", type=int, default=None, help="default: the spec's")
    parser.add_argument("--n-val", type=int, default=spec.setup.n_val)
    parser.add_argument("--val-n", type=int, default=100,
                        help="PQ on this many held-out scenes after each epoch (0: none)")
    parser.add_argument("--json", default=None, help="write the result to this JSON file")
    parser.add_argument("--save", default=None, help="save the trained weights to this file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    overrides = {k: v for k, v in (("epochs", args.epochs), ("n_train", args.n_train),
                                   ("n_val", args.n_val)) if v is not None}
    setup = dataclasses.replace(spec.setup, **overrides)
    load = os.getloadavg()[0]
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, {args.threads} thread(s), load average {load:.1f}")
    print(setup, flush=True)
    val = make_panoptic_eval(setup.n_val, setup.data_seed + 1, setup)
    val_fn = None
    if args.val_n:  # the PQ trajectory, epoch by epoch (not counted in the training time)
        val_fn = lambda model: evaluate_panoptic(model, val[0][:args.val_n],  # noqa: E731
                                                 val[1][:args.val_n])["pq"]
    r = train_detector(NAME, setup, progress=True, val_fn=val_fn)
    m = evaluate_panoptic(r.model, *val)
    print(f"{NAME}: PQ {m['pq']:.3f} (things {m['pq_things']:.3f}, stuff {m['pq_stuff']:.3f}), "
          f"SQ {m['sq']:.3f} ({m['sq_things']:.3f}, {m['sq_stuff']:.3f}), "
          f"RQ {m['rq']:.3f} ({m['rq_things']:.3f}, {m['rq_stuff']:.3f}); box mAP@0.5 "
          f"{m['map_50']:.3f}, mask mAP@0.5 {m['mask_map_50']:.3f} (scores >= "
          f"{spec.config.box_score_thresh}); "
          f"train {r.train_seconds / 60:.1f} min on {args.threads} thread(s) "
          f"({r.seconds_per_step:.3f} s/step); inference {1000 * m['seconds_per_image']:.1f} "
          f"ms/img (load average {load:.1f} -> {os.getloadavg()[0]:.1f})", flush=True)
    if args.save:  # the trained_detector cache file format
        torch.save({"state_dict": r.model.state_dict(), "train_seconds": r.train_seconds,
                    "history": dataclasses.asdict(r.history)}, args.save)
    record = {"model": NAME, **m, "box_score_thresh": spec.config.box_score_thresh,
              "images_per_second": 1 / m["seconds_per_image"],
              "train_seconds": r.train_seconds, "train_minutes": r.train_seconds / 60,
              "steps": len(r.history.step_loss), "epochs": setup.epochs,
              "n_train": setup.n_train, "n_val": setup.n_val, "parameters": r.parameters,
              "threads": args.threads, "load_before": load, "load_after": os.getloadavg()[0],
              "pq_per_epoch_first_val_n": r.history.val_metric, "val_n": args.val_n,
              "final_losses": {k: v[-1] for k, v in r.history.losses.items()},
              "torch": torch.__version__, "date": time.strftime("%Y-%m-%d")}
    if args.json:
        with open(args.json, "w") as f:
            json.dump([record], f, indent=1)


if __name__ == "__main__":
    main()
