"""MLflow tracking of a sweep, written from the Ray driver: one parent run, one nested child per trial.

    tracker = Tracker.for_sweep(space, name, data)   # NullTracker() when tracking is off
    tuner = tune.Tuner(..., run_config=tune.RunConfig(callbacks=tracker.callbacks()))
    sweep = ...                                      # tuner.fit() and the results folder
    registration = tracker.finish(sweep)             # artifacts, then fer_tune.champion

Where: MLFLOW_TRACKING_URI if set, else the space's `mlflow.tracking_uri`, else
sqlite:///results/mlflow.db; with a SQLite store, artifacts go to mlartifacts/ beside the
database (results/mlartifacts/). Experiment: `mlflow.experiment`, else the space's name.

What: the parent run (tag fer_tune.sweep=<name>) holds the search-space file, sweep.json,
the data summary, the leaderboard, tables and plots; each child (tags ray.trial_id and
mlflow.parentRunId) holds the trial's full TrainConfig as params and its per-epoch metrics
with step = epoch, and ends FINISHED, KILLED (stopped early by the scheduler; tag
fer_tune.stopped_at_epoch is the rung) or FAILED (tag fer_tune.error).

Why the driver: trials never touch the store, so concurrent trials never contend for one
SQLite file and worker nodes need no route to the tracking server. Why lookups by tag
rather than remembered run ids: `Tuner.restore` (--resume) rebuilds this callback from the
RunConfig pickled before the first trial ran, so whatever it learnt is gone; it finds the
sweep's parent and each trial's child again and keeps logging into them.
"""

from __future__ import annotations

import os
import re
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from mlflow import MlflowClient
from mlflow.entities import Metric, Param
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID
from ray import tune

from fer_tune.config import SpaceFile, make_train_config
from fer_tune.errors import FerTuneError
from fer_tune.results import CURVE_COLUMNS, RESULTS_DIR

if TYPE_CHECKING:
    from fer_tune.data import FerDataset
    from fer_tune.search import Sweep

DEFAULT_DB = RESULTS_DIR / "mlflow.db"
SWEEP_TAG = "fer_tune.sweep"  # on every run of a sweep: finds the parent again on --resume
ROLE_TAG = "fer_tune.role"  # sweep | trial | champion
TRIAL_TAG = "ray.trial_id"  # finds a trial's child again on --resume
INTERRUPTED_TAG = "fer_tune.interrupted"
METRICS = [c for c in CURVE_COLUMNS if c != "epoch"]  # logged per epoch, step = epoch
MAX_TAG_CHARS = 5000  # MLflow caps tag values at 8000 characters


