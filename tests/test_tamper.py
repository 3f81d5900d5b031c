"""The tamper scan: what it must catch (beyond tests/test_grading.py's table),
the honest styles it must let through, which exercise a finding withholds,
how it names the place, the "before you submit" cell and the rules text."""

from __future__ import annotations

import re

import nbformat
import pytest

from cv_course.grading.release import REPO, sync_rules
from cv_course.grading.tamper import (BANNED_CALLS, BANNED_IMPORTS, check_before_submitting, rules_markdown,
                                      scan_notebook, scan_sources, withheld)
from cv_course.grading.tamper.notebook import stub_source

SETUP = "import torch\nfrom cv_course import default_device\ndevice = default_device()"
TEST_CELL = "from cv_course.grading import boxes as _grader\n_grader.check_nms_visible(nms, device)"


def scan(*cells: str) -> list[str]:
    trusted = [(0, SETUP, True)]
    student = [(i + 1, c, False) for i, c in enumerate(cells)]
    return [str(f) for f in scan_sources(trusted + student + [(len(cells) + 1, TEST_CELL, True)])]


# ------------------------------------------------------------------ cheats
@pytest.mark.parametrize("source,what", [
    # bindings that do reach the notebook's namespace
    ("def f():\n    global device\n    device = 'cpu'\nf()", "line 3 (in f): assigns to device"),
    ("[device := 'cpu' for _ in range(1)]", "assigns to device"),
    ("try:\n    1 / 0\nexcept ZeroDivisionError as device:\n    pass", "line 3: assigns to device"),
    ("for torch in [None]:\n    pass", "assigns to torch"),
    ("class default_device:\n    pass", "redefines default_device"),
    # a function body is not a hiding place for module changes
    ("def nms(boxes, scores, t):\n    torch.allclose = lambda *a, **k: True", "(in nms): assigns to torch.allclose"),
    ("def f():\n    import torch as t\n    t.equal = print", "(in f): assigns to t.equal"),
    ("class A:\n    def f(self):\n        torch.equal = print", "(in A.f): assigns to torch.equal"),
    ("g = lambda: setattr(torch, 'equal', print)", "uses setattr"),
    ("def f():\n    del torch.testing.assert_close", "deletes torch.testing.assert_close"),
    ("device.type = 'cpu'", "assigns to device.type"),
    # what IPython runs is scanned, magics included
    ("%time torch.allclose = lambda *a, **k: True", "line 1: assigns to torch.allclose"),
    ("%timeit -n 1 -r 1 torch.equal = print", "assigns to torch.equal"),
    ("%%time\nx = 1\nimport os", "line 3: imports os"),
    ("%%timeit import inspect\nx = 1", "imports inspect"),
    ("torch.max?\ntorch.equal = print", "line 2: assigns to torch.equal"),
    ("files = !ls", "shell command"),
    ("%%bash\nls", "magic %%bash"),
    ("%timeit -- torch.equal = print", "cannot read"),
    ("get_ipython().events.register('pre_run_cell', print)", "uses get_ipython"),
    ("ip = get_ipython()", "uses get_ipython"),
    ("get_ipython().run_cell('import os')", "get_ipython().run_cell"),
    ("async def f():\n    pass\nawait f()\ntorch.equal = print", "line 4: assigns to torch.equal"),
])
def test_scan_finds(source, what):
    found = scan(source)
    assert any(what in f for f in found), found


