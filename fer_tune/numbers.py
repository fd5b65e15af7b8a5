"""Numbers from a flag or a file, checked in one place: finite, in range, one line when not.

A `<= 0` check lets NaN through (every comparison with NaN is false), and an int parsed from
`1e30` is a number no loop can reach; these helpers refuse both, naming where the value came from:

    finite_number(args.cpus_per_trial, "--cpus-per-trial", low=0, low_open=True)   # > 0, finite
    whole_number(args.n, "--n", low=70, high=MAX)                                 # an int in [70, MAX]
"""

from __future__ import annotations

import math

from fer_tune.errors import FerTuneError


def finite_number(
    value: float, where: str, *, low: float | None = None, high: float | None = None, low_open: bool = False
) -> float:
    """`value` if it is a finite number within [low, high] (low excluded with `low_open`), else one line."""
    expected = _range_text("a finite number", low, high, low_open)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise FerTuneError(f"{where} {value}: expected {expected}")
    if low is not None and (value < low or (low_open and value == low)):
        raise FerTuneError(f"{where} {value:g}: expected {expected}")
    if high is not None and value > high:
        raise FerTuneError(f"{where} {value:g}: too large; expected {expected}")
    return float(value)


def whole_number(value: int, where: str, *, low: int | None = None, high: int | None = None) -> int:
    """`value` if it is an integer within [low, high], else one line naming `where`, the value and the range."""
    expected = _range_text("an integer", low, high, False)
    if isinstance(value, bool) or not isinstance(value, int):
        raise FerTuneError(f"{where} {value}: expected {expected}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise FerTuneError(f"{where} {value}: expected {expected}")
    return value


def parse_int(text: str) -> int:
    """argparse type: an integer, also written as 1e4 or 10_000 when it is whole (`--n 1e5`)."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        raise ValueError(text) from None
    if not math.isfinite(value) or value != int(value) or abs(value) > 2**63:
        raise ValueError(text)
    return int(value)


parse_int.__name__ = "int"  # argparse names the type in its message: "invalid int value: 'x'"


def _range_text(kind: str, low, high, low_open: bool) -> str:
    low, high = _shown(low), _shown(high)
    if low is not None and high is not None:
        return f"{kind} {'above' if low_open else 'from'} {low} {'and at most' if low_open else 'to'} {high}"
    if low is not None:
        return f"{kind} {'above' if low_open else 'of at least'} {low}"
    if high is not None:
        return f"{kind} of at most {high}"
    return kind


def _shown(bound: float | None) -> str | None:
    return None if bound is None else str(bound) if isinstance(bound, int) else f"{bound:g}"
