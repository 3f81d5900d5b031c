"""Models the course builds: segmentation networks (U-Net, FCN) and, later,
classifiers and detectors. Each model lives in its own file."""

from .fcn import FCN, FCNConfig, bilinear_upsampler
from .unet import UNet, UNetConfig

__all__ = [
    "FCN",
    "FCNConfig",
    "bilinear_upsampler",
    "UNet",
    "UNetConfig",
]

from .classifier import ClassifierConfig, ShapeClassifier, shapes_classifier  # noqa: E402

__all__ += ["ClassifierConfig", "ShapeClassifier", "shapes_classifier"]

# Two-stage detection (issue 9): see cv_course.models.detection.
from .detection import FasterRCNN, FasterRCNNConfig  # noqa: E402

__all__ += ["FasterRCNN", "FasterRCNNConfig"]
