"""What the tamper scan refuses in a student's cells, in one place.

The scan (``scan.py``), the notebooks' rules text (filled in by ``release.py``
from :func:`rules_markdown`) and the "before you submit" cell all read these
sets, so what students are told cannot drift from what is enforced.
"""

from __future__ import annotations

# Built-ins that run code from strings, change any object's attributes or hand
# out namespaces.
BANNED_CALLS = {"exec", "eval", "compile", "__import__", "setattr", "delattr", "globals", "vars",
                "breakpoint", "getattr_static", "get_ipython"}
# Attributes that reach into interpreter internals (code objects, frames,
# namespaces, profile hooks, the module table, torch's mode stack).
BANNED_ATTRS = {"__code__", "__globals__", "__dict__", "__builtins__", "__closure__", "__defaults__",
                "__kwdefaults__", "__subclasses__", "__wrapped__", "__setattr__", "__delattr__",
                "f_back", "f_locals", "f_globals", "f_builtins", "tb_frame", "gi_frame", "cr_frame",
                "_getframe", "setprofile", "settrace", "modules", "_disable_current_modes"}
# Modules that exist to inspect or change the interpreter, start processes or
# threads, or write files; and the grading package itself.
BANNED_IMPORTS = {"sys", "inspect", "importlib", "ctypes", "gc", "builtins", "types", "os", "subprocess",
                  "shutil", "threading", "multiprocessing", "unittest", "pytest", "pathlib", "io",
                  "pickle", "marshal", "dis", "code", "codeop", "runpy", "pdb", "signal", "atexit",
                  "_thread", "concurrent", "traceback", "torch.multiprocessing", "asyncio", "_posixsubprocess",
                  "cv_course.grading"}
# IPython magics that only time or plot (the code after %time / %timeit is scanned too);
# pinfo is `name?`.
ALLOWED_MAGICS = {"matplotlib", "time", "timeit", "pinfo", "pinfo2"}
WRITE_MODES = set("wax+")


def is_banned_import(name: str) -> bool:
    """``name`` ("os.path", "torch.multiprocessing.queue") is, or is inside, a banned module."""
    return any(name == banned or name.startswith(banned + ".") for banned in BANNED_IMPORTS)


def rules_markdown() -> str:
    """The banned imports and calls as the notebooks' rules text lists them."""
    imports = ", ".join(f"`{m}`" for m in sorted(BANNED_IMPORTS, key=lambda m: (m.lstrip("_"), m)))
    calls = ", ".join(f"`{c}`" for c in sorted(BANNED_CALLS - {"getattr_static"}, key=lambda c: c.strip("_")))
    return (f"Your cells may not import {imports}; may not call {calls}; and may not use "
            "`%` magics other than `%time`, `%timeit` and `%matplotlib`, or `!` shell commands.")
