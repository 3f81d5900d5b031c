"""The parallel autograde command (cv_course.grading.autograde).

Fast tests: its pieces (memory sizes, winnowing, feedback clean-up, log
filters, kernel death messages). Slow tests (``grading``), one shared course:
six submissions of 02_boxes, among them a kernel exit, an infinite loop and a
memory hog, graded by serial ``nbgrader autograde`` and by the command on a
Dask LocalCluster of two workers that is interrupted once and run again.
"""

from __future__ import annotations

import logging
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from autograde_submissions import A, answers
from cv_course.grading.autograde.__main__ import parse_memory
from cv_course.grading.autograde.contain import death_reason
from cv_course.grading.autograde.feedback import offline_math, short_traceback
from cv_course.grading.autograde.gradebook import graded_cells
from cv_course.grading.autograde.quiet import HiddenTestChecksum
from cv_course.grading.autograde.similarity import fingerprints, jaccard, tokens
from cv_course.grading.release import nbgrader_env
from nbgrader_course import make_course, submit

STUDENTS = ["correct", "wrong", "untouched", "exit", "loop", "hog"]
CELL_TIMEOUT = 20  # seconds: the infinite loop costs this per cell that calls it
MEMORY = "2GB"


# ---- fast: the pieces ----

@pytest.mark.parametrize("text, expected", [("4GB", 4 * 2**30), ("512M", 512 * 2**20), ("1.5 GiB", 3 * 2**29),
                                            ("0", 0), ("2048", 2048)])
def test_parse_memory(text, expected):
    assert parse_memory(text) == expected


def test_parse_memory_refuses_nonsense():
    with pytest.raises(Exception, match="like 4GB"):
        parse_memory("four gigs")


def test_renamed_variables_and_comments_do_not_hide_a_copy():
    a = "def f(x, y):\n    total = x + y  # add\n    return torch.clamp(total * 2, min=0) + len(x)\n" * 3
    b = a.replace("total", "s").replace("x", "p").replace("# add", "")
    assert tokens(a) == tokens(b)
    assert jaccard(fingerprints(a), fingerprints(b)) == 1.0


def test_winnowing_guarantee_a_shared_passage_shares_a_fingerprint():
    shared = "for i in range(n):\n    if keep[i]:\n        out.append(torch.maximum(a[i], b[i]))\n"
    a = "def f(n):\n    q = torch.zeros(3)\n" + shared
    b = "def g(n, m):\n    return torch.ones(m)\n" + shared
    assert fingerprints(a) & fingerprints(b)
    assert not fingerprints("x = torch.ones(3) + 1\n" * 4) & fingerprints(shared)


def test_similarity_of_unrelated_code_is_low():
    a = "def iou(a, b):\n    lt = torch.max(a[:, None, :2], b[:, :2])\n    return lt.prod(-1)\n"
    b = "def nms(b, s, t):\n    order = s.argsort(descending=True)\n    keep = []\n    for i in order:\n" \
        "        keep.append(i)\n    return torch.tensor(keep)\n"
    assert jaccard(fingerprints(a), fingerprints(b)) < 0.2


def test_feedback_tracebacks_lose_paths_and_long_middles():
    repo = str(Path(__file__).resolve().parents[1])
    lines = ["Traceback"] + [f"File {repo}/cv_course/grading/f{i}.py:1" for i in range(8)] + ["CheckFailed: wrong"]
    out = short_traceback(lines)
    assert out[-1] == "CheckFailed: wrong" and len(out) == 6
    assert not any(repo in line for line in out) and "cv_course/grading/f0.py:1" in out[1]


def test_feedback_math_is_drawn_and_code_is_left_alone():
    out = offline_math("IoU of $A$ and $B$:\n\n$$\\frac{|A \\cap B|}{|A \\cup B|}$$\n\n`$keep$`")
    assert out.count("data:image/svg+xml;base64,") == 3 and "`$keep$`" in out
    assert offline_math("$\\begin{smallmatrix}1\\end{smallmatrix}$").startswith("`")  # not drawable: TeX kept


def test_checksum_warning_dropped_only_for_hidden_test_cells():
    f = HiddenTestChecksum({"test_nms_hidden"})
    record = lambda cell: logging.LogRecord("AutogradeApp", logging.WARNING, "", 0,  # noqa: E731
                                            f"Attribute 'checksum' for cell {cell} has changed! (...)", (), None)
    assert not f.filter(record("test_nms_hidden")) and f.filter(record("test_nms_visible"))


def test_death_reasons_say_what_happened():
    assert "exit code 3" in death_reason(3, 0)
    assert "memory" in death_reason(-signal.SIGKILL, 2**31) and "2.0 GiB" in death_reason(-signal.SIGKILL, 2**31)
    assert "SIGSEGV" in death_reason(-signal.SIGSEGV, 0)


