"""The coordinator: find the submissions, send each to a worker, merge what
comes back. The only process that writes the course's gradebook.

Resumable: a submission counts as graded when its ``autograded/`` folder is
complete and not older than the submission (nbgrader's own rule). Results are
merged into the gradebook first, then the autograded folder appears by one
``rename``; a run killed in between grades that one submission again, and
merging it again changes nothing.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from nbgrader.coursedir import CourseDirectory
from traitlets.config.loader import PyFileConfigLoader
from tqdm import tqdm

from .gradebook import merge, template_db
from .scratch import Job, Limits, Result, grade_submission, read_tree


@dataclass
class Course:
    """A course directory as nbgrader sees it (its ``nbgrader_config.py`` loaded)."""

    root: Path
    config_text: str
    dirs: CourseDirectory
    cell_timeout: int  # c.Execute.timeout

    @classmethod
    def load(cls, root: Path) -> "Course":
        path = root / "nbgrader_config.py"
        if not path.is_file():
            raise SystemExit(f"No nbgrader_config.py in {root}: run this from the course directory "
                             "(where you run nbgrader).")
        config = PyFileConfigLoader(path.name, path=str(root)).load_config()
        dirs = CourseDirectory(config=config, root=str(root))
        timeout = config.get("Execute", {}).get("timeout", 30)
        return cls(root, path.read_text(), dirs, int(timeout or 30))

    def folder(self, kind: str, student: str, assignment: str) -> Path:
        return Path(self.dirs.format_path(getattr(self.dirs, f"{kind}_directory"), student, assignment))

    def students(self, assignment: str) -> list[str]:
        """Students with a notebook under submitted/STUDENT/ASSIGNMENT/."""
        top = self.root / self.dirs.submitted_directory
        if not top.is_dir():
            return []
        return sorted(p.name for p in top.iterdir()
                      if any(self.folder("submitted", p.name, assignment).glob("*.ipynb")))

    def is_graded(self, assignment: str, student: str) -> bool:
        """nbgrader's rule: every notebook autograded, and the submission not newer."""
        src, dst = self.folder("submitted", student, assignment), self.folder("autograded", student, assignment)
        if not all((dst / nb.name).is_file() for nb in src.glob("*.ipynb")):
            return False
        new, old = self.dirs.get_existing_timestamp(str(src)), self.dirs.get_existing_timestamp(str(dst))
        return not (new is not None and old is not None and new > old)


@dataclass
class Outcome:
    """What one run did; read by report.py."""

    assignment: str
    results: list[Result] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0


def write_autograded(course: Course, assignment: str, result: Result) -> None:
    """Put ``result.files`` in autograded/STUDENT/ASSIGNMENT by one rename (read-only, as nbgrader)."""
    dst = course.folder("autograded", result.student, assignment)
    tmp = dst.with_name(f".{dst.name}.partial")
    for old in (tmp, dst):
        if old.exists():
            shutil.rmtree(old)
    for rel, data in result.files.items():
        path = tmp / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        path.chmod(0o444)
    tmp.rename(dst)


def _jobs(course: Course, assignment: str, students: list[str], limits: Limits, cuda: list[str],
          subprocess: bool, zygote: bool):
    template = template_db(course.dirs.db_url, assignment, course.dirs.course_id)
    source = read_tree(course.folder("source", ".", assignment))
    dirs = {k: getattr(course.dirs, k) for k in ("source_directory", "submitted_directory",
                                                 "autograded_directory")}
    for student in students:
        yield Job(assignment, student, course.config_text, template, source,
                  read_tree(course.folder("submitted", student, assignment)), limits, dirs, cuda, subprocess,
                  zygote)


def _executor(workers: int, scheduler: str | None):
    """(map_unordered, close) over a LocalCluster, an existing scheduler, or this process."""
    if workers == 0 and not scheduler:
        return (lambda fn, jobs: (fn(job) for job in jobs)), (lambda: None)
    import logging

    from distributed import Client, LocalCluster, as_completed

    if scheduler:
        client, cluster = Client(scheduler), None
    else:
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, memory_limit=0,
                               dashboard_address=None, silence_logs=logging.ERROR)
        client = Client(cluster)

    def map_unordered(fn, jobs):
        futures = [client.submit(fn, job, key=f"autograde-{job.assignment}-{job.student}", pure=False)
                   for job in jobs]
        for future in as_completed(futures):
            try:
                yield future.result()
            except Exception as e:  # noqa: BLE001 (a lost worker: KilledWorker, CommClosedError, ...)
                student = future.key.split("-", 2)[2]
                yield Result(student, False, f"the worker grading it was lost: {type(e).__name__}: {e}")

    def close():
        client.close()
        if cluster is not None:
            cluster.close()

    return map_unordered, close


def cuda_devices() -> list[str]:
    """CUDA device indices this machine's workers may use (empty without CUDA)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [d for d in visible.split(",") if d.strip() not in ("", "-1")]
    if not Path("/dev/nvidiactl").exists():  # no NVIDIA driver: no need to import torch (seconds)
        return []
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def autograde(root: Path, assignment: str, *, workers: int = 2, scheduler: str | None = None,
              limits: Limits | None = None, force: bool = False, students: list[str] | None = None,
              progress: bool = True, subprocess: bool = False, zygote: bool = True) -> Outcome:
    """Autograde every submission of ``assignment`` in the course at ``root``; see the package docstring."""
    course = Course.load(root)
    limits = limits or Limits(cell_timeout=course.cell_timeout)
    everyone = students or course.students(assignment)
    todo = [s for s in everyone if force or not course.is_graded(assignment, s)]
    outcome = Outcome(assignment, skipped=[s for s in everyone if s not in todo])
    start = time.perf_counter()
    if todo:
        cuda = cuda_devices() if not scheduler else []
        map_unordered, close = _executor(workers, scheduler)
        bar = tqdm(total=len(todo), unit="submission", desc=f"autograde {assignment}", disable=not progress)
        try:
            jobs = _jobs(course, assignment, todo, limits, cuda, subprocess, zygote)
            for result in map_unordered(grade_submission, jobs):
                if result.graded:
                    merge(course.dirs.db_url, assignment, result.student, result.timestamp, result.notebooks,
                          course.dirs.course_id)
                    write_autograded(course, assignment, result)
                outcome.results.append(result)
                bar.set_postfix_str(result.student if result.graded else f"{result.student}: FAILED")
                bar.update()
        finally:
            bar.close()
            close()
    outcome.seconds = time.perf_counter() - start
    return outcome
