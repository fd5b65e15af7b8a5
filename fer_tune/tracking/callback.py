"""The Tune callback that logs every trial of a sweep to MLflow, from the Ray driver.

Each trial is a child run of the sweep's parent run (tags ray.trial_id and
mlflow.parentRunId) holding the trial's full TrainConfig as params and its per-epoch
metrics with step = epoch. It ends as `fer_tune.search.outcome` says: FINISHED (completed),
KILLED (stopped early by the pruner; tag fer_tune.stopped_at_epoch is the rung) or FAILED
(tag fer_tune.error). A `select:` re-run (fer_tune.search.reruns) is a child too, with role `rerun`
and tags fer_tune.rerun_of (the trial it re-trains) and fer_tune.rerun_seed. Why the driver: trials
never touch the store, so concurrent trials never contend for one SQLite file and worker nodes need
no route to the tracking server.
"""

from __future__ import annotations

import time
from pathlib import Path

from ray import tune

from fer_tune.core.config import make_train_config, trial_point
from fer_tune.core.cost import COST_METRICS
from fer_tune.errors import FerTuneError
from fer_tune.search.outcome import COMPLETED, EPOCH, FAILED, STOPPED, ChanceRule, ended, interrupted, outcome_of
from fer_tune.search.reruns import rerun_of
from fer_tune.search.results import CURVE_COLUMNS
from fer_tune.tracking.runs import INTERRUPTED_TAG, RERUN_OF_TAG, RERUN_ROLE, RERUN_SEED_TAG
from fer_tune.tracking.writer import TrackingWriter

# logged per epoch, step = epoch; the cost metrics are constant over a trial's epochs
METRICS = [c for c in CURVE_COLUMNS if c != "epoch"] + list(COST_METRICS)
MLFLOW_STATUS = {COMPLETED: "FINISHED", STOPPED: "KILLED", FAILED: "FAILED"}  # a run's status by its trial's outcome


class MlflowCallback(tune.Callback):
    """Logs every trial of a sweep as a child run of the sweep's parent run (see the module docstring).

    Each event becomes a plain record for the `TrackingWriter`, which writes it at once or, while
    the store is unreachable, keeps it on disk and writes it later: an outage never stops a sweep.
    """

    def __init__(self, writer: TrackingWriter, max_epochs: int, rule: ChanceRule | None = None):
        self.writer, self.max_epochs = writer, max_epochs
        self.rule = rule  # a trial stopped at chance gets tag fer_tune.stop_reason
        self.total_samples: int | None = None

    def setup(self, stop=None, num_samples=None, total_num_samples=None, **info):
        self.total_samples = total_num_samples
        self.writer.flush()  # a resumed sweep first writes what an earlier outage left pending
        self.writer.write({"kind": "sweep_open"})  # a resumed sweep continues in its first parent run

    def on_trial_start(self, iteration, trials, trial, **info):
        self.writer.write({"kind": "trial_open", **self._trial(trial), "params": self._params(trial)})

    def on_trial_result(self, iteration, trials, trial, result, **info):
        values = {key: float(result[key]) for key in METRICS if key in result}
        step, now = int(result.get(EPOCH, 0)), int(time.time() * 1000)
        self.writer.write({"kind": "metrics", **self._trial(trial), "step": step, "time": now, "values": values})

    def on_trial_complete(self, iteration, trials, trial, **info):
        outcome = outcome_of(trial, self.max_epochs, rule=self.rule)
        tags = {"fer_tune.stopped_at_epoch": outcome.epochs} if outcome.status == STOPPED else {}
        if outcome.status == STOPPED and outcome.reason:
            tags["fer_tune.stop_reason"] = outcome.reason
        self.writer.write(
            {"kind": "trial_end", **self._trial(trial), "status": MLFLOW_STATUS[outcome.status], "tags": tags}
        )

    def on_trial_error(self, iteration, trials, trial, **info):
        # Ray writes error.txt beside the driver first and syncs it to storage later, so read it there.
        local = Path(trial.error_file) if trial.error_file else None
        text = (local.read_text() if local and local.is_file() else trial.get_error() or "unknown error").strip()
        outcome = outcome_of(trial, self.max_epochs, error=text)
        assert outcome.status == FAILED
        tags = {"fer_tune.error": outcome.reason}
        self.writer.write(
            {
                "kind": "trial_end",
                **self._trial(trial),
                "status": MLFLOW_STATUS[outcome.status],
                "tags": tags,
                "error_text": text,
            }
        )

    def on_experiment_end(self, trials, **info):
        """Mark runs cut off by Ctrl+C as KILLED and interrupted; --resume reopens them."""
        tags = {INTERRUPTED_TAG: "true"}
        for trial in trials:
            if not ended(trial):
                self.writer.write({"kind": "trial_end", **self._trial(trial), "status": "KILLED", "tags": tags})
        if interrupted(trials, self.total_samples or 0):
            self.writer.write({"kind": "sweep_end", "status": "KILLED", "tags": tags})
        else:
            self.writer.write({"kind": "sweep_end", "status": "FINISHED"})

    @staticmethod
    def _trial(trial) -> dict:
        """Which run a record is for: a trial's, or a `select:` re-run's (role rerun, tagged with what it re-trains)."""
        marker = rerun_of(trial.config)
        if marker is None:
            return {"trial": trial.trial_id, "name": str(trial)}
        tags = {RERUN_OF_TAG: marker["of"], RERUN_SEED_TAG: str(marker["seed"])}
        name = f"rerun {marker['of']} seed {marker['seed']}"
        return {"trial": trial.trial_id, "name": name, "role": RERUN_ROLE, "run_tags": tags}

    @staticmethod
    def _params(trial) -> dict:
        """The full resolved TrainConfig, so any trial can be re-run from its run alone."""
        try:
            return make_train_config(trial.config or {}).model_dump(mode="json")
        except FerTuneError:  # an invalid point: the trial will fail; keep what it was given
            return dict(trial_point(trial.config or {}))
