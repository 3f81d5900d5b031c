"""Grade one submission in isolation: what a worker runs.

:func:`grade_submission` takes a :class:`Job` (everything as bytes, so a
worker needs no shared filesystem), builds a scratch course directory in a
temporary folder (the course's ``nbgrader_config.py`` with the limits of
``contain.py`` added, the source assignment, a gradebook holding only the
assignment, the student's files) and runs ``nbgrader autograde ASSIGNMENT
--student STUDENT`` there, in its own process group. It returns a
:class:`Result`: the grades as nbgrader saved them in the scratch gradebook and
the autograded files, for the coordinator to merge. Nothing outside the
temporary folder is written, so workers never contend for the course's SQLite
file.

Kernels are forked from a warm process (``zygote.py``) that has imported torch
and ipykernel once per worker; ``Job.zygote = False`` starts each the usual way.

nbgrader runs in the worker's own process by default (a worker imports it
once; a new ``python -m nbgrader`` per submission cost 3-10 s more each,
measured), one submission at a time per process, since nbgrader changes the
process's working directory and environment while it grades. The student's
code runs in the kernel, a separate process, either way. ``Job.subprocess``
runs ``python -m nbgrader autograde`` instead, in its own process group that
is killed at a hard deadline.

If nbgrader could not grade the submission at all (it was still running at
the hard deadline, or failed), the submission is autograded again with the
execute step replaced by ``contain.NotRun``: every graded cell scores zero
with the reason, and feedback can still be generated.
"""

from __future__ import annotations

import io
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..release import nbgrader_env
from .gradebook import read_results

ONE_THREAD = {k: "1" for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                               "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")}
GRACE_SECONDS = 120  # nbgrader's own start and finish, on top of the submission's time limit


@dataclass
class Limits:
    memory: int = 4 * 2**30  # bytes for the kernel process; 0: none
    cell_timeout: int = 180  # seconds per cell
    submission_timeout: int = 1800  # seconds for all cells of one submission


@dataclass
class Job:
    assignment: str
    student: str
    config: str  # the course's nbgrader_config.py
    template_db: bytes  # a gradebook with the assignment only (gradebook.template_db)
    source: dict[str, bytes]  # the source assignment's files, relative to its folder
    submission: dict[str, bytes]  # the student's files, relative to submitted/STUDENT/ASSIGNMENT
    limits: Limits = field(default_factory=Limits)
    directories: dict[str, str] = field(default_factory=dict)  # CourseDirectory names: source_directory, ...
    cuda_devices: list[str] = field(default_factory=list)  # spread over workers by worker name
    subprocess: bool = False  # a new `python -m nbgrader` process per submission (see the module docstring)
    zygote: bool = True  # fork kernels from a warm process per worker (zygote.py)


@dataclass
class Result:
    student: str
    graded: bool  # False: nothing to merge (see reason)
    reason: str = ""  # why not all cells ran, or why nothing was graded
    seconds: float = 0.0
    timestamp: object = None  # the submission's timestamp, as nbgrader read it
    notebooks: dict = field(default_factory=dict)  # gradebook.read_results
    files: dict[str, bytes] = field(default_factory=dict)  # autograded/STUDENT/ASSIGNMENT, relative
    worker: str = ""
    log: str = ""


SCRATCH_CONFIG = """

# ---- added by cv_course.grading.autograde: one submission in a scratch course ----
from nbgrader.converters import Autograde as _Autograde
from traitlets.utils.importstring import import_item as _import_item
from cv_course.grading.autograde.contain import {step} as _step

c.CourseDirectory.root = {root!r}
c.CourseDirectory.db_url = {db_url!r}
_pps = (c.Autograde.autograde_preprocessors if "autograde_preprocessors" in c.Autograde
        else _Autograde.autograde_preprocessors.default_value)
_pps = [_import_item(p) if isinstance(p, str) else p for p in _pps]
c.Autograde.autograde_preprocessors = _step(_pps, {args})
"""


