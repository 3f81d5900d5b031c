"""Understanding CNNs, measured: pointing game per heatmap method, and adversarial accuracy.

Uses the cached shape classifiers (``cv_course.models.classifier.shapes_classifier``,
seeds 0, 1 and 2, and a 16 x 16-map variant; trained on first use) and held-out scenes, through the functions in
``cv_course.experiments.interpret`` that the chapter calls. Prints Markdown tables
and the machine's load average, since wall times on a shared CPU depend on what
else runs.

    .venv/bin/python benchmarks/interpret.py [--n 500] [--n-occlusion 100]
        [--n-attack 500] [--threads 1] [--device cpu] [--seeds 0,1,2] [--no-ablation]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch

from cv_course.experiments.interpret import (
    accuracy,
    attack_comparison,
    eps_where_accuracy_drops_below,
    fgsm_curve,
    held_out_scenes,
    pointing_game_table,
    transfer_table,
)
from cv_course.interpret import grad_cam, pointing_game
from cv_course.models.classifier import ClassifierConfig, shapes_classifier

EPS_CURVE = [0, 0.5, 1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64]  # in units of 1/255


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500, help="held-out scenes for the pointing game")
    parser.add_argument("--n-occlusion", type=int, default=100, help="of those, for occlusion")
    parser.add_argument("--n-attack", type=int, default=500, help="held-out scenes for attacks")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads; on a busy shared CPU 1 is often fastest")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seeds", default="0,1,2",
                        help="classifier seeds for the Grad-CAM pointing game across models")
    parser.add_argument("--no-ablation", action="store_true",
                        help="skip training the 16 x 16 variant (one pooling layer fewer)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, {platform.machine()}, {args.threads} thread(s), "
          f"device {device}, load average at start {os.getloadavg()[0]:.1f}\n")

    start = time.perf_counter()
    models = [shapes_classifier(seed=s) for s in (0, 1)]
    print(f"classifiers (seeds 0, 1): trained in {models[0].train_seconds:.0f} s and "
          f"{models[1].train_seconds:.0f} s when first made; loaded/trained now in "
          f"{time.perf_counter() - start:.1f} s")
    models = [m.to(device) for m in models]
    model = models[0]

    images, labels, masks = held_out_scenes(max(args.n, args.n_attack))
    images, labels, masks = images.to(device), labels.to(device), masks.to(device)
    for seed, m in zip((0, 1), models):
        print(f"held-out accuracy, seed {seed}: {accuracy(m, images, labels):.4f} "
              f"({len(labels)} scenes)")

    print("\n### Pointing game (heatmap for the true class; hit = peak inside the object)\n")
    rows = pointing_game_table(model, images[: args.n], labels[: args.n], masks[: args.n],
                               limits={"occlusion 8x8 / 4": args.n_occlusion})
    print("| method | map size | hit rate | hit rate, 4 px tolerance | ms / image | images |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r.method} | {r.resolution[0]}x{r.resolution[1]} | {r.hit_rate:.3f} | "
              f"{r.hit_rate_tol:.3f} | {r.ms_per_image:.2f} | {r.n} |")

    print("\n### Grad-CAM pointing game (last conv) across classifiers\n")
    variants = [(f"seed {s}, 8x8 map", s, ClassifierConfig()) for s in map(int, args.seeds.split(","))]
    if not args.no_ablation:
        variants.append(("seed 0, 16x16 map (pools=2)", 0, ClassifierConfig(pools=2)))
    print("| classifier | accuracy | hit rate | 1 px | 2 px | 4 px tolerance | trained in s |")
    print("|---|---|---|---|---|---|---|")
    for name, seed, config in variants:
        trained = seed in (0, 1) and config == ClassifierConfig()  # loaded above already
        m = models[seed] if trained else shapes_classifier(seed=seed, config=config).to(device)
        heat = grad_cam(m, m.features, images[: args.n], labels[: args.n])
        rates = [pointing_game(heat, masks[: args.n], tolerance=t) for t in (0, 1, 2, 4)]
        print(f"| {name} | {accuracy(m, images, labels):.3f} | "
              + " | ".join(f"{r:.3f}" for r in rates) + f" | {m.train_seconds:.0f} |")

    x, y = images[: args.n_attack], labels[: args.n_attack]
    print("\n### FGSM: accuracy against eps (pixels in [0, 1])\n")
    curve = fgsm_curve(model, x, y, [e / 255 for e in EPS_CURVE])
    print("| eps | eps x 255 | accuracy |")
    print("|---|---|---|")
    for (eps, acc), e255 in zip(curve, EPS_CURVE):
        print(f"| {eps:.4f} | {e255} | {acc:.3f} |")
    below = eps_where_accuracy_drops_below(curve, 0.2)
    text = "never (on this grid)" if below is None else f"{below:.4f} ({below * 255:g}/255)"
    print(f"\nfirst eps with accuracy < 20%: {text}")

    print("\n### PGD (10 steps of eps/4, random start) against FGSM at equal eps\n")
    print("| eps x 255 | FGSM accuracy | PGD accuracy |")
    print("|---|---|---|")
    for r in attack_comparison(model, x, y, [e / 255 for e in (1, 2, 4, 8)]):
        print(f"| {r.eps * 255:g} | {r.fgsm:.3f} | {r.pgd:.3f} |")

    print("\n### Transfer: adversarial images made on seed 0, shown to seed 1\n")
    print("| eps x 255 | attack | seed 0 (white box) | seed 1 (transfer) | seed 1, random signs |")
    print("|---|---|---|---|---|")
    for r in transfer_table(models[0], models[1], x, y, [e / 255 for e in (2, 4, 8, 16)]):
        print(f"| {r.eps * 255:g} | {r.attack} | {r.source:.3f} | {r.target:.3f} | "
              f"{r.target_noise:.3f} |")
    print(f"\ntotal {time.perf_counter() - start:.0f} s, load average now {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
