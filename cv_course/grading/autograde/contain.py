"""nbgrader's execute step with limits: what one submission may cost, and what
happens when it costs more.

:func:`contained` turns the course's list of autograde preprocessors into the
same list with its execute step (``TamperScan``, or nbgrader's ``Execute``)
replaced by a subclass that adds, and changes nothing else:

* a **memory limit** on the kernel process (``launch.py``: ``setrlimit`` before
  the kernel starts);
* a **per-cell** time limit (nbgrader's own ``timeout``: the cell is
  interrupted and scores zero) and a **per-submission** one: cells that would
  start after it are not run, and each says why;
* **a kernel that dies** (``os._exit``, a crash, the OOM killer): the cell it
  died in gets an error saying how it died, a fresh kernel re-runs the cells
  before it (test cells excepted), and grading goes on with the next cell.
  nbgrader alone stops at a dead kernel and saves no grade for the submission.

Every such message lands in the cell's outputs as an error, so nbgrader scores
the cell zero and the feedback shows the reason.
"""

from __future__ import annotations

import math
import signal
import sys
import time
from pathlib import Path

from jupyter_client.manager import AsyncKernelManager
from jupyter_core.utils import ensure_async, run_sync
from nbclient.exceptions import DeadKernelError
from nbformat.v4 import new_output
from nbgrader.preprocessors import Execute, NbGraderPreprocessor
from nbgrader.utils import is_grade, is_solution

LAUNCH = str(Path(__file__).with_name("launch.py"))  # run by path: see launch.py
MAX_RESTARTS = 3  # a submission whose kernel dies more often is not run further


def error_output(ename: str, message: str):
    return new_output("error", ename=ename, evalue=message, traceback=[f"{ename}: {message}"])


def limited_kernel_manager(memory_limit: int) -> type:
    """An ``AsyncKernelManager`` whose kernels start through ``launch.py`` with
    ``memory_limit`` bytes (0: no limit)."""

    class LimitedKernelManager(AsyncKernelManager):
        def format_kernel_cmd(self, extra_arguments=None):
            cmd = super().format_kernel_cmd(extra_arguments)
            return [sys.executable, LAUNCH, "--memory", str(memory_limit), "--", *cmd]

    return LimitedKernelManager


def death_reason(returncode: int | None, memory_limit: int) -> str:
    """Why the kernel process ended, as the student's feedback says it."""
    if returncode is None:
        return "the kernel stopped answering while running this cell"
    if returncode >= 0:
        return (f"the kernel process exited (exit code {returncode}) while running this cell: "
                "the code called os._exit(), exit() or quit(), or ended the process some other way")
    name = signal.Signals(-returncode).name if -returncode in signal.valid_signals() else str(-returncode)
    if -returncode == signal.SIGKILL:
        limit = f" (grading allows {memory_limit / 2**30:.1f} GiB)" if memory_limit else ""
        return f"the kernel was killed ({name}) while running this cell, usually for using too much memory{limit}"
    return f"the kernel crashed ({name}) while running this cell"


def _is_memory_error(output) -> bool:
    text = f"{output.get('ename', '')} {output.get('evalue', '')}"
    return output.get("output_type") == "error" and (
        "MemoryError" in text or "can't allocate memory" in text or "OutOfMemoryError" in text)