def tracking_uri(configured: str | None = None) -> str:
    """MLFLOW_TRACKING_URI, else `configured` (the YAML's), else the SQLite file results/mlflow.db."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or configured
    if uri:
        return uri
    DEFAULT_DB.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{DEFAULT_DB.resolve()}"  # absolute: the store stays put if the cwd changes


def artifacts_dir(uri: str) -> Path | None:
    """mlartifacts/ beside a SQLite database (results/mlartifacts/ for the default store), else None."""
    if not uri.startswith("sqlite:///"):
        return None  # a server or another database keeps artifacts where it is configured to
    database = Path(uri.removeprefix("sqlite:///").split("?")[0])  # relative, or absolute after a 4th slash
    return database.resolve().parent / "mlartifacts"


def artifact_root(uri: str, experiment: str) -> str | None:
    """Where a new experiment's artifacts go: artifacts_dir/<experiment>/, or the store's choice."""
    folder = artifacts_dir(uri)
    return (folder / re.sub(r"[^\w.-]+", "_", experiment)).as_uri() if folder else None


def experiment_id(client: MlflowClient, name: str, uri: str) -> str:
    """The experiment `name`, created (with its artifact root) or restored from the trash as needed."""
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        # The kind tag keeps MLflow 3's UI from treating the experiment as a GenAI one.
        tags = {"mlflow.experimentKind": "custom_model_development"}
        return client.create_experiment(name, artifact_location=artifact_root(uri, name), tags=tags)
    if experiment.lifecycle_stage == "deleted":
        client.restore_experiment(experiment.experiment_id)
    return experiment.experiment_id


def find_run(client: MlflowClient, experiment: str, **tags: str):
    """The oldest run of `experiment` carrying all of `tags` (keys may contain dots), or None."""
    query = " and ".join(f"tags.`{key}` = '{value}'" for key, value in tags.items())
    runs = client.search_runs([experiment], query, max_results=1, order_by=["attributes.start_time ASC"])
    return runs[0] if runs else None


@contextmanager
def fluent_tracking(uri: str):
    """Point MLflow's fluent API (mlflow.pytorch.log_model, model loading) at `uri` for a block.

    MLflow's set_tracking_uri also writes MLFLOW_TRACKING_URI into the environment and its
    reset deletes it, so the caller's value is put back by hand.
    """
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    saved = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # tqdm bars per model download
    try:
        with _use_tracking_uri(uri):
            yield
    finally:
        if saved is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = saved


class SweepRuns:
    """Finds or creates one sweep's parent run and its trials' child runs, by tag.

    Holds only plain settings when pickled: the client and the run ids it has found are
    caches, rebuilt on first use after `Tuner.restore` unpickles it.
    """

    def __init__(self, uri: str, experiment: str, sweep: str, tags: dict[str, str], params: dict[str, Any]):
        self.uri, self.experiment, self.sweep = uri, experiment, sweep
        self.tags, self.params = tags, params  # the parent's, set when it is created
        self._reset()

    def _reset(self) -> None:
        self._client: MlflowClient | None = None
        self._experiment_id: str | None = None
        self._parent: str | None = None
        self._children: dict[str, str] = {}

    def __getstate__(self) -> dict:
        keep = ("uri", "experiment", "sweep", "tags", "params")
        return {key: self.__dict__[key] for key in keep}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._reset()

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            self._client = MlflowClient(tracking_uri=self.uri)
        return self._client

    @property
    def experiment_id(self) -> str:
        if self._experiment_id is None:
            self._experiment_id = experiment_id(self.client, self.experiment, self.uri)
        return self._experiment_id

    def parent(self) -> str:
        """The sweep's run id, created on first use."""
        if self._parent is None:
            run = find_run(self.client, self.experiment_id, **{SWEEP_TAG: self.sweep, ROLE_TAG: "sweep"})
            if run is None:
                tags = {**self.tags, SWEEP_TAG: self.sweep, ROLE_TAG: "sweep"}
                run = self.client.create_run(self.experiment_id, run_name=self.sweep, tags=tags)
                self.log_params(run.info.run_id, self.params)
            self._parent = run.info.run_id
        return self._parent

    def child(self, name: str, role: str, key: str | None = None, params: Callable[[], dict] | None = None) -> str:
        """A run nested under the parent, found by its ray.trial_id `key` (if any), created on first use.

        `params` is called only when the run is created (it is looked up on every reported epoch).
        """
        cache = key or f"{role}:{name}"
        if cache not in self._children:
            found = {TRIAL_TAG: key} if key else {ROLE_TAG: role}
            run = find_run(self.client, self.experiment_id, **{MLFLOW_PARENT_RUN_ID: self.parent(), **found})
            if run is None:
                tags = {MLFLOW_PARENT_RUN_ID: self.parent(), SWEEP_TAG: self.sweep, ROLE_TAG: role, **found}
                run = self.client.create_run(self.experiment_id, run_name=name, tags=tags)
                self.log_params(run.info.run_id, params() if params else {})
            self._children[cache] = run.info.run_id
        return self._children[cache]

    def log_params(self, run_id: str, params: dict) -> None:
        items = [Param(key, str(value)) for key, value in params.items()]
        for start in range(0, len(items), 100):  # log_batch takes at most 100 params
            self.client.log_batch(run_id, params=items[start : start + 100])

    def reopen(self, run_id: str) -> None:
        """Mark a run RUNNING again (a resumed sweep or trial)."""
        run = self.client.get_run(run_id)
        if run.info.status != "RUNNING":
            self.client.update_run(run_id, status="RUNNING")
        if INTERRUPTED_TAG in run.data.tags:
            self.client.delete_tag(run_id, INTERRUPTED_TAG)

    def end(self, run_id: str, status: str, **tags: Any) -> None:
        for key, value in tags.items():
            self.client.set_tag(run_id, key, str(value)[:MAX_TAG_CHARS])
        self.client.set_terminated(run_id, status=status)


