"""Scenes with *stuff* as well as *things*, and the COCO panoptic format.

Kirillov, He, Girshick, Rother, Dollar, "Panoptic Segmentation", CVPR 2019: every
pixel gets a category, and pixels of a *thing* (a countable object: our four
shapes, ids 1-4 as in ``CLASSES``) also get an instance; *stuff* (amorphous
regions: sky, ground, wall, ids 5-7) has one segment per category and image.

A panoptic scene's background is split into stuff regions (sky above a tilted
horizon, ground below it, and usually a brick wall standing on the ground),
each with its own texture, then the shapes are painted over it exactly as in
:func:`cv_course.data.make_scene`. Its ground truth, in three equivalent forms:

* ``segment_ids`` [H, W] + ``segments`` (id, category_id, isthing, area, bbox): COCO's;
* ``panoptic`` [H, W, 2] (category id, instance id; 0 for stuff): torchmetrics';
* ``semantic`` [H, W] + the thing ``masks``/``boxes``/``labels``: the two tasks it unifies.

COCO panoptic format (Kirillov et al. 2019, appendix; the ``panopticapi``
layout): one PNG per image whose colour encodes the segment id,
``id = R + 256 G + 256^2 B`` (0 = void, unlabelled), and one JSON file with
``images``, ``categories`` (id, name, isthing, color) and ``annotations``
(image_id, file_name of the PNG, ``segments_info``: id, category_id, iscrowd,
area, bbox [x, y, w, h]).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from .coco import load_image, save_image
from .scenes import (CLASSES, NUM_CLASSES, _check_args, _paint_objects, _parse_size,
                     _tight_boxes, _uniform, scene_seed)
from .shapes import shape_sdf

THING_IDS: tuple[int, ...] = tuple(range(1, NUM_CLASSES))  # 1..4: the shapes
STUFF_CLASSES: tuple[str, ...] = ("sky", "ground", "wall")
STUFF_IDS: tuple[int, ...] = tuple(range(NUM_CLASSES, NUM_CLASSES + len(STUFF_CLASSES)))  # 5..7
PANOPTIC_CLASSES: tuple[str, ...] = CLASSES + STUFF_CLASSES  # index = category id, 0 = void
SKY, GROUND, WALL = STUFF_IDS
PANOPTIC_FILE = "panoptic.json"


@dataclass
class PanopticScene:
    """One scene with things and stuff (K thing instances, S segments in all)."""

    image: Tensor  # [3, H, W] float32 in [0, 1]
    semantic: Tensor  # [H, W] int64 category id of every pixel (things 1-4, stuff 5-7)
    masks: Tensor  # [K, H, W] bool visible pixels of each thing, as Scene.masks
    boxes: Tensor  # [K, 4] float32 (x1, y1, x2, y2), x2 = last column + 1
    labels: Tensor  # [K] int64 in THING_IDS
    segment_ids: Tensor  # [H, W] int64 segment id of every pixel (0 = void)
    segments: list[dict]  # S dicts: id, category_id, isthing, iscrowd, area, bbox [x, y, w, h]

    @property
    def panoptic(self) -> Tensor:
        """Tensor[H, W, 2] int64: (category id, instance id), instance 0 for stuff and void."""
        return panoptic_from_segments(self.segment_ids, self.segments)


# ---------------------------------------------------------------- stuff textures
def _stuff_layout(H: int, W: int, gen: torch.Generator) -> Tensor:
    """Stuff category of every pixel [H, W]: sky / ground split by a tilted horizon, maybe a wall."""
    ys = torch.arange(H, dtype=torch.float32)[:, None] + 0.5
    xs = torch.arange(W, dtype=torch.float32)[None, :] + 0.5
    level, slope = float(_uniform(0.3, 0.65, 1, gen)) * H, float(_uniform(-0.3, 0.3, 1, gen))
    horizon = level + slope * (xs - W / 2)  # [1, W]
    stuff = torch.where(ys < horizon, SKY, GROUND).expand(H, W).clone()  # [H, W]
    has_wall, width, left, top, foot = _uniform(0, 1, 5, gen).tolist()
    if has_wall < 0.75:  # a wall standing on the ground, in front of the sky
        x0 = left * W * 0.5
        x1 = x0 + (0.25 + 0.35 * width) * W
        y0, y1 = (0.05 + 0.3 * top) * H, level + (0.05 + 0.2 * foot) * H
        stuff[(xs >= x0) & (xs < x1) & (ys >= y0) & (ys < y1)] = WALL
    return stuff


def _stuff_textures(H: int, W: int, gen: torch.Generator) -> Tensor:
    """One texture per stuff category [3, 3, H, W] (sky, ground, wall): each class its own look.

    Sky: a smooth vertical gradient between two light colours. Ground: darker colour
    with coarse blotches and fine grain. Wall: bricks (rows of offset rectangles,
    mortar lines between them). Colours are random within each class's range.
    """
    ys = torch.arange(H, dtype=torch.float32)[:, None]
    xs = torch.arange(W, dtype=torch.float32)[None, :]
    top, bottom = 0.55 + 0.4 * torch.rand(2, 3, 1, 1, generator=gen)  # [3, 1, 1] each
    sky = top + (bottom - top) * ys / H  # [3, H, 1]
    coarse = F.interpolate(torch.rand(1, 3, 6, 6, generator=gen), size=(H, W), mode="bicubic",
                           align_corners=False)[0]  # [3, H, W]
    ground = (0.1 + 0.35 * torch.rand(3, 1, 1, generator=gen) + 0.2 * coarse
              + 0.12 * torch.rand(1, H, W, generator=gen))  # [3, H, W]
    brick_h = float(_uniform(5, 9, 1, gen))
    row = torch.floor(ys / brick_h)  # [H, 1]
    offset = (row % 2) * brick_h  # alternate rows shift by half a brick
    mortar = (ys % brick_h < 1.2) | ((xs + offset) % (2 * brick_h) < 1.2)  # [H, W]
    brick = 0.3 + 0.5 * torch.rand(3, 1, 1, generator=gen)
    wall = torch.where(mortar, 0.9 - 0.6 * brick, brick)  # [3, H, W]
    return torch.stack([sky.expand(3, H, W), ground, wall])  # [3 classes, 3, H, W]


def _stuff_background(H: int, W: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """(background image [3, H, W], stuff category map [H, W] int64)."""
    stuff = _stuff_layout(H, W, gen)
    textures = _stuff_textures(H, W, gen)  # [3, 3, H, W]
    index = (stuff - STUFF_IDS[0])[None, None].expand(1, 3, H, W)
    return textures.gather(0, index)[0], stuff  # [3, H, W], [H, W]


# ---------------------------------------------------------------------- scenes
def segment_info(segment_ids: Tensor, ids: Tensor, category_ids: Tensor) -> list[dict]:
    """COCO ``segments_info`` of the listed segments: id, category_id, isthing, iscrowd, area, bbox.

    Args:
        segment_ids (Tensor[H, W] int64): segment id per pixel.
        ids, category_ids (Tensor[S] int64): the segments and their categories.
    Returns:
        list of S dicts; ``bbox`` = [x, y, w, h] of the segment's pixels (pixel (i, j)
        covers [j, j+1) x [i, i+1)), ``area`` = its pixel count.
    """
    masks = segment_ids[None] == ids[:, None, None]  # [S, H, W]
    boxes = _tight_boxes(masks) if len(ids) else torch.zeros(0, 4)  # [S, 4]
    xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1).tolist()
    areas = masks.flatten(1).sum(1).tolist()
    return [{"id": i, "category_id": c, "isthing": c in THING_IDS, "iscrowd": 0,
             "area": a, "bbox": b}
            for i, c, a, b in zip(ids.tolist(), category_ids.tolist(), areas, xywh)]


def make_panoptic_scene(seed: int, size: int | tuple[int, int] = 128, min_objects: int = 1,
                        max_objects: int = 4, min_scale: float = 0.15,
                        max_scale: float = 0.4) -> PanopticScene:
    """Generate one scene with stuff and things, a deterministic function of its arguments.

    Same arguments and thing conventions as :func:`cv_course.data.make_scene`.
    Segment ids: the stuff segments first (1, 2, ...) in category order, then the things
    in painting order. ``segments`` lists exactly the ids present in ``segment_ids``;
    every pixel belongs to one segment (no void in generated scenes).
    """
    _check_args(seed, min_objects, max_objects, min_scale, max_scale)
    H, W = _parse_size(size)
    gen = torch.Generator().manual_seed(seed)
    bg, stuff = _stuff_background(H, W, gen)  # [3, H, W], [H, W]

    K = int(torch.randint(min_objects, max_objects + 1, (1,), generator=gen))
    labels = torch.randint(1, NUM_CLASSES, (K,), generator=gen)  # [K]
    radius = _uniform(min_scale, max_scale, K, gen) * min(H, W) / 2  # [K]
    cx = radius + torch.rand(K, generator=gen) * (W - 2 * radius)  # [K]
    cy = radius + torch.rand(K, generator=gen) * (H - 2 * radius)  # [K]
    angle = _uniform(0, 2 * math.pi, K, gen)  # [K]
    inside = shape_sdf(labels - 1, cx, cy, radius, angle, H, W) <= 0  # [K, H, W]
    order = torch.arange(1, K + 1)[:, None, None]  # [K, 1, 1]
    top = (inside * order).amax(dim=0) if K else torch.zeros(H, W, dtype=torch.long)  # [H, W]
    image = _paint_objects(bg.clamp(0, 1), top, cx, cy, radius, gen)  # [3, H, W]
    image = (image + 0.03 * torch.randn(3, H, W, generator=gen)).clamp(0, 1)

    masks = top[None] == order  # [K, H, W]
    keep = masks.flatten(1).any(dim=1)  # [K] drop fully occluded things
    all_labels = labels
    masks, labels = masks[keep], labels[keep]
    semantic = torch.where(top > 0, torch.cat([labels.new_zeros(1), all_labels])[top], stuff)
    visible_stuff = torch.where(top > 0, 0, stuff)  # [H, W] stuff id where no thing covers it
    present = torch.tensor([s for s in STUFF_IDS if bool((visible_stuff == s).any())],
                           dtype=torch.long)  # [S_stuff] stuff categories that are visible
    # Segment ids: stuff n -> n + 1; thing k (the k-th kept one) -> S_stuff + k + 1.
    stuff_rank = torch.zeros(NUM_CLASSES + len(STUFF_IDS), dtype=torch.long)
    stuff_rank[present] = torch.arange(1, len(present) + 1)
    thing_rank = torch.cat([labels.new_zeros(1), torch.cumsum(keep.long(), 0) + len(present)])
    segment_ids = torch.where(top > 0, thing_rank[top], stuff_rank[visible_stuff])  # [H, W]
    S = len(present)
    ids = torch.arange(1, S + masks.shape[0] + 1)
    segments = segment_info(segment_ids, ids, torch.cat([present, labels]))
    return PanopticScene(image=image, semantic=semantic, masks=masks, boxes=_tight_boxes(masks),
                         labels=labels, segment_ids=segment_ids, segments=segments)


def make_panoptic_scenes(n: int, seed: int = 0, size: int | tuple[int, int] = 128,
                         **kwargs) -> list[PanopticScene]:
    """``n`` scenes: scene i is ``make_panoptic_scene(scene_seed(seed, i), size, **kwargs)``."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    return [make_panoptic_scene(scene_seed(seed, i), size, **kwargs) for i in range(n)]


