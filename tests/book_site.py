"""Build the book once for the whole test run, as `make book` does, and share it.

tests/test_book.py and tests/test_browser.py both need the built site. They may
run at the same time in two pytest-xdist workers, so the build sits behind a file
lock: the first one builds, the other waits and reuses. A stamp holding a hash of
every input (chapters, configuration, extension, assets, the package, the
assignments) lets a later run reuse a site built from exactly the same inputs.

The build is the one of `make book` plus ``--all`` (every page re-read, so every
warning is raised again under ``-W``). Chapter execution is taken from the
jupyter-cache when a chapter's code has not changed, unless what the chapters
import or read changed (the package, the measured records, the assignments): the
jupyter-cache keys on a notebook's code cells alone, so then it is cleared and
every chapter runs again.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
BUILD = REPO / "_build"
HTML = BUILD / "html"
# Everything the built site depends on (the chapters read measured records from benchmarks/)
_INPUTS = ("_config.yml", "_toc.yml", "book/**/*.md", "book/**/*.py", "book/**/*.bib",
           "book/_static/*.css", "book/_static/*.js", "cv_course/**/*.py",
           "assignments/**/*.ipynb", "benchmarks/results/*.json")


def toc_files() -> list[str]:
    """Every page of the book, as paths without suffix ("book/intro", ...), in order."""
    toc = yaml.safe_load((REPO / "_toc.yml").read_text())
    files = [toc["root"]]
    for part in toc.get("parts", []):
        files += [c["file"] for c in part.get("chapters", [])]
    return files


def chapter_files() -> list[str]:
    """The pages that are notebooks (they have a kernelspec), in toc order."""
    return [f for f in toc_files() if "kernelspec:" in (REPO / f"{f}.md").read_text()[:400]]


# Inputs the chapters' outputs depend on without being their code cells
_EXECUTION_INPUTS = ("book/**/*.py", "cv_course/**/*.py", "assignments/**/*.ipynb",
                     "benchmarks/results/*.json")


def inputs_hash(patterns: tuple[str, ...] = _INPUTS) -> str:
    h = hashlib.sha256()
    for pattern in patterns:
        for path in sorted(REPO.glob(pattern)):
            if "_generated" in path.parts or "mathjax" in path.parts:
                continue
            h.update(str(path.relative_to(REPO)).encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def _run(cmd: list[str], timeout: int) -> None:
    env = dict(os.environ, PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"])
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        log = done.stdout + done.stderr
        raise AssertionError(f"`{' '.join(cmd)}` failed:\n{log[-8000:]}")


def built_site() -> Path:
    """The built HTML folder (``_build/html``), building it first if the inputs changed."""
    BUILD.mkdir(exist_ok=True)
    stamp = BUILD / ".test-site-stamp"
    with open(BUILD / ".test-site.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time; the other worker waits
        key = inputs_hash()
        if stamp.is_file() and stamp.read_text() == key and (HTML / "index.html").is_file():
            return HTML
        stamp.unlink(missing_ok=True)
        executed = BUILD / ".test-site-execution-stamp"
        execution_key = inputs_hash(_EXECUTION_INPUTS)
        if not executed.is_file() or executed.read_text() != execution_key:
            shutil.rmtree(BUILD / ".jupyter_cache", ignore_errors=True)  # stale outputs
        # MathJax into book/_static and the FCN/U-Net chapter's models into the cache
        _run(["make", "--no-print-directory", "book-assets"], timeout=3000)
        jb = str(Path(sys.executable).parent / "jupyter-book")
        _run([jb, "build", ".", "-W", "--keep-going", "--all"], timeout=3000)
        stamp.write_text(key)
        executed.write_text(execution_key)
    return HTML
