"""cv_course.data: generated scenes for every task of the course, and dataset I/O.

``make_scene(seed)`` draws one scene of overlapping shapes on a textured background
with exact labels for segmentation, detection and instance segmentation; the
``*Scenes`` datasets wrap it for each task; ``coco`` and ``voc`` read and write
the two standard on-disk formats.
"""

from .coco import CocoDetection, write_coco
from .datasets import (
    ClassificationScenes,
    DetectionScenes,
    SegmentationScenes,
    detection_collate,
)
from .scenes import CLASSES, NUM_CLASSES, Scene, make_scene, make_scenes, scene_seed
from .voc import VOC_IGNORE_INDEX, VOCSegmentation, voc_palette, write_voc_segmentation

__all__ = [
    "CLASSES",
    "NUM_CLASSES",
    "Scene",
    "make_scene",
    "make_scenes",
    "scene_seed",
    "SegmentationScenes",
    "DetectionScenes",
    "ClassificationScenes",
    "detection_collate",
    "write_coco",
    "CocoDetection",
    "write_voc_segmentation",
    "VOCSegmentation",
    "voc_palette",
    "VOC_IGNORE_INDEX",
]

# Panoptic segmentation (issue 12, section 2): scenes with stuff, COCO panoptic I/O.
from .panoptic import (  # noqa: E402
    PANOPTIC_CLASSES,
    STUFF_IDS,
    THING_IDS,
    CocoPanoptic,
    PanopticScene,
    PanopticScenes,
    make_panoptic_scene,
    make_panoptic_scenes,
    write_coco_panoptic,
)

__all__ += ["PANOPTIC_CLASSES", "STUFF_IDS", "THING_IDS", "PanopticScene", "PanopticScenes",
            "make_panoptic_scene", "make_panoptic_scenes", "write_coco_panoptic", "CocoPanoptic"]
