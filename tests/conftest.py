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
