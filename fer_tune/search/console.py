"""What a person watching a sweep sees: a line per finished trial and one progress line.

    [fer-tune] trial 3f2a_00004 completed 6 epochs: val_accuracy 0.6312  (model=vgg lr=0.0021 ...)
    [fer-tune] trial 3f2a_00005 failed after 2 epochs: Diverged: diverged at epoch 2 ... (results/ray/.../error.txt)
    [fer-tune] 7/10 done, 2 running, 1 pending; best val_accuracy 0.6312; 3m12s elapsed, ~1m20s left

On a terminal the progress line redraws in place; in a log it is printed at most every
PROGRESS_EVERY_S seconds. Ray's, MLflow's and Optuna's own lines appear only with --verbose
(fer_tune/cli/quiet.py).
"""

from __future__ import annotations

import math
import os
import sys
import time

from ray import tune

from fer_tune.core.config import trial_point
from fer_tune.search.direction import better
from fer_tune.search.outcome import FAILED, ChanceRule, ended, outcome_of
from fer_tune.search.reruns import rerun_of
from fer_tune.search.sweep_file import SpaceFile

PROGRESS_EVERY_S = 30.0  # in a log file; on a terminal every controller step
PREFIX = "[fer-tune]"


class ConsoleReport(tune.Callback):
    """One line per finished trial and a live progress line (see the module docstring)."""

    def __init__(self, space: SpaceFile, total_trials: int, error_root: str, rule: ChanceRule | None = None):
        self.rule = rule  # why a trial stopped at chance (fer_tune.search.outcome)
        self.metric, self.mode, self.max_epochs = space.metric, space.mode, space.budget.max_epochs
        self.searched = [p.name for p in space.space if p.kind != "fixed"]
        self.total, self.error_root = total_trials, error_root
        self.started = time.monotonic()
        self.best: float | None = None
        self.last_progress = -math.inf
        self.interactive = sys.stdout.isatty()

    def __getstate__(self) -> dict:  # pickled with the experiment: the clock restarts on --resume
        return {**self.__dict__, "started": None, "last_progress": -math.inf}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.started = time.monotonic()
        self.interactive = sys.stdout.isatty()

    def on_trial_complete(self, iteration, trials, trial, **info):
        value = (trial.last_result or {}).get(self.metric)
        if isinstance(value, float) and math.isfinite(value):
            self.best = value if better(value, self.best, self.mode) else self.best
        outcome = outcome_of(trial, self.max_epochs, rule=self.rule)
        shown = f"{value:.4f}" if isinstance(value, float) else "n/a"
        score = "" if self.metric in (outcome.reason or "") else f": {self.metric} {shown}"  # said once
        self._say(f"trial {trial.trial_id} {outcome.describe()}{score}  ({self._params(trial)})")

    def on_trial_error(self, iteration, trials, trial, **info):
        outcome = outcome_of(trial, self.max_epochs, error=error_text(trial))
        assert outcome.status == FAILED
        where = f"{self.error_root}/{trial.trainable_name}_{trial.trial_id}/error.txt"
        self._say(f"trial {trial.trial_id} {outcome.describe()}  ({self._params(trial)}; {where})")

    def on_step_end(self, iteration, trials, **info):
        now = time.monotonic()
        if now - self.last_progress < (0 if self.interactive else PROGRESS_EVERY_S):
            return
        self.last_progress = now
        line = self.progress(trials, now - self.started)
        if self.interactive:
            print(f"\r{PREFIX} {line}\033[K", end="", flush=True)
        else:
            print(f"{PREFIX} {line}", flush=True)

    def on_experiment_end(self, trials, **info):
        if self.interactive:
            print(flush=True)  # leave the progress line on screen

    def progress(self, trials, elapsed: float) -> str:
        done = sum(ended(t) for t in trials)
        running = sum(t.status == "RUNNING" for t in trials)
        pending = max(0, self.total - done - running)
        best = f"best {self.metric} {self.best:.4f}" if self.best is not None else f"no {self.metric} yet"
        left = f", ~{_duration(elapsed * (self.total - done) / done)} left" if done else ""
        counts = f"{done}/{self.total} done, {running} running, {pending} pending"
        return f"{counts}; {best}; {_duration(elapsed)} elapsed{left}"

    def _say(self, line: str) -> None:
        start = "\r\033[K" if self.interactive else ""
        print(f"{start}{PREFIX} {line}", flush=True)

    def _params(self, trial) -> str:
        point = trial_point(trial.config or {})
        shown = " ".join(f"{name}={_short(point[name])}" for name in self.searched if name in point)
        marker = rerun_of(trial.config)  # a `select:` re-run says which trial it re-trains
        return f"re-run of {marker['of']} with seed {marker['seed']}: {shown}" if marker else shown


def error_text(trial) -> str:
    """A failed trial's error, as its error.txt holds it. Tune writes that file on the driver
    (trial.error_file) and copies it to storage later; trial.get_error() reads the storage copy,
    which does not exist yet when on_trial_error runs."""
    local = getattr(trial, "error_file", None)
    if local and os.path.isfile(local):
        with open(local, encoding="utf-8", errors="replace") as file:
            return file.read()
    return trial.get_error() or "unknown error"


def _short(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"
