"""Autograding throughput: serial nbgrader against cv_course.grading.autograde.

Generates N submissions of 02_boxes in realistic proportions (correct,
partial, wrong, raising, untouched, and one each of an infinite loop, a
memory hog and a kernel exit), then grades identical copies of the course
three ways in one run:

1. serial ``nbgrader autograde 02_boxes`` (its process under the same memory
   limit, so the hog cannot take the machine: nbgrader has none of its own);
2. ``python -m cv_course.grading.autograde --workers 2`` (a Dask LocalCluster;
   kernels forked from a warm zygote per worker), and the same with
   ``--no-zygote`` (every kernel started from scratch, as nbgrader does);
3. the same against a separately started ``dask scheduler`` with two
   ``dask worker`` processes on this machine (the cluster path).

Prints submissions per minute, the ratio to serial, whether every score is
identical (the kernel exit excepted: serial nbgrader saves no grade for it),
the lowest available memory seen (no swap, no OOM killer), and the fixed cost
of one submission (nbgrader's start, a kernel's start and imports).

    .venv/bin/python benchmarks/autograde.py [--n 40]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from autograde_submissions import A, answers  # noqa: E402
from nbgrader_course import make_course, submit  # noqa: E402

from cv_course.grading.autograde.gradebook import graded_cells  # noqa: E402
from cv_course.grading.release import nbgrader_env  # noqa: E402

# share of a class per kind; loop, hog and exit get one each whatever N is
PROPORTIONS = {"correct": 0.5, "wrong": 0.2, "raising": 0.1, "untouched": 0.1}
RARE = ["loop", "hog", "exit"]
PY = sys.executable


def kinds(n: int) -> list[str]:
    out = [k for k, p in PROPORTIONS.items() for _ in range(max(1, round(p * (n - len(RARE)))))]
    out = (out + ["correct"] * n)[:n - len(RARE)]
    return out + RARE


class MemoryWatch(threading.Thread):
    """The lowest MemAvailable and the most swap used, sampled every 0.5 s."""

    def __init__(self):
        super().__init__(daemon=True)
        self.min_available, self.max_swap, self.running = float("inf"), 0, True

    @staticmethod
    def meminfo() -> dict[str, int]:
        rows = (line.split() for line in open("/proc/meminfo"))
        return {r[0].rstrip(":"): int(r[1]) * 1024 for r in rows}

    def run(self):
        while self.running:
            m = self.meminfo()
            self.min_available = min(self.min_available, m["MemAvailable"])
            self.max_swap = max(self.max_swap, m.get("SwapTotal", 0) - m.get("SwapFree", 0))
            time.sleep(0.5)


def timed(cmd: list[str], cwd: Path, limit: int = 0) -> float:
    def cap():
        if limit:
            resource.setrlimit(resource.RLIMIT_DATA, (limit, resource.getrlimit(resource.RLIMIT_DATA)[1]))

    start = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, env=nbgrader_env(), capture_output=True, text=True, preexec_fn=cap)
    return time.perf_counter() - start


def cluster(cwd: Path, port: int):
    env = nbgrader_env()
    env["OMP_NUM_THREADS"] = "1"
    bin_ = Path(PY).parent
    scheduler = subprocess.Popen([str(bin_ / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port),
                                  "--no-dashboard"], cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
    workers = [subprocess.Popen([str(bin_ / "dask"), "worker", f"tcp://127.0.0.1:{port}", "--nthreads", "1",
                                 "--memory-limit", "0", "--no-dashboard", "--name", str(i)], cwd=cwd, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for i in range(2)]
    return [scheduler, *workers]


def overhead(course: Path) -> dict[str, float]:
    """Seconds for: nbgrader's start; a kernel's start with the notebook's imports."""
    start = time.perf_counter()
    subprocess.run([PY, "-m", "nbgrader", "--version"], capture_output=True, env=nbgrader_env())
    nb_start = time.perf_counter() - start
    code = ("from jupyter_client.manager import start_new_kernel\n"
            "km, kc = start_new_kernel()\n"
            "kc.execute_interactive('import torch, torchvision, cv_course.grading.boxes', timeout=600)\n"
            "km.shutdown_kernel(now=True)\n")
    env = {**nbgrader_env(), "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    subprocess.run([PY, "-c", code], capture_output=True, env=env)
    fresh = time.perf_counter() - start
    forked = ("import os, time\n"
              "from cv_course.grading.autograde.zygote import ENV, ensure_zygote\n"
              "os.environ[ENV] = ensure_zygote(dict(os.environ))\n"
              "from cv_course.grading.autograde.contain import LAUNCH\n"
              "from jupyter_client.manager import KernelManager\n"
              "class K(KernelManager):\n"
              "    def format_kernel_cmd(self, extra_arguments=None):\n"
              "        return [__import__('sys').executable, LAUNCH, '--memory', '0', '--',"
              " *super().format_kernel_cmd(extra_arguments)]\n"
              "start = time.perf_counter()\n"
              "km = K(); km.start_kernel(); kc = km.client(); kc.start_channels(); kc.wait_for_ready(600)\n"
              "kc.execute_interactive('import torch, torchvision, cv_course.grading.boxes', timeout=600)\n"
              "print(time.perf_counter() - start)\n"
              "kc.stop_channels(); km.shutdown_kernel(now=True)\n")
    out = subprocess.run([PY, "-c", forked], capture_output=True, text=True, env=env).stdout.split()
    return {"nbgrader start": nb_start, "kernel start + imports": fresh,
            "kernel forked from the zygote + imports": float(out[-1]) if out else float("nan")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=40, help="submissions (default 40)")
    p.add_argument("--timeout", type=int, default=20, help="seconds per cell (default 20)")
    p.add_argument("--memory", default="2GB", help="kernel memory limit (default 2GB)")
    p.add_argument("--port", type=int, default=8786)
    args = p.parse_args()
    from cv_course.grading.autograde.__main__ import parse_memory

    limit = parse_memory(args.memory)
    with tempfile.TemporaryDirectory() as tmp:
        base = make_course(Path(tmp) / "base", A)
        with open(base / "nbgrader_config.py", "a") as f:
            f.write(f"\nc.Execute.timeout = {args.timeout}\n")
        roster = kinds(args.n)
        for i, kind in enumerate(roster):
            submit(base, A, f"s{i:03d}_{kind}", answers(kind))
        copies = {w: shutil.copytree(base, Path(tmp) / w) for w in ("serial", "local", "no-zygote", "cluster")}
        ours = [PY, "-m", "cv_course.grading.autograde", A, "--timeout", str(args.timeout), "--memory",
                args.memory, "--no-progress"]
        watch = MemoryWatch()
        watch.start()
        seconds = {"serial nbgrader": timed([PY, "-m", "nbgrader", "autograde", A], copies["serial"], limit),
                   "ours, LocalCluster --workers 2": timed(ours + ["--workers", "2"], copies["local"]),
                   "ours, --workers 2 --no-zygote (kernels started from scratch)":
                       timed(ours + ["--workers", "2", "--no-zygote"], copies["no-zygote"])}
        procs = cluster(copies["cluster"], args.port)
        time.sleep(10)  # the workers register
        try:
            seconds["ours, dask scheduler + 2 dask workers"] = timed(
                ours + ["--scheduler", f"tcp://127.0.0.1:{args.port}"], copies["cluster"])
        finally:
            for proc in procs:
                proc.terminate()
        watch.running = False
        scores = {w: graded_cells(f"sqlite:///{c / 'gradebook.db'}", A) for w, c in copies.items()}
        fixed = overhead(base)
    serial = seconds["serial nbgrader"]
    print(f"load average at the end {os.getloadavg()[0]:.1f}")
    print(f"{args.n} submissions of {A} ({', '.join(f'{k} {roster.count(k)}' for k in dict.fromkeys(roster))}); "
          f"cell timeout {args.timeout} s, memory {args.memory}")
    print("| way | wall s | submissions/min | x serial |\n| --- | --- | --- | --- |")
    for way, s in seconds.items():
        print(f"| {way} | {s:.0f} | {60 * args.n / s:.2f} | {serial / s:.2f} |")
    for way in ("local", "no-zygote", "cluster"):
        diff = [s for s in scores["serial"] if not s.endswith("_exit") and scores[way].get(s) != scores["serial"][s]]
        print(f"scores {way} vs serial: {'identical' if not diff else f'DIFFER for {diff}'} "
              f"({len(scores[way])} graded; serial saved grades for {len(scores['serial'])})")
    print(f"lowest MemAvailable {watch.min_available / 2**30:.1f} GiB, most swap used {watch.max_swap / 2**20:.0f} MiB")
    print("fixed cost per submission: " + ", ".join(f"{k} {v:.1f} s" for k, v in fixed.items())
          + f"; mean serial submission {serial / args.n:.1f} s")


if __name__ == "__main__":
    main()