# ---------------------------------------------------- honest everyday styles
HONEST = {
    "locals named like set-up names": '''
def nms(boxes, scores, iou_threshold):
    device = boxes.device  # a local: rebinds nothing
    torch_order = torch.argsort(scores, descending=True, stable=True)
    return torch_order.to(device)
''',
    "helpers, loops, import math, type hints, docstrings": '''
import math
from typing import Optional

import torch.nn.functional as F
from torch import Tensor


def _area(b: Tensor) -> Tensor:
    """Area of (x1, y1, x2, y2) boxes."""
    return (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)


def box_iou(boxes1: Tensor, boxes2: Tensor, eps: Optional[float] = None) -> Tensor:
    """IoU of every pair."""
    lt = torch.max(boxes1[:, None, :2], boxes2[None, :, :2])
    rb = torch.min(boxes1[:, None, 2:], boxes2[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = _area(boxes1)[:, None] + _area(boxes2)[None, :] - inter
    out = torch.zeros_like(inter)
    mask = union > 0
    out[mask] = inter[mask] / union[mask]
    for _ in range(int(math.log2(1))):
        pass
    return out
''',
    "class, closures, comprehensions, walrus in a function": '''
class Suppressor:
    device = None  # a class attribute, not the notebook's device

    def __init__(self, threshold):
        self.threshold = threshold
        self.device = None

    def __call__(self, boxes, scores):
        self.device = boxes.device
        order = scores.argsort(descending=True, stable=True)
        keep = []
        while len(order) > 0:
            keep.append(int(order[0]))
            if (n := len(order)) == 1:
                break
            rest = order[1:]
            iou = box_iou(boxes[order[:1]], boxes[rest])[0]
            order = rest[iou <= self.threshold]
        return torch.tensor(keep, dtype=torch.int64, device=self.device)


def nms(boxes, scores, iou_threshold):
    run = lambda device=boxes.device: Suppressor(iou_threshold)(boxes.to(device), scores)
    sizes = {device: len(boxes) for device in [boxes.device]}
    return run()
''',
    "notebook habits": '''
%matplotlib inline
import matplotlib.pyplot as plt
boxes = torch.rand(5, 4) * 100
boxes[:, 2:] += boxes[:, :2]
%time kept = nms(boxes, torch.rand(5), 0.5)
with torch.no_grad():
    result = {"kept": kept}
text = open("notes.txt") if False else None
print(getattr(torch, "float32"), hasattr(boxes, "shape"))
def plot(device=None):
    fig, ax = plt.subplots()
    ax.set_title(f"{len(kept)} boxes on {device}")
''',
}


@pytest.mark.parametrize("style", HONEST)
def test_honest_styles_pass_the_scan(style):
    assert scan(HONEST[style]) == []


def test_the_course_solutions_pass_the_scan():
    for path in sorted((REPO / "solutions").glob("*/*.ipynb")):
        assert scan_notebook(nbformat.read(path, as_version=4)) == [], path


def _honest_namespace(*sources: str) -> dict:
    import torch

    from cv_course import default_device

    ns = {"torch": torch, "default_device": default_device, "device": torch.device("cpu")}
    for src in sources:
        code = "\n".join(line for line in src.splitlines() if not line.lstrip().startswith("%"))
        exec(compile(code, "<honest cell>", "exec"), ns)  # the corpus is ours: plain exec is fine here
    return ns


@pytest.mark.parametrize("iou_style,nms_style", [
    ("helpers, loops, import math, type hints, docstrings", "class, closures, comprehensions, walrus in a function"),
])
def test_honest_styles_score_full_marks(iou_style, nms_style):
    from cv_course.grading import boxes as G

    ns = _honest_namespace(HONEST[iou_style], HONEST[nms_style])
    for check in (G.check_box_iou_visible, G.check_box_iou_hidden):
        check(ns["box_iou"], "cpu")
    for check in (G.check_nms_visible, G.check_nms_hidden):
        check(ns["nms"], "cpu")


# ---------------------------------------------------- notebooks, exercises
def _boxes_release():
    return nbformat.read(REPO / "assignments" / "02_boxes" / "boxes.ipynb", as_version=4)


def _answer(nb, grade_id: str):
    return next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id)


def _solution_boxes():
    nb = _boxes_release()
    src = nbformat.read(REPO / "solutions" / "02_boxes" / "boxes.ipynb", as_version=4)
    for gid in ("box_iou", "nms"):
        _answer(nb, gid).source = re.sub(r"^\s*### (BEGIN|END) SOLUTION\s*$\n?", "", _answer(src, gid).source,
                                         flags=re.MULTILINE)
        compile(_answer(nb, gid).source, gid, "exec")  # a cell that does not parse would be skipped
    return nb


def test_a_finding_withholds_only_its_exercise_and_names_the_cell_as_the_student_sees_it():
    nb = _solution_boxes()
    _answer(nb, "nms").source = "import os\n" + _answer(nb, "nms").source
    held = withheld(nb)
    assert [e.name for e in held] == ["nms"] and held[0].points == 5
    assert [nb.cells[i].metadata.nbgrader.grade_id for i in held[0].tests] == ["test_nms_visible", "test_nms_hidden"]
    assert str(held[0].findings[0]) == "your nms answer cell, line 1: imports os"


