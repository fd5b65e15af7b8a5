"""A sweep's MLflow side on the driver: the Tune callback during the sweep, artifacts and the model after it.

    tracker = Tracker.for_sweep(space, name, data)
    sweep = run_sweep(space, data, name=name, callbacks=tracker.callbacks())
    registration = tracker.finish(sweep)             # artifacts, then fer_tune.tracking.champion

Where: MLFLOW_TRACKING_URI if set, else the space's `mlflow.tracking_uri`, else
sqlite:///results/mlflow.db; with a SQLite store, artifacts go to mlartifacts/ beside the
database (results/mlartifacts/). Experiment: `mlflow.experiment`, else the space's name.

What: the parent run (tag fer_tune.sweep=<name>) holds the search-space file, sweep.json,
the data summary, the leaderboard, tables and plots; its children are the trials
(fer_tune.tracking.callback) and the champion (fer_tune.tracking.champion).
"""

from __future__ import annotations

from pathlib import Path

from ray import tune

from fer_tune.data import FerDataset
from fer_tune.search.space import SpaceFile
from fer_tune.search.sweep import Sweep
from fer_tune.tracking.callback import MlflowCallback
from fer_tune.tracking.champion import Registration, promote_best
from fer_tune.tracking.runs import SweepRuns
from fer_tune.tracking.store import tracking_uri


class Tracker:
    """A sweep's MLflow side on the driver: the callback during the sweep, artifacts and model after it."""

    def __init__(self, runs: SweepRuns, space: SpaceFile):
        self.runs, self.space = runs, space

    @classmethod
    def for_sweep(cls, space: SpaceFile, sweep: str, data: FerDataset) -> Tracker:
        tags = {
            "fer_tune.space_path": space.path,
            "fer_tune.data_fingerprint": data.fingerprint(),
            "fer_tune.data_source": data.source,
        }
        params = {
            "metric": space.metric,
            "mode": space.mode,
            "trainable": space.trainable,
            "search.algorithm": space.search.algorithm,
            "search.seed": space.search.seed,
            "pruner.name": space.pruner.name,
            "pruner.grace_period": space.pruner.grace_period,
            "pruner.reduction_factor": space.pruner.reduction_factor,
            "budget.num_samples": space.budget.num_samples,
            "budget.max_epochs": space.budget.max_epochs,
            "budget.max_concurrent": space.budget.max_concurrent,
            "data.source": data.source,
        }
        uri = tracking_uri(space.mlflow.tracking_uri)
        runs = SweepRuns(uri, space.mlflow.experiment or space.name, sweep, tags, params)
        return cls(runs, space)

    def callbacks(self) -> list[tune.Callback]:
        return [MlflowCallback(self.runs, self.space.budget.max_epochs)]

    def finish(self, sweep: Sweep) -> Registration | None:
        """Log the results folder to the parent run, then evaluate, log and register the best model."""
        parent = self.runs.parent()
        client = self.runs.client
        client.log_artifacts(parent, str(sweep.out_dir))  # sweep.json, leaderboard, tables, plots
        if Path(self.space.path).is_file():
            client.log_artifact(parent, self.space.path, "space")
        client.log_dict(parent, sweep.data.summary(), "data_summary.json")
        if sweep.best is not None:
            client.log_metric(parent, f"best_{self.space.metric}", sweep.best.best_metric)
        registration = promote_best(sweep, self.runs) if sweep.best is not None else None
        self.runs.end(parent, "FINISHED")
        return registration