def test_each_kernel_gets_one_math_thread_and_one_gpu(monkeypatch):
    from cv_course.grading.autograde.coordinator import cuda_devices
    from cv_course.grading.autograde.scratch import Job, _worker_env

    env = _worker_env(Job(A, "s", "", b"", {}, {}, cuda_devices=["2", "3"]))  # outside a worker: the first
    assert env["OMP_NUM_THREADS"] == "1" and env["MKL_NUM_THREADS"] == "1" and env["CUDA_VISIBLE_DEVICES"] == "2"
    no_gpu = _worker_env(Job(A, "s", "", b"", {}, {}))  # no devices: the environment's setting, untouched
    assert no_gpu.get("CUDA_VISIBLE_DEVICES") == os.environ.get("CUDA_VISIBLE_DEVICES")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,3")
    assert cuda_devices() == ["1", "3"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert cuda_devices() == []


# ---- slow: serial nbgrader against the command, on one course ----

def _limit_memory():
    limit = parse_memory(MEMORY)
    resource.setrlimit(resource.RLIMIT_DATA, (limit, resource.getrlimit(resource.RLIMIT_DATA)[1]))


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    """Six submissions, not graded yet, and an identical copy for serial nbgrader."""
    course = make_course(tmp_path_factory.mktemp("autograde"), A)
    with open(course / "nbgrader_config.py", "a") as f:
        f.write(f"\nc.Execute.timeout = {CELL_TIMEOUT}\n")
    for student in STUDENTS:
        submit(course, A, student, answers(student))
    shutil.copytree(course, course.parent / "serial")
    return course


@pytest.fixture(scope="module")
def serial(course):
    """Serial ``nbgrader autograde`` of every submission, with the same memory limit
    (on nbgrader's process: its kernels inherit it). It fails the kernel exit."""
    serial = course.parent / "serial"
    subprocess.run([sys.executable, "-m", "nbgrader", "autograde", A], cwd=serial, env=nbgrader_env(),
                   capture_output=True, text=True, timeout=3600, preexec_fn=_limit_memory)
    return graded_cells(f"sqlite:///{serial / 'gradebook.db'}", A)


def _command(workers: int = 2) -> list[str]:
    return [sys.executable, "-m", "cv_course.grading.autograde", A, "--workers", str(workers),
            "--timeout", str(CELL_TIMEOUT), "--memory", MEMORY, "--no-progress"]


@pytest.fixture(scope="module")
def parallel(course):
    """The command on a LocalCluster of 2 workers, interrupted (Ctrl-C) once the first
    submission is graded, then run again to the end."""
    done = lambda: {s for s in STUDENTS if (course / "autograded" / s / A / "boxes.ipynb").exists()}  # noqa: E731
    first = subprocess.Popen(_command(), cwd=course, env=nbgrader_env(), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 1800
    while not done() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(2)
    os.killpg(first.pid, signal.SIGINT)
    try:
        first.wait(120)
    except subprocess.TimeoutExpired:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    before = {s: (course / "autograded" / s / A / "boxes.ipynb").stat().st_mtime for s in done()}
    second = subprocess.run(_command(), cwd=course, env=nbgrader_env(), capture_output=True, text=True,
                            timeout=3600)
    return before, second, graded_cells(f"sqlite:///{course / 'gradebook.db'}", A)


@pytest.mark.grading
def test_same_gradebook_as_serial_nbgrader(serial, parallel):
    _, second, ours = parallel
    assert second.returncode == 0, second.stdout + second.stderr
    for student in STUDENTS:
        if student != "exit":  # nbgrader saves no grade for it (below)
            assert ours[student] == serial[student], student


@pytest.mark.grading
def test_a_kernel_exit_costs_only_the_cells_it_ran_in(course, serial, parallel):
    ours = parallel[2]["exit"]
    assert all(v[0] is None for k, v in serial["exit"].items() if "#" not in k)  # nbgrader: nothing saved
    assert ours["boxes/test_box_iou_visible"][0] == 2.0 and ours["boxes/test_box_iou_hidden"][0] == 3.0
    assert ours["boxes/test_nms_visible"][0] == 0.0 and ours["boxes/test_nms_hidden"][0] == 0.0
    text = (course / "autograded" / "exit" / A / "boxes.ipynb").read_text()
    assert "KernelDied" in text and "exit code 3" in text


@pytest.mark.grading
def test_limits_zero_the_cells_and_say_why(course, parallel):
    ours = parallel[2]
    for student, name in [("loop", "CellTimeoutError"), ("hog", "MemoryLimit")]:
        assert ours[student]["boxes/test_box_iou_hidden"][0] == 3.0
        assert ours[student]["boxes/test_nms_hidden"][0] == 0.0
        assert name in (course / "autograded" / student / A / "boxes.ipynb").read_text()


@pytest.mark.grading
def test_an_interrupted_run_resumes_without_grading_twice(course, parallel):
    before, second, ours = parallel
    assert before, "the first run was interrupted before it graded anything"
    assert set(ours) == set(STUDENTS)
    assert f"{len(STUDENTS) - len(before)} graded, 0 not graded, {len(before)} skipped" in second.stdout
    for student, mtime in before.items():  # not graded again
        assert (course / "autograded" / student / A / "boxes.ipynb").stat().st_mtime == mtime


@pytest.mark.grading
def test_report_has_histogram_slowest_and_similarity(course, parallel):
    report = (course / "autograde-report" / A / "report.md").read_text()
    assert (course / "autograde-report" / A / "scores.png").stat().st_size > 1000
    assert "## Slowest submissions" in report and "| boxes/test_nms_hidden | 6 |" in report
    assert "| boxes/nms | correct | reference solution |" in report
