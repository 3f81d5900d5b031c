"""Static scan of a submission for code that tampers with grading.

A student's cells run in the same Python process as the tests, so code in them
could replace the grader, the reference or PyTorch itself (``torch.allclose =
lambda *a, **k: True``). That is not visible at run time from inside the
kernel, but it is visible in the source. This scan runs in nbgrader's own
process (see :class:`TamperScan`), reads every code cell the student could
write, and reports what it finds with the cell and line. A submission with a
finding gets its test cells marked as failed, with the reason, for an
instructor to review.

What counts as tampering here: assigning to or deleting attributes of imported
modules or of their contents (``torch.x = ...``, ``torch.Tensor.__eq__ = ...``),
``setattr``/``delattr``, ``exec``/``eval``/``compile``/``__import__``, reaching
into interpreter internals (``__code__``, ``__globals__``, frames,
``sys.modules``, profile hooks), importing modules that exist to do that
(``sys``, ``inspect``, ``importlib``, ``ctypes``, ``gc``, ``builtins``, ...),
the grading package itself, writing files, and shell escapes or magics other
than timing and plotting ones.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

BANNED_CALLS = {"exec", "eval", "compile", "__import__", "setattr", "delattr", "globals", "vars",
                "breakpoint", "getattr_static"}
BANNED_ATTRS = {"__code__", "__globals__", "__dict__", "__builtins__", "__closure__", "__defaults__",
                "__kwdefaults__", "__subclasses__", "__wrapped__", "__setattr__", "__delattr__",
                "f_back", "f_locals", "f_globals", "f_builtins", "tb_frame", "gi_frame", "cr_frame",
                "_getframe", "setprofile", "settrace", "modules", "_disable_current_modes"}
BANNED_IMPORTS = {"sys", "inspect", "importlib", "ctypes", "gc", "builtins", "types", "os", "subprocess",
                  "shutil", "threading", "multiprocessing", "unittest", "pytest", "pathlib", "io",
                  "pickle", "marshal", "dis", "code", "codeop", "runpy", "pdb", "signal", "atexit",
                  "_thread", "concurrent", "traceback", "torch.multiprocessing", "asyncio", "_posixsubprocess",
                  "cv_course.grading"}
ALLOWED_MAGICS = {"matplotlib", "time", "timeit"}
WRITE_MODES = set("wax+")


@dataclass(frozen=True)
class Finding:
    cell: int  # index of the cell in the notebook
    line: int  # line within the cell, 1-based
    what: str

    def __str__(self) -> str:
        return f"cell {self.cell}, line {self.line}: {self.what}"


def _to_python(source: str) -> tuple[str, list[tuple[int, str]]]:
    """Turn IPython syntax into Python; report magics and shell escapes."""
    problems, lines = [], []
    for i, line in enumerate(source.splitlines(), start=1):
        stripped = line.lstrip()
        if stripped.startswith("!") or stripped.startswith("%"):
            name = stripped.lstrip("!%").split()[0] if stripped.lstrip("!%").split() else ""
            if stripped.startswith("!") or name not in ALLOWED_MAGICS:
                problems.append((i, f"shell command or magic {stripped.split()[0]!r}"))
            lines.append("")  # keep line numbers
        else:
            lines.append(line)
    return "\n".join(lines), problems


def _root_name(node: ast.AST) -> str | None:
    while isinstance(node, (ast.Attribute, ast.Subscript, ast.Call)):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node.id if isinstance(node, ast.Name) else None


class _Scanner(ast.NodeVisitor):
    def __init__(self, modules: set[str], protected: set[str]):
        self.modules = modules  # names bound by imports, across cells
        self.protected = protected  # names the trusted (read-only) cells define
        self.found: list[tuple[int, str]] = []

    def _flag(self, node: ast.AST, what: str) -> None:
        self.found.append((getattr(node, "lineno", 1), what))

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._check_import(node, alias.name)
            self.modules.add((alias.asname or alias.name).split(".")[0])

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = node.module or ""
        flagged = self._check_import(node, module)
        for alias in node.names:
            if not flagged:
                self._check_import(node, f"{module}.{alias.name}")
            self.modules.add(alias.asname or alias.name)  # may be a module or a function: both count

    def _check_import(self, node: ast.AST, name: str) -> bool:
        for banned in BANNED_IMPORTS:
            if name == banned or name.startswith(banned + "."):
                self._flag(node, f"imports {name}")
                return True
        return False

    def _check_target(self, target: ast.AST, verb: str) -> None:
        if isinstance(target, ast.Starred):
            target = target.value
        if isinstance(target, ast.Name) and target.id in self.protected:
            self._flag(target, f"{verb} {target.id} (a name the notebook's own cells set up)")
        elif isinstance(target, (ast.Tuple, ast.List)):
            for t in target.elts:
                self._check_target(t, verb)
        elif isinstance(target, (ast.Attribute, ast.Subscript)):
            root = _root_name(target)
            if root in self.modules:
                self._flag(target, f"{verb} {ast.unparse(target)} (changes an imported module)")

    def visit_Assign(self, node: ast.Assign) -> None:
        for t in node.targets:
            self._check_target(t, "assigns to")
        self.generic_visit(node)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        self._check_target(node.target, "assigns to")
        self.generic_visit(node)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        self._check_target(node.target, "assigns to")
        self.generic_visit(node)

    def visit_Delete(self, node: ast.Delete) -> None:
        for t in node.targets:
            self._check_target(t, "deletes")
        self.generic_visit(node)

    def visit_FunctionDef(self, node) -> None:
        self._check_target(ast.Name(id=node.name, lineno=node.lineno), "redefines")
        self.generic_visit(node)

    visit_AsyncFunctionDef = visit_ClassDef = visit_FunctionDef

    def visit_For(self, node) -> None:
        self._check_target(node.target, "assigns to")
        self.generic_visit(node)

    def visit_withitem(self, node: ast.withitem) -> None:
        if node.optional_vars is not None:
            self._check_target(node.optional_vars, "assigns to")
        self.generic_visit(node)

    def visit_NamedExpr(self, node: ast.NamedExpr) -> None:
        self._check_target(node.target, "assigns to")
        self.generic_visit(node)

    def visit_Name(self, node: ast.Name) -> None:
        if node.id in BANNED_CALLS:
            self._flag(node, f"uses {node.id}")

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if node.attr in BANNED_ATTRS:
            self._flag(node, f"uses .{node.attr}")
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        if isinstance(node.func, ast.Name) and node.func.id in ("getattr", "hasattr") and len(node.args) > 1:
            name = node.args[1]
            if not (isinstance(name, ast.Constant) and isinstance(name.value, str)):
                self._flag(node, f"uses {node.func.id} with a computed attribute name")
            elif name.value in BANNED_ATTRS or name.value.startswith("__"):
                self._flag(node, f"uses {node.func.id}(..., {name.value!r})")
        if isinstance(node.func, ast.Name) and node.func.id == "open":
            mode = node.args[1] if len(node.args) > 1 else next(
                (k.value for k in node.keywords if k.arg == "mode"), None)
            if mode is not None and not (isinstance(mode, ast.Constant) and isinstance(mode.value, str)
                                         and not WRITE_MODES & set(mode.value)):
                self._flag(node, "opens a file for writing")
        self.generic_visit(node)


def _bound_names(tree: ast.AST) -> set[str]:
    """Top-level names a trusted cell binds (imports, assignments, defs)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
    return names