def _write_tree(root: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def read_tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root``: relative path -> bytes."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _worker_env(job: Job) -> dict[str, str]:
    env = nbgrader_env()
    env.update(ONE_THREAD)  # one math thread per kernel: workers share the cores
    if job.cuda_devices:
        try:
            from distributed import get_worker
            index = int(get_worker().name)
        except (ImportError, ValueError, TypeError):
            index = 0
        env["CUDA_VISIBLE_DEVICES"] = job.cuda_devices[index % len(job.cuda_devices)]
    if job.zygote:
        from .zygote import ENV, ensure_zygote

        path = ensure_zygote(env)  # started once per worker process, with the kernels' settings
        if path:
            env[ENV] = path
    return env


def _die_with_parent() -> None:
    """In the child: be killed when the worker that started it dies (Linux; elsewhere a no-op).
    Its kernel follows: ipykernel exits when its parent does."""
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _run(cmd: list[str], cwd: Path, env: dict, timeout: float) -> tuple[int | None, str]:
    """Run ``cmd`` in its own process group; kill the group (kernels too) at ``timeout`` or
    when this worker is interrupted."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True, preexec_fn=_die_with_parent)
    try:
        out, _ = proc.communicate(timeout=timeout)
        return proc.returncode, out
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        return None, out
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)
        raise


_ONE_AT_A_TIME = threading.Lock()  # nbgrader in-process changes the process's cwd and environment


def _nbgrader_here(job: Job, course: Path) -> tuple[int, str]:
    """``nbgrader autograde`` in this process, as the command line would run it; (exit code, log)."""
    from nbgrader.converters import Autograde
    from nbgrader.converters.base import NbGraderException
    from nbgrader.coursedir import CourseDirectory
    from traitlets.config.loader import PyFileConfigLoader

    log, text = logging.getLogger("cv_course.autograde.nbgrader"), io.StringIO()
    handler = logging.StreamHandler(text)
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    with _ONE_AT_A_TIME:
        before = dict(os.environ)
        os.environ.update(_worker_env(job))  # the kernel inherits this process's environment
        try:
            config = PyFileConfigLoader("nbgrader_config.py", path=str(course)).load_config()
            config.CourseDirectory.assignment_id = job.assignment
            config.CourseDirectory.student_id = job.student
            config.BaseConverter.force = True
            Autograde(coursedir=CourseDirectory(config=config), config=config, log=log).start()
            code = 0
        except NbGraderException:
            code = 1
        except Exception as e:  # noqa: BLE001 (anything nbgrader raises fails this submission only)
            log.error("%s: %s", type(e).__name__, e)
            code = 1
        finally:
            os.environ.clear()
            os.environ.update(before)
            log.removeHandler(handler)
    return code, text.getvalue()


def _autograde(job: Job, course: Path, step: str, args: str, timeout: float) -> tuple[bool, str]:
    d = job.directories
    config = job.config + SCRATCH_CONFIG.format(step=step, root=str(course), args=args,
                                                db_url=f"sqlite:///{course / 'gradebook.db'}")
    (course / "nbgrader_config.py").write_text(config)
    if job.subprocess:
        cmd = [sys.executable, "-m", "nbgrader", "autograde", job.assignment, "--student", job.student, "--force"]
        code, log = _run(cmd, course, _worker_env(job), timeout)
    else:
        code, log = _nbgrader_here(job, course)
    out = course / d.get("autograded_directory", "autograded") / job.student / job.assignment
    wanted = [Path(n).name for n in job.submission if n.endswith(".ipynb")]
    ok = code == 0 and all((out / n).is_file() for n in wanted)
    if code is None:
        log += f"\n[autograde] killed after {timeout:.0f} s"
    return ok, log


def _failure_reason(log: str) -> str:
    lines = [ln for ln in log.splitlines() if "Error" in ln or "ERROR" in ln or "killed after" in ln]
    return lines[-1].strip()[:300] if lines else "nbgrader autograde failed"


def grade_submission(job: Job) -> Result:
    """Autograde ``job`` in a scratch course; see the module docstring."""
    start = time.perf_counter()
    d, lim = job.directories, job.limits
    with tempfile.TemporaryDirectory(prefix=f"autograde-{job.student}-") as tmp:
        course = Path(tmp)
        (course / "gradebook.db").write_bytes(job.template_db)
        _write_tree(course / d.get("source_directory", "source") / job.assignment, job.source)
        _write_tree(course / d.get("submitted_directory", "submitted") / job.student / job.assignment,
                    job.submission)
        args = f"{lim.memory}, {lim.cell_timeout}, {lim.submission_timeout}"
        ok, log = _autograde(job, course, "contained", args, lim.submission_timeout + GRACE_SECONDS)
        reason = ""
        if not ok:
            reason = _failure_reason(log)
            message = (f"Not graded: the submission could not be run to the end ({reason}). "
                       "Every graded cell scores zero; ask an instructor to review it.")
            ok, more = _autograde(job, course, "not_run", repr(message), GRACE_SECONDS)
            log += "\n[autograde] graded again without running it:\n" + more
        result = Result(job.student, ok, reason, log=log[-20000:])
        if ok:
            out = course / d.get("autograded_directory", "autograded") / job.student / job.assignment
            result.files = read_tree(out)
            result.timestamp, result.notebooks = read_results(course / "gradebook.db", job.assignment,
                                                              job.student)
    try:
        from distributed import get_worker
        result.worker = str(get_worker().name)
    except (ImportError, ValueError):
        result.worker = "local"
    result.seconds = time.perf_counter() - start
    return result
