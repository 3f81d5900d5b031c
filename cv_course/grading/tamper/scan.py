"""The static scan of a student's cells (see the package docstring).

:func:`scan_sources` reads cells in notebook order. Trusted cells (the
instructor's set-up and test cells) are not reported on, but the names they
bind at top level are protected. Student cells are parsed as IPython parses
them (magics and ``!`` commands included, so nothing hides behind them) and
walked with Python's scoping rules in mind (``scopes.py``).
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass

from .rules import ALLOWED_MAGICS, BANNED_ATTRS, BANNED_CALLS, WRITE_MODES, is_banned_import
from .scopes import Scope, class_scope, comprehension_scope, function_scope, module_bindings


@dataclass(frozen=True)
class Finding:
    cell: int  # index of the cell in the notebook (all cells, markdown ones too)
    line: int  # line within the cell, 1-based, as the student wrote it
    what: str
    function: str = ""  # the def or class the line is in, if any
    where: str = ""  # the cell as the student knows it ("your nms cell"); set by scan_notebook

    def __str__(self) -> str:
        inside = f" (in {self.function})" if self.function else ""
        return f"{self.where or f'cell {self.cell}'}, line {self.line}{inside}: {self.what}"


_TIMEIT_OPTIONS = re.compile(r"^\s*(?:(?:-[nrp]\s*\S+|-[tcqov])\s+)*")


def to_python(source: str) -> str:
    """The Python that IPython runs for a cell (``%time x`` becomes
    ``get_ipython().run_line_magic('time', 'x')``, ``!ls`` a ``system`` call)."""
    from IPython.core.inputtransformer2 import TransformerManager

    return TransformerManager().transform_cell(source)


def _parse(code: str) -> ast.Module | None:
    try:
        return ast.parse(code)
    except SyntaxError:  # IPython cannot compile it either: the cell runs nothing
        return None


def _root_name(node: ast.AST) -> str | None:
    while isinstance(node, (ast.Attribute, ast.Subscript, ast.Call)):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node.id if isinstance(node, ast.Name) else None


def _magic_call(node: ast.Call) -> tuple[str, list] | None:
    """``get_ipython().<method>(...)`` -> (method, constant args), else None."""
    f = node.func
    if (isinstance(f, ast.Attribute) and isinstance(f.value, ast.Call) and not f.value.args
            and isinstance(f.value.func, ast.Name) and f.value.func.id == "get_ipython"
            and all(isinstance(a, ast.Constant) and isinstance(a.value, str) for a in node.args)):
        return f.attr, [a.value for a in node.args]
    return None


class _Scanner(ast.NodeVisitor):
    def __init__(self, modules: set[str], protected: set[str]):
        self.modules = modules  # names imported at top level, by any cell so far
        self.protected = protected  # names the trusted cells bind at top level
        self.scopes = [Scope("module")]
        self.found: list[tuple[int, str, str]] = []

    def _flag(self, node: ast.AST, what: str) -> None:
        named = [s.name for s in self.scopes if s.kind in ("function", "class") and s.name != "<lambda>"]
        self.found.append((getattr(node, "lineno", 1), what, ".".join(named)))

    # ------------------------------------------------------------ scopes
    def _in(self, scope: Scope, nodes) -> None:
        self.scopes.append(scope)
        for n in nodes:
            self.visit(n)
        self.scopes.pop()

    def _binds_top_level(self, name: str) -> bool:
        """Does binding ``name`` here rebind it in the notebook's namespace?"""
        for scope in reversed(self.scopes):
            if scope.kind == "comprehension":  # only := binds here, in the enclosing scope
                continue
            return scope.kind == "module" or name in scope.declared_global
        return True

    def _is_module(self, name: str) -> bool:
        """Does ``name``, read here, refer to an imported module (or something the set-up made)?"""
        innermost = True
        for scope in reversed(self.scopes[1:]):
            if scope.kind == "class" and not innermost:
                continue  # a class body's names are not visible in its methods
            innermost = False
            if name in scope.declared_global:
                break
            if name in scope.bound:
                return name in scope.imported
        return name in self.modules

    def _is_local(self, name: str) -> bool:
        return any(name in s.bound for s in self.scopes[1:] if s.kind != "class")

    def visit_FunctionDef(self, node) -> None:
        self._bind_name(node, node.name, "redefines")
        for expr in node.decorator_list + node.args.defaults + [d for d in node.args.kw_defaults if d]:
            self.visit(expr)
        self._in(function_scope(node), node.body)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Lambda(self, node: ast.Lambda) -> None:
        for expr in node.args.defaults + [d for d in node.args.kw_defaults if d]:
            self.visit(expr)
        self._in(function_scope(node), [node.body])

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self._bind_name(node, node.name, "redefines")
        for expr in node.decorator_list + node.bases + [k.value for k in node.keywords]:
            self.visit(expr)
        self._in(class_scope(node), node.body)

    def _comprehension(self, node) -> None:
        gens = node.generators
        self.visit(gens[0].iter)  # evaluated in the enclosing scope
        inner = [gens[0].target, *gens[0].ifs]
        for g in gens[1:]:
            inner += [g.iter, g.target, *g.ifs]
        inner += [node.key, node.value] if isinstance(node, ast.DictComp) else [node.elt]
        self._in(comprehension_scope(node), inner)

    visit_ListComp = visit_SetComp = visit_DictComp = visit_GeneratorExp = _comprehension

    # ---------------------------------------------------------- bindings
    def _bind_name(self, node: ast.AST, name: str, verb: str) -> None:
        if name in self.protected and self._binds_top_level(name):
            self._flag(node, f"{verb} {name} (a name the notebook's own cells set up)")

    def _check_target(self, target: ast.AST, verb: str) -> None:
        if isinstance(target, ast.Starred):
            target = target.value
        if isinstance(target, ast.Name):
            self._bind_name(target, target.id, verb)
        elif isinstance(target, (ast.Tuple, ast.List)):
            for t in target.elts:
                self._check_target(t, verb)
        elif isinstance(target, (ast.Attribute, ast.Subscript)):
            root = _root_name(target)
            if root is not None and self._is_module(root):
                self._flag(target, f"{verb} {ast.unparse(target)} (changes an imported module)")

    def visit_Assign(self, node: ast.Assign) -> None:
        for t in node.targets:
            self._check_target(t, "assigns to")
        self.generic_visit(node)

    def visit_AugAssign(self, node) -> None:
        self._check_target(node.target, "assigns to")
        self.generic_visit(node)

    visit_AnnAssign = visit_AugAssign

    def visit_Delete(self, node: ast.Delete) -> None:
        for t in node.targets:
            self._check_target(t, "deletes")
        self.generic_visit(node)

    def visit_For(self, node) -> None:
        self._check_target(node.target, "assigns to")
        self.generic_visit(node)

    visit_AsyncFor = visit_For

    def visit_withitem(self, node: ast.withitem) -> None:
        if node.optional_vars is not None:
            self._check_target(node.optional_vars, "assigns to")
        self.generic_visit(node)

    def visit_NamedExpr(self, node: ast.NamedExpr) -> None:
        self._check_target(node.target, "assigns to")
        self.generic_visit(node)

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:
        if node.name:
            self._bind_name(node, node.name, "assigns to")
        self.generic_visit(node)

    # ----------------------------------------------------------- imports
    def visit_Import(self, node) -> None:
        module = getattr(node, "module", None) or ""
        if isinstance(node, ast.ImportFrom) and node.level == 0 and is_banned_import(module):
            self._flag(node, f"imports {module}")
        for alias in node.names:
            full = f"{module}.{alias.name}" if isinstance(node, ast.ImportFrom) else alias.name
            if not (isinstance(node, ast.ImportFrom) and is_banned_import(module)) and is_banned_import(full):
                self._flag(node, f"imports {full}")
            if alias.name != "*" and len(self.scopes) == 1:
                self.modules.add(alias.asname or alias.name.split(".")[0])  # a module or a function: both count

    visit_ImportFrom = visit_Import

    # ------------------------------------------------------------- reads
    def visit_Name(self, node: ast.Name) -> None:
        if node.id in BANNED_CALLS and not self._is_local(node.id):
            self._flag(node, f"uses {node.id}")

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if node.attr in BANNED_ATTRS:
            self._flag(node, f"uses .{node.attr}")
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        magic = _magic_call(node)
        if magic is not None:
            return self._magic(node, *magic)
        func = node.func.id if isinstance(node.func, ast.Name) and not self._is_local(node.func.id) else None
        if func in ("getattr", "hasattr") and len(node.args) > 1:
            name = node.args[1]
            if not (isinstance(name, ast.Constant) and isinstance(name.value, str)):
                self._flag(node, f"uses {func} with a computed attribute name")
            elif name.value in BANNED_ATTRS or name.value.startswith("__"):
                self._flag(node, f"uses {func}(..., {name.value!r})")
        if func == "open":
            mode = node.args[1] if len(node.args) > 1 else next(
                (k.value for k in node.keywords if k.arg == "mode"), None)
            if mode is not None and not (isinstance(mode, ast.Constant) and isinstance(mode.value, str)
                                         and not WRITE_MODES & set(mode.value)):
                self._flag(node, "opens a file for writing")
        self.generic_visit(node)

    # ------------------------------------------------------------ magics
    def _magic(self, node: ast.Call, method: str, args: list[str]) -> None:
        if method in ("system", "getoutput"):
            return self._flag(node, f"shell command '!{args[0] if args else ''}'")
        if method not in ("run_line_magic", "run_cell_magic") or not args:
            return self._flag(node, f"uses get_ipython().{method}")
        name, prefix = args[0], "%%" if method == "run_cell_magic" else "%"
        if name not in ALLOWED_MAGICS:
            return self._flag(node, f"magic {prefix}{name}")
        if name not in ("time", "timeit"):
            return None
        codes = [(args[1], node.lineno)]  # a line magic's statement; a cell magic's setup line
        if method == "run_cell_magic":
            codes.append((args[2], node.lineno + 1))  # the body starts on the cell's second line
        for code, line in codes:
            tree = _parse(_TIMEIT_OPTIONS.sub("", code) if name == "timeit" else code)
            if tree is None:
                self._flag(node, f"runs code after {prefix}{name} that the scan cannot read")
                continue
            ast.increment_lineno(tree, line - 1)
            saved, self.scopes = self.scopes, self.scopes[:1]  # magics run in the notebook's namespace
            self.visit(tree)
            self.scopes = saved
        return None


def scan_sources(cells: list[tuple[int, str, bool]]) -> list[Finding]:
    """Scan ``(cell index, source, trusted)`` triples in notebook order.

    Trusted cells (the instructor's read-only and test cells) are not
    reported on, but the names they bind at top level are protected: a student
    cell that rebinds them at top level (``checks = FakeChecker()``) is a
    finding; a function's local of the same name is not."""
    modules: set[str] = set()
    protected: set[str] = set()
    findings = []
    for index, source, trusted in cells:
        tree = _parse(to_python(source))
        if tree is None:
            continue  # a syntax error fails on its own when the cell runs
        if trusted:
            bound = module_bindings(tree).bound
            protected |= bound
            modules |= bound
            continue
        scanner = _Scanner(modules, protected)
        scanner.visit(tree)
        findings += [Finding(index, line, what, function) for line, what, function in scanner.found]
    return findings
