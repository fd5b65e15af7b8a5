"""A sweep's MLflow runs: one parent per sweep, one nested child per trial, found again by tag.

Why lookups by tag rather than remembered run ids: `Tuner.restore` (--resume) rebuilds the
Tune callback from the RunConfig pickled before the first trial ran, so whatever it learnt
is gone; `SweepRuns` finds the sweep's parent and each trial's child again and keeps
logging into them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Param
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from fer_tune.tracking.store import experiment_id
from fer_tune.uris import redact

SWEEP_TAG = "fer_tune.sweep"  # on every run of a sweep: finds the parent again on --resume
ROLE_TAG = "fer_tune.role"  # sweep | trial | rerun | champion
TRIAL_TAG = "ray.trial_id"  # finds a trial's child again on --resume
INTERRUPTED_TAG = "fer_tune.interrupted"
RERUN_ROLE = "rerun"  # a `select:` re-run of a trial with a fresh seed (fer_tune.search.reruns)
RERUN_OF_TAG, RERUN_SEED_TAG = "fer_tune.rerun_of", "fer_tune.rerun_seed"  # on a re-run: the trial, its seed
MAX_TAG_CHARS = 5000  # MLflow caps tag values at 8000 characters


def find_run(client: MlflowClient, experiment: str, **tags: str):
    """The oldest run of `experiment` carrying all of `tags` (keys may contain dots), or None."""
    query = " and ".join(f"tags.`{key}` = '{value}'" for key, value in tags.items())
    runs = client.search_runs([experiment], query, max_results=1, order_by=["attributes.start_time ASC"])
    return runs[0] if runs else None


def recorded_sweep(client: MlflowClient, experiment: str, model: str, sweep: str) -> str | None:
    """Where the store records a sweep named `sweep` already (its run in `experiment`, or a version of `model`
    registered from it), or None. A sweep's name is its identity there: a new sweep of that name would be
    filed under the old one's run and taken for a replay of its promotion."""
    found = client.get_experiment_by_name(experiment)
    if found is not None and found.lifecycle_stage == "active":
        run = find_run(client, found.experiment_id, **{SWEEP_TAG: sweep, ROLE_TAG: "sweep"})
        if run is not None:
            return f"run {run.info.run_id} of experiment {experiment}"
    versions = client.search_model_versions(f"name = '{model}' and tags.sweep = '{sweep}'")
    return f"{model} version {versions[0].version}" if versions else None


class SweepRuns:
    """Finds or creates one sweep's parent run and its trials' child runs, by tag.

    Holds only plain settings when pickled: the client and the run ids it has found are
    caches, rebuilt on first use after `Tuner.restore` unpickles it.
    """

    def __init__(self, uri: str, experiment: str, sweep: str, tags: dict[str, str], params: dict[str, Any]):
        self.uri, self.experiment, self.sweep = uri, experiment, sweep
        self.tags, self.params = tags, params  # the parent's, set when it is created
        self._reset()

    def forget(self) -> None:
        """Drop the cached client and run ids (after an outage): they are looked up again by tag."""
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
                tags = {**{k: redact(str(v)) for k, v in self.tags.items()}, SWEEP_TAG: self.sweep, ROLE_TAG: "sweep"}
                run = self.client.create_run(self.experiment_id, run_name=self.sweep, tags=tags)
                self.log_params(run.info.run_id, self.params)
            self._parent = run.info.run_id
        return self._parent

    def child(
        self,
        name: str,
        role: str,
        key: str | None = None,
        params: Callable[[], dict] | None = None,
        tags: dict[str, str] | None = None,
    ) -> str:
        """A run nested under the parent, found by its ray.trial_id `key` (if any), created on first use.

        `params` is called only when the run is created (it is looked up on every reported epoch);
        `tags` are set on it then too (a re-run's: which trial it re-trains, with which seed).
        """
        cache = key or f"{role}:{name}"
        if cache not in self._children:
            found = {TRIAL_TAG: key} if key else {ROLE_TAG: role}
            run = find_run(self.client, self.experiment_id, **{MLFLOW_PARENT_RUN_ID: self.parent(), **found})
            if run is None:
                mine = {MLFLOW_PARENT_RUN_ID: self.parent(), SWEEP_TAG: self.sweep, ROLE_TAG: role, **found}
                run = self.client.create_run(self.experiment_id, run_name=name, tags={**(tags or {}), **mine})
                self.log_params(run.info.run_id, params() if params else {})
            self._children[cache] = run.info.run_id
        return self._children[cache]

    def log_params(self, run_id: str, params: dict) -> None:
        items = [Param(key, redact(str(value))) for key, value in params.items()]
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
            self.client.set_tag(run_id, key, redact(str(value))[:MAX_TAG_CHARS])
        self.client.set_terminated(run_id, status=status)
