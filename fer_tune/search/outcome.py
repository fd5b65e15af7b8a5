"""How a trial ended, decided in one place: completed, stopped early by the pruner, or failed.

The console line, `trials.csv` and the MLflow run status all read `trial_outcome`, so they
never disagree. A trial is "stopped early" only when it ran fewer epochs than it was
given: its own `epochs` (which a space may search), not the sweep's `max_epochs`.
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
MLFLOW_STATUS = {COMPLETED: "FINISHED", STOPPED: "KILLED", FAILED: "FAILED"}


@dataclass(frozen=True)
class Outcome:
    status: str  # COMPLETED, STOPPED or FAILED
    epochs: int  # epochs the trial ran
    planned_epochs: int  # epochs it was given
    reason: str | None = None  # FAILED only: the error's last line

    @property
    def mlflow_status(self) -> str:
        return MLFLOW_STATUS[self.status]

    def describe(self) -> str:
        if self.status == FAILED:
            return f"failed after {self.epochs} epochs: {self.reason}"
        if self.status == STOPPED:
            return f"stopped early at epoch {self.epochs} of {self.planned_epochs}"
        return f"completed {self.epochs} epochs"


def planned_epochs(trial_config: dict[str, Any] | None, max_epochs: int) -> int:
    """The epochs a trial was given: its own `epochs` parameter, else the sweep's max_epochs."""
    return int(trial_point(trial_config or {}).get("epochs", max_epochs))


def trial_outcome(epochs: int, planned: int, error: str | None = None) -> Outcome:
    if error:
        return Outcome(FAILED, epochs, planned, error_line(error))
    return Outcome(STOPPED if epochs < planned else COMPLETED, epochs, planned)


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


def outcome_of(trial: Any, max_epochs: int, error: str | None = None) -> Outcome:
    """The outcome of a live Ray Tune trial (what Tune callbacks receive)."""
    epochs = int((trial.last_result or {}).get(EPOCH, 0))
    return trial_outcome(epochs, planned_epochs(trial.config, max_epochs), error)
