"""Regenerate the student release (``assignments/``) from ``solutions/``.

``python -m cv_course.grading.release`` first writes the tamper scan's rules
(``tamper.rules_markdown``) into each source notebook's rules text, between the
``BEGIN scan rules`` / ``END scan rules`` comments, so that what students read
is what the scan enforces; then it runs ``nbgrader generate_assignment`` for
every assignment in a scratch course directory and copies the result into
``assignments/``. ``--check`` only compares and exits 1 when a notebook's rules
or the committed release are stale. (``make release`` runs the first.)
"""

from __future__ import annotations

import argparse
import filecmp
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import nbformat

from .tamper.rules import rules_markdown

REPO = Path(__file__).resolve().parents[2]
_RULES = re.compile(r"(<!-- BEGIN scan rules[^>]*-->\n).*?(<!-- END scan rules -->)", re.DOTALL)
_CONFIG = """c = get_config()
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "assignments"
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\\nraise NotImplementedError()"}
"""


def nbgrader_env() -> dict[str, str]:
    """Environment for running nbgrader: the interpreter's own bin directory
    first on PATH (nbgrader calls ``alembic`` from there)."""
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


def assignment_names(repo: Path = REPO) -> list[str]:
    source = repo / "solutions"
    if not source.is_dir():
        raise FileNotFoundError(f"no solutions/ folder in {repo}: nothing to release")
    return sorted(p.name for p in source.iterdir() if p.is_dir() and any(p.glob("*.ipynb")))


def with_rules(source: str) -> str:
    """``source`` (markdown) with the scan's rules between its rules comments."""
    return _RULES.sub(lambda m: m.group(1) + rules_markdown() + "\n" + m.group(2), source)


def sync_rules(repo: Path = REPO, write: bool = True) -> list[Path]:
    """Source notebooks whose rules text differs from the scan's; rewritten when ``write``."""
    out = []
    for path in sorted((repo / "solutions").glob("*/*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        changed = False
        for cell in nb.cells:
            if cell.cell_type == "markdown" and with_rules(cell.source) != cell.source:
                cell.source, changed = with_rules(cell.source), True
        if changed:
            out.append(path)
            if write:
                nbformat.write(nb, path)
    return out


def generate(name: str, out_dir: Path, repo: Path = REPO) -> Path:
    """Generate the release of assignment ``name`` into ``out_dir / name``."""
    src = repo / "solutions" / name
    if not any(src.glob("*.ipynb")):
        raise FileNotFoundError(f"no notebook in {src}: expected solutions/{name}/<notebook>.ipynb")
    with tempfile.TemporaryDirectory() as tmp:
        course = Path(tmp)
        shutil.copytree(src, course / "solutions" / name,
                        ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
        (course / "nbgrader_config.py").write_text(_CONFIG)
        cmd = [sys.executable, "-m", "nbgrader", "generate_assignment", name, "--no-db", "--force"]
        done = subprocess.run(cmd, cwd=course, env=nbgrader_env(), capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"nbgrader generate_assignment {name} failed:\n{done.stdout}\n{done.stderr}")
        target = out_dir / name
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(course / "assignments" / name, target)
    return target


def stale(repo: Path = REPO) -> list[str]:
    """Names of the assignments whose committed release differs from a fresh one."""
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in assignment_names(repo):
            fresh = generate(name, Path(tmp), repo)
            committed = repo / "assignments" / name
            cmp = filecmp.dircmp(fresh, committed) if committed.is_dir() else None
            if cmp is None or _differs(cmp):
                out.append(name)
    return out


def _differs(cmp: filecmp.dircmp) -> bool:
    if cmp.left_only or cmp.right_only or cmp.funny_files:
        return True
    _, mismatch, errors = filecmp.cmpfiles(cmp.left, cmp.right, cmp.common_files, shallow=False)
    return bool(mismatch or errors) or any(_differs(sub) for sub in cmp.subdirs.values())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report stale releases (exit 1)")
    args = parser.parse_args(argv)
    if args.check:
        for path in sync_rules(write=False):
            print(f"{path.relative_to(REPO)}: the rules text is not the scan's: run `make release`")
        names = stale()
        for name in names:
            print(f"assignments/{name} is stale: run `make release` and commit the result")
        return 1 if names or sync_rules(write=False) else 0
    for path in sync_rules():
        print(f"wrote the scan's rules into {path.relative_to(REPO)}")
    for name in assignment_names():
        print(f"released {generate(name, REPO / 'assignments').relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
