"""Device choice shared by the book, the assignments and the training loop."""

from __future__ import annotations

import contextlib

import torch


def default_device() -> torch.device:
    """CUDA when a GPU is present, otherwise the CPU.

    Called explicitly (never at import time), so importing cv_course never
    touches the GPU.
    """
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@contextlib.contextmanager
def one_thread():
    """Run the block with one CPU intra-op thread, then restore the count.

    The course's many small tensor operations (scene generation, small CNNs)
    gain nothing from more threads, and on a busy 2-core machine two OpenMP
    threads per process ran them several times slower. One thread also makes
    training results independent of the machine's core count.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
