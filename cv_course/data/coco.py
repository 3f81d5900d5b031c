"""Write scenes in the COCO detection format and read that format back.

COCO (Lin et al., "Microsoft COCO: Common Objects in Context", ECCV 2014) stores one
JSON file: ``images`` (id, file_name, height, width), ``categories`` (id, name) and
``annotations`` (id, image_id, category_id, ``bbox`` as [x, y, w, h] in pixels,
``area``, ``iscrowd`` and ``segmentation``). A segmentation is either polygons or a
run-length encoding (RLE) of the mask read in column-major (Fortran) order,
starting with a run of zeros: ``{"size": [H, W], "counts": [n0, n1, n0, ...]}``.
Counts are a list ("uncompressed RLE", what we write) or pycocotools' compact
string ("compressed RLE"); both are decoded here without pycocotools, which the
tests use as the oracle.

Box convention: pixel (row i, column j) covers [j, j+1) x [i, i+1), so
``bbox = [x1, y1, x2 - x1, y2 - y1]`` and a one-pixel object has w = h = 1
(the same as ``pycocotools.mask.toBbox``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor
from torch.utils.data import Dataset

from .scenes import CLASSES, Scene

ANNOTATION_FILE = "annotations.json"
_FORMATS = {"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG"}


# ----------------------------------------------------------------- image files
def save_image(image: Tensor, path: Path) -> None:
    """Write a [3, H, W] float image in [0, 1] as 8-bit RGB (PNG or JPEG by suffix)."""
    fmt = _FORMATS.get(path.suffix.lower().lstrip("."))
    if fmt is None:
        raise ValueError(f"unsupported image suffix {path.suffix!r} for {path}; use .png or .jpg")
    pixels = (image.detach().clamp(0, 1) * 255).round().to(torch.uint8)  # [3, H, W]
    extra = {"quality": 95} if fmt == "JPEG" else {}
    Image.fromarray(pixels.permute(1, 2, 0).cpu().numpy()).save(path, fmt, **extra)


def load_image(path: Path) -> Tensor:
    """Read an image file as Tensor[3, H, W] float32 in [0, 1] (grey or RGBA become RGB)."""
    if not path.is_file():
        raise FileNotFoundError(f"image file {path} does not exist")
    with Image.open(path) as im:
        pixels = np.asarray(im.convert("RGB"))  # [H, W, 3] uint8
    return torch.from_numpy(pixels.copy()).permute(2, 0, 1).float() / 255


# ------------------------------------------------------------------------ RLE
def mask_to_rle(mask: Tensor) -> dict:
    """Uncompressed COCO RLE of a [H, W] bool mask: ``{"size": [H, W], "counts": [...]}``.

    ``rle_to_mask(mask_to_rle(m)) == m``.
    """
    H, W = mask.shape
    flat = mask.t().reshape(-1).to(torch.int8)  # column-major, [H * W]
    change = torch.nonzero(flat[1:] != flat[:-1]).flatten() + 1  # where a new run starts
    bounds = torch.cat([torch.tensor([0]), change, torch.tensor([H * W])])
    counts = torch.diff(bounds).tolist()
    if flat.numel() and flat[0] == 1:
        counts = [0] + counts  # RLE always starts with a (possibly empty) run of zeros
    return {"size": [H, W], "counts": counts}


def _string_to_counts(s: str) -> list[int]:
    """Decode pycocotools' compressed counts string (a LEB128-like code, 5 bits a char,
    each count after the second stored as the difference to the count two back)."""
    counts: list[int] = []
    p = 0
    while p < len(s):  # sequential by nature: a variable-length code
        x, k, more = 0, 0, True
        while more:
            c = ord(s[p]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p, k = p + 1, k + 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)  # sign-extend
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def rle_to_mask(rle: dict) -> Tensor:
    """Decode a COCO RLE (list or compressed-string counts) to a [H, W] bool mask."""
    H, W = rle["size"]
    counts = rle["counts"]
    if isinstance(counts, (bytes, str)):
        counts = _string_to_counts(counts.decode() if isinstance(counts, bytes) else counts)
    counts = torch.as_tensor(counts, dtype=torch.long)
    if int(counts.sum()) != H * W:
        raise ValueError(f"RLE counts sum to {int(counts.sum())}, expected H * W = {H * W}")
    values = torch.arange(len(counts)) % 2 == 1  # runs alternate 0, 1, 0, ...
    return torch.repeat_interleave(values, counts).reshape(W, H).t()  # [H, W]


def polygons_to_mask(polygons: list[list[float]], height: int, width: int) -> Tensor:
    """Rasterize COCO polygons ([[x0, y0, x1, y1, ...], ...]) to a [H, W] bool mask.

    Uses PIL's scan conversion, which can differ from pycocotools on edge pixels.
    """
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    for poly in polygons:
        if len(poly) >= 6:
            draw.polygon(list(map(float, poly)), outline=1, fill=1)
    return torch.from_numpy(np.asarray(canvas).copy()).bool()


# ---------------------------------------------------------------------- write
def write_coco(scenes: list[Scene], root, image_format: str = "png") -> Path:
    """Write scenes as ``root/images/000000.png, ...`` and ``root/annotations.json``.

    Image ``i`` gets id ``i``; annotation ids start at 1. Segmentations are
    uncompressed RLE, ``area`` is the mask's pixel count, categories come from
    ``CLASSES`` (id = class id). ``image_format`` is ``"png"`` (lossless up to 8-bit
    quantization) or ``"jpg"`` (lossy).

    Returns:
        Path: the annotation file.
    """
    if image_format.lower() not in _FORMATS:
        raise ValueError(f"image_format must be one of {sorted(_FORMATS)}, got {image_format!r}")
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for i, s in enumerate(scenes):
        _, H, W = s.image.shape
        name = f"images/{i:06d}.{image_format.lower()}"
        save_image(s.image, root / name)
        images.append({"id": i, "file_name": name, "height": H, "width": W})
        xywh = torch.cat([s.boxes[:, :2], s.boxes[:, 2:] - s.boxes[:, :2]], dim=1)  # [K, 4]
        areas = s.masks.flatten(1).sum(dim=1)  # [K]
        for box, label, area, mask in zip(xywh.tolist(), s.labels.tolist(), areas.tolist(),
                                          s.masks):
            annotations.append({
                "id": len(annotations) + 1, "image_id": i, "category_id": label,
                "bbox": box, "area": area, "iscrowd": 0, "segmentation": mask_to_rle(mask),
            })
    categories = [{"id": c, "name": n, "supercategory": "shape"}
                  for c, n in enumerate(CLASSES) if c > 0]
    ann_file = root / ANNOTATION_FILE
    with open(ann_file, "w") as f:
        json.dump({"images": images, "annotations": annotations, "categories": categories}, f)
    return ann_file


# ----------------------------------------------------------------------- read
class CocoDetection(Dataset):
    """A COCO-format detection dataset: item = ``(image, target)`` like ``DetectionScenes``.

    Args:
        root: folder that image ``file_name`` entries are relative to.
        ann_file: the JSON file; default ``root/annotations.json`` (what ``write_coco`` writes).
        include_masks (bool): decode segmentations into ``target["masks"]``.
        skip_crowd (bool): leave out ``iscrowd=1`` annotations (as for training).

    ``target`` has ``"boxes"`` Tensor[K, 4] float32 (x1, y1, x2, y2), ``"labels"``
    Tensor[K] int64 (the COCO category ids, not remapped), ``"image_id"`` int64 scalar
    tensor and, with ``include_masks``, ``"masks"`` Tensor[K, H, W] uint8.
    ``self.categories`` maps category id to name. A ``write_coco`` -> ``CocoDetection``
    round trip returns the scenes' boxes, labels and masks exactly.
    """

    def __init__(self, root, ann_file=None, include_masks: bool = True, skip_crowd: bool = True):
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(
                f"COCO root folder {self.root} does not exist; expected a folder holding the "
                f"images and (by default) {ANNOTATION_FILE}, as written by write_coco"
            )
        self.ann_file = Path(ann_file) if ann_file is not None else self.root / ANNOTATION_FILE
        if not self.ann_file.is_file():
            raise FileNotFoundError(
                f"COCO annotation file {self.ann_file} does not exist; expected a JSON file "
                "with 'images', 'annotations' and 'categories'"
            )
        with open(self.ann_file) as f:
            data = json.load(f)
        for key in ("images", "annotations", "categories"):
            if key not in data:
                raise ValueError(f"{self.ann_file} has no {key!r} list; is it a COCO file?")
        self.include_masks, self.skip_crowd = include_masks, skip_crowd
        self.images = sorted(data["images"], key=lambda im: im["id"])
        self.categories = {c["id"]: c["name"] for c in data["categories"]}
        self._anns: dict[int, list[dict]] = {im["id"]: [] for im in self.images}
        for ann in data["annotations"]:
            self._anns.setdefault(ann["image_id"], []).append(ann)

    def __len__(self) -> int:
        return len(self.images)

    def _mask(self, ann: dict, H: int, W: int) -> Tensor:
        seg = ann.get("segmentation")
        if isinstance(seg, list):
            return polygons_to_mask(seg, H, W)
        if isinstance(seg, dict):
            return rle_to_mask(seg)
        raise ValueError(f"annotation {ann.get('id')} in {self.ann_file} has no segmentation")

    def __getitem__(self, i: int) -> tuple[Tensor, dict[str, Tensor]]:
        info = self.images[i]
        path = self.root / info["file_name"]
        if not path.is_file():
            raise FileNotFoundError(
                f"image {path} (id {info['id']} in {self.ann_file}) does not exist"
            )
        image = load_image(path)
        H, W = info["height"], info["width"]
        if tuple(image.shape[1:]) != (H, W):
            raise ValueError(f"{path} is {tuple(image.shape[1:])}, annotation says {(H, W)}")
        anns = [a for a in self._anns[info["id"]] if not (self.skip_crowd and a.get("iscrowd"))]
        xywh = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4)
        target = {
            "boxes": torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], dim=1),  # [K, 4] xyxy
            "labels": torch.tensor([a["category_id"] for a in anns], dtype=torch.int64),
            "image_id": torch.tensor(info["id"], dtype=torch.int64),
        }
        if self.include_masks:
            masks = [self._mask(a, H, W) for a in anns]
            target["masks"] = (torch.stack(masks) if masks
                               else torch.zeros(0, H, W, dtype=torch.bool)).to(torch.uint8)
        return image, target