def panoptic_from_segments(segment_ids: Tensor, segments: list[dict]) -> Tensor:
    """COCO's (segment id map, segments) as a [H, W, 2] (category id, instance id) map.

    Things get instance ids 1, 2, ... in the order of ``segments``; stuff and void
    pixels get instance 0; void pixels (id 0 or an id not in ``segments``) get category 0.

    Args:
        segment_ids (Tensor[H, W] int64): segment id per pixel.
        segments (list[dict]): ``id``, ``category_id`` and ``isthing`` per segment
            (``isthing`` defaults to ``category_id in THING_IDS``).
    Returns:
        Tensor[H, W, 2] int64.
    """
    ids = torch.tensor([s["id"] for s in segments], dtype=torch.long).reshape(-1)
    cats = torch.tensor([s["category_id"] for s in segments], dtype=torch.long).reshape(-1)
    things = torch.tensor([bool(s.get("isthing", s["category_id"] in THING_IDS))
                           for s in segments], dtype=torch.bool).reshape(-1)
    inst = torch.where(things, torch.cumsum(things.long(), 0), 0)  # [S]
    order = torch.argsort(ids)
    pos = torch.searchsorted(ids[order], segment_ids.reshape(-1)).clamp(max=max(len(ids) - 1, 0))
    found = (ids[order][pos] == segment_ids.reshape(-1)) if len(ids) else torch.zeros_like(
        segment_ids.reshape(-1), dtype=torch.bool)  # [H * W]
    cat = torch.where(found, cats[order][pos] if len(ids) else 0, 0)
    ins = torch.where(found, inst[order][pos] if len(ids) else 0, 0)
    return torch.stack([cat, ins], dim=-1).reshape(*segment_ids.shape, 2)  # [H, W, 2]