def test_an_added_cell_belongs_to_the_section_it_is_in():
    nb = _solution_boxes()
    at = nb.cells.index(_answer(nb, "box_iou")) + 1
    nb.cells.insert(at, nbformat.v4.new_code_cell("x = 1\ntorch.allclose = lambda *a, **k: True"))
    (held,) = withheld(nb)
    assert held.name == "box_iou"
    assert str(held.findings[0]) == ("the cell after your box_iou answer cell that starts `x = 1`, line 2: "
                                     "assigns to torch.allclose (changes an imported module)")


def test_a_student_cell_cannot_make_itself_trusted():
    nb = _solution_boxes()
    forged = nbformat.v4.new_code_cell("torch.allclose = lambda *a, **k: True")
    # what nbgrader's sanitising leaves of forged metadata: the unknown grade_id is deleted
    forged.metadata["nbgrader"] = {"locked": True, "grade": False, "solution": False, "schema_version": 3}
    nb.cells.insert(4, forged)
    assert [e.name for e in withheld(nb)] == ["box_iou"]


def test_a_withheld_cell_is_replaced_by_stubs_that_say_why():
    stub = stub_source("import os\ndef box_iou(a, b):\n    return a\nclass Helper:\n    pass\n%time box_iou(1, 2)")
    ns: dict = {}
    exec(stub, ns)
    with pytest.raises(NameError, match="box_iou is not defined: the tamper scan withheld"):
        ns["box_iou"](1, 2)
    assert "os" not in ns and callable(ns["Helper"])


def test_before_you_submit_reports_what_would_be_withheld(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("NBGRADER_EXECUTION", raising=False)
    monkeypatch.chdir(tmp_path)
    nb = _solution_boxes()
    nbformat.write(nb, "boxes.ipynb")
    check_before_submitting("boxes.ipynb")
    assert "Nothing would be withheld" in capsys.readouterr().out
    _answer(nb, "nms").source = "import os\n" + _answer(nb, "nms").source
    nbformat.write(nb, "boxes.ipynb")
    check_before_submitting("boxes.ipynb")
    out = capsys.readouterr().out
    assert "nms (5 points) would be withheld" in out and "your nms answer cell, line 1: imports os" in out
    assert "box_iou" not in out.split("withheld")[0]


def test_the_before_you_submit_cell_is_last_locked_and_not_flagged():
    for path in sorted((REPO / "assignments").glob("*/*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        last = nb.cells[-1]
        assert last.metadata.nbgrader["locked"] and "check_before_submitting(" in last.source, path
        assert f'"{path.name}"' in last.source
        assert scan_notebook(nb) == []


def test_the_rules_text_lists_what_the_scan_bans():
    assert sync_rules(write=False) == [], "run `make release`: a notebook's rules text is stale"
    text = rules_markdown()
    assert all(f"`{name}`" in text for name in BANNED_IMPORTS)
    assert all(f"`{name}`" in text for name in BANNED_CALLS - {"getattr_static"})
    for path in sorted((REPO / "assignments").glob("*/*.ipynb")):
        assert text in nbformat.read(path, as_version=4).cells[0].source, path


# ------------------------------------------------------------- fail closed
@pytest.mark.parametrize("execution,marker,refused", [
    ("autograde", None, True),  # nbgrader autograde with a plain configuration
    ("autograde", "1", False),  # autograde through TamperScan
    ("validate", None, False),  # nbgrader validate
    (None, None, False),  # a student's notebook, or a test calling the check
])
def test_hidden_checks_refuse_points_only_under_autograde_without_the_scan(monkeypatch, execution, marker,
                                                                           refused):
    from cv_course.grading.failclosed import MARKER, ScanNotConfigured, hidden_check

    for name, value in (("NBGRADER_EXECUTION", execution), (MARKER, marker)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    check = hidden_check(lambda fn, device: "checked")
    if refused:
        with pytest.raises(ScanNotConfigured, match="TamperScan in place of nbgrader's Execute"):
            check(None, "cpu")
    else:
        assert check(None, "cpu") == "checked"
