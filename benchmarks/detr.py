"""DETR's convergence curve: held-out mAP after every epoch, then the full benchmark record.

Trains ``SPECS["detr"]`` once on one thread through
:func:`cv_course.experiments.detection.trained_detector` (so the trained model lands
in the disk cache the book reads), evaluating after each epoch on the first
``--curve-n`` held-out scenes (mAP@0.5 and COCO mAP). The evaluation runs in eval
mode without gradients or random numbers, so the weights are those of a run without
it, and its time is not counted as training time. Then the final model is measured
on all 500 held-out scenes exactly as ``benchmarks/detection.py`` does, and one
record, with the curve added, is written to ``--json``.

    .venv/bin/python benchmarks/detr.py [--json benchmarks/results/detr.json]
        [--epochs E] [--config '{"box_refine": false}'] [--curve-n 200]

``--config`` / ``--epochs`` override the registered default (e.g. plain DETR,
``{"reference_points": false, "attention_sigma": 0, "box_refine": false,
"groups": 1}``, for contrast). The model must not be cached yet (its curve would be
missing): the script stops and names the cache file to remove.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time

import torch

from cv_course.experiments.detection import (_cache_key, default_cache_dir, detector_spec,
                                             evaluate_detector, make_scenes, trained_detector)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", default="detr")
    parser.add_argument("--epochs", type=int, default=None, help="default: the spec's")
    parser.add_argument("--config", default="{}", help="JSON of DETRConfig overrides")
    parser.add_argument("--curve-n", type=int, default=200, help="held-out scenes per point")
    parser.add_argument("--json", default=None, help="write the record to this JSON file")
    args = parser.parse_args()
    spec = detector_spec(args.name)
    setup = spec.setup if args.epochs is None else dataclasses.replace(
        spec.setup, epochs=args.epochs)
    config = spec.config.replace(**json.loads(args.config))
    path = default_cache_dir() / f"detector_{args.name}_{_cache_key(args.name, setup, config)}.pt"
    if path.exists():
        raise SystemExit(f"{path} is cached already: remove it to measure its curve again")
    val = make_scenes(setup.n_val, setup.data_seed + 1, setup)
    curve_images, curve_targets = val[0][:args.curve_n], val[1][:args.curve_n]
    curve = {"n_val": len(curve_images), "epoch": [], "map_50": [], "map": []}

    def val_fn(model) -> float:
        m = evaluate_detector(model, curve_images, curve_targets)
        curve["epoch"].append(len(curve["epoch"]) + 1)
        curve["map_50"].append(m["map_50"])
        curve["map"].append(m["map"])
        return m["map_50"]

    load = os.getloadavg()[0]
    print(f"{args.name}: {setup}\n{config}\nload average {load:.1f}", flush=True)
    model = trained_detector(args.name, setup, config, progress=True, val_fn=val_fn)
    with torch.no_grad():
        m = evaluate_detector(model, *val)
    record = {"model": args.name, **m, "images_per_second": 1 / m["seconds_per_image"],
              "train_seconds": model.train_seconds, "steps": len(model.history["step_loss"]),
              "epochs": setup.epochs, "parameters": sum(p.numel() for p in model.parameters()),
              "threads": torch.get_num_threads(), "load_before": load,
              "load_after": os.getloadavg()[0], "torch": torch.__version__,
              "date": time.strftime("%Y-%m-%d"), "config": dataclasses.asdict(config),
              "source": "benchmarks/detr.py: trained_detector, trained in this run (one "
                        "thread), now in the disk cache; curve: held-out mAP after each epoch",
              "curve": curve}
    print(f"{args.name}: mAP {m['map']:.3f}, mAP@0.5 {m['map_50']:.3f}, train "
          f"{model.train_seconds:.0f} s (load {load:.1f} -> {os.getloadavg()[0]:.1f})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump([record], f, indent=1)


if __name__ == "__main__":
    main()
