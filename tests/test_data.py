"""Tests for cv_course.data: generated scenes, datasets, COCO and VOC I/O.

Oracles: torchvision.ops.masks_to_boxes (boxes), matplotlib's point-in-polygon
(shapes), pycocotools (RLE, areas, bboxes), slow loop references, and PIL.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from matplotlib.path import Path as MplPath
from PIL import Image
from torch.utils.data import DataLoader
from torchvision.ops import masks_to_boxes

from cv_course.data import (
    CLASSES,
    NUM_CLASSES,
    ClassificationScenes,
    CocoDetection,
    DetectionScenes,
    SegmentationScenes,
    VOCSegmentation,
    detection_collate,
    make_scene,
    make_scenes,
    scene_seed,
    voc_palette,
    write_coco,
    write_voc_segmentation,
)
from cv_course.data.coco import mask_to_rle, polygons_to_mask, rle_to_mask
from cv_course.data.shapes import SHAPE_SDFS, shape_sdf
from cv_course.data.voc import boundary_ignore

mask_utils = pytest.importorskip("pycocotools.mask")



def _same_scene(a, b) -> bool:
    return all(torch.equal(getattr(a, f), getattr(b, f))
               for f in ("image", "semantic", "masks", "boxes", "labels"))


@pytest.fixture(scope="module")
def scenes():
    # Many objects on a small canvas: lots of occlusion.
    return make_scenes(60, seed=3, size=(48, 64), min_objects=2, max_objects=7)


# ------------------------------------------------------------------ scenes
def test_same_seed_same_scene_and_global_rng_untouched():
    state = torch.get_rng_state()
    a, b = make_scene(11), make_scene(11)
    assert torch.equal(torch.get_rng_state(), state)
    assert _same_scene(a, b)
    assert not torch.equal(a.image, make_scene(12).image)


def test_make_scenes_seed_scheme():
    many = make_scenes(3, seed=5, size=32)
    for i, s in enumerate(many):
        assert _same_scene(s, make_scene(scene_seed(5, i), 32))
    assert _same_scene(make_scenes(2, size=32)[1], make_scene(1, 32))  # seed 0: scene i = seed i
    train = {scene_seed(0, i) for i in range(1000)}
    val = {scene_seed(1, i) for i in range(1000)}
    assert not train & val


def test_types_shapes_ranges(scenes):
    for s in scenes:
        K = s.labels.shape[0]
        assert s.image.dtype == torch.float32 and s.image.shape == (3, 48, 64)
        assert 0 <= s.image.min() and s.image.max() <= 1
        assert s.semantic.dtype == torch.int64 and s.semantic.shape == (48, 64)
        assert s.masks.dtype == torch.bool and s.masks.shape == (K, 48, 64)
        assert s.boxes.dtype == torch.float32 and s.boxes.shape == (K, 4)
        assert s.labels.dtype == torch.int64
        assert ((s.labels >= 1) & (s.labels < NUM_CLASSES)).all()
    assert len(CLASSES) == NUM_CLASSES >= 5 and CLASSES[0] == "background"


def test_masks_disjoint_nonempty_and_semantic_is_their_union(scenes):
    for s in scenes:
        assert s.masks.sum(dim=0).max() <= 1  # no pixel in two instances
        assert s.masks.flatten(1).any(dim=1).all()  # fully occluded instances dropped
        ref = torch.zeros_like(s.semantic)
        for m, c in zip(s.masks, s.labels):  # slow reference
            ref[m] = c
        assert torch.equal(s.semantic, ref)


def test_occlusion_happens_and_hidden_instances_are_dropped():
    counts = [make_scene(i, 32, min_objects=8, max_objects=8, min_scale=0.5, max_scale=0.9)
              .labels.shape[0] for i in range(20)]
    assert min(counts) < 8  # some of the 8 drawn objects end up invisible


def test_boxes_are_tight_boxes_of_masks(scenes):
    for s in scenes:
        ref = masks_to_boxes(s.masks) + torch.tensor([0.0, 0.0, 1.0, 1.0])  # x2 = last col + 1
        assert torch.equal(s.boxes, ref)
        assert ((s.boxes[:, 2:] - s.boxes[:, :2]) >= 1).all()


def test_zero_objects_gives_empty_tensors():
    s = make_scene(0, 32, min_objects=0, max_objects=0)
    assert s.masks.shape == (0, 32, 32) and s.boxes.shape == (0, 4) and s.labels.shape == (0,)
    assert (s.semantic == 0).all()


def test_background_is_textured(scenes):
    for s in scenes:
        bg = s.image[:, s.semantic == 0]  # [3, P]
        assert bg.std(dim=1).max() > 0.05


def test_colour_does_not_identify_class():
    colours = {c: [] for c in range(1, NUM_CLASSES)}
    for s in make_scenes(400, seed=9, size=32):
        for m, c in zip(s.masks, s.labels):
            colours[int(c)].append(s.image[:, m].mean(dim=1))  # mean colour of the instance
    pooled = torch.stack([x for v in colours.values() for x in v]).mean(dim=0)  # [3]
    for c, v in colours.items():
        v = torch.stack(v)  # [n_c, 3]
        assert len(v) > 150
        # Each class's mean colour is within 4 standard errors of the overall mean.
        z = (v.mean(dim=0) - pooled) / (v.std(dim=0) / len(v) ** 0.5)
        assert z.abs().max() < 4, (CLASSES[c], z)


def test_objects_contrast_with_their_surroundings(scenes):
    s = scenes[0]
    m = s.masks[0]
    ring = torch.nn.functional.max_pool2d(m[None, None].float(), 5, 1, 2)[0, 0].bool() & ~m
    ring &= s.semantic == 0
    if ring.any():
        diff = (s.image[:, m].mean(1) - s.image[:, ring].mean(1)).abs().max()
        assert diff > 0.05


@pytest.mark.parametrize("size,kwargs", [
    (4, {}), ((8, 8, 8), {}), (32, {"min_objects": 3, "max_objects": 2}),
    (32, {"min_scale": 0.0}), (32, {"max_scale": 1.5}),
])
def test_bad_arguments_raise(size, kwargs):
    with pytest.raises(ValueError):
        make_scene(0, size, **kwargs)


def test_bad_seed_raises():
    with pytest.raises(ValueError, match="seed"):
        make_scene(-1)
    with pytest.raises(ValueError, match="seed"):
        make_scene(2**32)


# ------------------------------------------------------------------ shapes
def _polygon(kind: int, cx, cy, R, angle):
    """Vertices (in pixels) of the triangle (kind 2) or star (kind 3) in shapes.py."""
    if kind == 2:
        t = torch.tensor([-math.pi / 2, math.pi / 6, 5 * math.pi / 6])
        r = torch.ones(3)
    else:
        t = torch.arange(10) * math.pi / 5
        r = torch.tensor([1.0, 0.45] * 5)
    # local (u, v) -> image: rotate by +angle (the inverse of the sampling rotation)
    u, v = r * torch.cos(t), r * torch.sin(t)
    x = cx + R * (u * math.cos(angle) - v * math.sin(angle))
    y = cy + R * (u * math.sin(angle) + v * math.cos(angle))
    return torch.stack([x, y], 1).numpy()


@pytest.mark.parametrize("kind", [0, 1, 2, 3])
def test_shapes_match_a_point_in_polygon_oracle(kind):
    gen = torch.Generator().manual_seed(kind)
    H, W = 40, 50
    cx, cy, angle = 25.3, 19.7, float(torch.rand(1, generator=gen)) * 6.28
    R = 15.0
    mask = shape_sdf(torch.tensor([kind]), torch.tensor([cx]), torch.tensor([cy]),
                     torch.tensor([R]), torch.tensor([angle]), H, W)[0] <= 0
    ys, xs = torch.meshgrid(torch.arange(H) + 0.5, torch.arange(W) + 0.5, indexing="ij")
    if kind == 0:
        ref = (xs - cx) ** 2 + (ys - cy) ** 2 <= (0.65 * R) ** 2
    elif kind == 1:
        c, s = math.cos(angle), math.sin(angle)
        u, v = c * (xs - cx) + s * (ys - cy), c * (ys - cy) - s * (xs - cx)
        ref = torch.maximum(u.abs(), v.abs()) <= 0.58 * R
    else:
        pts = torch.stack([xs.flatten(), ys.flatten()], 1).numpy()
        ref = torch.from_numpy(MplPath(_polygon(kind, cx, cy, R, angle)).contains_points(pts))
        ref = ref.reshape(H, W)
    assert (mask != ref).sum() <= 1  # at most a pixel centre lying on the outline
    assert mask.sum() > 100


def test_shapes_have_similar_areas():
    n = 400
    grid = torch.linspace(-1, 1, n)
    v, u = torch.meshgrid(grid, grid, indexing="ij")
    areas = torch.stack([(f(u, v) <= 0).float().mean() * 4 for f in SHAPE_SDFS])
    assert (areas.max() / areas.min()) < 1.06
    assert abs(areas[0] - math.pi * 0.65**2) < 0.01


# ---------------------------------------------------------------- datasets
def test_segmentation_dataset_and_default_collate():
    ds = SegmentationScenes(5, size=32, seed=2, max_objects=3)
    assert len(ds) == 5
    image, semantic = ds[1]
    s = make_scene(scene_seed(2, 1), 32, max_objects=3)
    assert torch.equal(image, s.image) and torch.equal(semantic, s.semantic)
    assert torch.equal(ds[-1][0], ds[4][0])
    with pytest.raises(IndexError):
        ds[5]
    images, semantics = next(iter(DataLoader(ds, batch_size=5)))
    assert images.shape == (5, 3, 32, 32) and semantics.shape == (5, 32, 32)


def test_detection_dataset_targets_and_collate():
    ds = DetectionScenes(4, size=32, include_masks=True)
    image, t = ds[2]
    s = make_scene(2, 32)
    assert torch.equal(image, s.image) and torch.equal(t["boxes"], s.boxes)
    assert torch.equal(t["labels"], s.labels) and int(t["image_id"]) == 2
    assert t["masks"].dtype == torch.uint8 and torch.equal(t["masks"].bool(), s.masks)
    assert "masks" not in DetectionScenes(4, size=32)[0][1]
    images, targets = next(iter(DataLoader(ds, batch_size=3, collate_fn=detection_collate)))
    assert isinstance(images, list) and len(images) == len(targets) == 3
    assert all(torch.equal(a, ds[i][0]) for i, a in enumerate(images))


def test_cache_returns_the_same_scene():
    ds = DetectionScenes(3, size=16, cache=True)
    assert ds.scene(1) is ds.scene(1)
    assert DetectionScenes(3, size=16).scene(1) is not DetectionScenes(3, size=16).scene(1)


def test_classification_dataset():
    ds = ClassificationScenes(160, size=64, seed=4, return_mask=True, cache=True)
    labels = []
    for i in range(len(ds)):
        image, label, mask = ds[i]
        assert image.shape == (3, 64, 64) and label.dtype == torch.int64 and label.dim() == 0
        s = ds.scene(i)
        assert torch.equal(mask, s.semantic > 0) and torch.equal(ds.mask(i), mask)
        assert int(label) + 1 == int(s.semantic.max())
        labels.append(int(label))
    counts = torch.bincount(torch.tensor(labels), minlength=NUM_CLASSES - 1)
    assert counts.numel() == NUM_CLASSES - 1 == ds.num_classes and (counts > 25).all()
    assert len(ClassificationScenes(3, size=32)[0]) == 2
    with pytest.raises(ValueError, match="one object"):
        ClassificationScenes(3, max_objects=2)


# -------------------------------------------------------------------- COCO
@pytest.mark.parametrize("shape", [(1, 1), (5, 7), (6, 3)])
def test_rle_against_pycocotools(shape):
    gen = torch.Generator().manual_seed(shape[0])
    cases = [torch.zeros(shape, dtype=torch.bool), torch.ones(shape, dtype=torch.bool),
             torch.rand(shape, generator=gen) > 0.5]
    corner = torch.zeros(shape, dtype=torch.bool)
    corner[-1, -1] = True
    cases.append(corner)
    for m in cases:
        ours = mask_to_rle(m)
        coded = mask_utils.encode(np.asfortranarray(m.numpy().astype(np.uint8)))
        # our uncompressed RLE, compressed by pycocotools, equals its own encoding
        assert mask_utils.frPyObjects(ours, *shape)["counts"] == coded["counts"]
        assert torch.equal(rle_to_mask(coded), m)  # we decode pycocotools' strings
        assert torch.equal(rle_to_mask(ours), m)


def test_rle_decodes_a_large_mask(scenes):
    m = scenes[0].masks[0]
    coded = mask_utils.encode(np.asfortranarray(m.numpy().astype(np.uint8)))
    assert torch.equal(rle_to_mask(coded), m)


def test_polygons_roughly_match_pycocotools():
    poly = [[3.0, 2.0, 20.0, 4.0, 15.0, 18.0, 4.0, 14.0]]
    ours = polygons_to_mask(poly, 24, 24)
    ref = torch.from_numpy(mask_utils.decode(mask_utils.merge(
        mask_utils.frPyObjects(poly, 24, 24)))).bool()
    iou = (ours & ref).sum() / (ours | ref).sum()
    assert iou > 0.85


def test_coco_round_trip_and_pycocotools_oracle(tmp_path, scenes):
    from pycocotools.coco import COCO

    subset = scenes[:6] + [make_scene(0, (48, 64), min_objects=0, max_objects=0)]
    ann_file = write_coco(subset, tmp_path)
    ds = CocoDetection(tmp_path)
    assert len(ds) == len(subset) and ds.categories[1] == CLASSES[1]
    for i, s in enumerate(subset):
        image, t = ds[i]
        assert (image - s.image).abs().max() <= 0.5 / 255 + 1e-6
        assert torch.equal(t["boxes"], s.boxes) and torch.equal(t["labels"], s.labels)
        assert torch.equal(t["masks"].bool(), s.masks) and int(t["image_id"]) == i

    coco = COCO(str(ann_file))
    for i, s in enumerate(subset):
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[i]))
        assert len(anns) == len(s.labels)
        for a, m, b in zip(anns, s.masks, s.boxes):
            assert np.array_equal(coco.annToMask(a).astype(bool), m.numpy())
            assert a["area"] == int(m.sum())
            rle = mask_utils.encode(np.asfortranarray(m.numpy().astype(np.uint8)))
            assert np.allclose(a["bbox"], mask_utils.toBbox(rle))
            assert np.allclose(a["bbox"], [b[0], b[1], b[2] - b[0], b[3] - b[1]])


def test_coco_jpg_and_no_masks(tmp_path, scenes):
    write_coco(scenes[:2], tmp_path, image_format="jpg")
    ds = CocoDetection(tmp_path, include_masks=False)
    image, t = ds[0]
    assert "masks" not in t and (image - scenes[0].image).abs().mean() < 0.05


def test_coco_missing_paths_say_which(tmp_path, scenes):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        CocoDetection(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="annotations.json"):
        CocoDetection(tmp_path)
    write_coco(scenes[:2], tmp_path)
    (tmp_path / "images" / "000001.png").unlink()
    ds = CocoDetection(tmp_path)
    with pytest.raises(FileNotFoundError, match="000001.png"):
        ds[1]
    (tmp_path / "bad.json").write_text(json.dumps({"images": []}))
    with pytest.raises(ValueError, match="annotations"):
        CocoDetection(tmp_path, tmp_path / "bad.json")


# --------------------------------------------------------------------- VOC
def test_voc_palette_known_colours():
    p = voc_palette()
    assert p.dtype == torch.uint8 and p.shape == (256, 3)
    assert p[:5].tolist() == [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0], [0, 0, 128]]
    assert p[255].tolist() == [224, 224, 192]


def test_voc_round_trip(tmp_path, scenes):
    names = write_voc_segmentation(scenes[:4], tmp_path, "train")
    write_voc_segmentation(scenes[4:6], tmp_path, "val")
    ds = VOCSegmentation(tmp_path, "train")
    assert ds.names == names and len(VOCSegmentation(tmp_path, "val")) == 2
    for s, (image, target) in zip(scenes, ds):
        assert (image - s.image).abs().max() <= 0.5 / 255 + 1e-6
        assert torch.equal(target, s.semantic) and target.dtype == torch.int64
    with Image.open(tmp_path / "SegmentationClass" / f"{names[0]}.png") as im:
        assert im.mode == "P"


def test_boundary_ignore_matches_loop_reference():
    gen = torch.Generator().manual_seed(0)
    sem = torch.randint(0, 3, (6, 7), generator=gen)
    sem[:3] = 0
    b = 1
    ref = sem.clone()
    H, W = sem.shape
    for i in range(H):
        for j in range(W):
            win = sem[max(i - b, 0):i + b + 1, max(j - b, 0):j + b + 1]
            if (win != sem[i, j]).any():
                ref[i, j] = 255
    assert torch.equal(boundary_ignore(sem, b), ref)
    assert torch.equal(boundary_ignore(sem, 0), sem)


def test_voc_boundary_band_round_trip(tmp_path, scenes):
    write_voc_segmentation(scenes[:2], tmp_path, "train", boundary=2)
    for s, (_, target) in zip(scenes, VOCSegmentation(tmp_path)):
        keep = target != 255
        assert torch.equal(target[keep], s.semantic[keep])
        assert (~keep).any() and (s.semantic[~keep] >= 0).all()


def test_voc_missing_paths_say_which(tmp_path, scenes):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        VOCSegmentation(tmp_path / "nowhere")
    names = write_voc_segmentation(scenes[:2], tmp_path, "train")
    with pytest.raises(FileNotFoundError, match=r"val\.txt.*train"):
        VOCSegmentation(tmp_path, "val")
    (tmp_path / "JPEGImages" / f"{names[1]}.png").unlink()
    with pytest.raises(FileNotFoundError, match=names[1]):
        VOCSegmentation(tmp_path)[1]
    label = tmp_path / "SegmentationClass" / f"{names[0]}.png"
    Image.new("RGB", (64, 48)).save(label)
    with pytest.raises(ValueError, match="palette"):
        VOCSegmentation(tmp_path)[0]
