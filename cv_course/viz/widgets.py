"""Interactive figures for Jupyter (ipywidgets): an IoU calculator and a
class-mask viewer.

The widgets need a running kernel. In a static page (the built book) they show
nothing useful, so a chapter that uses one also draws the default state as an
ordinary figure with the same drawing function (``draw_iou_pair``,
``overlay_classes``).
"""

from __future__ import annotations

from .boxes import draw_iou_pair
from .images import as_numpy, class_colors, class_legend, show_image
from .masks import overlay_classes


def _show_in(out, fig) -> None:
    """Replace what the Output widget ``out`` shows with ``fig``."""
    import matplotlib.pyplot as plt
    from IPython.display import display

    with out:
        out.clear_output(wait=True)
        display(fig)
    plt.close(fig)  # shown once, through the Output widget, not again by the backend


def iou_calculator(
    box1: tuple[int, int, int, int] = (10, 10, 50, 50),
    box2: tuple[int, int, int, int] = (30, 30, 70, 70),
    canvas: tuple[int, int] = (100, 100),
    figsize: tuple[float, float] = (4.0, 4.0),
):
    """Sliders for two boxes, with a live drawing and IoU readout.

    Each box has an x-range slider (x1, x2) and a y-range slider (y1, y2), so a
    box can never be inverted. Moving a slider redraws the figure of
    ``draw_iou_pair`` and updates the readout below it.

    Args:
        box1, box2 (tuple of 4 int): initial (x1, y1, x2, y2) boxes in pixels.
        canvas (tuple[int, int]): (width, height) of the drawing area; the slider range.
        figsize (tuple[float, float]): size of the drawing in inches.
    Returns:
        ipywidgets.VBox: display it in a notebook. Its attribute ``iou_readout``
        (ipywidgets.HTML) holds the text "IoU = ...", and ``sliders`` the four
        sliders in the order A-x, A-y, B-x, B-y.
    Raises:
        ValueError: if a box does not fit on the canvas or is inverted.
    """
    # Imported here, not at module level: importing cv_course.viz must not need a notebook stack.
    import ipywidgets as widgets
    import matplotlib.pyplot as plt

    width, height = canvas
    for name, box in (("box1", box1), ("box2", box2)):
        x1, y1, x2, y2 = box
        if not (0 <= x1 <= x2 <= width and 0 <= y1 <= y2 <= height):
            raise ValueError(f"{name} = {tuple(box)} must satisfy "
                             f"0 <= x1 <= x2 <= {width} and 0 <= y1 <= y2 <= {height}")

    def range_slider(lo, hi, limit, label):
        return widgets.IntRangeSlider(value=(lo, hi), min=0, max=limit, description=label,
                                      continuous_update=True,
                                      style={"description_width": "initial"},
                                      layout=widgets.Layout(width="320px"))

    sliders = [
        range_slider(box1[0], box1[2], width, "A: x1, x2"),
        range_slider(box1[1], box1[3], height, "A: y1, y2"),
        range_slider(box2[0], box2[2], width, "B: x1, x2"),
        range_slider(box2[1], box2[3], height, "B: y1, y2"),
    ]
    readout = widgets.HTML()
    out = widgets.Output()

    def redraw(_change=None):
        (ax1, ax2), (ay1, ay2), (bx1, bx2), (by1, by2) = (s.value for s in sliders)
        a, b = (ax1, ay1, ax2, ay2), (bx1, by1, bx2, by2)
        fig, ax = plt.subplots(figsize=figsize)
        iou = draw_iou_pair(ax, a, b, canvas=canvas)
        readout.value = f"<b>IoU = {iou:.3f}</b> &nbsp; A = {a}, B = {b}"
        _show_in(out, fig)

    for s in sliders:
        s.observe(redraw, names="value")
    redraw()
    panel = widgets.VBox([widgets.HBox([widgets.VBox(sliders[:2]), widgets.VBox(sliders[2:])]),
                          readout, out])
    panel.iou_readout = readout
    panel.sliders = sliders
    return panel


def class_mask_viewer(image, labels, class_names, shown=None, alpha: float = 0.75,
                      figsize: tuple[float, float] = (4.5, 4.5)):
    """Checkboxes, one per class, that toggle the class's pixels over an image.

    Each ticked class is painted in its course colour with ``overlay_classes``;
    the readout below says how many pixels are painted.

    Args:
        image (Tensor or array [3, H, W], [H, W, 3] or [H, W]): the picture.
        labels (Tensor or array [H, W], int): class index per pixel, in
            ``[0, len(class_names))``.
        class_names (sequence of str): name of class 0, 1, ...
        shown (sequence of int, optional): classes ticked at the start;
            default: every class but 0 (the background).
        alpha (float): opacity of the painted classes.
        figsize (tuple[float, float]): size of the drawing in inches.
    Returns:
        ipywidgets.HBox: display it in a notebook. Its attribute ``checkboxes``
        (list of ipywidgets.Checkbox, one per class in class order) toggles the
        classes, and ``readout`` (ipywidgets.HTML) holds "... pixels shown".
    """
    # Imported here, not at module level: importing cv_course.viz must not need a notebook stack.
    import ipywidgets as widgets
    import matplotlib.pyplot as plt
    import numpy as np

    lab = as_numpy(labels)
    C = len(class_names)
    if lab.ndim != 2:
        raise ValueError(f"labels must have shape [H, W], got {list(lab.shape)}")
    if lab.size and (lab.min() < 0 or lab.max() >= C):
        raise ValueError(f"labels must lie in [0, {C - 1}] (one per class name), "
                         f"got values from {lab.min()} to {lab.max()}")
    shown = list(range(1, C)) if shown is None else list(shown)
    colors = class_colors(C)
    counts = np.bincount(lab.reshape(-1).astype(np.int64), minlength=C)  # pixels per class

    def swatch(c):  # a coloured square in the class colour, as in the figure
        r, g, b = (int(255 * v) for v in colors[c])
        return f"<span style='color: rgb({r}, {g}, {b}); font-size: 1.4em'>&#9632;</span>"

    checkboxes = [widgets.Checkbox(value=c in shown, description=f"{name} ({counts[c]} px)",
                                   indent=False, layout=widgets.Layout(width="180px"))
                  for c, name in enumerate(class_names)]
    rows = [widgets.HBox([widgets.HTML(swatch(c)), box]) for c, box in enumerate(checkboxes)]
    readout = widgets.HTML()
    out = widgets.Output()

    def redraw(_change=None):
        ticked = [c for c, box in enumerate(checkboxes) if box.value]
        fig, ax = plt.subplots(figsize=figsize)
        show_image(ax, overlay_classes(image, lab, ticked, colors=colors, alpha=alpha))
        if ticked:
            class_legend(ax, [class_names[c] for c in ticked], colors[ticked],
                         loc="lower right", fontsize=8)
        readout.value = f"{int(counts[ticked].sum())} of {lab.size} pixels shown"
        _show_in(out, fig)

    for box in checkboxes:
        box.observe(redraw, names="value")
    redraw()
    panel = widgets.HBox([widgets.VBox(rows + [readout]), out])
    panel.checkboxes = checkboxes
    panel.readout = readout
    return panel
