"""Shared pytest set-up: CUDA tests skip cleanly without a GPU, and the run
ends with how long each stage (unit, book, grading) took."""

from __future__ import annotations

import collections

import pytest
import torch

_STAGE_SECONDS: dict[str, float] = collections.defaultdict(float)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device; none is present")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


def _stage(keywords) -> str:
    if "book" in keywords:
        return "book build"
    if "grading" in keywords:
        return "grading"
    return "unit"


def pytest_runtest_logreport(report):
    _STAGE_SECONDS[_stage(report.keywords)] += report.duration


def pytest_terminal_summary(terminalreporter):
    if not _STAGE_SECONDS:
        return
    parts = ", ".join(f"{k} {v:.0f} s" for k, v in sorted(_STAGE_SECONDS.items()))
    terminalreporter.write_line(f"stage times (summed over tests): {parts}")


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def device(request) -> torch.device:
    """Run a test on the CPU and, when present, on CUDA."""
    return torch.device(request.param)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Run every test module with one intra-op thread. The tests use small
    tensors, where extra threads only wait for each other; on a shared 2-core
    machine two OpenMP threads ran them 10-30x slower than one."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