class PanopticScenes(Dataset):
    """Panoptic training data: item = ``(image [3, H, W] float32, target)``.

    ``target`` is the detection target of :class:`DetectionScenes` with masks
    (``boxes``, ``labels``, ``masks`` [K, H, W] uint8, ``image_id``) plus
    ``"semantic"`` [H, W] int64 (category id of every pixel, things and stuff), what
    a Panoptic FPN trains on. ``.scene(i)`` gives the full :class:`PanopticScene`.
    """

    def __init__(self, n: int, size=128, seed: int = 0, cache: bool = False, **scene_kwargs):
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        self.n, self.size, self.seed, self.scene_kwargs = n, size, seed, scene_kwargs
        self.cache, self._cache = cache, {}
        make_panoptic_scene(seed, size, **scene_kwargs)  # fail now, not in a DataLoader worker

    def __len__(self) -> int:
        return self.n

    def scene(self, i: int) -> PanopticScene:
        if not -self.n <= i < self.n:
            raise IndexError(f"index {i} out of range for a dataset of {self.n} scenes")
        i = i % self.n
        if i in self._cache:
            return self._cache[i]
        s = make_panoptic_scene(scene_seed(self.seed, i), self.size, **self.scene_kwargs)
        if self.cache:
            self._cache[i] = s
        return s

    def __getitem__(self, i: int) -> tuple[Tensor, dict[str, Tensor]]:
        s = self.scene(i)
        return s.image, {"boxes": s.boxes, "labels": s.labels, "masks": s.masks.to(torch.uint8),
                         "semantic": s.semantic,
                         "image_id": torch.tensor(i % self.n, dtype=torch.int64)}


