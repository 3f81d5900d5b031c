"""Tests for cv_course.data.panoptic: scenes with stuff, and the COCO panoptic format.

Oracles: torchvision.ops.masks_to_boxes (bboxes), pixel counts and per-segment loops
(areas, categories), numpy for the PNG colour code (id = R + 256 G + 256^2 B), PIL.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.ops import masks_to_boxes

from cv_course.data import make_scene
from cv_course.data.panoptic import (
    STUFF_IDS,
    THING_IDS,
    CocoPanoptic,
    PanopticScenes,
    id_to_rgb,
    make_panoptic_scene,
    make_panoptic_scenes,
    panoptic_categories,
    panoptic_from_segments,
    rgb_to_id,
    write_coco_panoptic,
)


@pytest.fixture(scope="module")
def scenes():
    return make_panoptic_scenes(30, seed=5, size=(48, 64), min_objects=0, max_objects=6)


def test_deterministic_and_global_rng_untouched():
    state = torch.get_rng_state()
    a, b = make_panoptic_scene(7, 32), make_panoptic_scene(7, 32)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a.image, b.image) and torch.equal(a.segment_ids, b.segment_ids)
    assert a.segments == b.segments
    assert not torch.equal(a.image, make_panoptic_scene(8, 32).image)


def test_existing_scenes_unchanged():
    # The panoptic generator is a new function; make_scene keeps its 5-class background.
    s = make_scene(3)
    assert int(s.semantic.max()) <= max(THING_IDS) and int(s.semantic.min()) == 0


def test_every_scene_has_two_or_more_stuff_regions(scenes):
    counts = [sum(not seg["isthing"] for seg in s.segments) for s in scenes]
    assert min(counts) >= 2
    assert max(counts) == 3  # the wall appears in some scenes
    for s in scenes:
        assert {seg["category_id"] for seg in s.segments if not seg["isthing"]} <= set(STUFF_IDS)


def test_segments_describe_the_id_map(scenes):
    for s in scenes:
        H, W = s.segment_ids.shape
        ids = [seg["id"] for seg in s.segments]
        assert len(set(ids)) == len(ids)
        assert sorted(s.segment_ids.unique().tolist()) == sorted(ids)  # no void, no stray id
        for seg in s.segments:  # loop reference, one segment at a time
            m = s.segment_ids == seg["id"]
            assert seg["area"] == int(m.sum())
            x1, y1, x2, y2 = (masks_to_boxes(m[None].float())[0] + torch.tensor([0, 0, 1, 1]))
            assert seg["bbox"] == [float(x1), float(y1), float(x2 - x1), float(y2 - y1)]
            assert bool((s.semantic[m] == seg["category_id"]).all())
            assert seg["isthing"] == (seg["category_id"] in THING_IDS)


def test_things_match_the_instance_labels(scenes):
    for s in scenes:
        things = [seg for seg in s.segments if seg["isthing"]]
        assert [seg["category_id"] for seg in things] == s.labels.tolist()
        for seg, mask in zip(things, s.masks):
            assert torch.equal(s.segment_ids == seg["id"], mask)
        if len(s.labels):
            assert torch.equal(s.boxes, masks_to_boxes(s.masks.float()) + torch.tensor([0, 0, 1, 1]))
        stuff = ~s.masks.any(0) if len(s.labels) else torch.ones_like(s.semantic, dtype=torch.bool)
        assert bool(torch.isin(s.semantic[stuff], torch.tensor(STUFF_IDS)).all())


def test_panoptic_map(scenes):
    for s in scenes:
        p = s.panoptic
        assert p.shape == (*s.semantic.shape, 2) and p.dtype == torch.int64
        assert torch.equal(p[..., 0], s.semantic)
        for k, mask in enumerate(s.masks):
            assert bool((p[..., 1][mask] == k + 1).all())
        assert bool((p[..., 1][torch.isin(s.semantic, torch.tensor(STUFF_IDS))] == 0).all())


def test_panoptic_from_segments_hand_case_with_void():
    ids = torch.tensor([[0, 7, 7], [3, 3, 9], [12, 12, 9]])  # 0 and 12: void
    segments = [{"id": 9, "category_id": 2}, {"id": 7, "category_id": 6},
                {"id": 3, "category_id": 1}]
    expected = torch.tensor([[[0, 0], [6, 0], [6, 0]], [[1, 2], [1, 2], [2, 1]],
                             [[0, 0], [0, 0], [2, 1]]])
    assert torch.equal(panoptic_from_segments(ids, segments), expected)
    assert torch.equal(panoptic_from_segments(ids, []), torch.zeros(3, 3, 2, dtype=torch.long))


def test_background_textures_differ_by_stuff_class(scenes):
    # Sky is smooth, ground grainy, the wall has mortar lines: local variation differs.
    def roughness(s, cat):
        m = s.semantic == cat
        m = m[1:, 1:] & m[:-1, 1:] & m[1:, :-1]
        dx = (s.image[:, 1:, 1:] - s.image[:, 1:, :-1]).abs().mean(0)
        dy = (s.image[:, 1:, 1:] - s.image[:, :-1, 1:]).abs().mean(0)
        return float((dx + dy)[m].mean())
    sky = np.mean([roughness(s, STUFF_IDS[0]) for s in scenes])
    ground = np.mean([roughness(s, STUFF_IDS[1]) for s in scenes])
    assert ground > 1.3 * sky


def test_id_rgb_code():
    ids = torch.tensor([0, 1, 255, 256, 65536 + 257, 256**3 - 1])
    rgb = id_to_rgb(ids)
    assert rgb.dtype == torch.uint8
    assert rgb.tolist() == [[0, 0, 0], [1, 0, 0], [255, 0, 0], [0, 1, 0], [1, 1, 1],
                            [255, 255, 255]]
    assert torch.equal(rgb_to_id(rgb), ids)
    with pytest.raises(ValueError, match="256"):
        id_to_rgb(torch.tensor([256**3]))


def test_coco_panoptic_round_trip(tmp_path, scenes):
    path = write_coco_panoptic(scenes[:6], tmp_path)
    data = json.loads(path.read_text())
    assert {c["id"] for c in data["categories"]} == set(THING_IDS + STUFF_IDS)
    assert {c["id"] for c in data["categories"] if c["isthing"]} == set(THING_IDS)
    ds = CocoPanoptic(tmp_path)
    assert len(ds) == 6
    for i, s in enumerate(scenes[:6]):
        ann = data["annotations"][i]
        png = np.asarray(Image.open(tmp_path / "panoptic" / ann["file_name"])).astype(np.int64)
        assert np.array_equal(png[..., 0] + 256 * png[..., 1] + 65536 * png[..., 2],
                              s.segment_ids.numpy())  # the colour code, decoded by numpy
        image, target = ds[i]
        assert (image - s.image).abs().max() <= 0.5 / 255 + 1e-6
        assert torch.equal(target["segment_ids"], s.segment_ids)
        assert target["segments"] == s.segments
        assert torch.equal(target["panoptic"], s.panoptic)
        assert int(target["image_id"]) == i


def test_coco_panoptic_errors_say_what_is_missing(tmp_path, scenes):
    with pytest.raises(FileNotFoundError, match="panoptic.json"):
        CocoPanoptic(tmp_path)
    write_coco_panoptic(scenes[:1], tmp_path)
    (tmp_path / "panoptic" / "000000.png").unlink()
    with pytest.raises(FileNotFoundError, match="000000.png"):
        CocoPanoptic(tmp_path)[0]
    data = json.loads((tmp_path / "panoptic.json").read_text())
    data["annotations"][0]["segments_info"][0]["category_id"] = 42
    (tmp_path / "panoptic.json").write_text(json.dumps(data))
    write_coco_panoptic(scenes[:1], tmp_path / "b")
    (tmp_path / "b" / "panoptic.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="42"):
        CocoPanoptic(tmp_path / "b")[0]


def test_dataset_items():
    ds = PanopticScenes(4, size=32, seed=2, max_objects=3)
    image, target = ds[1]
    s = ds.scene(1)
    assert image.shape == (3, 32, 32)
    assert set(target) == {"boxes", "labels", "masks", "semantic", "image_id"}
    assert target["masks"].dtype == torch.uint8 and torch.equal(target["masks"].bool(), s.masks)
    assert torch.equal(target["semantic"], s.semantic)
    assert len(panoptic_categories()) == len(THING_IDS) + len(STUFF_IDS)
    with pytest.raises(IndexError):
        ds[4]
    with pytest.raises(ValueError, match="min_objects"):
        PanopticScenes(2, min_objects=3, max_objects=1)
