"""Several objectives in a sweep file, and the rule that picks the champion from their front.

    objectives:                       # replaces metric/mode; a single objective keeps today's form
      - {metric: val_accuracy, mode: max}
      - {metric: latency_ms, mode: min}
    champion: {metric: val_accuracy, where: {latency_ms: "<= 5"}}

A trial's objective values are those of its best epoch by the primary objective (the first
validation metric listed: its checkpoint is the one kept, scored and registered) and its cost
(params, macs, latency_ms: fer_tune.core.cost, constant over a trial). Validation of the lists
(unknown metric, one listed twice, `mode` missing, a `where` on a metric no trial records) happens
when the file is loaded, with a one-line error.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping
from typing import Literal

from pydantic import Field, field_validator

from fer_tune.core.config import Strict
from fer_tune.core.cost import COST_METRICS

VALIDATION_METRICS = ("val_accuracy", "val_macro_f1", "val_loss")  # scored every epoch
OBJECTIVE_METRICS = (*VALIDATION_METRICS, *COST_METRICS)
RECORDED_METRICS = (*OBJECTIVE_METRICS, "train_loss", "train_accuracy", "epoch_seconds")
COMPARISONS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le, ">=": operator.ge, "<": operator.lt, ">": operator.gt, "==": operator.eq,
}  # fmt: skip
_CONDITION = re.compile(r"^\s*(<=|>=|<|>|==)\s*([-+0-9.eE]+)\s*$")


class Objective(Strict):
    metric: Literal[OBJECTIVE_METRICS]
    mode: Literal["max", "min"]  # required: no objective has an obvious direction for everyone


class ChampionRule(Strict):
    """Which front member becomes the champion: the best by `metric` among those meeting `where`."""

    metric: Literal[OBJECTIVE_METRICS] = "val_accuracy"
    where: dict[str, str] = Field(default_factory=dict)  # metric -> "<= 5" (<=, <, >=, >, == and a number)

    @field_validator("where", mode="before")
    @classmethod
    def _conditions(cls, where):
        if not isinstance(where, Mapping):
            return where
        for metric, condition in where.items():
            if metric not in RECORDED_METRICS:
                raise ValueError(f"{metric}: not a recorded metric; expected one of: {', '.join(RECORDED_METRICS)}")
            parse_condition(metric, condition)
        return {metric: str(condition) for metric, condition in where.items()}

    def admits(self, values: Mapping[str, float | None]) -> bool:
        """Whether a trial with these metric values meets every `where` condition."""
        for metric, condition in self.where.items():
            compare, bound = parse_condition(metric, condition)
            value = values.get(metric)
            if value is None or value != value or not compare(float(value), bound):  # missing or NaN: not met
                return False
        return True

    def describe(self) -> str:
        return " and ".join(f"{metric} {condition}" for metric, condition in self.where.items()) or "no constraint"


def parse_condition(metric: str, condition) -> tuple[Callable[[float, float], bool], float]:
    match = _CONDITION.match(str(condition))
    try:
        return COMPARISONS[match.group(1)], float(match.group(2))  # type: ignore[union-attr]
    except (AttributeError, ValueError):
        raise ValueError(
            f"{metric}: {condition!r} is not a condition; expected an operator (<=, <, >=, >, ==) and a number, "
            'e.g. "<= 5"'
        ) from None


def check_objectives(objectives: tuple[Objective, ...], champion: ChampionRule | None, metric: str) -> str | None:
    """The first problem with a file's objectives and champion rule, as 'key: why', or None."""
    seen = set()
    for index, objective in enumerate(objectives):
        if objective.metric in seen:
            return f"objectives.{index}.metric: {objective.metric} is listed twice; list each objective once"
        seen.add(objective.metric)
    if objectives and not seen & set(VALIDATION_METRICS):
        return (
            f"objectives: {', '.join(o.metric for o in objectives)}: expected at least one of "
            f"{', '.join(VALIDATION_METRICS)} (its best epoch is the checkpoint kept)"
        )
    if champion is not None:
        allowed = [o.metric for o in objectives] or [metric]
        if champion.metric not in allowed:
            return f"champion.metric: {champion.metric} is not an objective; expected one of: {', '.join(allowed)}"
    return None
