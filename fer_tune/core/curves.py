"""Learning curves without training: what the `curve` trainable (trainables/curve.py) reports.

A curve source answers "what does configuration C, trained with its seed, score after epoch E?"
with the metrics `fit` reports for that epoch, or None where training diverged (NaN loss).

`FormulaCurves` (the default) is a deterministic function of (configuration, seed), shaped like the
seed projects' tables: the learning rate matters most (too low stays at chance, too high diverges),
then dropout, width, filter size, model and augmentation; a curve rises towards its ceiling at a rate
its own, with a little per-seed, per-epoch noise. Different hyperparameters give different curves,
so searchers and pruners have something real to find. It is pure Python arithmetic: microseconds a call.

`CurveSettings` is a space file's `curve:` section: a sleep per epoch (so a test can cut a trial
mid-sweep) and a hold (a trial waits, before reporting a given epoch, until a file exists: a test
decides when the sweep may go on, instead of racing it).
"""

from __future__ import annotations

import hashlib
import math
import random
import time
from pathlib import Path
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field

from fer_tune.core.config import TrainConfig

MAX_SLEEP_S = 60.0  # a curve epoch's wall time, at most
HOLD_POLL_S = 0.05
MACS_PER_MS = 2e6  # the latency proxy: 2 GMAC/s, the order of one CPU core running a small CNN


class Hold(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    epoch: int = Field(ge=1)  # before reporting this epoch ...
    until: str  # ... wait until this file exists


class CurveSettings(BaseModel):
    """A space file's `curve:` section (used by `trainable: curve` only)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sleep_s: float = Field(0.0, ge=0, le=MAX_SLEEP_S, allow_inf_nan=False)  # wall time per epoch
    hold: Hold | None = None


class CurveSource(Protocol):
    def metrics(self, config: TrainConfig, epoch: int, chance: float) -> dict | None: ...


def curve_source(settings: CurveSettings) -> CurveSource:
    """The source the settings name (one today: the formula; a recorded table joins it here)."""
    return FormulaCurves()


def hold(settings: CurveSettings, epoch: int) -> None:
    """Wait, before reporting `epoch`, until the hold's file exists (no wait for other epochs or without a hold)."""
    if settings.hold is None or epoch != settings.hold.epoch:
        return
    gate = Path(settings.hold.until)
    while not gate.exists():
        time.sleep(HOLD_POLL_S)


def proxy_latency_ms(macs: int) -> float:
    """A deterministic stand-in for the measured batch-1 latency: proportional to the MACs."""
    return round(macs / MACS_PER_MS, 4)


def _unit(*parts: object) -> float:
    """A number in [0, 1) fixed by `parts` (stable across processes and Python versions, unlike hash())."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


class FormulaCurves:
    """Deterministic curves from the hyperparameters; see the module docstring."""

    BEST_LR = {"adam": 1e-3, "adamw": 1e-3, "sgd": 3e-2}  # the optimum of log10(lr), by optimizer
    DEAD_BELOW = 2.5  # decades under the optimum: the trial never leaves chance
    DIVERGES_ABOVE = 1.4  # decades over it: the loss becomes NaN early
    CEILING = 0.95

    def quality(self, config: TrainConfig) -> float:
        """Where in [0, 1] the configuration's curve ends, between chance and CEILING."""
        decades = math.log10(config.lr / self.BEST_LR.get(config.optimizer, 1e-3))
        score = 1.0 - 0.1 * decades**2
        score -= 0.6 * (config.dropout - 0.3) ** 2
        score += 0.04 * max(-3.0, min(2.0, math.log2(config.width)))
        score += 0.03 if config.kernel_size == 3 else 0.0
        score -= 0.08 * _unit("model", config.model) + 0.05 * _unit("augmentation", config.augmentation)
        score -= 0.04 * _unit("scheduler", config.scheduler)
        score -= 0.3 * config.label_smoothing**2 + 0.5 * min(config.weight_decay, 0.1)
        return max(0.0, min(1.0, score))

    def metrics(self, config: TrainConfig, epoch: int, chance: float) -> dict | None:
        decades = math.log10(config.lr / self.BEST_LR.get(config.optimizer, 1e-3))
        if decades > self.DIVERGES_ABOVE and epoch >= 1 + int(3 * _unit("diverge", config.seed, config.lr)):
            return None
        noise = random.Random(_unit("noise", config.model_dump_json(exclude={"epochs"}), epoch)).gauss(0.0, 0.006)
        if decades < -self.DEAD_BELOW:  # stays at the majority class, as a CNN with a tiny lr does
            accuracy, rate = chance, 0.0
        else:
            rate = 0.6 / (1 + abs(decades)) * (1.3 - 0.5 * _unit("augmentation", config.augmentation))
            reached = 1 - math.exp(-rate * epoch)
            accuracy = chance + (self.CEILING - chance) * self.quality(config) * reached + noise
        accuracy = max(0.0, min(1.0, accuracy))
        val_loss = -math.log(max(accuracy, 1e-3)) + 0.4 * (1 - accuracy)
        train_accuracy = max(0.0, min(1.0, accuracy + 0.02 * epoch * (1 - config.dropout) * rate))
        return {
            "train_loss": -math.log(max(train_accuracy, 1e-3)) + 0.3 * (1 - train_accuracy),
            "train_accuracy": train_accuracy,
            "val_loss": val_loss,
            "val_accuracy": accuracy,
            "val_macro_f1": accuracy * (0.6 + 0.35 * accuracy),
            "lr": config.lr,
        }
