"""The training loop: it lowers the loss, is reproducible, moves nested batches to
the device, evaluates and predicts, honours the time budget and writes nothing to
stderr (nbgrader fails such cells)."""

from __future__ import annotations

import io
from collections import namedtuple

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from cv_course.losses import pixel_cross_entropy
from cv_course.metrics import MeanIoU, mean_iou
from cv_course.models import UNet
from cv_course.train import History, evaluate, fit, predict, to_device



def _toy_segmentation(n=16, size=12, seed=0):
    """Bright squares on a dark background: label 1 where the image is bright."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.zeros(n, size, size, dtype=torch.int64)
    for i in range(n):  # a few images, built once: a loop is clearest here
        y, x = torch.randint(0, size - 4, (2,), generator=g).tolist()
        labels[i, y:y + 4, x:x + 4] = 1
    images = labels[:, None].float().expand(n, 3, size, size) * 0.8
    images = images + 0.1 * torch.rand(n, 3, size, size, generator=g)
    return TensorDataset(images, labels)


def _loaders(seed=0):
    ds = _toy_segmentation(seed=seed)
    g = torch.Generator().manual_seed(0)
    return DataLoader(ds, batch_size=4, shuffle=True, generator=g), DataLoader(ds, batch_size=8)


def _small_unet(seed=0):
    torch.manual_seed(seed)
    return UNet(3, 2, base_channels=4, depth=2)


def test_fit_lowers_the_loss_and_records_history():
    train, val = _loaders()
    model = _small_unet()
    h = fit(model, train, pixel_cross_entropy, torch.optim.Adam(model.parameters(), 1e-2),
            epochs=3, device="cpu", val_loader=val, metric_fn=MeanIoU(2), progress=False)
    assert isinstance(h, History)
    assert h.epochs == 3 and len(h.step_loss) == 3 * len(train) and len(h.val_metric) == 3
    assert h.train_loss[-1] < 0.7 * h.train_loss[0]
    assert h.step_loss[-1] < h.step_loss[0]
    assert all(0.0 <= m <= 1.0 for m in h.val_metric)
    assert h.seconds == sorted(h.seconds) and h.total_seconds > 0
    assert not h.stopped_early


def test_fit_is_reproducible_given_seeds():
    runs = []
    for _ in range(2):
        train, _ = _loaders()
        model = _small_unet(seed=1)
        runs.append(fit(model, train, pixel_cross_entropy, epochs=1, device="cpu",
                        progress=False, seed=3).step_loss)
    assert runs[0] == runs[1]


def test_progress_goes_to_the_chosen_stream_and_never_stderr(capfd):
    train, val = _loaders()
    out = io.StringIO()
    fit(_small_unet(), train, pixel_cross_entropy, epochs=1, device="cpu", val_loader=val,
        metric_fn=MeanIoU(2), progress=True, stream=out)
    assert "epochs" in out.getvalue()
    fit(_small_unet(), train, pixel_cross_entropy, epochs=1, device="cpu", progress=True)
    captured = capfd.readouterr()
    assert captured.err == ""
    assert "epochs" in captured.out  # default stream: stdout
    fit(_small_unet(), train, pixel_cross_entropy, epochs=1, device="cpu", progress=False)
    assert capfd.readouterr() == ("", "")


def test_max_seconds_stops_early():
    train, _ = _loaders()
    h = fit(_small_unet(), train, pixel_cross_entropy, epochs=50, device="cpu",
            progress=False, max_seconds=0.0)
    assert h.stopped_early and h.epochs == 1 and len(h.step_loss) == 1


def test_scheduler_steps_per_epoch_or_per_step():
    train, _ = _loaders()
    for interval, expected_steps in (("epoch", 2), ("step", 2 * len(train))):
        model = _small_unet()
        opt = torch.optim.SGD(model.parameters(), lr=1.0)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 0.5**k)
        h = fit(model, train, pixel_cross_entropy, opt, epochs=2, device="cpu",
                scheduler=sched, scheduler_interval=interval, progress=False)
        assert sched.last_epoch == expected_steps
        assert h.lr[0] == 1.0


def test_evaluate_and_predict_agree_with_metrics():
    _, val = _loaders()
    model = _small_unet().train()
    score = evaluate(model, val, MeanIoU(2), "cpu")
    assert model.training  # mode restored
    logits = predict(model, val)
    images, labels = val.dataset.tensors
    assert logits.shape == (16, 2, 12, 12)
    torch.testing.assert_close(logits, predict(model, images, batch_size=5))
    assert score == pytest.approx(float(mean_iou(logits.argmax(1), labels, 2)))
    # A plain callable metric is averaged over batches, weighted by batch size.
    acc = evaluate(model, val, lambda out, y: (out.argmax(1) == y).float().mean())
    assert acc == pytest.approx(float((logits.argmax(1) == labels).float().mean()), rel=1e-6)


def test_generic_loss_with_dict_targets():
    # Detection-style batches: a list of images and a list of target dicts.
    class Counter(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(()))

        def forward(self, images):
            return [self.w * img.mean() for img in images]

    def loss_fn(outputs, targets):
        return sum((o - t["value"]) ** 2 for o, t in zip(outputs, targets)).mean()

    batches = [([torch.ones(3, 4, 4), torch.ones(3, 5, 5)],
                [{"value": torch.tensor(2.0)}, {"value": torch.tensor(2.0)}])] * 20
    model = Counter()
    h = fit(model, batches, loss_fn, torch.optim.SGD(model.parameters(), lr=0.1),
            epochs=1, device="cpu", progress=False)
    assert h.step_loss[-1] < 1e-3 * h.step_loss[0]
    assert float(model.w.detach()) == pytest.approx(2.0, rel=1e-3)


def test_to_device_nested():
    Pair = namedtuple("Pair", "a b")
    obj = {"x": torch.ones(2), "ys": [torch.zeros(1), (torch.ones(1), 3)], "p": Pair(torch.ones(1), "s")}
    moved = to_device(obj, "meta")
    assert moved["x"].device.type == "meta" and moved["ys"][1][0].device.type == "meta"
    assert moved["ys"][1][1] == 3 and isinstance(moved["ys"][1], tuple)
    assert isinstance(moved["p"], Pair) and moved["p"].b == "s" and moved["p"].a.is_meta


def test_bad_arguments():
    train, val = _loaders()
    with pytest.raises(ValueError, match="both"):
        fit(_small_unet(), train, pixel_cross_entropy, val_loader=val, progress=False)
    with pytest.raises(ValueError, match="epochs"):
        fit(_small_unet(), train, pixel_cross_entropy, epochs=0, progress=False)
    with pytest.raises(ValueError, match="no batches"):
        fit(_small_unet(), [], pixel_cross_entropy, device="cpu", progress=False)


def test_history_plot():
    import matplotlib

    matplotlib.use("Agg")
    h = History(train_loss=[1.0, 0.5], step_loss=[1.2, 0.8, 0.6, 0.4], val_metric=[0.3, 0.6],
                seconds=[1.0, 2.0], lr=[1e-3, 1e-3])
    ax = h.plot()
    assert ax.get_xlabel() == "epoch" and len(ax.lines) == 2


def test_fit_on_device(device):
    train, val = _loaders()
    model = _small_unet()
    h = fit(model, train, pixel_cross_entropy, epochs=1, device=device, val_loader=val,
            metric_fn=MeanIoU(2), progress=False)
    assert next(model.parameters()).device.type == device.type
    assert len(h.val_metric) == 1


def test_segmentation_experiment_smoke():
    from cv_course.experiments.segmentation import (
        MODEL_NAMES, SegmentationSetup, build_model, format_table, make_loaders,
        train_and_evaluate)

    setup = SegmentationSetup(size=32, n_train=8, n_val=4, epochs=1, batch_size=4,
                              unet_channels=4, unet_depth=2, fcn_channels=(4, 4, 8, 8, 8),
                              fcn_head_channels=8)
    for name in MODEL_NAMES:
        assert build_model(name, setup).eval()(torch.rand(1, 3, 20, 20)).shape[-2:] == (20, 20)
    with pytest.raises(ValueError, match="unknown model"):
        build_model("segnet", setup)
    loaders = make_loaders(setup)
    train_images = loaders[0].dataset.tensors[0]
    val_images = loaders[1].dataset.tensors[0]
    assert train_images.shape == (8, 3, 32, 32) and val_images.shape == (4, 3, 32, 32)
    assert not any(torch.equal(a, b) for a in train_images for b in val_images)  # held out
    r = train_and_evaluate("fcn8s", setup, loaders)
    assert 0.0 <= r.miou <= 1.0 and len(r.per_class_iou) == 5 and r.train_seconds > 0
    assert r.miou == pytest.approx(r.history.val_metric[-1])
    assert "fcn8s" in format_table([r])


def test_non_finite_loss_is_reported():
    train, _ = _loaders()
    with pytest.raises(FloatingPointError, match="step 0"):
        fit(_small_unet(), train, lambda out, y: out.sum() * float("nan"), epochs=1,
            device="cpu", progress=False)


def test_reduce_on_plateau_gets_the_metric():
    train, val = _loaders()
    model = _small_unet()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", patience=0, factor=0.5)
    # A metric that never improves: the lr halves after every epoch but the first.
    fit(model, train, pixel_cross_entropy, opt, epochs=3, device="cpu", val_loader=val,
        metric_fn=lambda out, y: 0.5, scheduler=sched, progress=False)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0025)


def test_amp_trains_in_bfloat16_and_keeps_float32_weights():
    train, _ = _loaders()
    model = _small_unet()
    seen = []
    model.head.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    h = fit(model, train, pixel_cross_entropy, torch.optim.Adam(model.parameters(), 1e-2),
            epochs=2, device="cpu", progress=False, amp=True)
    assert seen and all(d == torch.bfloat16 for d in seen)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert h.train_loss[-1] < h.train_loss[0]
