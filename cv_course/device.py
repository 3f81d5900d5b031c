"""Device choice shared by the book, the assignments and the training loop."""

from __future__ import annotations

import torch


def default_device() -> torch.device:
    """CUDA when a GPU is present, otherwise the CPU.

    Called explicitly (never at import time), so importing cv_course never
    touches the GPU.
    """
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
