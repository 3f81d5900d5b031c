"""Kernels forked from a warm process: what a kernel's start costs, paid once per worker.

Every submission is graded in a fresh kernel, and a fresh kernel pays for its
start: the Python interpreter, ipykernel, and ``import torch, torchvision``
(about 5 s of a core, measured, against 10-15 s for a whole 02_boxes
submission). A *zygote* pays it once: a process that imports those modules,
runs no student code, and then forks one child per kernel. A child is a copy
of a process that never ran anything but imports, so submissions stay as
isolated as with a new process (no state passes from one child to another),
but ``import torch`` in the notebook finds the module already loaded.

How the pieces fit (the same idea as ``multiprocessing``'s forkserver)::

    nbgrader's kernel manager
      -> launch.py (the process the kernel manager sees: its pid, signals, exit code)
           -- unix socket: argv, cwd, environment, memory limit, stdio and a lifeline -->
      zygote (one per worker, started by :func:`ensure_zygote`)
           -> fork -> child: limits, cwd, environment, stdio, then ``ipykernel_launcher``

``launch.py`` relays interrupts to the child and exits the way the child
exited (its exit code, or the same signal), so ``contain.py`` reads a kernel
killed for memory or ended by ``os._exit`` exactly as before. If ``launch.py``
is killed (the kernel manager's hard kill), the child's lifeline pipe closes
and the child kills itself.

Only third-party modules are preloaded, never ``cv_course``: the course's
grading modules read the environment the kernel is given (the tamper scan sets
it) when they are imported.
"""

from __future__ import annotations

import array
import json
import os
import random
import resource
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ENV = "CV_COURSE_KERNEL_ZYGOTE"  # the zygote's socket path, for launch.py
PRELOAD = ("torch", "torchvision", "ipykernel.kernelapp", "ipykernel_launcher")
_FDS = 4  # stdin, stdout, stderr, lifeline (read end)


# ---- the zygote process ------------------------------------------------------------------

def _recv_request(conn: socket.socket) -> tuple[dict, list[int]]:
    """One request: a 4-byte length, then JSON; the file descriptors ride on its first bytes."""
    fds = array.array("i")
    data, ancdata, _, _ = conn.recvmsg(1 << 16, socket.CMSG_SPACE(_FDS * fds.itemsize))
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[:len(payload) - len(payload) % fds.itemsize])
    if len(data) < 4:
        data += _recv_exact(conn, 4 - len(data))
    size = struct.unpack("!I", data[:4])[0]
    msg = data[4:]
    if len(msg) < size:
        msg += _recv_exact(conn, size - len(msg))
    if len(fds) != _FDS:
        for fd in fds:
            os.close(fd)
        raise ValueError(f"expected {_FDS} file descriptors, got {len(fds)}")
    return json.loads(msg), list(fds)


def _recv_exact(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise ConnectionError("the launcher closed the connection")
        data += chunk
    return data


def _send_json(conn: socket.socket, obj: dict) -> None:
    try:
        conn.sendall(json.dumps(obj).encode() + b"\n")
    except OSError:
        pass  # the launcher is gone; its child was told by the lifeline


def _child(request: dict, fds: list[int], listener: socket.socket, conn: socket.socket):
    """In the forked child: become the kernel the launcher asked for. Never returns."""
    try:
        listener.close()
        conn.close()
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD, signal.SIGPIPE):
            signal.signal(sig, signal.SIG_DFL)
        os.setsid()  # its own process group, like a kernel the kernel manager starts
        if request["memory"] > 0:
            _, hard = resource.getrlimit(resource.RLIMIT_DATA)
            limit = request["memory"] if hard == resource.RLIM_INFINITY else min(request["memory"], hard)
            resource.setrlimit(resource.RLIMIT_DATA, (limit, hard))
        for target, fd in enumerate(fds[:3]):
            os.dup2(fd, target)
        lifeline = fds[3]
        for fd in fds[:3]:
            if fd > 2:
                os.close(fd)
        os.chdir(request["cwd"])
        sys.path.insert(0, request["cwd"])  # as `python -m ipykernel_launcher` run there has it
        env = dict(request["env"])
        if "JPY_PARENT_PID" in env:  # ipykernel exits if its parent changes: ours is the zygote
            env["JPY_PARENT_PID"] = str(os.getppid())
        os.environ.clear()
        os.environ.update(env)
        random.seed()  # a fresh process would not share its random state with its siblings
        try:
            import numpy as np

            np.random.seed()
        except ImportError:
            pass

        def watch():  # the launcher died (killed by the kernel manager): so does the kernel
            while os.read(lifeline, 1):
                pass
            os.kill(os.getpid(), signal.SIGKILL)

        threading.Thread(target=watch, daemon=True, name="zygote-lifeline").start()
        sys.argv = request["argv"]
        import runpy

        runpy.run_module("ipykernel_launcher", run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:  # noqa: BLE001 (report it on the kernel's stderr, then exit as a crash)
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)  # never run the zygote's own clean-up in the child


