"""``python -m cv_course.grading.autograde ASSIGNMENT [options]``: see the package docstring."""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

from . import Limits, autograde
from .report import summary, write_report

_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def parse_memory(text: str) -> int:
    """"4GB", "512M", "0" (no limit) -> bytes (binary units: 1 GB = 2**30 bytes)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)I?B?\s*", text.upper())
    if not m:
        raise argparse.ArgumentTypeError(f"memory must look like 4GB, 512MB or 0, not {text!r}")
    return int(float(m.group(1)) * _UNITS[m.group(2)])


def available_memory() -> int | None:
    """MemAvailable of this machine in bytes (Linux), else None."""
    try:
        with open("/proc/meminfo") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration):
        return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cv_course.grading.autograde",
                                description="Autograde every submission of an assignment with nbgrader, "
                                            "in parallel, each in isolation and within limits.")
    p.add_argument("assignment", help="the assignment, e.g. 02_boxes (graded: submitted/*/ASSIGNMENT/)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                   help="worker processes of a local Dask cluster (default: the number of cores; "
                        "0: grade in this process, one after another)")
    p.add_argument("--scheduler", help="tcp://HOST:PORT of an existing Dask scheduler to send the work to")
    p.add_argument("--timeout", type=int, default=None,
                   help="seconds per cell (default: c.Execute.timeout of the course's nbgrader_config.py)")
    p.add_argument("--submission-timeout", type=int, default=1800,
                   help="seconds for all cells of one submission (default: 1800)")
    p.add_argument("--memory", type=parse_memory, default=parse_memory("4GB"),
                   help="memory of one submission's kernel, e.g. 4GB (default); 0: no limit")
    p.add_argument("--student", action="append", help="grade only this student (repeatable)")
    p.add_argument("--force", action="store_true", help="grade again submissions already graded")
    p.add_argument("--report", type=Path, default=None,
                   help="report folder (default: autograde-report/ASSIGNMENT in the course directory)")
    p.add_argument("--course", type=Path, default=Path.cwd(), help="course directory (default: here)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--subprocess", action="store_true",
                   help="a new `python -m nbgrader` process per submission (slower; killed at a hard deadline) "
                        "instead of nbgrader inside the worker process")
    p.add_argument("--no-zygote", action="store_true",
                   help="start every kernel from scratch instead of forking it from a worker's warm "
                        "process that has imported torch once (slower by the imports per submission)")
    args = p.parse_args(argv)
    course = args.course.resolve()
    from .coordinator import Course

    cell_timeout = args.timeout or Course.load(course).cell_timeout
    limits = Limits(memory=args.memory, cell_timeout=cell_timeout, submission_timeout=args.submission_timeout)
    free = available_memory()
    if not args.scheduler and free and args.workers * args.memory > free:
        print(f"warning: {args.workers} workers x --memory {args.memory / 2**30:.1f} GiB is more than the "
              f"{free / 2**30:.1f} GiB available: memory hogs together could reach swap or the OOM killer; "
              "use fewer --workers or a lower --memory", file=sys.stderr)
    outcome = autograde(course, args.assignment, workers=args.workers, scheduler=args.scheduler, limits=limits,
                        force=args.force, students=args.student, progress=not args.no_progress,
                        subprocess=args.subprocess, zygote=not args.no_zygote)
    report = write_report(course, outcome, args.report or course / "autograde-report" / args.assignment)
    print(summary(outcome))
    print(f"Report: {report}")
    return 0 if all(r.graded for r in outcome.results) else 1


if __name__ == "__main__":
    sys.exit(main())
