"""cv_course: reference implementations for an open course on detection,
segmentation and understanding CNNs.

Importing the package has no side effects: no downloads, no device probing,
no global seeds. Subpackages: ``ops``, ``models``, ``data``, ``metrics``,
``interpret``, ``viz``, ``grading``.
"""

from .device import default_device

__version__ = "0.1.0"
__all__ = ["default_device", "__version__"]
