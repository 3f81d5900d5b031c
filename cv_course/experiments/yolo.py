"""YOLO v1 as a named detector: ``train_detector("yolo")``, ``trained_detector("yolo")``.

The default setup: 6 epochs of the 1,024 scenes (768 steps of 8 images). Measured
with ``benchmarks/detection.py --models yolo --threads 1`` (its record is
``benchmarks/results/yolo.json``): held-out mAP@0.5 0.761 (target >= 0.75), COCO
mAP 0.387, after 180 s of training on one thread (budget 5 min).
"""

from __future__ import annotations

from ..models.classifier import shapes_classifier
from ..models.detection import ShapeBackbone
from ..models.detection.yolo import YOLOConfig, YOLOv1
from .detection import DetectionSetup, DetectorSpec


def build_yolo(config: YOLOConfig) -> YOLOv1:
    """YOLO v1 on the shape classifier's body (trained when ``config.pretrained``)."""
    classifier = shapes_classifier(seed=0) if config.pretrained else None
    levels = {8: 2, 16: 3, 32: 4}[config.stride]
    return YOLOv1(config, ShapeBackbone(levels, classifier))


SPECS = {"yolo": DetectorSpec(build=build_yolo, config=YOLOConfig(),
                              setup=DetectionSetup(epochs=6, lr=1e-3))}
