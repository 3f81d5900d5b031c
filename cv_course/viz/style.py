"""How the book's figures look, and a check that their text can be read.

A figure on the course site is shown at most ``COLUMN_PX`` CSS pixels wide (the
text column of the page); a wider figure is scaled down, and so is its text.
:func:`book_style` sets legible defaults and high-density (2x) output, and
:func:`glue_figure` hands a figure to the book as a numbered, captioned figure
after checking that its smallest text is at least ``MIN_TEXT_PX`` pixels tall
once scaled into the column. A figure that fails says which text is too small
and what to change, so the page is fixed before it is published.
"""

from __future__ import annotations

COLUMN_PX = 760  # width of the page's text column in CSS pixels (desktop layout)
MIN_TEXT_PX = 9.0  # smallest legible text, in CSS pixels, after scaling into the column

BOOK_RC = {
    "figure.dpi": 100,  # 1 inch = 100 CSS pixels on the page (before scaling into the column)
    "font.size": 12,
    "axes.titlesize": 12,
    "axes.labelsize": 12,
    "xtick.labelsize": 11,
    "ytick.labelsize": 11,
    "legend.fontsize": 11,
    "figure.titlesize": 13,
    "svg.fonttype": "path",  # SVG text as outlines: identical in every browser
}


def book_style() -> None:
    """Legible defaults for figures, drawn at twice the pixel density ("retina")."""
    import matplotlib as mpl

    mpl.rcParams.update(BOOK_RC)
    try:
        from matplotlib_inline.backend_inline import set_matplotlib_formats
    except ImportError:  # outside Jupyter nothing is displayed inline
        return
    set_matplotlib_formats("retina")  # PNG at 2x, shown at 1x size: sharp on every screen


def _drawn_texts(fig):
    """The visible, non-empty text objects of ``fig`` that are actually drawn."""
    from matplotlib.text import Text

    hidden = set()
    for ax in fig.axes:  # tick labels of a hidden axis exist but are never drawn
        for axis in (ax.xaxis, ax.yaxis):
            if not (ax.axison and axis.get_visible()):
                hidden.update(map(id, axis.get_ticklabels(which="both")))
                hidden.add(id(axis.label))
    return [t for t in fig.findobj(Text)
            if t.get_visible() and t.get_text().strip() and id(t) not in hidden]


def smallest_text_px(fig, column_px: float = COLUMN_PX) -> tuple[float, str]:
    """Height in CSS pixels of the smallest text of ``fig`` when shown in the column.

    Returns:
        (pixels, the text that is smallest); ``(inf, "")`` for a figure without text.
    """
    width_px = fig.get_size_inches()[0] * fig.dpi  # the figure's width on the page at 1x
    scale = min(1.0, column_px / width_px)  # a wider figure is shrunk into the column
    sizes = [(t.get_fontsize() * fig.dpi / 72 * scale, t.get_text()) for t in _drawn_texts(fig)]
    return min(sizes, default=(float("inf"), ""))


def overlapping_labels(fig) -> list[tuple[str, str]]:
    """Pairs of boxed text labels (text drawn with a ``bbox``) that overlap on the canvas."""
    renderer = fig.canvas.get_renderer()
    fig.draw(renderer)  # lay out the figure so that the boxes have their final extents
    boxes = [(t.get_text(), t.get_bbox_patch().get_window_extent(renderer))
             for t in _drawn_texts(fig) if t.get_bbox_patch() is not None]
    return [(a, b) for i, (a, box_a) in enumerate(boxes) for b, box_b in boxes[i + 1:]
            if box_a.overlaps(box_b)]


def glue_figure(name: str, fig=None, min_text_px: float = MIN_TEXT_PX,
                check_overlap: bool = True) -> None:
    """Show ``fig`` (default: the current figure) and glue it as ``name`` for a ``{glue:figure}``.

    ``check_overlap=False`` is for figures whose subject is overlap itself (two
    near-duplicate boxes whose score tags touch); say so where it is passed.

    Raises:
        ValueError: if the smallest text would be under ``min_text_px`` CSS pixels in
            the page's column (make the figure narrower or the text larger), or if
            two boxed labels overlap (move them apart or make them smaller).
    """
    import matplotlib.pyplot as plt
    from myst_nb import glue

    fig = fig or plt.gcf()
    px, text = smallest_text_px(fig)
    if px < min_text_px:
        w, h = fig.get_size_inches()
        raise ValueError(
            f"figure {name!r}: text {text[:40]!r} would be {px:.1f} px tall in the "
            f"{COLUMN_PX} px column (at least {min_text_px:g} px is legible); the figure is "
            f"{w:g} x {h:g} in: make it narrower or its fonts larger")
    clashes = overlapping_labels(fig) if check_overlap else []
    if clashes:
        raise ValueError(f"figure {name!r}: boxed labels overlap: {clashes[:3]}; move them apart")
    glue(name, fig, display=True)  # shown here and pasted, numbered, where the chapter says
    plt.close(fig)  # not shown a second time at the end of the cell