class ContainedMixin:
    """Mixed in before an ``Execute`` subclass by :func:`contained`."""

    memory_limit = 0  # bytes for the kernel process; 0: none
    cell_timeout = 180  # seconds per cell
    submission_timeout = 3600  # seconds for all of the submission's cells

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("kernel_manager_class", limited_kernel_manager(self.memory_limit))
        super().__init__(*args, **kwargs)

    def preprocess(self, nb, resources, km=None):
        self._deadline = time.monotonic() + self.submission_timeout
        self._stopped = ""  # why no further cell runs
        self._restarts = 0
        return super().preprocess(nb, resources)

    def preprocess_cell(self, cell, resources, index):
        if cell.cell_type != "code" or not cell.source.strip():
            return super().preprocess_cell(cell, resources, index)
        remaining = self._deadline - time.monotonic()
        if not self._stopped and remaining <= 0:
            self._stopped = (f"Not run: the submission reached its time limit for grading "
                             f"({self.submission_timeout} s for all cells).")
        if self._stopped:
            cell.outputs = [error_output("SubmissionNotRun", self._stopped)]
            return cell, resources
        self.timeout = max(1, min(self.cell_timeout, math.ceil(remaining)))
        self.error_on_timeout = {"ename": "CellTimeoutError", "evalue": "", "traceback": [
            f"CellTimeoutError: this cell ran longer than {self.timeout} s and was interrupted "
            "(the time limit while grading)."]}
        try:
            cell, resources = super().preprocess_cell(cell, resources, index)
        except DeadKernelError:
            process = getattr(getattr(self.km, "provisioner", None), "process", None)
            returncode = process.poll() if process is not None else None
            reason = death_reason(returncode, self.memory_limit)
            self.log.warning("Cell %d: %s", index, reason)
            cell.outputs.append(error_output("KernelDied", reason[0].upper() + reason[1:] + "."))
            self._restart(index)
            return cell, resources
        if self.memory_limit and any(_is_memory_error(o) for o in cell.outputs):
            cell.outputs.append(error_output("MemoryLimit", (
                f"this cell ran out of memory: grading allows {self.memory_limit / 2**30:.1f} GiB "
                "for the whole notebook.")))
        return cell, resources

    def _restart(self, index: int) -> None:
        self._restarts += 1
        if self._restarts > MAX_RESTARTS:
            self._stopped = f"Not run: the kernel died {MAX_RESTARTS} times in earlier cells."
            return
        try:
            run_sync(self._async_restart)(index)
        except Exception as e:  # noqa: BLE001 (any failure to restore state ends the run the same way)
            self.log.warning("Restarting the kernel after cell %d failed: %s", index, e)
            self._stopped = "Not run: the kernel died in an earlier cell and could not be restored."

    async def _async_restart(self, index: int) -> None:
        """A fresh kernel with the cells before ``index`` run again (test cells excepted)."""
        await self._async_cleanup_kernel()
        self.km, self.kc = self.create_kernel_manager(), None
        await self.async_start_new_kernel()
        await self.async_start_new_kernel_client()
        for cell in self.nb.cells[:index]:
            if cell.cell_type != "code" or not cell.source.strip():
                continue
            if is_grade(cell) and not is_solution(cell):  # a test cell: graded once, not re-run
                continue
            msg_id = await ensure_async(self.kc.execute(cell.source, store_history=False, silent=True))
            await self.async_wait_for_reply(msg_id)


class NotRun(NbGraderPreprocessor):
    """In place of the execute step when a submission could not be run at all:
    every graded cell gets an error with ``reason`` (and so scores zero)."""

    reason = "Not run."

    def preprocess_cell(self, cell, resources, index):
        if cell.cell_type == "code" and is_grade(cell):
            cell.outputs = [error_output("SubmissionNotRun", self.reason)]
        return cell, resources


def _execute_step(preprocessors: list) -> int:
    for i, pp in enumerate(preprocessors):
        if isinstance(pp, type) and issubclass(pp, Execute):
            return i
    raise ValueError("the course's c.Autograde.autograde_preprocessors has no execute step "
                     "(nbgrader's Execute or a subclass such as TamperScan): nothing would run the notebooks")


def contained(preprocessors: list, memory_limit: int, cell_timeout: int, submission_timeout: int) -> list:
    """``preprocessors`` with the execute step made a :class:`ContainedMixin` subclass."""
    out = list(preprocessors)
    i = _execute_step(out)
    out[i] = type(f"Contained{out[i].__name__}", (ContainedMixin, out[i]), {
        "memory_limit": memory_limit, "cell_timeout": cell_timeout, "submission_timeout": submission_timeout})
    return out


def not_run(preprocessors: list, reason: str) -> list:
    """``preprocessors`` with the execute step replaced by :class:`NotRun`."""
    out = list(preprocessors)
    out[_execute_step(out)] = type("NotRunStep", (NotRun,), {"reason": reason})
    return out
