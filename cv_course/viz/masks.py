"""Pictures of per-pixel outputs: a class map in colour and instance masks
blended over an image.

Both return plain ``[H, W, 3]`` arrays, so they can be shown with ``imshow`` or
with ``cv_course.viz.show_image`` and checked pixel by pixel.
"""

from __future__ import annotations

import numpy as np

from .images import as_numpy, class_colors, instance_colors, to_hwc

# Colour of pixels labelled ``ignore_index`` (e.g. 255 on object borders): white.
IGNORE_COLOR = (1.0, 1.0, 1.0)


def colorize_labels(labels, num_classes: int | None = None, colors=None,
                    ignore_index: int | None = 255) -> np.ndarray:
    """Paint a class map: every pixel gets the colour of its class.

    Args:
        labels (Tensor or array [H, W], int): class index per pixel.
        num_classes (int, optional): size of the palette; default: largest label + 1.
        colors (array [C, 3], optional): colour per class; default ``class_colors``.
        ignore_index (int, optional): label drawn in ``IGNORE_COLOR`` (None: no such label).
    Returns:
        np.ndarray[H, W, 3]: RGB in [0, 1]; pixel (y, x) is ``colors[labels[y, x]]``.
    Raises:
        ValueError: on a label outside the palette (other than ``ignore_index``).
    """
    lab = as_numpy(labels).astype(np.int64)
    if lab.ndim != 2:
        raise ValueError(f"labels must have shape [H, W], got {list(lab.shape)}")
    ignored = lab == ignore_index if ignore_index is not None else np.zeros(lab.shape, bool)
    valid = lab[~ignored]
    if colors is None:
        if num_classes is None:
            num_classes = int(valid.max()) + 1 if valid.size else 1
        colors = class_colors(num_classes)
    colors = as_numpy(colors).astype(np.float64)
    if valid.size and (valid.min() < 0 or valid.max() >= len(colors)):
        raise ValueError(f"labels must lie in [0, {len(colors) - 1}] (or be {ignore_index}), "
                         f"got values from {valid.min()} to {valid.max()}")
    out = colors[np.where(ignored, 0, lab)]  # [H, W, 3]
    out[ignored] = IGNORE_COLOR
    return out


def overlay_masks(image, masks, colors=None, alpha: float = 0.5) -> np.ndarray:
    """Blend instance masks over an image, one colour per mask.

    Where masks overlap, the later mask is on top.

    Args:
        image (Tensor or array [3, H, W], [H, W, 3] or [H, W]): see ``to_hwc``.
        masks (Tensor or array [K, H, W], bool): one mask per object.
        colors (array [K, 3], optional): colour per mask; default ``instance_colors(K)``.
        alpha (float): opacity of the masks, in [0, 1].
    Returns:
        np.ndarray[H, W, 3]: RGB in [0, 1]; inside mask k a pixel is
        ``(1 - alpha) * image + alpha * colors[k]``, outside every mask it is the image.
    """
    img = to_hwc(image)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)  # [H, W, 3]
    m = as_numpy(masks).astype(bool)
    if m.ndim != 3 or m.shape[1:] != img.shape[:2]:
        raise ValueError(f"masks must have shape [K, {img.shape[0]}, {img.shape[1]}], "
                         f"got {list(m.shape)}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    colors = instance_colors(len(m)) if colors is None else as_numpy(colors).astype(np.float64)
    if len(colors) != len(m):
        raise ValueError(f"colors must have one row per mask ({len(m)}), got {len(colors)}")
    out = img.copy()
    for mask, color in zip(m, colors):  # K is small; later masks overwrite earlier ones
        out[mask] = (1 - alpha) * img[mask] + alpha * color
    return out


def overlay_classes(image, labels, classes, colors=None, alpha: float = 0.75,
                    num_classes: int | None = None) -> np.ndarray:
    """Blend the pixels of some classes of a class map over an image.

    This is ``overlay_masks`` with one mask per chosen class (``labels == c``)
    painted in that class's colour, so the same class has the same colour as in
    ``colorize_labels``. Pixels of the other classes show the image unchanged.

    Args:
        image (Tensor or array [3, H, W], [H, W, 3] or [H, W]): see ``to_hwc``.
        labels (Tensor or array [H, W], int): class index per pixel.
        classes (sequence of int): the classes to paint; may be empty.
        colors (array [C, 3], optional): colour per class; default ``class_colors``.
        alpha (float): opacity of the painted classes, in [0, 1].
        num_classes (int, optional): size of the default palette; default:
            large enough for ``labels`` and ``classes``.
    Returns:
        np.ndarray[H, W, 3]: RGB in [0, 1]; a pixel of a chosen class c is
        ``(1 - alpha) * image + alpha * colors[c]``, every other pixel is the image.
    """
    lab = as_numpy(labels).astype(np.int64)
    chosen = np.asarray(list(classes), dtype=np.int64)  # [K]
    if lab.ndim != 2:
        raise ValueError(f"labels must have shape [H, W], got {list(lab.shape)}")
    if colors is None:
        largest = max(int(lab.max()) if lab.size else 0, int(chosen.max()) if chosen.size else 0)
        colors = class_colors(num_classes if num_classes is not None else largest + 1)
    colors = as_numpy(colors).astype(np.float64)
    if chosen.size and (chosen.min() < 0 or chosen.max() >= len(colors)):
        raise ValueError(f"classes must lie in [0, {len(colors) - 1}], got {chosen.tolist()}")
    masks = lab[None] == chosen[:, None, None]  # [K, H, W], disjoint: one class per pixel
    return overlay_masks(image, masks, colors=colors[chosen].reshape(-1, 3), alpha=alpha)
