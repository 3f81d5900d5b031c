"""Drawing a Faster R-CNN's pipeline stage by stage, from a
:class:`cv_course.experiments.pipeline.PipelineTrace`: one panel per stage,
and a slider (Jupyter, running kernel) that steps through the same panels.
The built book shows the panels side by side as a static figure.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .boxes import draw_boxes
from .images import show_image

# (key, title) of each panel, in pipeline order
PIPELINE_STAGES = (
    ("input", "1 input"),
    ("features", "2 FPN, stride 4"),
    ("objectness", "3 objectness, all levels"),
    ("pre_nms", "4 decoded, objectness > 0.5"),
    ("proposals", "5 proposals after NMS"),
    ("candidates", "6 scored (class, box)"),
    ("detections", "7 final detections"),
)


def draw_pipeline_stage(ax, trace, image, stage: str, min_score: float = 0.5,
                        fontsize: float = 9.0) -> None:
    """Draw one stage of ``trace`` (see :data:`PIPELINE_STAGES`) on ``ax``.

    Args:
        trace (PipelineTrace): from ``trace_faster_rcnn(model, image)``.
        image (Tensor[3, H, W]): the traced image.
        stage (str): a key of :data:`PIPELINE_STAGES`.
        min_score (float): the final panel draws detections scoring at least this.
    """
    titles = dict(PIPELINE_STAGES)
    if stage not in titles:
        raise ValueError(f"stage must be one of {list(titles)}, got {stage!r}")
    t, (H, W) = trace.tensors, image.shape[-2:]
    if stage == "features":  # mean absolute activation of the finest FPN level
        f = next(iter(t["features"].values()))[0].abs().mean(0)  # [H/4, W/4]
        ax.imshow(f, extent=(0, W, H, 0), cmap="magma", interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
    elif stage == "objectness":  # best anchor probability per position, over all levels
        ax.imshow(objectness_map(trace), extent=(0, W, H, 0), cmap="viridis", vmin=0,
                  vmax=1, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
    else:
        show_image(ax, image)
    if stage == "pre_nms":
        keep = t["pre_nms_objectness"] > 0  # logit > 0: probability > 0.5
        draw_boxes(ax, t["pre_nms"][keep], colors="yellow", linewidth=0.4)
    elif stage == "proposals":
        draw_boxes(ax, t["proposals"], colors="yellow", linewidth=0.6)
    elif stage == "candidates":  # every (proposal, class) pair above the threshold
        d = t["candidates"]
        draw_boxes(ax, d["boxes"], labels=d["labels"], tags=[""] * len(d["labels"]),
                   linewidth=0.5)  # colour = class, no tags: hundreds of boxes
    elif stage == "detections":
        d = t["detections"]
        keep = d["scores"] >= min_score
        draw_boxes(ax, d["boxes"][keep], labels=d["labels"][keep],
                   tags=[f"{v:.2f}" for v in d["scores"][keep].tolist()],
                   linewidth=1.5, fontsize=fontsize)
    ax.set_title(titles[stage], fontsize=fontsize + 1)


def objectness_map(trace) -> torch.Tensor:
    """Best RPN objectness probability at each stride-4 position, over every level.

    Each level's map (the best of its anchors per position) is upsampled to the
    finest level's grid, nearest neighbour, and the maximum is taken.
    Returns Tensor[H/4, W/4] in [0, 1].
    """
    t = trace.tensors
    shapes = [tuple(f.shape[-2:]) for f in t["features"].values()]
    A = t["anchors"].shape[0] // sum(h * w for h, w in shapes)  # anchors per position
    probs = torch.sigmoid(t["objectness"]).split([h * w * A for h, w in shapes])
    maps = [p.view(1, 1, h, w, A).amax(-1) for p, (h, w) in zip(probs, shapes)]
    return torch.cat([F.interpolate(m, size=shapes[0], mode="nearest")
                      for m in maps]).amax(0)[0]  # [H/4, W/4]


def pipeline_stepper(trace, image, figsize=(4.5, 4.5)):
    """A slider over :data:`PIPELINE_STAGES` that redraws :func:`draw_pipeline_stage`.

    Needs a running kernel (ipywidgets). Returns an ``ipywidgets.VBox`` with
    attribute ``slider``.
    """
    # Imported here, not at module level: importing cv_course.viz must not need a notebook stack.
    import ipywidgets as widgets
    import matplotlib.pyplot as plt

    from .widgets import _show_in

    slider = widgets.IntSlider(value=0, min=0, max=len(PIPELINE_STAGES) - 1,
                               description="stage")
    out = widgets.Output()

    def redraw(_change=None):
        fig, ax = plt.subplots(figsize=figsize)
        draw_pipeline_stage(ax, trace, image, PIPELINE_STAGES[slider.value][0])
        _show_in(out, fig)

    slider.observe(redraw, names="value")
    redraw()
    panel = widgets.VBox([slider, out])
    panel.slider = slider
    return panel


__all__ = ["PIPELINE_STAGES", "draw_pipeline_stage", "objectness_map", "pipeline_stepper"]