def scan_sources(cells: list[tuple[int, str, bool]]) -> list[Finding]:
    """Scan ``(cell index, source, trusted)`` triples in notebook order.

    Trusted cells (the instructor's read-only and test cells) are not
    reported on, but the names they import or define are protected: a student
    cell that rebinds them (``checks = FakeChecker()``) is a finding."""
    modules: set[str] = set()
    protected: set[str] = set()
    findings = []
    for index, source, trusted in cells:
        python, problems = _to_python(source)
        try:
            tree = ast.parse(python)
        except SyntaxError:
            continue  # a syntax error fails on its own when the cell runs
        if trusted:
            bound = _bound_names(tree)
            protected |= bound
            modules |= bound
            continue
        findings += [Finding(index, line, what) for line, what in problems]
        scanner = _Scanner(modules, protected)
        scanner.visit(tree)
        findings += [Finding(index, line, what) for line, what in scanner.found]
    return findings


def _is_trusted(cell) -> bool:
    """Cells whose source nbgrader restores from the instructor's version."""
    meta = cell.get("metadata", {}).get("nbgrader", {})
    return bool(meta.get("locked") or (meta.get("grade") and not meta.get("solution")))


def scan_notebook(nb) -> list[Finding]:
    """Findings in the code cells a student can write (answer cells and any
    cells they added)."""
    cells = [(i, c.source, _is_trusted(c)) for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    return scan_sources(cells)


try:  # the nbgrader preprocessor; nbgrader is only needed by instructors
    from nbformat.v4 import new_output
    from nbgrader.preprocessors import NbGraderPreprocessor

    class TamperScan(NbGraderPreprocessor):
        """nbgrader autograde step (after Execute, before SaveAutoGrades): when
        the scan finds something, every graded test cell gets an error output
        naming it, so the cell scores zero and the feedback says why."""

        def preprocess(self, nb, resources):
            findings = scan_notebook(nb)
            if not findings:
                return nb, resources
            listing = "\n".join(f"  - {f}" for f in findings)
            message = ("Autograding withheld: the submission contains code that could change how it is "
                       f"graded:\n{listing}\nRemove it (it is not needed for the exercises) or ask an "
                       "instructor to review the submission.")
            self.log.warning("Tamper scan: %s", message)
            for cell in nb.cells:
                if _is_trusted(cell) and cell.cell_type == "code" and cell.metadata.nbgrader.get("grade"):
                    cell.outputs.append(new_output("error", ename="GradingIntegrityError",
                                                   evalue=message, traceback=[message]))
            return nb, resources
except ImportError:  # pragma: no cover
    TamperScan = None
