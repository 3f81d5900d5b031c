"""Tests for the detection training loop (cv_course.train_detection) and the
experiment helpers (cv_course.experiments.detection): one loop trains ours and
torchvision's detectors, progress lines, determinism, the disk cache, evaluation.

Tiny models (16-channel FPN, untrained backbone) on a few 64 x 64 scenes.
"""

from __future__ import annotations

import io
import math

import pytest
import torch

from cv_course.experiments.detection import (
    DetectionSetup,
    build_detector,
    evaluate_detector,
    make_scenes,
    train_detector,
    trained_detector,
    warmup_cosine,
)
from cv_course.train_detection import DetectionHistory, fit_detector
from detection_tiny import TINY

SETUP = DetectionSetup(size=64, max_objects=4, n_train=8, n_val=4, epochs=2, batch_size=4,
                       warmup_steps=2)
LOSSES = {"loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg"}


@pytest.fixture(scope="module")
def data():
    return make_scenes(SETUP.n_train, 0, SETUP)


@pytest.mark.parametrize("name", ["faster_rcnn", "torchvision"])
def test_the_same_loop_trains_ours_and_torchvision(name, data, capsys):
    r = train_detector(name, SETUP, TINY, data=data, progress=True)
    h = r.history
    assert isinstance(h, DetectionHistory) and h.epochs == 2 and len(h.step_loss) == 4
    assert set(h.losses) == LOSSES and all(len(v) == 4 for v in h.losses.values())
    for s in range(4):  # the summed loss is the sum of the named ones
        assert math.isclose(h.step_loss[s], sum(v[s] for v in h.losses.values()), rel_tol=1e-5)
    assert h.images == 16 and h.images_per_second > 0 and r.seconds_per_step > 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("epoch 1/2: loss ") and "img/s" in lines[0]
    assert not r.model.training


def test_training_is_deterministic_given_the_seed(data):
    a = train_detector("faster_rcnn", SETUP, TINY, data=data)
    b = train_detector("faster_rcnn", SETUP, TINY, data=data)
    assert a.history.step_loss == b.history.step_loss
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_fit_detector_checks_the_model_and_the_budget(data):
    images, targets = data
    batches = [(images[:4], targets[:4])]
    model = build_detector("faster_rcnn", TINY)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    h = fit_detector(model, batches * 3, opt, epochs=5, max_seconds=0.0, stream=io.StringIO())
    assert h.epochs == 1 and len(h.step_loss) == 1 and h.stopped_early

    class NotADetector(torch.nn.Module):
        def forward(self, images, targets):
            return torch.zeros(())

    with pytest.raises(TypeError, match="dict of named losses"):
        fit_detector(NotADetector(), batches, opt, progress=False)
    with pytest.raises(ValueError, match="epochs"):
        fit_detector(model, batches, opt, epochs=0)


def test_warmup_cosine_schedule():
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    sched = warmup_cosine(opt, warmup_steps=4, total_steps=12)
    lrs = []
    for _ in range(12):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert lrs[4] == pytest.approx(1.0) and lrs[8] == pytest.approx(0.5)
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:]))


def test_evaluate_detector_reports_coco_map_and_time(data):
    model = train_detector("faster_rcnn", SETUP, TINY, data=data).model
    images, targets = make_scenes(SETUP.n_val, 1, SETUP)
    m = evaluate_detector(model, images, targets, batch_size=2)
    assert {"map", "map_50", "map_75", "seconds_per_image"} <= set(m)
    assert 0 <= m["map"] <= m["map_50"] <= 1 and m["seconds_per_image"] > 0
    # perfect predictions score 1
    from cv_course.experiments.detection import detection_map
    perfect = [{**t, "scores": torch.ones(len(t["labels"]))} for t in targets]
    assert detection_map(perfect, targets)["map"] == pytest.approx(1.0)


def test_trained_detector_is_cached_by_config_hash(tmp_path):
    setup = SETUP
    a = trained_detector("faster_rcnn", setup, TINY, cache_dir=tmp_path)
    files = list(tmp_path.glob("detector_faster_rcnn_*.pt"))
    assert len(files) == 1 and a.train_seconds > 0 and not a.training
    b = trained_detector("faster_rcnn", setup, TINY, cache_dir=tmp_path)  # loaded, not trained
    assert b.train_seconds == a.train_seconds and b.history["step_loss"] == a.history["step_loss"]
    sa, sb = a.state_dict(), b.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    images, _ = make_scenes(2, 1, setup)
    with torch.no_grad():
        for p, q in zip(a(images), b(images)):
            assert torch.equal(p["boxes"], q["boxes"]) and torch.equal(p["scores"], q["scores"])
    trained_detector("faster_rcnn", setup, TINY.replace(fpn_channels=8), cache_dir=tmp_path)
    assert len(list(tmp_path.glob("detector_faster_rcnn_*.pt"))) == 2  # another config, another file
