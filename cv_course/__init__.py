"""cv_course: reference implementations for an open course on detection,
segmentation and understanding CNNs.

Importing the package has no side effects: no downloads, no device probing,
no global seeds. Subpackages: ``ops``, ``models``, ``data``, ``metrics``,
``interpret``, ``viz``, ``grading`` and ``experiments`` (the measurements the
book and ``benchmarks/`` share); modules: ``losses``, ``train`` (``fit``,
``evaluate``) and ``device``.
"""

from .device import default_device

__version__ = "0.1.0"
__all__ = ["default_device", "__version__"]
