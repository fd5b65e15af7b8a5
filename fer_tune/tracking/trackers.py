"""The tracker a sweep gets, chosen once in cli/sweep.py: MLflow's, or a do-nothing twin for --no-track.

Both have the same methods (as nanochat's `wandb` and `DummyWandb`), so running a sweep has no
`if tracking:` branch:

    tracking = open_tracking(space, track=True)     # validates the file's `mlflow:` section
    tracking.check(plan.name)                       # the store answers, takes writes, has no sweep of that name
    sweep = run_sweep(plan, data, callbacks=tracking.callbacks(plan.name, data))
    outcome = tracking.finish(sweep)                # artifacts, the champion; outcome.lines() to print

Another tracker (W&B, say) is a third class here with these methods, and its own settings module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from fer_tune.constants import RESULTS_DIR
from fer_tune.tracking.settings import mlflow_settings

if TYPE_CHECKING:  # MLflow loads only when a sweep is tracked: --no-track never imports it
    from ray import tune

    from fer_tune.data import FerDataset
    from fer_tune.search.sweep import Sweep
    from fer_tune.search.sweep_file import SpaceFile
    from fer_tune.tracking.tracker import Tracker, TrackingOutcome


class Outcome(Protocol):
    pending: int  # records not yet written (the store was unreachable)

    def lines(self) -> list[str]: ...  # what the CLI prints after the sweep


class SweepTracking(Protocol):
    def check(self, new_sweep: str | None = None) -> None:
        """Cheap checks that the tracker can record (before Ray starts or the data loads); with `new_sweep`,
        that it records no earlier sweep of that name (a new sweep, not a resumed one)."""

    def callbacks(self, name: str, data: FerDataset) -> list[tune.Callback]:
        """The Tune callbacks that record sweep `name` while it runs."""

    def finish(self, sweep: Sweep) -> Outcome:
        """Record the finished sweep (its results folder, its best model)."""

    def unfinished(self, name: str) -> bool:
        """Whether sweep `name` ran to its end but its records did not all reach the tracker."""

    def record_warm_start(self, sources: tuple[str, ...], any_data: bool) -> None:
        """Record which earlier sweeps seeded this one (after `callbacks`)."""


class MlflowTracking:
    """The MLflow side of a sweep (fer_tune.tracking.tracker), behind the SweepTracking methods."""

    def __init__(self, space: SpaceFile):
        self.space, self.settings = space, mlflow_settings(space)
        self.tracker: Tracker | None = None

    def check(self, new_sweep: str | None = None) -> None:
        from fer_tune.errors import FerTuneError
        from fer_tune.tracking.store import check_store, sqlite_path, tracking_uri
        from fer_tune.uris import redact

        uri = tracking_uri(self.settings.tracking_uri)
        check_store(uri, write=True)
        database = sqlite_path(uri)
        if new_sweep is None or (database is not None and not database.is_file()):  # a new store records nothing
            return
        from mlflow import MlflowClient

        from fer_tune.tracking.runs import recorded_sweep

        experiment = self.settings.experiment or self.space.name
        earlier = recorded_sweep(MlflowClient(uri), experiment, self.settings.register_as, new_sweep)
        if earlier is not None:
            raise FerTuneError(
                f"--name {new_sweep}: the MLflow store {redact(uri)} records a sweep of that name already "
                f"({earlier}), which this one would be filed under; choose another --name"
            )

    def callbacks(self, name: str, data: FerDataset) -> list[tune.Callback]:
        from fer_tune.tracking.tracker import Tracker

        self.tracker = Tracker.for_sweep(self.space, name, data)
        return self.tracker.callbacks()

    def finish(self, sweep: Sweep) -> TrackingOutcome:
        return self.tracker.finish(sweep)

    def record_warm_start(self, sources: tuple[str, ...], any_data: bool) -> None:
        self.tracker.record_warm_start(sources, any_data)

    def unfinished(self, name: str) -> bool:
        from fer_tune.tracking.tracker import STATE_FILE, Tracker

        if not (RESULTS_DIR / name / STATE_FILE).is_file():
            return False
        return not Tracker.resume(self.space, name).finished


class Untracked:
    """The outcome of an untracked sweep: nothing pending, nothing to say."""

    pending = 0

    def lines(self) -> list[str]:
        return []


class NoTracking:
    """The do-nothing twin (--no-track): the same methods; records nothing, touches no store."""

    def __init__(self, space: SpaceFile):
        mlflow_settings(space)  # the file is checked whole either way: a typo there is an error now, not later

    def check(self, new_sweep: str | None = None) -> None:
        pass

    def callbacks(self, name: str, data: FerDataset) -> list[tune.Callback]:
        return []

    def finish(self, sweep: Sweep) -> Untracked:
        return Untracked()

    def unfinished(self, name: str) -> bool:
        return False

    def record_warm_start(self, sources: tuple[str, ...], any_data: bool) -> None:
        pass


def open_tracking(space: SpaceFile, track: bool) -> SweepTracking:
    """MLflow's tracking for `space`, or with `track` false the do-nothing twin."""
    return MlflowTracking(space) if track else NoTracking(space)


__all__ = ["MlflowTracking", "NoTracking", "SweepTracking", "open_tracking"]
