"""Start a kernel with a memory limit: ``python PATH/TO/launch.py --memory BYTES --
KERNEL_COMMAND...``.

It runs as a script, by path, and imports nothing but the standard library and
``zygote.py`` beside it: run as ``-m cv_course.grading.autograde.launch`` it
imported the ``cv_course`` package, hence torch and nbgrader (5 s of a core,
measured), before every kernel's start, for nothing.

The limit is set with ``setrlimit`` in this process, which then *becomes* the
kernel (``os.execv``): the kernel manager's process id, signals and exit code
are the kernel's own, and every process the kernel starts inherits the limit.
Where the worker runs a zygote (``zygote.py``, its socket in
``$CV_COURSE_KERNEL_ZYGOTE``), the kernel is forked from it instead, with the
same limit, and this process stands in for it (signals relayed, exit mirrored).

It limits the data segment (``RLIMIT_DATA``: private writable memory, what
the process can actually fill), not the address space (``RLIMIT_AS``):
``import torch`` alone reserves 3.2 GB of address space on a CPU (measured:
VmSize 3.2 GB, VmData 0.74 GB, RSS 0.52 GB) and the CUDA driver reserves tens
of GB it never touches, so an address-space limit fails honest notebooks long
before they use the memory it names. An allocation past the limit fails inside
the student's cell (``MemoryError``, PyTorch's "can't allocate memory"), the
kernel lives on, and the machine never swaps or calls the OOM killer.
"""

from __future__ import annotations

import os
import resource
import sys

SCRIPT = os.path.abspath(__file__)  # what contain.py runs


def limit_memory(limit_bytes: int) -> None:
    """Cap this process (and each child) at ``limit_bytes`` of data; 0 means no cap."""
    if limit_bytes <= 0:
        return
    _, hard = resource.getrlimit(resource.RLIMIT_DATA)
    if hard != resource.RLIM_INFINITY:
        limit_bytes = min(limit_bytes, hard)  # an unprivileged process cannot raise its hard limit
    resource.setrlimit(resource.RLIMIT_DATA, (limit_bytes, hard))


def main(argv: list[str]) -> None:
    if len(argv) < 4 or argv[0] != "--memory" or argv[2] != "--":
        raise SystemExit("usage: python launch.py --memory BYTES -- COMMAND...")
    memory, command = int(argv[1]), argv[3:]
    from zygote import ENV, is_ipykernel, launch  # beside this script (sys.path[0])

    path = os.environ.get(ENV)
    if path and is_ipykernel(command):
        try:
            launch(path, command, memory)  # exits with the kernel
        except OSError:
            pass  # no zygote to reach: start the kernel the usual way
    limit_memory(memory)
    os.execvp(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1:])