# -------------------------------------------------------------- COCO panoptic
def id_to_rgb(ids: Tensor) -> Tensor:
    """Segment ids [...] int64 in [0, 256^3) -> colours [..., 3] uint8 (R, G, B).

    ``rgb_to_id(id_to_rgb(i)) == i``: R = id mod 256, G = (id // 256) mod 256, B = id // 256^2.
    """
    if ids.numel() and bool(((ids < 0) | (ids >= 256**3)).any()):
        raise ValueError("segment ids must be in [0, 256**3) to fit in an RGB PNG")
    return torch.stack([ids % 256, ids // 256 % 256, ids // 256**2], dim=-1).to(torch.uint8)


def rgb_to_id(rgb: Tensor) -> Tensor:
    """Colours [..., 3] (R, G, B) uint8 -> segment ids [...] int64: R + 256 G + 256^2 B."""
    rgb = rgb.long()
    return rgb[..., 0] + 256 * rgb[..., 1] + 256**2 * rgb[..., 2]


def panoptic_categories() -> list[dict]:
    """COCO ``categories`` of panoptic scenes: id, name, supercategory, isthing (1/0), color."""
    palette = [(220, 20, 60), (0, 128, 0), (0, 0, 192), (255, 165, 0),  # things
               (135, 206, 235), (139, 90, 43), (178, 34, 34)]  # sky, ground, wall
    return [{"id": c, "name": PANOPTIC_CLASSES[c], "isthing": int(c in THING_IDS),
             "supercategory": "shape" if c in THING_IDS else "background",
             "color": list(palette[c - 1])} for c in THING_IDS + STUFF_IDS]


def write_coco_panoptic(scenes: list[PanopticScene], root, image_format: str = "png") -> Path:
    """Write ``root/images/000000.png``, ``root/panoptic/000000.png`` and ``root/panoptic.json``.

    The label PNG holds ``id_to_rgb(segment_ids)``; ``segments_info`` lists each
    segment's id, category_id, iscrowd (0), area and bbox [x, y, w, h].
    Returns:
        Path: the JSON file.
    """
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "panoptic").mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for i, s in enumerate(scenes):
        _, H, W = s.image.shape
        name, label = f"images/{i:06d}.{image_format}", f"{i:06d}.png"
        save_image(s.image, root / name)
        Image.fromarray(id_to_rgb(s.segment_ids).numpy()).save(root / "panoptic" / label)
        images.append({"id": i, "file_name": name, "height": H, "width": W})
        info = [{k: seg[k] for k in ("id", "category_id", "iscrowd", "area", "bbox")}
                for seg in s.segments]
        annotations.append({"image_id": i, "file_name": label, "segments_info": info})
    path = root / PANOPTIC_FILE
    with open(path, "w") as f:
        json.dump({"images": images, "annotations": annotations,
                   "categories": panoptic_categories()}, f)
    return path


class CocoPanoptic(Dataset):
    """A COCO panoptic folder: item = ``(image [3, H, W], target)``.

    Args:
        root: folder holding ``images/``, ``panoptic/`` (label PNGs) and, by default,
            ``panoptic.json`` (what :func:`write_coco_panoptic` writes).
        ann_file: the JSON file; default ``root/panoptic.json``.
    ``target``: ``segment_ids`` [H, W] int64, ``segments`` (the ``segments_info`` list,
    each with ``isthing`` from the categories), ``panoptic`` [H, W, 2] and ``image_id``.
    A write -> read round trip returns the scenes' segment ids and segments exactly.
    """

    def __init__(self, root, ann_file=None):
        self.root = Path(root)
        self.ann_file = Path(ann_file) if ann_file is not None else self.root / PANOPTIC_FILE
        if not self.ann_file.is_file():
            raise FileNotFoundError(f"COCO panoptic file {self.ann_file} does not exist; expected "
                                    "the JSON written by write_coco_panoptic (images, "
                                    "annotations with segments_info, categories)")
        with open(self.ann_file) as f:
            data = json.load(f)
        for key in ("images", "annotations", "categories"):
            if key not in data:
                raise ValueError(f"{self.ann_file} has no {key!r} list; is it a panoptic file?")
        self.images = sorted(data["images"], key=lambda im: im["id"])
        self.categories = {c["id"]: c for c in data["categories"]}
        self._anns = {a["image_id"]: a for a in data["annotations"]}

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[Tensor, dict]:
        info = self.images[i]
        ann = self._anns.get(info["id"])
        if ann is None:
            raise ValueError(f"image id {info['id']} has no annotation in {self.ann_file}")
        image = load_image(self.root / info["file_name"])
        label_path = self.root / "panoptic" / ann["file_name"]
        if not label_path.is_file():
            raise FileNotFoundError(f"label PNG {label_path} (image id {info['id']}) does not exist")
        with Image.open(label_path) as im:
            segment_ids = rgb_to_id(torch.from_numpy(np.asarray(im.convert("RGB")).copy()))
        unknown = {s["category_id"] for s in ann["segments_info"]} - set(self.categories)
        if unknown:
            raise ValueError(f"{self.ann_file}: image {info['id']} uses category ids "
                             f"{sorted(unknown)} that are not in 'categories'")
        segments = [{**s, "isthing": bool(self.categories[s["category_id"]]["isthing"])}
                    for s in ann["segments_info"]]
        return image, {"segment_ids": segment_ids, "segments": segments,
                       "panoptic": panoptic_from_segments(segment_ids, segments),
                       "image_id": torch.tensor(info["id"], dtype=torch.int64)}
