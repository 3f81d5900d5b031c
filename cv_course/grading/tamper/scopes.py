"""Python's scoping rules, as far as the tamper scan needs them.

A name bound inside a function, lambda, comprehension or class body is local
to it: ``device = boxes.device`` inside ``nms`` rebinds nothing the notebook
set up. Only bindings that land in the notebook's (module) namespace can
change what later cells see: top-level statements, names declared
``global``, and ``:=`` in a top-level comprehension.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field


@dataclass
class Scope:
    kind: str  # "module", "function" (def and lambda), "class" or "comprehension"
    name: str = ""  # the function's or class's name, for messages
    bound: set[str] = field(default_factory=set)  # names local to this scope
    imported: set[str] = field(default_factory=set)  # the bound names that an import binds
    declared_global: set[str] = field(default_factory=set)


class _Bindings(ast.NodeVisitor):
    """Collects the names one scope binds, without entering nested scopes
    (a nested def or class binds only its own name here)."""

    def __init__(self, scope: Scope):
        self.scope = scope

    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, (ast.Store, ast.Del)):
            self.scope.bound.add(node.id)

    def visit_FunctionDef(self, node) -> None:
        self.scope.bound.add(node.name)
        for expr in node.decorator_list + node.args.defaults + [d for d in node.args.kw_defaults if d]:
            self.visit(expr)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self.scope.bound.add(node.name)
        for expr in node.decorator_list + node.bases + [k.value for k in node.keywords]:
            self.visit(expr)

    def visit_Lambda(self, node: ast.Lambda) -> None:
        for expr in node.args.defaults + [d for d in node.args.kw_defaults if d]:
            self.visit(expr)

    def _comprehension(self, node) -> None:
        # its loop variables are its own; a := inside binds in the enclosing scope
        for sub in ast.walk(node):
            if isinstance(sub, ast.NamedExpr):
                self.scope.bound.add(sub.target.id)

    visit_ListComp = visit_SetComp = visit_DictComp = visit_GeneratorExp = _comprehension

    def visit_Import(self, node) -> None:
        for alias in node.names:
            if alias.name != "*":
                name = alias.asname or alias.name.split(".")[0]
                self.scope.bound.add(name)
                self.scope.imported.add(name)

    visit_ImportFrom = visit_Import

    def visit_Global(self, node: ast.Global) -> None:
        self.scope.declared_global.update(node.names)

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:
        if node.name:
            self.scope.bound.add(node.name)
        self.generic_visit(node)

    def visit_MatchAs(self, node) -> None:
        if node.name:
            self.scope.bound.add(node.name)
        self.generic_visit(node)

    visit_MatchStar = visit_MatchAs

    def visit_MatchMapping(self, node: ast.MatchMapping) -> None:
        if node.rest:
            self.scope.bound.add(node.rest)
        self.generic_visit(node)


def function_scope(node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> Scope:
    """The scope of a def or lambda body: its parameters and every name it binds
    that is not declared ``global`` (``nonlocal`` names belong to an outer def,
    never to the notebook)."""
    name = getattr(node, "name", "<lambda>")
    scope = Scope("function", name)
    a = node.args
    scope.bound |= {p.arg for p in a.posonlyargs + a.args + a.kwonlyargs + [a.vararg, a.kwarg] if p}
    collector = _Bindings(scope)
    for stmt in node.body if isinstance(node.body, list) else [node.body]:
        collector.visit(stmt)
    scope.bound -= scope.declared_global
    return scope


def class_scope(node: ast.ClassDef) -> Scope:
    scope = Scope("class", node.name)
    collector = _Bindings(scope)
    for stmt in node.body:
        collector.visit(stmt)
    scope.bound -= scope.declared_global
    return scope


def comprehension_scope(node) -> Scope:
    scope = Scope("comprehension")
    for gen in node.generators:
        _Bindings(scope).visit(gen.target)
    return scope


def module_bindings(tree: ast.Module) -> Scope:
    """Names a cell binds in the notebook's namespace (top level only)."""
    scope = Scope("module")
    collector = _Bindings(scope)
    for stmt in tree.body:
        collector.visit(stmt)
    return scope
