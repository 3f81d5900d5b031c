"""Honest autograding for the course's nbgrader assignments.

The harness, one idea per module:

``guard``: run a student's function so it cannot delegate to a reference.
``policy``: the one catalogue of what a student's code may not call.
``checks``: ``call_student`` (copies, guard, side effects) and exact-type,
device, dtype, shape and value checks of nested outputs, with clear messages.
``numerics``: one tolerance rule per dtype and kind of computation; no TF32.
``models``: models with the reference's weights, left-as-it-was, gradients.
``heldout``: fresh seeds, predictions before labels.
``exercise``: the ``Exercise`` spec that generates ``check_<name>_visible/_hidden``.
``tamper``, ``failclosed``: the static scan nbgrader runs, and hidden checks
that award nothing where it did not run.

One module per assignment holds its specs and the checks unique to it
(``boxes``, ``segmentation``, ``understanding``).
"""

from .checks import CheckFailed, call_student, check_close, check_like, check_tensor, fresh_generator
from .exercise import Case, Exercise
from .guard import DelegationError, Forbidden, no_delegation

__all__ = ["Case", "CheckFailed", "DelegationError", "Exercise", "Forbidden", "call_student", "check_close",
           "check_like", "check_tensor", "fresh_generator", "no_delegation"]
