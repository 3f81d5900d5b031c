"""The book builds from scratch with warnings as errors, and every page in the
table of contents is rendered with its figures."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.book
REPO = Path(__file__).resolve().parents[1]


def toc_files() -> list[str]:
    toc = yaml.safe_load((REPO / "_toc.yml").read_text())
    files = [toc["root"]]
    for part in toc.get("parts", []):
        files += [c["file"] for c in part.get("chapters", [])]
    return files


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("book")
    env = dict(os.environ, PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"])
    cmd = [str(Path(sys.executable).parent / "jupyter-book"), "build", str(REPO), "-W", "--keep-going",
           "--path-output", str(out)]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=3000)
    log = done.stdout + done.stderr
    assert done.returncode == 0, f"book build failed:\n{log[-8000:]}"
    return out / "_build" / "html"


def test_every_toc_page_is_rendered(built):
    for name in toc_files():
        page = built / f"{name}.html"
        assert page.is_file(), f"{page} was not built"
    assert (built / "index.html").is_file()


def test_chapters_show_their_outputs(built):
    for name in toc_files()[1:]:  # the landing page has no code
        html = (built / f"{name}.html").read_text()
        assert "cell_output" in html, f"{name}: no executed output"
        assert re.search(r"<img [^>]*src=", html), f"{name}: no figure"
        assert "Traceback (most recent call last)" not in html, f"{name}: a cell failed"


def test_landing_page_has_the_course_map(built):
    html = (built / f"{toc_files()[0]}.html").read_text().lower()
    for chapter in ("semantic segmentation", "u-net", "r-cnn", "detr", "mask r-cnn", "grad-cam", "coming"):
        assert chapter in html, f"course map lacks {chapter!r}"


def test_pages_need_no_widget_javascript(built):
    # Saved widget state (e.g. a tqdm bar in a notebook) makes every page load the
    # widget manager from a CDN, and an offline reader then sees an empty box.
    for name in toc_files():
        html = (built / f"{name}.html").read_text()
        assert "application/vnd.jupyter.widget-view" not in html, f"{name}: saved widget output"
        assert "@jupyter-widgets/html-manager" not in html, f"{name}: loads the widget manager"
