"""Write and read Pascal VOC-style semantic segmentation folders.

The layout of VOC 2012 (Everingham et al., "The PASCAL Visual Object Classes
Challenge", IJCV 2010)::

    root/JPEGImages/<name>.jpg (or .png)      the RGB image
    root/SegmentationClass/<name>.png         palette ("P") PNG: pixel value = class id
    root/ImageSets/Segmentation/<split>.txt   one <name> per line

In a label PNG the value 255 marks "ignore" (VOC draws it as a thin band on object
boundaries, where annotators were unsure); losses and metrics skip those pixels
(``ignore_index=255``). The palette only colours the ids for viewing: a label file
must be read as its indices, never converted to RGB.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from .coco import load_image, save_image
from .scenes import Scene

VOC_IGNORE_INDEX = 255


def voc_palette() -> Tensor:
    """The VOC colour map, Tensor[256, 3] uint8: id 0 is black, 1 dark red, 2 dark green, ...

    The bits of the id are spread over the colour channels, most significant first,
    so neighbouring ids get very different colours; 255 is (224, 224, 192).
    """
    ids = torch.arange(256)
    rgb = torch.zeros(256, 3, dtype=torch.long)
    for j in range(8):  # 8 rounds of 3 bits (a loop over bits, not pixels)
        bits = (ids >> (3 * j)) & 7  # [256]
        for ch in range(3):
            rgb[:, ch] |= ((bits >> ch) & 1) << (7 - j)
    return rgb.to(torch.uint8)


def boundary_ignore(semantic: Tensor, width: int) -> Tensor:
    """Set pixels within ``width`` pixels (Chebyshev) of a label change to 255.

    Args:
        semantic (Tensor[H, W] int64): class ids.
        width (int): band half-width; 0 returns a copy.
    Returns:
        Tensor[H, W] int64.
    """
    if width <= 0:
        return semantic.clone()
    x = semantic[None, None].float()  # [1, 1, H, W]
    k = 2 * width + 1
    hi = F.max_pool2d(x, k, stride=1, padding=width)  # largest id nearby
    lo = -F.max_pool2d(-x, k, stride=1, padding=width)  # smallest id nearby
    edge = (hi != lo)[0, 0]  # [H, W]
    return torch.where(edge, torch.full_like(semantic, VOC_IGNORE_INDEX), semantic)


def write_voc_segmentation(scenes: list[Scene], root, split: str = "train",
                           image_format: str = "png", boundary: int = 0) -> list[str]:
    """Write scenes as a VOC-style segmentation folder (see the module docstring).

    Names are ``f"{split}_{i:06d}"``, so several splits can share one root;
    ``ImageSets/Segmentation/<split>.txt`` is overwritten. ``image_format`` is
    ``"png"`` (exact up to 8-bit quantization) or ``"jpg"`` (lossy, like real VOC).
    With ``boundary > 0`` a VOC-like ignore band (255) of that half-width is drawn
    where labels change.

    Returns:
        list[str]: the names written, in order.
    """
    if image_format.lower() not in ("png", "jpg", "jpeg"):
        raise ValueError(f"image_format must be 'png' or 'jpg', got {image_format!r}")
    root = Path(root)
    dirs = [root / "JPEGImages", root / "SegmentationClass", root / "ImageSets" / "Segmentation"]
    for d in dirs:
        d.mkdir(parents=True, exist_ok=True)
    palette = voc_palette().flatten().tolist()
    names = []
    for i, s in enumerate(scenes):
        name = f"{split}_{i:06d}"
        save_image(s.image, dirs[0] / f"{name}.{image_format.lower()}")
        label = boundary_ignore(s.semantic, boundary).to(torch.uint8).numpy()  # [H, W]
        H, W = label.shape
        png = Image.frombytes("P", (W, H), label.tobytes())  # pixel value = class id
        png.putpalette(palette)
        png.save(dirs[1] / f"{name}.png")
        names.append(name)
    (dirs[2] / f"{split}.txt").write_text("".join(n + "\n" for n in names))
    return names


class VOCSegmentation(Dataset):
    """A VOC-style segmentation folder: item = ``(image [3, H, W] float32, target [H, W] int64)``.

    ``target`` holds class ids with 255 (``VOC_IGNORE_INDEX``) for ignored pixels.
    Images are looked up as ``JPEGImages/<name>.jpg``, then ``.jpeg``, then ``.png``.
    """

    def __init__(self, root, split: str = "train"):
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(
                f"VOC root folder {self.root} does not exist; expected JPEGImages/, "
                "SegmentationClass/ and ImageSets/Segmentation/ inside it"
            )
        split_file = self.root / "ImageSets" / "Segmentation" / f"{split}.txt"
        if not split_file.is_file():
            have = sorted(p.stem for p in split_file.parent.glob("*.txt"))
            raise FileNotFoundError(
                f"split file {split_file} does not exist; expected one image name per line "
                f"(splits found: {have or 'none'})"
            )
        self.split = split
        self.names = [ln.strip() for ln in split_file.read_text().splitlines() if ln.strip()]

    def __len__(self) -> int:
        return len(self.names)

    def _image_path(self, name: str) -> Path:
        for ext in (".jpg", ".jpeg", ".png"):
            path = self.root / "JPEGImages" / f"{name}{ext}"
            if path.is_file():
                return path
        raise FileNotFoundError(
            f"no image for {name!r}: expected {self.root / 'JPEGImages' / name}.jpg (or .png)"
        )

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        name = self.names[i]
        image = load_image(self._image_path(name))
        label_path = self.root / "SegmentationClass" / f"{name}.png"
        if not label_path.is_file():
            raise FileNotFoundError(f"label file {label_path} for {name!r} does not exist")
        with Image.open(label_path) as im:
            if im.mode not in ("P", "L"):
                raise ValueError(
                    f"{label_path} has mode {im.mode!r}; a VOC label must be a palette ('P') "
                    "or greyscale ('L') PNG whose pixel values are class ids"
                )
            target = torch.from_numpy(np.asarray(im).copy()).long()  # [H, W] the indices
        if target.shape != image.shape[1:]:
            raise ValueError(f"{label_path} is {tuple(target.shape)} but its image is "
                             f"{tuple(image.shape[1:])}")
        return image, target
