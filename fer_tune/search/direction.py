"""Which score is better under a sweep's `mode` ("max": higher is better, "min": lower), decided here only.

The console's running best, the best epoch of a trial, the order of trials.csv and the sweep's
best trial all ask these functions, so they never disagree on a tie or a direction.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

import pandas as pd

T = TypeVar("T")


def better(value: float, than: float | None, mode: str) -> bool:
    """Whether `value` beats `than` (None: nothing yet, so any value does); a tie does not."""
    return than is None or (value > than if mode == "max" else value < than)


def best_of(items: Iterable[T], key: Callable[[T], float], mode: str) -> T:
    """The best item by `key` (the first of equals)."""
    return (max if mode == "max" else min)(items, key=key)


def best_label(values: pd.Series, mode: str):
    """The index label of the best value in `values` (NaN skipped; the first of equals)."""
    return values.idxmax() if mode == "max" else values.idxmin()


def best_first(mode: str) -> bool:
    """The `ascending` flag that sorts the best score first."""
    return mode == "min"
