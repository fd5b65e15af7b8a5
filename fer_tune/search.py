"""Run a search-space file as a Ray Tune sweep: `fer-tune run search_spaces/quick.yaml`.

    from fer_tune.config import load_space
    from fer_tune.search import run_sweep

    sweep = run_sweep(load_space("search_spaces/quick.yaml"))
    sweep.trials  # pandas DataFrame, one row per trial; also written to results/<name>/

Searchers: optuna (TPE over the define-by-run space, default), random (Optuna's
random sampler over the same space), grid (every combination, Ray's grid
search). Schedulers: asha (default), hyperband, median, none; all use our own
`epoch` as their time attribute. The dataset is loaded once on the driver and
reaches every trial through Ray's object store.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
import ray
from ray import tune

from fer_tune.config import SpaceFile
from fer_tune.data import FerDataset, load_dataset
from fer_tune.errors import FerTuneError
from fer_tune.results import RESULTS_DIR, TrialRecord, leaderboard_markdown, write_results
from fer_tune.sampling import define_by_run, grid_points
from fer_tune.tracking import NullTracker, Tracker
from trainables import TRAINABLES

TIME_ATTR = "epoch"  # schedulers count our epochs, not Ray's training_iteration


@dataclass
class Sweep:
    name: str
    space: SpaceFile
    data: FerDataset
    trials: pd.DataFrame  # one row per trial (results/<name>/trials.csv)
    best: TrialRecord | None  # the best trial by the space's metric
    result_grid: Any  # Ray's ResultGrid, for checkpoints
    out_dir: Path
    wall_seconds: float
    registration: Any = None  # fer_tune.champion.Registration: the registered best model, when tracked


def run_sweep(
    space: SpaceFile,
    *,
    name: str | None = None,
    data_source: str | None = None,
    address: str | None = None,
    resume: bool = False,
    storage: str | Path | None = None,
    callbacks: list | None = None,
    verbose: int = 1,
    track: bool = True,
) -> Sweep:
    """Run (or with `resume=True` continue) one sweep and write its results folder.

    With `track`, every trial is logged to MLflow and the best model is registered (fer_tune.tracking).
    """
    started = time.perf_counter()
    storage = str(storage or RESULTS_DIR / "ray")
    if "://" not in storage:  # a local or NFS path; URIs (s3://, gs://) go to Ray as they are
        storage = str(Path(storage).resolve())
    name = name or (latest_sweep(storage, space.name) if resume else None) or _new_name(space.name)
    data = load_dataset(
        data_source or space.data.source, n=space.data.n, seed=space.data.seed, val_fraction=space.data.val_fraction
    )
    # Per-epoch checkpoints with num_to_keep force frequent experiment snapshots; on local disk they
    # take milliseconds, so Ray's warning about them is noise here.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    init_ray(address)
    trainable = tune.with_resources(
        tune.with_parameters(TRAINABLES[space.trainable], data=data),  # one put into the object store
        {"cpu": space.resources.cpu, "gpu": space.resources.gpu},
    )
    tracker = Tracker.for_sweep(space, name, data) if track else NullTracker()
    callbacks = [TrialSummary(space), *tracker.callbacks()] + list(callbacks or [])
    if resume:
        path = f"{storage}/{name}"
        if not tune.Tuner.can_restore(path):
            raise FerTuneError(f"--resume: no interrupted sweep at {path}; start one without --resume")
        # Ray restores the callbacks pickled with the first run (ours look their MLflow runs up again
        # by tag), so `callbacks` built above only take effect in new sweeps.
        tuner = tune.Tuner.restore(path, trainable=trainable, resume_unfinished=True, resume_errored=True)
    else:
        tuner = tune.Tuner(
            trainable,
            param_space=_param_space(space),
            tune_config=tune.TuneConfig(
                metric=space.metric,
                mode=space.mode,
                search_alg=build_searcher(space),
                scheduler=build_scheduler(space),
                num_samples=space.budget.num_samples,
                max_concurrent_trials=space.budget.max_concurrent,
                trial_dirname_creator=trial_dirname,
            ),
            run_config=tune.RunConfig(
                name=name,
                storage_path=str(storage),
                callbacks=callbacks,
                verbose=verbose,
                checkpoint_config=tune.CheckpointConfig(
                    num_to_keep=1,  # the best one; Ray also always keeps the latest, for resuming
                    checkpoint_score_attribute=space.metric,
                    checkpoint_score_order=space.mode,
                ),
            ),
        )
    result_grid = tuner.fit()
    if _interrupted(result_grid, space):
        raise FerTuneError(
            f"sweep {name} interrupted; continue it with: fer-tune run {space.path} --resume --name {name}"
        )
    records = [TrialRecord.from_result(result, space) for result in result_grid]
    out_dir = RESULTS_DIR / name
    trials = write_results(out_dir, records, space, data.summary())
    best = _best(records, space)
    sweep = Sweep(name, space, data, trials, best, result_grid, out_dir, time.perf_counter() - started)
    sweep.registration = tracker.finish(sweep)
    return sweep


def build_searcher(space: SpaceFile):
    algorithm = space.search.algorithm
    if algorithm == "grid":
        from ray.tune.search import BasicVariantGenerator

        return BasicVariantGenerator(max_concurrent=space.budget.max_concurrent or 0)
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    sampler = (
        optuna.samplers.TPESampler(seed=space.search.seed)
        if algorithm == "optuna"
        else optuna.samplers.RandomSampler(seed=space.search.seed)
    )
    return OptunaSearch(space=define_by_run(space), metric=space.metric, mode=space.mode, sampler=sampler)


def build_scheduler(space: SpaceFile):
    from ray.tune import schedulers

    config = space.scheduler
    max_t = space.budget.max_epochs
    if config.name == "asha":
        grace = min(config.grace_period, max_t)
        return schedulers.ASHAScheduler(
            time_attr=TIME_ATTR, max_t=max_t, grace_period=grace, reduction_factor=config.reduction_factor
        )
    if config.name == "hyperband":
        return schedulers.HyperBandScheduler(
            time_attr=TIME_ATTR, max_t=max_t, reduction_factor=config.reduction_factor
        )
    if config.name == "median":
        return schedulers.MedianStoppingRule(time_attr=TIME_ATTR, grace_period=config.grace_period)
    return schedulers.FIFOScheduler()


def _param_space(space: SpaceFile) -> dict:
    if space.search.algorithm == "grid":
        return {"point": tune.grid_search(grid_points(space))}
    return {}  # Optuna's define-by-run function is the space


def init_ray(address: str | None) -> None:
    """Join the cluster at `address` (or RAY_ADDRESS), else start local Ray sized to this machine."""
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address and address != "local":
        ray.init(address=address)  # fer-tune must be installed on every node (see README)
    else:  # "local" starts a new instance even where a `ray start` cluster runs on this machine
        ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False)


def latest_sweep(storage: Path | str, space_name: str) -> str | None:
    """The most recently started sweep of this space under `storage`, for --resume without --name."""
    folder = Path(storage)
    candidates = sorted(folder.glob(f"{space_name}-*"), key=lambda p: p.stat().st_mtime) if folder.is_dir() else []
    return candidates[-1].name if candidates else None


def trial_dirname(trial) -> str:
    """Short trial folders (Ray's default embeds every parameter in the name)."""
    return f"{trial.trainable_name}_{trial.trial_id}"


def _new_name(space_name: str) -> str:
    return f"{space_name}-{datetime.now():%Y%m%d-%H%M%S}"


def _interrupted(result_grid, space: SpaceFile) -> bool:
    """Whether Ray returned from Ctrl+C rather than from finishing the sweep.

    Ray returns normally either way, and marks cut-off trials TERMINATED in memory. The experiment
    state it saved on the interrupt (the one --resume reads) still holds them as RUNNING or PENDING,
    and samples the searcher had not proposed yet are missing altogether.
    """
    per_sample = len(grid_points(space)) if space.search.algorithm == "grid" else 1
    saved = tune.ExperimentAnalysis(result_grid.experiment_path).trials
    unfinished = [t for t in saved if t.status not in ("TERMINATED", "ERROR")]
    return bool(unfinished) or len(saved) < per_sample * space.budget.num_samples


def _best(records: list[TrialRecord], space: SpaceFile) -> TrialRecord | None:
    scored = [r for r in records if r.best_metric is not None]
    if not scored:
        return None
    pick = max if space.mode == "max" else min
    return pick(scored, key=lambda r: r.best_metric)


class TrialSummary(tune.Callback):
    """Prints one line per finished trial: its outcome, epochs and metric."""

    def __init__(self, space: SpaceFile):
        self.metric, self.max_epochs = space.metric, space.budget.max_epochs

    def on_trial_complete(self, iteration, trials, trial, **info):
        result = trial.last_result or {}
        epochs = result.get(TIME_ATTR, 0)
        outcome = "stopped early" if epochs < self.max_epochs else "completed"
        value = result.get(self.metric)
        shown = f"{value:.4f}" if isinstance(value, float) else "n/a"
        print(f"[fer-tune] trial {trial.trial_id} {outcome} after {epochs} epochs: {self.metric} {shown}", flush=True)

    def on_trial_error(self, iteration, trials, trial, **info):
        print(f"[fer-tune] trial {trial.trial_id} failed: see {trial.local_path}/error.txt", flush=True)


def print_leaderboard(sweep: Sweep, top: int = 10) -> None:
    print(leaderboard_markdown(sweep.trials, sweep.space.metric, sweep.space.mode, top))
