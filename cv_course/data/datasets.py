"""``torch.utils.data.Dataset`` views of generated scenes, one per task of the course.

Every dataset takes ``(n, size=128, seed=0, **scene_kwargs)``; item ``i`` is built
from ``make_scene(scene_seed(seed, i), size, **scene_kwargs)``. Scenes are generated
lazily in ``__getitem__`` (about a millisecond each), or kept in memory after
their first use with ``cache=True``. Items are CPU tensors; move batches to the
device in the training loop.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.data import Dataset

from .scenes import NUM_CLASSES, Scene, make_scene, scene_seed


class _SceneDataset(Dataset):
    """Shared indexing, lazy generation and optional caching."""

    def __init__(self, n: int, size=128, seed: int = 0, cache: bool = False, **scene_kwargs):
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        self.n, self.size, self.seed, self.scene_kwargs = n, size, seed, scene_kwargs
        self.cache = cache
        self._cache: dict[int, Scene] = {}
        make_scene(seed, size, **scene_kwargs)  # fail now, not in a DataLoader worker

    def __len__(self) -> int:
        return self.n

    def scene(self, i: int) -> Scene:
        """The full :class:`Scene` behind item ``i`` (negative indices count from the end)."""
        if not -self.n <= i < self.n:
            raise IndexError(f"index {i} out of range for a dataset of {self.n} scenes")
        i = i % self.n
        if i in self._cache:
            return self._cache[i]
        s = make_scene(scene_seed(self.seed, i), self.size, **self.scene_kwargs)
        if self.cache:
            self._cache[i] = s
        return s


class SegmentationScenes(_SceneDataset):
    """Semantic segmentation: item = ``(image [3, H, W] float32, semantic [H, W] int64)``.

    ``semantic`` holds class ids, 0 = background (see ``CLASSES``); there is no ignore label.
    """

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        s = self.scene(i)
        return s.image, s.semantic


class DetectionScenes(_SceneDataset):
    """Detection / instance segmentation in torchvision's target format.

    Item = ``(image [3, H, W] float32, target)`` with ``target`` a dict:
    ``"boxes"`` Tensor[K, 4] float32 (x1, y1, x2, y2) pixels (x2 = last column + 1),
    ``"labels"`` Tensor[K] int64 in 1..NUM_CLASSES-1, ``"image_id"`` int64 scalar tensor
    (= the index), and with ``include_masks=True`` ``"masks"`` Tensor[K, H, W] uint8
    (0/1, as torchvision's Mask R-CNN expects). K may be 0.
    """

    def __init__(self, n: int, size=128, seed: int = 0, include_masks: bool = False,
                 cache: bool = False, **scene_kwargs):
        super().__init__(n, size, seed, cache=cache, **scene_kwargs)
        self.include_masks = include_masks

    def __getitem__(self, i: int) -> tuple[Tensor, dict[str, Tensor]]:
        s = self.scene(i)
        target = {"boxes": s.boxes, "labels": s.labels,
                  "image_id": torch.tensor(i % self.n, dtype=torch.int64)}
        if self.include_masks:
            target["masks"] = s.masks.to(torch.uint8)
        return s.image, target


class ClassificationScenes(_SceneDataset):
    """One object per scene; classify its shape.

    Item = ``(image [3, H, W] float32, label)`` with ``label`` an int64 scalar tensor in
    0..NUM_CLASSES-2 (the shape class without background: ``CLASSES[label + 1]``).
    With ``return_mask=True`` the item is ``(image, label, mask [H, W] bool)``, the
    object's pixels, e.g. for the pointing game (does a saliency peak fall on the
    object?); ``.mask(i)`` gives the same mask without changing the items.

    Objects span 0.3-0.7 of the image by default (override with ``min_scale`` and
    ``max_scale``); ``size=64`` is plenty for this task and 4x cheaper than the default
    128. Backgrounds are textured and colours random, so it takes a small CNN rather
    than a colour threshold, but such a CNN reaches >= 95% accuracy.
    """

    num_classes = NUM_CLASSES - 1

    def __init__(self, n: int, size=128, seed: int = 0, return_mask: bool = False,
                 cache: bool = False, **scene_kwargs):
        for key in ("min_objects", "max_objects"):
            if key in scene_kwargs:
                raise ValueError(f"ClassificationScenes always has one object; do not pass {key}")
        scene_kwargs.setdefault("min_scale", 0.3)
        scene_kwargs.setdefault("max_scale", 0.7)
        super().__init__(n, size, seed, cache=cache, min_objects=1, max_objects=1,
                         **scene_kwargs)
        self.return_mask = return_mask

    def _single(self, i: int) -> Scene:
        s = self.scene(i)
        if s.labels.shape[0] != 1:
            raise ValueError(
                f"scene {i} has no visible object; increase min_scale (now "
                f"{self.scene_kwargs['min_scale']}) or the image size (now {self.size})"
            )
        return s

    def mask(self, i: int) -> Tensor:
        """Tensor[H, W] bool: the pixels of the object in item ``i``."""
        return self._single(i).masks[0]

    def __getitem__(self, i: int):
        s = self._single(i)
        label = s.labels[0] - 1  # int64 scalar tensor
        if self.return_mask:
            return s.image, label, s.masks[0]
        return s.image, label


def detection_collate(batch: list) -> tuple[list[Tensor], list[dict[str, Tensor]]]:
    """Collate ``(image, target)`` pairs for detection into two lists.

    Returns ``(images, targets)``: a list of Tensor[3, H, W] and a list of target
    dicts, the input format of torchvision's detection models. Images stay a list
    (not a stacked tensor) because they may differ in size and each target has its
    own number of boxes; use ``torch.stack(images)`` when all sizes agree.
    """
    images = [item[0] for item in batch]
    targets = [item[1] for item in batch]
    return images, targets
