"""Feedback HTML a student can read offline: two ``nbgrader generate_feedback``
preprocessors, added in ``nbgrader_config.py`` after nbgrader's own.

* :class:`OfflineMath`: nbconvert's HTML loads MathJax from a CDN, so offline
  a formula shows as raw TeX (``$\\frac{x - x_a}{w_a}$``). Each formula of a
  markdown cell is drawn by matplotlib's mathtext into an inline SVG image
  (its TeX kept as the ``alt`` text); the few it cannot draw
  (``smallmatrix``) stay as TeX, in code style.
* :class:`ShortTracebacks`: error outputs without the grading machine's
  absolute paths (the repository, site-packages, temporary folders, home),
  and with at most :data:`MAX_FRAMES` frames: the first (the student's cell)
  and the last ones (what failed).
"""

from __future__ import annotations

import base64
import html
import io
import re
import site
import sysconfig
import tempfile
from pathlib import Path

from nbconvert.preprocessors import Preprocessor
from traitlets import Bool

MAX_FRAMES = 4  # traceback entries kept: the first one and the last MAX_FRAMES - 1
_MATH = re.compile(r"\$\$(.+?)\$\$|\$([^$]+?)\$", re.DOTALL)  # inline formulas may span lines too
_MATHTEXT = {r"\dfrac": r"\frac", r"\tfrac": r"\frac", r"\text{": r"\mathrm{"}  # what mathtext spells otherwise
_CODE = re.compile(r"(```.*?```|`[^`\n]*`)", re.DOTALL)  # no formulas inside code


def tex_svg(tex: str, display: bool) -> str | None:
    """An ``<img>`` with ``tex`` drawn by mathtext as SVG, or None if mathtext cannot draw it."""
    from matplotlib.mathtext import math_to_image

    buf = io.BytesIO()
    drawn = " ".join(tex.split())
    for tex_name, mathtext_name in _MATHTEXT.items():
        drawn = drawn.replace(tex_name, mathtext_name)
    try:
        math_to_image(f"${drawn}$", buf, prop=None, dpi=72 * (1.3 if display else 1.1),
                      format="svg")
    except (ValueError, RuntimeError):  # an unsupported command: keep the TeX
        return None
    data = base64.b64encode(buf.getvalue()).decode()
    style = "display:block;margin:0.6em auto" if display else "vertical-align:middle"
    return f'<img alt="{html.escape(tex)}" style="{style}" src="data:image/svg+xml;base64,{data}">'


def offline_math(markdown: str) -> str:
    """``markdown`` with each ``$...$`` / ``$$...$$`` formula outside code replaced by an SVG image."""
    def one(m: re.Match) -> str:
        display = m.group(1) is not None
        tex = m.group(1) if display else m.group(2)
        return tex_svg(tex, display) or f"`{' '.join(tex.split())}`"

    parts = _CODE.split(markdown)
    return "".join(p if i % 2 else _MATH.sub(one, p) for i, p in enumerate(parts))


class OfflineMath(Preprocessor):
    """Markdown formulas as inline SVG (see the module docstring)."""

    enabled = Bool(True)  # nbconvert runs a registered preprocessor only when enabled

    def preprocess_cell(self, cell, resources, index):
        if cell.cell_type == "markdown" and "$" in cell.source:
            cell.source = offline_math(cell.source)
        return cell, resources


def _prefixes() -> list[str]:
    roots = {*site.getsitepackages(), site.getusersitepackages(), sysconfig.get_paths()["stdlib"],
             str(Path(__file__).resolve().parents[3]), tempfile.gettempdir()}
    return sorted((r.rstrip("/") + "/" for r in roots if r), key=len, reverse=True)


def short_traceback(lines: list[str], prefixes: list[str] | None = None) -> list[str]:
    """``lines`` (an error output's traceback) without absolute path prefixes, cut to MAX_FRAMES entries."""
    prefixes = _prefixes() if prefixes is None else prefixes
    out = []
    for line in lines:
        for p in prefixes:
            line = line.replace(p, "")
        out.append(re.sub(r"/home/[^/\s]+/", "~/", line))
    if len(out) > MAX_FRAMES + 1:  # the header line, then frames, then the message
        hidden = len(out) - MAX_FRAMES - 1
        out = out[:2] + [f"... ({hidden} more frames of the grader) ..."] + out[-(MAX_FRAMES - 1):]
    return out


class ShortTracebacks(Preprocessor):
    """Error outputs with short, path-free tracebacks (see the module docstring)."""

    enabled = Bool(True)

    def preprocess_cell(self, cell, resources, index):
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                output["traceback"] = short_traceback(list(output.get("traceback", [])))
        return cell, resources
