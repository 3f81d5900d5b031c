"""Held-out data for checks of trained models: fresh seeds, predictions first.

A trained model is scored on scenes generated from seeds drawn from the
operating system at every grading run, far above any seed of a training or
validation set (``Dataset(..., seed=s)`` for a small ``s``). The labels are
generated only after the model's last prediction, so nothing the model's code
could read (a caller's frame, a global) holds them while it runs.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Sequence

# Seeds of held-out scenes: [2**24, 2**32), far above any training or validation seed.
HELD_OUT_SEEDS = (2**24, 2**32)


def held_out_seeds(n: int) -> list[int]:
    """``n`` seeds drawn from the operating system: new at every grading run."""
    lo, hi = HELD_OUT_SEEDS
    return [lo + int.from_bytes(os.urandom(8), "little") % (hi - lo) for _ in range(n)]


def predict_then_label(seeds: Sequence[int], make_input: Callable[[int], Any], predict: Callable,
                       make_label: Callable[[int], Any]) -> tuple[Any, list]:
    """``predict([make_input(s) for s in seeds])``, and only then the labels
    ``[make_label(s) for s in seeds]``. Returns (predictions, labels)."""
    predictions = predict([make_input(s) for s in seeds])
    return predictions, [make_label(s) for s in seeds]  # made now, after every prediction