def _reap(pid: int, conn: socket.socket) -> None:
    _, status = os.waitpid(pid, 0)
    _send_json(conn, {"status": status})
    conn.close()


def serve(path: str, preload: tuple[str, ...] = PRELOAD) -> None:
    """Import ``preload``, then fork a kernel for each launcher that connects to ``path``."""
    import importlib

    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]  # run by path
    for name in preload:
        importlib.import_module(name)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(16)
    print("ready", flush=True)
    while True:
        conn, _ = listener.accept()
        try:
            request, fds = _recv_request(conn)
        except (OSError, ValueError, ConnectionError):
            conn.close()
            continue
        pid = os.fork()
        if pid == 0:
            _child(request, fds, listener, conn)
        for fd in fds:
            os.close(fd)  # the child has them; the zygote must not keep a lifeline open
        _send_json(conn, {"pid": pid})
        threading.Thread(target=_reap, args=(pid, conn), daemon=True).start()


# ---- the worker's side: one zygote per worker process -------------------------------------

_zygote: tuple[subprocess.Popen, str] | None = None
_lock = threading.Lock()


def _die_with_parent() -> None:
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG (Linux)
    except (OSError, AttributeError):
        pass


def ensure_zygote(env: dict[str, str], timeout: float = 120) -> str | None:
    """The socket path of this process's zygote, started with ``env`` if needed (its preloaded
    modules read thread settings such as ``OMP_NUM_THREADS`` when imported). ``None`` where
    fork or unix sockets are unavailable, or the zygote failed to start: kernels then start
    the usual way."""
    global _zygote
    if not hasattr(os, "fork") or not hasattr(socket, "AF_UNIX"):
        return None
    with _lock:
        if _zygote is not None and _zygote[0].poll() is None:
            return _zygote[1]
        folder = tempfile.mkdtemp(prefix="cv-course-zygote-")
        path = os.path.join(folder, "socket")
        script = os.path.abspath(__file__)  # by path: the zygote must not import cv_course
        proc = subprocess.Popen([sys.executable, script, path],
                                env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=open(os.path.join(folder, "zygote.log"), "w"), text=True,
                                start_new_session=True,
                                preexec_fn=_die_with_parent)
        ready: list[str] = []
        reader = threading.Thread(target=lambda: ready.append(proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout)
        if not ready or ready[0].strip() != "ready":
            proc.kill()
            return None
        _zygote = (proc, path)
        return path


def stop_zygote() -> None:
    global _zygote
    with _lock:
        if _zygote is not None:
            _zygote[0].kill()
            _zygote[0].wait()
            Path(_zygote[1]).unlink(missing_ok=True)
            _zygote = None


# ---- the launcher's side (launch.py) --------------------------------------------------------

def is_ipykernel(command: list[str]) -> bool:
    """``python -m ipykernel_launcher ...`` with this interpreter: what a zygote can start."""
    return (len(command) >= 3 and os.path.realpath(command[0]) == os.path.realpath(sys.executable)
            and command[1:3] == ["-m", "ipykernel_launcher"])


def launch(path: str, command: list[str], memory: int) -> None:
    """Start ``command``'s kernel as a child of the zygote at ``path``, relay signals to it, and
    exit as it exits. Raises OSError only if the zygote cannot be reached (nothing started):
    the caller then starts the kernel the usual way. Never returns otherwise."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect(path)
    life_r, life_w = os.pipe()
    request = json.dumps({"argv": ["ipykernel_launcher", *command[3:]], "cwd": os.getcwd(),
                          "env": dict(os.environ), "memory": memory}).encode()
    fds = array.array("i", [0, 1, 2, life_r])
    conn.sendmsg([struct.pack("!I", len(request)) + request],
                 [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds.tobytes())])
    os.close(life_r)  # the child's copy is the only one left; life_w stays open until we exit
    try:
        _stand_in(conn)
    finally:
        os._exit(1)  # a kernel may be running: never fall back to starting a second one


def _stand_in(conn: socket.socket) -> None:
    """Be the kernel's process for the kernel manager: relay signals, exit as it exits."""
    replies = conn.makefile("r")
    line = replies.readline()
    if not line:
        return  # the zygote failed to fork
    child = json.loads(line)["pid"]

    def relay(signum, _frame):
        try:
            os.kill(child, signum)
        except ProcessLookupError:
            pass

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
                signal.SIGUSR2):
        signal.signal(sig, relay)
    line = replies.readline()
    status = json.loads(line)["status"] if line else signal.SIGKILL  # the zygote died
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        if sig not in (signal.SIGKILL, signal.SIGSTOP):
            signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)  # die the way the kernel died, for contain.death_reason
        time.sleep(1)  # a signal whose default is to ignore it: exit below
    os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1)


if __name__ == "__main__":
    serve(sys.argv[1])
