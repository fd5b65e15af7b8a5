"""Parse the `space:` section of a search-space YAML into validated `Param`s.

    space:
      model: {choice: [model2, model3]}          # categorical
      kernel_size: {grid: [2, 3]}                # a grid axis
      lr: {loguniform: [1.0e-4, 1.0e-2]}         # log-uniform range
      dropout: {uniform: [0.0, 0.5], q: 0.05}    # quantized range
      batch_size: 64                             # fixed
      scheduler: {choice: [plateau, cos_warm]}
      T_0: {choice: [1, 2], when: {scheduler: cos_warm}}   # conditional

Parameters are kept in file order, which is also the order the Optuna
define-by-run function samples them, so a condition may only name a parameter
defined above it. Every candidate value (each choice, each range end) is
validated as a `TrainConfig` field, so an unknown model name or a negative
learning rate is reported at load with its key path.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import ValidationError

from fer_tune.core.config import Strict, TrainConfig, format_validation_error
from fer_tune.errors import FerTuneError

RANGES = ("uniform", "loguniform", "randint")
OPTIONS = ("choice", "grid")
DISTRIBUTIONS = OPTIONS + RANGES


class Param(Strict):
    """One parameter of the space: a fixed value, or a distribution with an optional condition.

    YAML forms: `lr: 0.001` (fixed), `lr: {loguniform: [1e-4, 1e-2]}`,
    `T_0: {choice: [1, 2], when: {scheduler: cos_warm}}`, `epochs: {randint: [5, 20], q: 5}`.
    """

    name: str
    kind: Literal["fixed", "choice", "grid", "uniform", "loguniform", "randint"]
    values: tuple[Any, ...]  # fixed: (value,); choice/grid: the options; ranges: (low, high)
    q: float | None = None  # quantization step for ranges
    when: dict[str, tuple[Any, ...]] = {}  # condition: every named parameter takes one of these values
    default: Any = None  # the value `fer-tune train` uses

    def is_active(self, point: dict[str, Any]) -> bool:
        return all(point.get(key) in allowed for key, allowed in self.when.items())

    def default_value(self) -> Any:
        if self.default is not None:
            return self.default
        if self.kind in ("fixed",) + OPTIONS:
            return self.values[0]
        low, high = self.values
        mid = math.sqrt(low * high) if self.kind == "loguniform" else (low + high) / 2
        if self.q:
            mid = quantize(mid, self.q)
        return int(round(mid)) if self.kind == "randint" else mid


def quantize(value: float, step: float) -> float:
    """`value` rounded to a multiple of `step`, without float residue (0.30000000000000004 -> 0.3)."""
    return round(round(value / step) * step, 12)


def parse_space(raw: Any, where: str) -> tuple[Param, ...]:
    if not isinstance(raw, dict):
        raise FerTuneError(f"{where}: space: expected a mapping of parameter names, got {type(raw).__name__}")
    params: list[Param] = []
    for name, spec in raw.items():
        key = f"space.{name}"
        if name not in TrainConfig.model_fields:
            valid = ", ".join(TrainConfig.model_fields)
            raise FerTuneError(f"{where}: {key}: unknown parameter; expected one of: {valid}")
        param = _parse_param(name, spec, where, key)
        _check_condition(param, params, where, key)
        for label, value in _candidates(param):
            _check_value(name, value, where, f"{key}{label}")
        params.append(param)
    return tuple(params)


def _parse_param(name: str, spec: Any, where: str, key: str) -> Param:
    if not isinstance(spec, dict):
        return Param(name=name, kind="fixed", values=(spec,))
    spec = dict(spec)
    kinds = [k for k in DISTRIBUTIONS if k in spec]
    unknown = set(spec) - set(DISTRIBUTIONS) - {"q", "when", "default"}
    if unknown:
        allowed = ", ".join(DISTRIBUTIONS + ("q", "when", "default"))
        raise FerTuneError(f"{where}: {key}: unknown key {sorted(unknown)[0]!r}; expected one of: {allowed}")
    if len(kinds) != 1:
        raise FerTuneError(f"{where}: {key}: expected exactly one of {', '.join(DISTRIBUTIONS)}, got {kinds or 'none'}")
    kind = kinds[0]
    values = spec[kind]
    if not isinstance(values, list):
        raise FerTuneError(f"{where}: {key}.{kind}: expected a list, got {values!r}")
    if kind in OPTIONS and not values:
        raise FerTuneError(f"{where}: {key}.{kind}: empty list; expected at least one value")
    if kind in RANGES:
        values = _check_range(kind, values, where, f"{key}.{kind}")
    when = _parse_when(spec.get("when"), where, f"{key}.when")
    q = spec.get("q")
    if q is not None and (kind not in RANGES or not isinstance(q, (int, float)) or q <= 0):
        raise FerTuneError(
            f"{where}: {key}.q: expected a positive step on a uniform/loguniform/randint range, got {q!r}"
        )
    param = Param(name=name, kind=kind, values=tuple(values), q=q, when=when, default=spec.get("default"))
    if param.default is not None and kind in OPTIONS and param.default not in values:
        raise FerTuneError(f"{where}: {key}.default: {param.default!r} is not one of {values}")
    if param.default is not None and kind in RANGES and not _in_range(param.default, values):
        raise FerTuneError(f"{where}: {key}.default: {param.default!r} is outside the {kind} range {values}")
    return param


def _in_range(value: Any, bounds: list) -> bool:
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    return numeric and bounds[0] <= value <= bounds[1]


def _check_range(kind: str, values: list, where: str, key: str) -> list:
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    if len(values) != 2 or not numeric:
        raise FerTuneError(f"{where}: {key}: expected [low, high] numbers, got {values!r}")
    low, high = values
    if low >= high:
        raise FerTuneError(f"{where}: {key}: inverted range [{low}, {high}]; expected low < high")
    if kind == "loguniform" and low <= 0:
        raise FerTuneError(f"{where}: {key}: loguniform needs low > 0, got {low}")
    if kind == "randint" and not all(isinstance(v, int) for v in values):
        raise FerTuneError(f"{where}: {key}: randint needs integer bounds, got {values!r}")
    return values


def _parse_when(raw: Any, where: str, key: str) -> dict[str, tuple]:
    if raw is None:
        return {}
    if not isinstance(raw, dict) or not raw:
        raise FerTuneError(f"{where}: {key}: expected a mapping like {{scheduler: cos_warm}}, got {raw!r}")
    return {name: tuple(v) if isinstance(v, list) else (v,) for name, v in raw.items()}


def _check_condition(param: Param, earlier: list[Param], where: str, key: str) -> None:
    by_name = {p.name: p for p in earlier}
    for name, allowed in param.when.items():
        if name not in by_name:
            defined = ", ".join(by_name) or "none"
            raise FerTuneError(
                f"{where}: {key}.when: {name!r} must be a parameter defined above {param.name!r} (defined: {defined})"
            )
        parent = by_name[name]
        if parent.kind in ("fixed",) + OPTIONS:
            missing = [v for v in allowed if v not in parent.values]
            if missing:
                raise FerTuneError(
                    f"{where}: {key}.when.{name}: {missing[0]!r} is never taken; {name} takes {list(parent.values)}"
                )


def _candidates(param: Param):
    if param.kind == "fixed":
        yield "", param.values[0]
    elif param.kind in OPTIONS:
        for i, value in enumerate(param.values):
            yield f".{param.kind}[{i}]", value
    else:
        yield f".{param.kind}[0]", param.values[0]
        yield f".{param.kind}[1]", param.values[1]
    if param.default is not None:
        yield ".default", param.default


def _check_value(name: str, value: Any, where: str, key: str) -> None:
    try:
        TrainConfig(**{name: value})
    except ValidationError as err:
        message = format_validation_error(err, TrainConfig)
        raise FerTuneError(f"{where}: {key}: {message.split(': ', 1)[1]}") from None
