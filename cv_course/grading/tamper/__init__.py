"""Static scan of a submission for code that tampers with grading.

A student's cells run in the same Python process as the tests, so code in them
could replace the grader, the reference or PyTorch itself (``torch.allclose =
lambda *a, **k: True``). That is not visible at run time from inside the
kernel, but it is visible in the source. :class:`TamperScan` runs in nbgrader's
own process, reads every code cell the student could write, and withholds the
exercise whose cells have a finding, naming the cell and line.

What counts as tampering (``rules.py`` has the lists): assigning to or deleting
attributes of imported modules or of what the set-up cells made
(``torch.x = ...``, ``torch.Tensor.__eq__ = ...``), rebinding at top level a
name the set-up or test cells bind, ``setattr``/``delattr``,
``exec``/``eval``/``compile``/``__import__``, ``get_ipython``, reaching into
interpreter internals (``__code__``, ``__globals__``, frames, ``sys.modules``,
profile hooks), importing modules that exist to do that (``sys``, ``inspect``,
``importlib``, ``ctypes``, ``gc``, ``builtins``, ...), the grading package
itself, writing files, and shell escapes or magics other than timing and
plotting ones (the code after ``%time`` is scanned too). A name bound inside a
function, lambda, comprehension or class is local and rebinds nothing.

Modules: ``rules`` (the lists), ``scopes`` (Python's scoping rules), ``scan``
(the scan of cell sources), ``notebook`` (cells -> exercises, what is
withheld), ``autograde`` (the nbgrader step), ``before_submit`` (the
notebooks' last cell).
"""

from .before_submit import check_before_submitting
from .notebook import Exercise, is_trusted, scan_notebook, withheld
from .rules import BANNED_ATTRS, BANNED_CALLS, BANNED_IMPORTS, rules_markdown
from .scan import Finding, scan_sources

try:  # the nbgrader step; nbgrader is only needed by instructors
    from .autograde import TamperScan
except ImportError:  # pragma: no cover
    TamperScan = None

__all__ = ["BANNED_ATTRS", "BANNED_CALLS", "BANNED_IMPORTS", "Exercise", "Finding", "TamperScan",
           "check_before_submitting", "is_trusted", "rules_markdown", "scan_notebook", "scan_sources",
           "withheld"]
