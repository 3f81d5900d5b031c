"""Kernels forked from a warm zygote (cv_course.grading.autograde.zygote).

A forked kernel must behave like one started from scratch, as the grading
limits see it: the environment, working directory and ``sys.path`` it was
given, its own random state, the memory limit, an exit code or a signal passed
on to the kernel manager, interrupts, and no kernel left behind when the
kernel manager kills it. Each case is also run on a kernel started the usual
way, so the test compares the two rather than trusting one.
"""

from __future__ import annotations

import os
import signal
import sys
import time

import pytest
from jupyter_client.manager import KernelManager

from cv_course.grading.autograde import zygote
from cv_course.grading.autograde.contain import LAUNCH
from cv_course.grading.autograde.scratch import ONE_THREAD

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="the zygote needs fork()")
MEMORY = 2 * 2**30


class LimitedKernelManager(KernelManager):
    def format_kernel_cmd(self, extra_arguments=None):
        return [sys.executable, LAUNCH, "--memory", str(MEMORY), "--",
                *super().format_kernel_cmd(extra_arguments)]


@pytest.fixture(scope="module")
def socket_path():
    path = zygote.ensure_zygote({**os.environ, **ONE_THREAD})
    assert path is not None, "the zygote did not start"
    yield path
    zygote.stop_zygote()


@pytest.fixture(params=["forked", "fresh"])
def kernel(request, socket_path, tmp_path, monkeypatch):
    """(kernel manager, client), with a kernel forked from the zygote or started from scratch."""
    if request.param == "forked":
        monkeypatch.setenv(zygote.ENV, socket_path)
    else:
        monkeypatch.delenv(zygote.ENV, raising=False)
    monkeypatch.setenv("CV_COURSE_TEST_MARK", request.param)
    km = LimitedKernelManager()
    km.start_kernel(cwd=str(tmp_path))
    kc = km.client()
    kc.start_channels()
    kc.wait_for_ready(timeout=120)
    yield km, kc
    kc.stop_channels()
    if km.has_kernel:
        km.shutdown_kernel(now=True)


def run(kc, code: str, timeout: float = 120) -> tuple[str, str]:
    """(status, everything the cell printed or raised)."""
    out = []

    def hook(msg):
        c = msg["content"]
        if msg["msg_type"] == "stream":
            out.append(c["text"])
        elif msg["msg_type"] == "error":
            out.append(f"{c['ename']}: {c['evalue']}")

    reply = kc.execute_interactive(code, timeout=timeout, output_hook=hook)
    return reply["content"]["status"], "".join(out)


def test_a_forked_kernel_has_the_environment_directory_and_path_it_was_given(kernel, tmp_path):
    km, kc = kernel
    status, out = run(kc, "import os, sys\n"
                          "print(os.environ['CV_COURSE_TEST_MARK'], os.environ['OMP_NUM_THREADS'])\n"
                          "print(os.getcwd())\n"
                          "print('cv_course' in sys.modules)\n"
                          "print(any('autograde' in p for p in sys.path))")
    assert status == "ok", out
    mark, threads, cwd, course, autograde = out.split()
    assert mark == ("forked" if os.environ.get(zygote.ENV) else "fresh")
    assert threads == "1"
    assert os.path.realpath(cwd) == os.path.realpath(tmp_path)
    assert course == "False", "the zygote must not preload the course's own modules"
    assert autograde == "False", "the grader's folder must not be importable from the kernel"


def test_kernels_do_not_share_random_state(socket_path, tmp_path, monkeypatch):
    monkeypatch.setenv(zygote.ENV, socket_path)
    draws = []
    for _ in range(2):
        km = LimitedKernelManager()
        km.start_kernel(cwd=str(tmp_path))
        kc = km.client()
        kc.start_channels()
        kc.wait_for_ready(timeout=120)
        draws.append(run(kc, "import random, numpy\nprint(random.random(), numpy.random.rand())")[1])
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    assert draws[0] != draws[1]


def test_memory_limit_fails_the_allocation_and_the_kernel_lives(kernel):
    km, kc = kernel
    status, out = run(kc, "x = bytearray(3 * 2**30)")
    assert status == "error" and "MemoryError" in out
    assert run(kc, "print(6 * 7)") == ("ok", "42\n")


def test_os_exit_code_reaches_the_kernel_manager(kernel):
    km, kc = kernel
    kc.execute("import os; os._exit(3)")
    deadline = time.monotonic() + 60
    while km.is_alive() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert km.provisioner.process.poll() == 3


def test_a_killed_kernel_is_reported_as_killed(kernel):
    km, kc = kernel
    kc.execute("import os, signal; os.kill(os.getpid(), signal.SIGKILL)")
    deadline = time.monotonic() + 60
    while km.is_alive() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert km.provisioner.process.poll() == -signal.SIGKILL  # what contain.death_reason reads


def test_interrupt_reaches_a_running_cell(kernel):
    km, kc = kernel
    msg_id = kc.execute("while True:\n    pass")
    time.sleep(2)
    km.interrupt_kernel()
    while True:
        reply = kc.get_shell_msg(timeout=60)
        if reply["parent_header"].get("msg_id") == msg_id:
            break
    assert reply["content"]["status"] == "error"
    assert reply["content"]["ename"] == "KeyboardInterrupt"


def test_killing_the_launcher_leaves_no_kernel(socket_path, tmp_path, monkeypatch):
    monkeypatch.setenv(zygote.ENV, socket_path)
    km = LimitedKernelManager()
    km.start_kernel(cwd=str(tmp_path))
    kc = km.client()
    kc.start_channels()
    kc.wait_for_ready(timeout=120)
    status, out = run(kc, "import os; print(os.getpid())")
    child = int(out)
    kc.stop_channels()
    km.shutdown_kernel(now=True)  # SIGKILL to the launcher: the child hears it on its lifeline
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    pytest.fail(f"the forked kernel {child} outlived its launcher")


def test_a_missing_zygote_falls_back_to_a_fresh_kernel(tmp_path, monkeypatch):
    monkeypatch.setenv(zygote.ENV, str(tmp_path / "no-such-socket"))
    km = LimitedKernelManager()
    km.start_kernel(cwd=str(tmp_path))
    kc = km.client()
    kc.start_channels()
    kc.wait_for_ready(timeout=120)
    assert run(kc, "print('here')") == ("ok", "here\n")
    kc.stop_channels()
    km.shutdown_kernel(now=True)
