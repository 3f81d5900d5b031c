"""Small matrices drawn as grids of numbered cells.

The worked examples of the upsampling chapter (unpooling, transposed
convolution, the convolution matrix) are about a handful of numbers and where
they end up. ``show_values`` draws such a matrix as coloured cells with each
value written inside, so a figure can be read like the printed tensor.
"""

from __future__ import annotations

import numpy as np

from .images import as_numpy


def show_values(ax, values, title: str | None = None, fmt: str = "{:g}", cmap: str = "Blues",
                vmin: float | None = None, vmax: float | None = None,
                highlight=None, fontsize: float | None = None):
    """Draw a small matrix as a grid of cells, each labelled with its value.

    Cell (row i, column j) covers the square [j, j+1] x [i, i+1], as the pixels
    of ``show_image``. Text is white on dark cells and black on light ones.

    Args:
        ax (matplotlib Axes): where to draw.
        values (Tensor or array [H, W] or [L]): numbers to show; a 1-D input is
            drawn as one row.
        title (str, optional): axes title.
        fmt (str): format of each label, e.g. ``"{:g}"`` or ``"{:.2f}"``.
        cmap (str): matplotlib colour map of the cells.
        vmin, vmax (float, optional): colour range; default: the values' range.
        highlight (Tensor or array [H, W] of bool, optional): cells outlined in red.
        fontsize (float, optional): size of the cell labels.
    Returns:
        matplotlib AxesImage of the cells.
    Raises:
        ValueError: if ``values`` is not 1-D or 2-D, or ``highlight`` has another shape.
    """
    from matplotlib.patches import Rectangle  # plotting-only import, kept local

    v = as_numpy(values).astype(np.float64)
    if v.ndim == 1:
        v = v[None, :]  # [1, L]
    if v.ndim != 2:
        raise ValueError(f"values must have shape [H, W] or [L], got {list(as_numpy(values).shape)}")
    H, W = v.shape
    lo = vmin if vmin is not None else (float(np.nanmin(v)) if v.size else 0.0)
    hi = vmax if vmax is not None else (float(np.nanmax(v)) if v.size else 1.0)
    if hi == lo:  # a constant matrix: a mid-range colour instead of a division by zero
        lo, hi = lo - 1.0, hi + 1.0
    image = ax.imshow(v, cmap=cmap, vmin=lo, vmax=hi, extent=(0, W, H, 0), interpolation="nearest")
    colormap = image.get_cmap()
    for (i, j), value in np.ndenumerate(v):
        r, g, b, _ = colormap((value - lo) / (hi - lo))
        dark = 0.299 * r + 0.587 * g + 0.114 * b < 0.5  # perceived brightness of the cell
        ax.text(j + 0.5, i + 0.5, fmt.format(value), ha="center", va="center",
                color="white" if dark else "black", fontsize=fontsize)
    if highlight is not None:
        mark = as_numpy(highlight).astype(bool)
        if mark.ndim == 1:
            mark = mark[None, :]  # [1, L], as the values
        if mark.shape != v.shape:
            raise ValueError(f"highlight must have the shape of values, {[H, W]}, "
                             f"got {list(as_numpy(highlight).shape)}")
        for i, j in zip(*np.nonzero(mark)):
            ax.add_patch(Rectangle((j, i), 1, 1, fill=False, edgecolor="tab:red", linewidth=2.5, zorder=4,
                                   clip_on=False))
    # Thin white lines between cells, so that equal neighbours stay separate.
    ax.set_xticks(np.arange(W + 1), minor=True)
    ax.set_yticks(np.arange(H + 1), minor=True)
    ax.grid(which="minor", color="white", linewidth=1.0)
    ax.tick_params(which="both", length=0)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlim(0, W)
    ax.set_ylim(H, 0)
    if title is not None:
        ax.set_title(title)
    return image
