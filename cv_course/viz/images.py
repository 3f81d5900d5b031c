"""Images and colours for figures: tensor-to-matplotlib conversion, a fixed
class palette and a legend for it.

Every figure in the book draws class ``k`` in the same colour, so a reader can
match a "circle" pixel in a segmentation map with a "circle" box in a detection.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

# Colour of class 0 (background in every dataset of the course): a dark grey
# that stays visible against white page backgrounds and black image borders.
BACKGROUND_COLOR = (0.25, 0.25, 0.25)

# Colours of the other classes, cycled: matplotlib's "tab10" palette, which is
# distinguishable in print and for the common forms of colour blindness.
_TAB10 = (
    (0.122, 0.467, 0.706), (1.000, 0.498, 0.055), (0.173, 0.627, 0.173),
    (0.839, 0.153, 0.157), (0.580, 0.404, 0.741), (0.549, 0.337, 0.294),
    (0.890, 0.467, 0.761), (0.498, 0.498, 0.498), (0.737, 0.741, 0.133),
    (0.090, 0.745, 0.812),
)


def as_numpy(x) -> np.ndarray:
    """A NumPy copy of a tensor (any device, no grad) or array-like, for plotting."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def to_hwc(image) -> np.ndarray:
    """Convert an image to what ``matplotlib.pyplot.imshow`` expects.

    Args:
        image (Tensor or array [3, H, W], [H, W, 3] or [H, W]): float values in
            [0, 1] or integer values in [0, 255]; channels-first is detected by a
            leading dimension of 1 or 3.
    Returns:
        np.ndarray[H, W, 3] (float in [0, 1]) for colour input, [H, W] for
        single-channel input.
    Raises:
        ValueError: if the shape is not one of the above.
    """
    img = as_numpy(image)
    shape = list(img.shape)
    if img.ndim == 3 and img.shape[0] in (1, 3) and img.shape[-1] not in (1, 3):
        img = img.transpose(1, 2, 0)  # [H, W, C]
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]  # [H, W]
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[-1] != 3):
        raise ValueError(f"image must be [3, H, W], [H, W, 3] or [H, W], got {shape}")
    if np.issubdtype(img.dtype, np.integer) or img.dtype == np.bool_:
        return img.astype(np.float64) / (1.0 if img.dtype == np.bool_ else 255.0)
    return np.clip(img.astype(np.float64), 0.0, 1.0)


def class_colors(num_classes: int) -> np.ndarray:
    """The course's colour for each class index.

    Args:
        num_classes (int): number of classes, background (class 0) included.
    Returns:
        np.ndarray[num_classes, 3]: RGB in [0, 1]; row 0 is ``BACKGROUND_COLOR``,
        rows 1.. cycle through the tab10 palette. ``class_colors(n)`` is a prefix of
        ``class_colors(n + 1)``, so colours do not depend on how many classes a figure shows.
    """
    if num_classes < 0:
        raise ValueError(f"num_classes must be >= 0, got {num_classes}")
    rows = [BACKGROUND_COLOR] + [_TAB10[(k - 1) % len(_TAB10)] for k in range(1, num_classes)]
    return np.array(rows[:num_classes], dtype=np.float64).reshape(num_classes, 3)


def instance_colors(num_instances: int) -> np.ndarray:
    """Distinct colours for object instances (no background entry).

    Args:
        num_instances (int): number of objects.
    Returns:
        np.ndarray[num_instances, 3]: RGB in [0, 1], cycling through tab10.
    """
    rows = [_TAB10[k % len(_TAB10)] for k in range(num_instances)]
    return np.array(rows, dtype=np.float64).reshape(num_instances, 3)


def show_image(ax, image, title: str | None = None) -> None:
    """Show an image on ``ax`` in pixel coordinates, without ticks.

    Pixel (row y, column x) covers the square [x, x+1] x [y, y+1], so that box
    coordinates (x1, y1, x2, y2) in pixels line up with the image edges.

    Args:
        ax (matplotlib Axes): where to draw.
        image (Tensor or array [3, H, W], [H, W, 3] or [H, W]): see ``to_hwc``.
        title (str, optional): axes title.
    """
    img = to_hwc(image)
    H, W = img.shape[:2]
    ax.imshow(img, extent=(0, W, H, 0), interpolation="nearest",
              cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1)
    ax.set_xticks([])
    ax.set_yticks([])
    if title is not None:
        ax.set_title(title)


def class_legend(ax, class_names: Sequence[str], colors=None, **kwargs):
    """Add a legend with one coloured square per class.

    Args:
        ax (matplotlib Axes): where to put the legend.
        class_names (sequence of str): name of class 0, 1, ...
        colors (array [C, 3], optional): defaults to ``class_colors(len(class_names))``.
        **kwargs: passed on to ``ax.legend`` (e.g. ``loc``, ``fontsize``).
    Returns:
        matplotlib Legend.
    """
    from matplotlib.patches import Patch  # plotting-only import, kept local

    colors = class_colors(len(class_names)) if colors is None else as_numpy(colors)
    handles = [Patch(facecolor=c, edgecolor="none", label=n) for n, c in zip(class_names, colors)]
    return ax.legend(handles=handles, **kwargs)
