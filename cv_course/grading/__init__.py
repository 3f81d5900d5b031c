"""Honest autograding for the course's nbgrader assignments.

``guard``: run a student's function so it cannot delegate to a reference.
``checks``: exact-type, device, dtype, shape and value checks with clear messages.
``tamper``: a static scan of a submission for code that alters the grader,
run by nbgrader outside the student's kernel.
Per-assignment checks live in their own modules (``boxes``, ...).
"""

from .checks import CheckFailed, call_student, check_close, check_tensor, fresh_generator
from .guard import DelegationError, Forbidden, no_delegation

__all__ = ["CheckFailed", "DelegationError", "Forbidden", "call_student", "check_close",
           "check_tensor", "fresh_generator", "no_delegation"]
