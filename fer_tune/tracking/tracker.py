"""A sweep's MLflow side on the driver: the Tune callback during the sweep, artifacts and the model after it.

    tracker = Tracker.for_sweep(space, name, data)
    sweep = run_sweep(prepare_sweep(space, name=name), data, callbacks=tracker.callbacks())
    outcome = tracker.finish(sweep)           # artifacts, then fer_tune.tracking.champion
    outcome.registration, outcome.pending     # pending: records kept on disk while the store was down

Where: MLFLOW_TRACKING_URI if set, else the space's `mlflow.tracking_uri`, else
sqlite:///results/mlflow.db; with a SQLite store, artifacts go to mlartifacts/ beside the
database (results/mlartifacts/). Experiment: `mlflow.experiment`, else the space's name.

What: the parent run (tag fer_tune.sweep=<name>) holds the search-space file, sweep.json,
the data summary, the leaderboard, tables and plots; its children are the trials and a `select:`
space's re-runs (fer_tune.tracking.callback) and the champion (fer_tune.tracking.champion). Each of them has the
sweep's data as its dataset input (fer_tune.tracking.dataset_input).

Files beside the sweep's results (results/<sweep>/): tracking.json (where the sweep is tracked and
whether its tracking finished) and, after an outage of the store, mlflow-pending.jsonl (the
records not written yet; `fer-tune results sync NAME` or --resume writes them).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from ray import tune

from fer_tune.constants import RESULTS_DIR
from fer_tune.data import FerDataset
from fer_tune.errors import FerTuneError
from fer_tune.search.sweep import Sweep, sweep_chance_rule
from fer_tune.search.sweep_file import SpaceFile
from fer_tune.tracking.callback import MlflowCallback
from fer_tune.tracking.champion import Registration, promote_best
from fer_tune.tracking.dataset_input import log_dataset
from fer_tune.tracking.earlier import WARM_ANY_DATA_TAG, WARM_START_TAG
from fer_tune.tracking.runs import SWEEP_TAG, SweepRuns
from fer_tune.tracking.settings import mlflow_settings
from fer_tune.tracking.store import tracking_uri
from fer_tune.tracking.writer import STORE_ERRORS, TrackingWriter
from fer_tune.uris import redact

STATE_FILE = "tracking.json"
PENDING_FILE = "mlflow-pending.jsonl"
# MLflow's HTTP client retries a request 7 times with backoff (about 2 minutes) by default; during a
# sweep the writer keeps what fails and tries again later, so a request gives up sooner.
SWEEP_HTTP_SETTINGS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}


@dataclass
class TrackingOutcome:
    registration: Registration | None  # None: no trial scored, or the store could not take it yet
    pending: int  # records kept on disk, not yet in the store
    store: str  # the store, as it may be shown (no password)
    pending_file: Path

    @property
    def message(self) -> str:
        if self.pending:
            return (
                f"MLflow store {self.store} unreachable: {self.pending} records kept in {self.pending_file}; "
                f"write them with `fer-tune results sync {self.pending_file.parent.name}` once it is back"
            )
        return self.registration.message if self.registration else f"tracked in MLflow store {self.store}"

    def lines(self) -> list[str]:
        """What the CLI prints after the sweep: the message and, once all is written, where to look."""
        browse = "browse the sweep with `fer-tune ui`; list the registry with `fer-tune models list`"
        return [self.message] if self.pending else [self.message, browse]


class Tracker:
    """A sweep's MLflow side on the driver: the callback during the sweep, artifacts and model after it."""

    def __init__(self, runs: SweepRuns, space: SpaceFile):
        self.runs, self.space = runs, space
        self.out_dir = RESULTS_DIR / runs.sweep
        self.writer = TrackingWriter(runs, self.out_dir / PENDING_FILE)
        self.rule = None  # the sweep's dead-trial rule, for the reason a trial stopped at chance

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
        if space.select is not None:  # the champion is the best mean over fresh seeds (fer_tune.search.reruns)
            params.update({"select.top_k": space.select.top_k, "select.seeds": space.select.seeds})
        for name, value in SWEEP_HTTP_SETTINGS.items():
            os.environ.setdefault(name, value)
        settings = mlflow_settings(space)
        uri = tracking_uri(settings.tracking_uri)
        tracker = cls(SweepRuns(uri, settings.experiment or space.name, sweep, tags, params), space)
        tracker.rule = sweep_chance_rule(space, data)
        if not tracker._state().get("finished"):
            tracker._save_state(finished=False)
        return tracker

    @classmethod
    def resume(cls, space: SpaceFile, sweep: str) -> Tracker:
        """The tracker of an earlier run of `sweep`, from its tracking.json (for `results sync`)."""
        path = RESULTS_DIR / sweep / STATE_FILE
        if not path.is_file():
            raise FerTuneError(f"{path}: not found; sweep {sweep} was run with --no-track or did not start")
        state = json.loads(path.read_text())
        uri = tracking_uri(mlflow_settings(space).tracking_uri)
        return cls(SweepRuns(uri, state["experiment"], sweep, state["tags"], state["params"]), space)

    def record_warm_start(self, sources: tuple[str, ...], any_data: bool) -> None:
        """Tag the parent run (made on the sweep's first event) with the sweeps it was warm-started from."""
        self.runs.tags.update({WARM_START_TAG: ",".join(sources), WARM_ANY_DATA_TAG: str(any_data).lower()})
        self._save_state(finished=False)

    @property
    def finished(self) -> bool:
        return bool(self._state().get("finished")) and not self.writer.pending

    def callbacks(self) -> list[tune.Callback]:
        return [MlflowCallback(self.writer, self.space.budget.max_epochs, self.rule)]

    def finish(self, sweep: Sweep) -> TrackingOutcome:
        """Write what is pending, log the results folder to the parent run, then evaluate, log and register
        the best model; while the store is unreachable, keep everything for `results sync`."""
        pending = self.writer.flush()
        registration = None
        if not pending:
            try:
                registration = self._finish(sweep)
                self._save_state(finished=True, registration=registration)
            except STORE_ERRORS:
                pending = max(1, self.writer.pending)  # the final step itself is what is pending
        return TrackingOutcome(registration, pending, redact(self.runs.uri), Path(self.writer.pending_file))

    def _finish(self, sweep: Sweep) -> Registration | None:
        parent = self.runs.parent()
        client = self.runs.client
        client.log_artifacts(parent, str(sweep.out_dir))  # sweep.json, leaderboard, tables, plots
        if Path(self.space.path).is_file():
            # a copy without credentials: the file may hold a tracking URI with a password or token
            text = redact(Path(self.space.path).read_text(encoding="utf-8", errors="replace"))
            client.log_text(parent, text, f"space/{Path(self.space.path).name}")
        client.log_dict(parent, sweep.data.summary(), "data_summary.json")
        if sweep.best is not None:
            client.log_metric(parent, f"best_{self.space.metric}", sweep.best.best_metric)
        if sweep.selection is not None and sweep.selection["champion"].any():  # its mean over the fresh seeds
            mean = sweep.selection.loc[sweep.selection["champion"], "mean"].iloc[0]
            client.log_metric(parent, f"champion_mean_{self.space.metric}", float(mean))
        registration = promote_best(sweep, self.runs) if sweep.best is not None else None
        everyone = client.search_runs([self.runs.experiment_id], f"tags.`{SWEEP_TAG}` = '{self.runs.sweep}'")
        log_dataset(client, [run.info.run_id for run in everyone], sweep.data)  # the runs table's Dataset column
        if self.space.multi_objective:  # every front member becomes a version, tagged with its objectives
            from fer_tune.tracking.front import register_front

            register_front(sweep, self.runs, registration)
        self.runs.end(parent, "FINISHED")
        return registration

    def _state(self) -> dict:
        path = self.out_dir / STATE_FILE
        return json.loads(path.read_text()) if path.is_file() else {}

    def _save_state(self, finished: bool, registration: Registration | None = None) -> None:
        state = {
            "store": redact(self.runs.uri),
            "experiment": self.runs.experiment,
            "tags": self.runs.tags,
            "params": self.runs.params,
            "finished": finished,
            "registration": registration.uri if registration else None,
        }
        self.out_dir.mkdir(parents=True, exist_ok=True)
        (self.out_dir / STATE_FILE).write_text(redact(json.dumps(state, indent=2, default=str)))
