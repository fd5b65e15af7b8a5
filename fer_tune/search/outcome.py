"""How a trial ended, decided in one place: completed, stopped early by the pruner, or failed.

The console line, `trials.csv` and the MLflow run status all read `trial_outcome`, so they
never disagree. A trial is "stopped early" only when it ran fewer epochs than it was
given: its own `epochs` (which a space may search), not the sweep's `max_epochs`.

A trial stopped while no better than chance (`ChanceRule`: validation accuracy at or below the
validation split's majority-class rate, plus a margin) carries that as its reason; the pruner
stops it by the same rule (fer_tune.search.pruners), so the reason and the decision agree.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from fer_tune.core.config import trial_point

EPOCH = "epoch"  # the metric fit reports: epochs completed (the pruners' time attribute)
COMPLETED, STOPPED, FAILED = "completed", "stopped early", "failed"
OUTCOMES = (COMPLETED, STOPPED, FAILED)  # in the order summaries list them
RAY_ENDED = ("TERMINATED", "ERROR")  # Ray Tune's states of a trial that ran to its end or failed


@dataclass(frozen=True)
class Outcome:
    status: str  # COMPLETED, STOPPED or FAILED
    epochs: int  # epochs the trial ran
    planned_epochs: int  # epochs it was given
    reason: str | None = None  # FAILED: the error's last line; STOPPED: why, where a rule says (else None)

    def describe(self) -> str:
        if self.status == FAILED:
            return f"failed after {self.epochs} epochs: {self.reason}"
        if self.status == STOPPED:
            why = f": {self.reason}" if self.reason else ""
            return f"stopped early at epoch {self.epochs} of {self.planned_epochs}{why}"
        return f"completed {self.epochs} epochs"


def planned_epochs(trial_config: dict[str, Any] | None, max_epochs: int) -> int:
    """The epochs a trial was given: its own `epochs` parameter, else the sweep's max_epochs."""
    return int(trial_point(trial_config or {}).get("epochs", max_epochs))


CHANCE_METRIC = "val_accuracy"  # the chance rule reads accuracy whatever the sweep's metric


@dataclass(frozen=True)
class ChanceRule:
    """A trial no better than always answering the validation split's most common class is dead.

    `rate`: that class's share of the validation split (computed on the driver from the data);
    `margin`: how far above the rate a trial must be to count as learning; `grace`: the epochs
    every trial gets before the rule may stop it. The pruner stops a dead trial at once; a
    trial stopped at chance for whatever rule gets the reason.
    """

    rate: float
    margin: float = 0.0
    grace: int = 2

    @property
    def floor(self) -> float:
        return self.rate + self.margin

    def at_chance(self, accuracy: Any) -> bool:
        return isinstance(accuracy, int | float) and accuracy <= self.floor + 1e-9

    def dead(self, epoch: int, accuracy: Any) -> bool:
        """Whether a trial reporting `accuracy` after `epoch` epochs is to be stopped."""
        return epoch >= self.grace and self.at_chance(accuracy)

    def reason(self, accuracy: float) -> str:
        """Why a trial at `accuracy` is dead (the outcome's own words say at which epoch)."""
        margin = f" + margin {self.margin:g}" if self.margin else ""
        return f"no better than chance: {CHANCE_METRIC} {accuracy:.4f} <= majority-class rate {self.rate:.4f}{margin}"


def majority_rate(class_counts: list[int]) -> float:
    """The accuracy of always answering the most common class (of a split's class counts)."""
    total = sum(class_counts)
    return max(class_counts) / total if total else 0.0


def trial_outcome(
    epochs: int, planned: int, error: str | None = None, accuracy: Any = None, rule: ChanceRule | None = None
) -> Outcome:
    """`accuracy`: the trial's last validation accuracy, read with `rule` for a stopped trial's reason."""
    if error:
        return Outcome(FAILED, epochs, planned, error_line(error))
    if epochs >= planned:
        return Outcome(COMPLETED, epochs, planned)
    reason = rule.reason(accuracy) if rule is not None and rule.at_chance(accuracy) else None
    return Outcome(STOPPED, epochs, planned, reason)


def error_line(error: Any) -> str:
    """The one line that says why a trial failed: the last non-empty line of its error, without the
    exception's module path ("fer_tune.core.training.Diverged: diverged at ..." -> "Diverged: diverged at ...")."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    line = lines[-1] if lines else "unknown error"
    return re.sub(r"^(?:\w+\.)+(?=\w+(Error|Exception|Diverged)?: )", "", line)


def ended(trial: Any) -> bool:
    """Whether a Ray Tune trial has ended (rather than running, paused or pending)."""
    return trial.status in RAY_ENDED


def interrupted(trials: list, total: int) -> bool:
    """Whether a sweep stopped before its end (Ctrl+C): a trial was cut off, or fewer than `total` were started."""
    return not all(ended(t) for t in trials) or len(trials) < total


def outcome_of(trial: Any, max_epochs: int, error: str | None = None, rule: ChanceRule | None = None) -> Outcome:
    """The outcome of a live Ray Tune trial (what Tune callbacks receive)."""
    last = trial.last_result or {}
    epochs = int(last.get(EPOCH, 0))
    return trial_outcome(epochs, planned_epochs(trial.config, max_epochs), error, last.get(CHANCE_METRIC), rule)
