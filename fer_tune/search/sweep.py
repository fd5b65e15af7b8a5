"""Run a search-space file as a Ray Tune sweep.

    from fer_tune.data import load_dataset
    from fer_tune.search.space import load_space
    from fer_tune.search.sweep import run_sweep

    space = load_space("search_spaces/quick.yaml")
    sweep = run_sweep(space, load_dataset("synthetic", n=space.data.n))
    sweep.trials  # pandas DataFrame, one row per trial; also written to results/<name>/

Searchers: optuna (TPE over the define-by-run space, default), random (Optuna's
random sampler over the same space), grid (every combination, Ray's grid
search). Pruners (Ray's trial schedulers): asha (default), hyperband, median,
none; all use our own `epoch` as their time attribute. The dataset reaches every
trial through Ray's object store, put there once. Tracking is not this module's
business: the caller passes Tune callbacks (the CLI passes MLflow's).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
import ray
from ray import tune

from fer_tune.core.checkpoint import load_checkpoint
from fer_tune.core.config import GRID_KEY
from fer_tune.data import FerDataset
from fer_tune.errors import FerTuneError
from fer_tune.search.outcome import EPOCH, outcome_of
from fer_tune.search.results import RESULTS_DIR, TrialRecord, write_results
from fer_tune.search.sampling import define_by_run, grid_points
from fer_tune.search.space import SpaceFile
from trainables import TRAINABLES

TIME_ATTR = EPOCH  # pruners count our epochs, not Ray's training_iteration


@dataclass
class Sweep:
    name: str
    space: SpaceFile
    data: FerDataset
    trials: pd.DataFrame  # one row per trial (results/<name>/trials.csv)
    records: list[TrialRecord]
    best: TrialRecord | None  # the best trial by the space's metric
    out_dir: Path
    wall_seconds: float
    result_grid: Any  # Ray's ResultGrid, for checkpoints

    def best_state(self) -> dict:
        """The training state in the best trial's best checkpoint (by the space's metric)."""
        if self.best is None:
            raise FerTuneError(f"sweep {self.name}: no trial produced a score, so there is no best checkpoint")
        result = next(r for r in self.result_grid if r.path == self.best.path)
        checkpoint = result.get_best_checkpoint(self.space.metric, self.space.mode) or result.checkpoint
        with checkpoint.as_directory() as folder:
            return load_checkpoint(folder)


def run_sweep(
    space: SpaceFile,
    data: FerDataset,
    *,
    name: str | None = None,
    address: str | None = None,
    resume: bool = False,
    storage: str | Path | None = None,
    callbacks: Sequence[tune.Callback] = (),
    verbose: int = 1,
) -> Sweep:
    """Run (or with `resume=True` continue) one sweep and write its results folder."""
    started = time.perf_counter()
    storage = storage_path(storage)
    name = name or sweep_name(space, storage, resume)
    # Per-epoch checkpoints with num_to_keep force frequent experiment snapshots; on local disk they
    # take milliseconds, so Ray's warning about them is noise here.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    init_ray(address)
    trainable = tune.with_resources(
        tune.with_parameters(TRAINABLES.get(space.trainable), data=data),  # one put into the object store
        {"cpu": space.resources.cpu, "gpu": space.resources.gpu},
    )
    if resume:
        path = f"{storage}/{name}"
        if not tune.Tuner.can_restore(path):
            raise FerTuneError(f"--resume: no interrupted sweep at {path}; start one without --resume")
        # Ray restores the callbacks pickled with the first run (ours look their MLflow runs up again
        # by tag), so `callbacks` only take effect in new sweeps.
        tuner = tune.Tuner.restore(path, trainable=trainable, resume_unfinished=True, resume_errored=True)
    else:
        tuner = tune.Tuner(
            trainable,
            param_space=_param_space(space),
            tune_config=_tune_config(space),
            run_config=_run_config(space, name, storage, [TrialSummary(space), *callbacks], verbose),
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
    return Sweep(name, space, data, trials, records, best, out_dir, time.perf_counter() - started, result_grid)


def _tune_config(space: SpaceFile) -> tune.TuneConfig:
    return tune.TuneConfig(
        metric=space.metric,
        mode=space.mode,
        search_alg=build_searcher(space),
        scheduler=build_pruner(space),
        num_samples=space.budget.num_samples,
        max_concurrent_trials=space.budget.max_concurrent,
        trial_dirname_creator=trial_dirname,
    )


def _run_config(space: SpaceFile, name: str, storage: str, callbacks: list, verbose: int) -> tune.RunConfig:
    return tune.RunConfig(
        name=name,
        storage_path=storage,
        callbacks=callbacks,
        verbose=verbose,
        checkpoint_config=tune.CheckpointConfig(
            num_to_keep=1,  # the best one; Ray also always keeps the latest, for resuming
            checkpoint_score_attribute=space.metric,
            checkpoint_score_order=space.mode,
        ),
    )


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


def build_pruner(space: SpaceFile):
    """Ray Tune's trial scheduler for the space's `pruner:`."""
    from ray.tune import schedulers

    config = space.pruner
    max_t = space.budget.max_epochs
    if config.name == "asha":
        grace = min(config.grace_period, max_t)
        return schedulers.ASHAScheduler(
            time_attr=TIME_ATTR, max_t=max_t, grace_period=grace, reduction_factor=config.reduction_factor
        )
    if config.name == "hyperband":
        return schedulers.HyperBandScheduler(time_attr=TIME_ATTR, max_t=max_t, reduction_factor=config.reduction_factor)
    if config.name == "median":
        return schedulers.MedianStoppingRule(time_attr=TIME_ATTR, grace_period=config.grace_period)
    return schedulers.FIFOScheduler()


def _param_space(space: SpaceFile) -> dict:
    if space.search.algorithm == "grid":
        return {GRID_KEY: tune.grid_search(grid_points(space))}
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


def storage_path(storage: str | Path | None) -> str:
    """Ray's storage: an absolute local path (default results/ray), or a URI (s3://, gs://) as given."""
    storage = str(storage or RESULTS_DIR / "ray")
    return storage if "://" in storage else str(Path(storage).resolve())


def sweep_name(space: SpaceFile, storage: str, resume: bool) -> str:
    """A new sweep's name (SPACE-DATE-TIME); with `resume`, the latest sweep of this space."""
    return (latest_sweep(storage, space.name) if resume else None) or f"{space.name}-{datetime.now():%Y%m%d-%H%M%S}"


def latest_sweep(storage: Path | str, space_name: str) -> str | None:
    """The most recently started sweep of this space under `storage`, for --resume without --name."""
    folder = Path(storage)
    candidates = sorted(folder.glob(f"{space_name}-*"), key=lambda p: p.stat().st_mtime) if folder.is_dir() else []
    return candidates[-1].name if candidates else None


def trial_dirname(trial) -> str:
    """Short trial folders (Ray's default embeds every parameter in the name)."""
    return f"{trial.trainable_name}_{trial.trial_id}"


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
        value = (trial.last_result or {}).get(self.metric)
        shown = f"{value:.4f}" if isinstance(value, float) else "n/a"
        print(
            f"[fer-tune] trial {trial.trial_id} {outcome_of(trial, self.max_epochs).describe()}: {self.metric} {shown}",
            flush=True,
        )

    def on_trial_error(self, iteration, trials, trial, **info):
        print(f"[fer-tune] trial {trial.trial_id} failed: see {trial.local_path}/error.txt", flush=True)
