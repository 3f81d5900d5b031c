"""Tests for the shape classifier (cv_course.models.classifier) and for the
interpretation methods on the trained model.

The trained model is cached on disk: in ``$CV_COURSE_CACHE`` when set, else in
pytest's own cache folder (``.pytest_cache``, git-ignored), so only the first
run trains it (about a minute on one CPU core) and later runs load it.
"""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn

from cv_course.interpret import fgsm, grad_cam, pgd, pointing_game
from cv_course.models import classifier as clf
from cv_course.models.classifier import (
    ClassifierConfig,
    ShapeClassifier,
    default_cache_dir,
    scene_tensors,
    shapes_classifier,
    train_classifier,
)

TINY = ClassifierConfig(widths=(4, 8), pools=1, n_train=32, epochs=1, batch_size=16)


@pytest.fixture(scope="session")
def trained(request):
    cache = os.environ.get("CV_COURSE_CACHE") or request.config.cache.mkdir("cv_course")
    return shapes_classifier(seed=0, cache_dir=cache)


@pytest.fixture(scope="session")
def held_out():
    with torch.random.fork_rng(devices=[]):
        return scene_tensors(300, seed=1, return_mask=True)  # training scenes use seed 0


def test_architecture_is_gap_plus_linear():
    model = ShapeClassifier().eval()
    x = torch.rand(2, 3, 64, 64)
    f = model.features(x)
    assert f.shape == (2, 64, 8, 8)
    assert isinstance(model.fc, nn.Linear) and model.fc.in_features == 64
    torch.testing.assert_close(model(x), model.fc(f.mean(dim=(2, 3))))
    with pytest.raises(ValueError, match="pools"):
        ShapeClassifier(ClassifierConfig(widths=(4, 8), pools=2))


def test_training_is_deterministic_and_leaves_global_state(tmp_path):
    rng, threads = torch.get_rng_state(), torch.get_num_threads()
    a = train_classifier(TINY, seed=3)
    b = train_classifier(TINY, seed=3)
    c = train_classifier(TINY, seed=4)
    assert torch.equal(torch.get_rng_state(), rng) and torch.get_num_threads() == threads
    assert not a.training
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k
    assert not torch.equal(a.fc.weight, c.fc.weight)


def test_cache_round_trip(tmp_path, monkeypatch):
    monkeypatch.setenv("CV_COURSE_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path
    first = shapes_classifier(seed=0, config=TINY)
    files = list(tmp_path.glob("shapes_classifier_*.pt"))
    assert len(files) == 1 and first.train_seconds > 0

    def no_training(*args, **kwargs):
        raise AssertionError("the second call must load from the cache")

    monkeypatch.setattr(clf, "train_classifier", no_training)
    second = shapes_classifier(seed=0, config=TINY)
    assert not second.training and second.train_seconds == first.train_seconds
    for k, v in first.state_dict().items():
        assert torch.equal(v, second.state_dict()[k]), k
    # another seed or config is another file (and would need training)
    with pytest.raises(AssertionError, match="second call"):
        shapes_classifier(seed=1, config=TINY)
    with pytest.raises(AssertionError, match="second call"):
        shapes_classifier(seed=0, config=ClassifierConfig(**{**TINY.__dict__, "epochs": 2}))


def test_trained_classifier_accuracy(trained, held_out):
    images, labels, _ = held_out
    with torch.no_grad():
        acc = (trained(images).argmax(1) == labels).float().mean().item()
    assert acc >= 0.95, f"held-out accuracy {acc:.3f}"


def test_grad_cam_points_at_the_object(trained, held_out):
    images, labels, masks = held_out
    heat = grad_cam(trained, trained.features, images, labels)
    assert heat.shape == (300, 8, 8)
    # Control: always pointing at the image centre (hits ~0.4 strict, ~0.7 at 4 px).
    centre = torch.zeros(300, 3, 3)
    centre[:, 1, 1] = 1
    strict, tolerant = pointing_game(heat, masks), pointing_game(heat, masks, tolerance=4)
    assert strict >= 0.75 and strict >= pointing_game(centre, masks) + 0.3
    assert tolerant >= 0.95 and tolerant >= pointing_game(centre, masks, tolerance=4) + 0.2


def test_pgd_at_least_as_strong_as_fgsm(trained, held_out):
    images, labels, _ = held_out
    x, y = images[:150], labels[:150]
    eps = 2 / 255
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        clean = (trained(x).argmax(1) == y).float().mean().item()
        acc_fgsm = (trained(fgsm(trained, x, y, eps)).argmax(1) == y).float().mean().item()
        adv = pgd(trained, x, y, eps, alpha=eps / 4, steps=10, generator=gen)
        acc_pgd = (trained(adv).argmax(1) == y).float().mean().item()
    assert (adv - x).abs().max() <= eps + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    assert acc_fgsm < clean - 0.1, "eps should be large enough for FGSM to hurt"
    assert acc_pgd <= acc_fgsm


def test_pointing_game_table_scores_every_method_on_image_pixels(trained, held_out):
    from cv_course.experiments.interpret import pointing_game_table

    images, labels, masks = held_out
    rows = pointing_game_table(trained, images[:40], labels[:40], masks[:40],
                               limits={"occlusion 8x8 / 4": 8})
    by = {r.method: r for r in rows}
    assert set(by) == {"Grad-CAM (last conv)", "CAM", "saliency", "occlusion 8x8 / 4",
                       "image centre (control)"}
    assert by["occlusion 8x8 / 4"].n == 8 and by["occlusion 8x8 / 4"].resolution == (64, 64)
    assert by["Grad-CAM (last conv)"].resolution == (8, 8)
    # On a GAP + linear network at the last layer, Grad-CAM = ReLU(CAM) / hw: same peaks.
    assert by["CAM"].hit_rate == by["Grad-CAM (last conv)"].hit_rate
    for r in rows:
        assert 0 <= r.hit_rate <= r.hit_rate_tol <= 1 and r.ms_per_image >= 0
    assert by["Grad-CAM (last conv)"].hit_rate_tol > by["image centre (control)"].hit_rate_tol