class MlflowCallback(tune.Callback):
    """Logs every trial of a sweep as a child run of the sweep's parent run (see the module docstring)."""

    def __init__(self, runs: SweepRuns, max_epochs: int):
        self.runs, self.max_epochs = runs, max_epochs
        self.total_samples: int | None = None

    def setup(self, stop=None, num_samples=None, total_num_samples=None, **info):
        self.total_samples = total_num_samples
        self.runs.reopen(self.runs.parent())  # a resumed sweep continues in its first parent run

    def on_trial_start(self, iteration, trials, trial, **info):
        self.runs.reopen(self._child(trial))

    def on_trial_result(self, iteration, trials, trial, result, **info):
        step, now = int(result.get("epoch", 0)), int(time.time() * 1000)
        metrics = [Metric(key, float(result[key]), now, step) for key in METRICS if key in result]
        self.runs.client.log_batch(self._child(trial), metrics=metrics)

    def on_trial_complete(self, iteration, trials, trial, **info):
        epochs = int((trial.last_result or {}).get("epoch", 0))
        if epochs < self._planned_epochs(trial):  # ended before its epochs: the scheduler stopped it
            self.runs.end(self._child(trial), "KILLED", **{"fer_tune.stopped_at_epoch": epochs})
        else:
            self.runs.end(self._child(trial), "FINISHED")

    def on_trial_error(self, iteration, trials, trial, **info):
        # Ray writes error.txt beside the driver first and syncs it to storage later, so read it there.
        local = Path(trial.error_file) if trial.error_file else None
        text = (local.read_text() if local and local.is_file() else trial.get_error() or "unknown error").strip()
        run_id = self._child(trial)
        self.runs.client.log_text(run_id, text, "error.txt")
        self.runs.end(run_id, "FAILED", **{"fer_tune.error": text.splitlines()[-1]})

    def on_experiment_end(self, trials, **info):
        """Mark runs cut off by Ctrl+C as KILLED and interrupted; --resume reopens them."""
        cut_off = [t for t in trials if t.status not in ("TERMINATED", "ERROR")]
        for trial in cut_off:
            self.runs.end(self._child(trial), "KILLED", **{INTERRUPTED_TAG: "true"})
        if cut_off or len(trials) < (self.total_samples or 0):
            self.runs.end(self.runs.parent(), "KILLED", **{INTERRUPTED_TAG: "true"})
        else:
            self.runs.end(self.runs.parent(), "FINISHED")

    def _child(self, trial) -> str:
        return self.runs.child(str(trial), "trial", key=trial.trial_id, params=lambda: self._params(trial))

    def _planned_epochs(self, trial) -> int:
        return int(self._point(trial).get("epochs", self.max_epochs))

    @staticmethod
    def _point(trial) -> dict:
        config = trial.config or {}
        return config.get("point", config)  # grid sweeps nest the point

    def _params(self, trial) -> dict:
        """The full resolved TrainConfig, so any trial can be re-run from its run alone."""
        try:
            return make_train_config(self._point(trial)).model_dump()
        except FerTuneError:  # an invalid point: the trial will fail; keep what it was given
            return dict(self._point(trial))


class Tracker:
    """A sweep's MLflow side on the driver: the callback during the sweep, artifacts and model after it."""

    def __init__(self, runs: SweepRuns, space: SpaceFile):
        self.runs, self.space = runs, space

    @classmethod
    def for_sweep(cls, space: SpaceFile, sweep: str, data: "FerDataset") -> "Tracker":
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
            "scheduler.name": space.scheduler.name,
            "scheduler.grace_period": space.scheduler.grace_period,
            "scheduler.reduction_factor": space.scheduler.reduction_factor,
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

    def finish(self, sweep: "Sweep"):
        """Log the results folder to the parent run, then evaluate, log and register the best model."""
        from fer_tune.champion import promote_best

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


class NullTracker:
    """Tracking off: the same methods, doing nothing, so run_sweep has no `if tracking:`."""

    def callbacks(self) -> list:
        return []

    def finish(self, sweep: "Sweep") -> None:
        return None
