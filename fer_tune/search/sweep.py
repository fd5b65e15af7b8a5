"""Run a search-space file as a Ray Tune sweep.

    from fer_tune.data import load_dataset
    from fer_tune.search.sweep_file import load_space
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

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
from ray import tune

from fer_tune.core.checkpoint import load_checkpoint
from fer_tune.core.config import GRID_KEY
from fer_tune.core.models import capabilities, fetch_pretrained
from fer_tune.data import FerDataset
from fer_tune.errors import FerTuneError
from fer_tune.search.cluster import check_resources, connect_ray
from fer_tune.search.console import ConsoleReport
from fer_tune.search.direction import best_of
from fer_tune.search.mo_pruner import build_scheduler
from fer_tune.search.outcome import ChanceRule, interrupted
from fer_tune.search.pareto import pick_champion
from fer_tune.search.pruners import TIME_ATTR, DeadTrialStop, build_pruner, chance_rule
from fer_tune.search.results import RESULTS_DIR, TrialRecord, write_results
from fer_tune.search.sampling import grid_points
from fer_tune.search.searchers import build_searcher
from fer_tune.search.sweep_file import SpaceFile, load_space
from fer_tune.search.warm_start import WarmStart
from fer_tune.uris import redact
from trainables import TRAINABLES

WARM_FILE = "warm_start.json"  # results/<name>/: what a warm-started sweep was seeded from

__all__ = ["TIME_ATTR", "Sweep", "build_pruner", "build_searcher", "run_sweep"]


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
        return self.state_of(self.best)

    def state_of(self, record: TrialRecord) -> dict:
        """The training state in a trial's best checkpoint (by the space's metric)."""
        result = next(r for r in self.result_grid if r.path == record.path)
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
    verbose: int = 0,
    data_source: str | None = None,
    warm: WarmStart | None = None,
) -> Sweep:
    """Run (or with `resume=True` continue) one sweep and write its results folder.

    `data_source` is recorded in sweep.json (where `data` came from, if not the space's own source),
    so that `results sync` can rebuild the sweep; `verbose` > 0 adds Ray's trial tables. `warm`: earlier
    trials mapped into this space (fer_tune.search.warm_start) seed a new sweep's searcher and pruner.
    """
    started = time.perf_counter()
    storage = storage_path(storage)
    name = name or sweep_name(space, storage, resume)
    # Per-epoch checkpoints with num_to_keep force frequent experiment snapshots; on local disk they
    # take milliseconds, so Ray's warning about them is noise here.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    prepare_cluster(space, address)
    unavailable = missing_weights(space)
    rule = sweep_chance_rule(space, data)
    if warm is not None and not resume:  # kept beside the results: a resumed run writes sweep.json again
        (RESULTS_DIR / name).mkdir(parents=True, exist_ok=True)
        (RESULTS_DIR / name / WARM_FILE).write_text(json.dumps(warm.record(space.mode), indent=2))
    trainable = tune.with_resources(
        # one put into the object store; trials needing missing weights fail at once with the driver's reason
        tune.with_parameters(TRAINABLES.get(space.trainable), data=data, unavailable=unavailable),
        {"cpu": space.resources.cpu, "gpu": space.resources.gpu},
    )
    if resume:
        path = check_resumable(name, storage)
        # Ray restores the callbacks pickled with the first run (ours look their MLflow runs up again
        # by tag), so `callbacks` only take effect in new sweeps.
        tuner = tune.Tuner.restore(path, trainable=trainable, resume_unfinished=True, resume_errored=True)
    else:
        tuner = tune.Tuner(
            trainable,
            param_space=_param_space(space),
            tune_config=_tune_config(space, f"{storage}/{name}", rule, warm),
            run_config=_run_config(
                space, name, storage, [_console(space, storage, name, rule), *callbacks], verbose, rule
            ),
        )
    result_grid = tuner.fit()
    if _interrupted(result_grid, space):
        raise FerTuneError(
            f"sweep {name} interrupted; continue it with: fer-tune run {space.path} --resume --name {name}"
        )
    run = {"storage": storage, "data_source": data_source, "data_fingerprint": data.fingerprint()}
    if (RESULTS_DIR / name / WARM_FILE).is_file():
        run["warm_start"] = json.loads((RESULTS_DIR / name / WARM_FILE).read_text())
    return _sweep(name, space, data, result_grid, time.perf_counter() - started, run)


def _sweep(name: str, space: SpaceFile, data: FerDataset, result_grid, seconds: float, run: dict) -> Sweep:
    rule = sweep_chance_rule(space, data)
    records = [TrialRecord.from_result(result, space, rule) for result in result_grid]
    out_dir = RESULTS_DIR / name
    trials = write_results(out_dir, records, space, data.summary(), run)
    return Sweep(name, space, data, trials, records, _best(records, space), out_dir, seconds, result_grid)


def reload_sweep(name: str) -> Sweep:
    """A finished sweep rebuilt from results/<name>/sweep.json and Ray's storage (for `results sync`).

    The space is read again from its file where it still exists (the copy in sweep.json has no
    passwords), the data is loaded again, and the results folder is rewritten identically.
    """
    meta_file = RESULTS_DIR / name / "sweep.json"
    if not meta_file.is_file():
        raise FerTuneError(f"{meta_file}: not found; sweep {name} has not finished (resume it with --resume)")
    meta = json.loads(meta_file.read_text())
    saved = meta["space"]
    space = load_space(saved["path"]) if Path(saved["path"]).is_file() else SpaceFile.model_validate(saved)
    run = meta.get("run") or {}
    storage = run.get("storage") or storage_path(None)
    data = space.data.load(run.get("data_source"))
    result_grid = tune.ResultGrid(tune.ExperimentAnalysis(f"{storage}/{name}"))
    return _sweep(name, space, data, result_grid, 0.0, run)


def check_new(name: str, storage: str) -> None:
    """A new sweep may not reuse a name: it would overwrite the old one's tables and merge their runs."""
    taken = [str(p) for p in (RESULTS_DIR / name, Path(storage) / name) if "://" not in str(p) and p.exists()]
    if taken:
        raise FerTuneError(
            f"--name {name}: a sweep of that name exists already ({', '.join(taken)}); continue it with "
            f"--resume --name {name}, or choose another --name"
        )


def check_resumable(name: str, storage: str) -> str:
    """The experiment folder of an interrupted sweep `name`, or a one-line error."""
    path = f"{storage}/{name}"
    if not tune.Tuner.can_restore(path):
        raise FerTuneError(f"--resume: no interrupted sweep at {redact(path)}; start one without --resume")
    return path


def finished(name: str) -> bool:
    """Whether sweep `name` ran to its end and wrote its results (a --resume then has nothing to run)."""
    return (RESULTS_DIR / name / "sweep.json").is_file()


def prepare_cluster(space: SpaceFile, address: str | None) -> None:
    """Start or join Ray (in bounded time) and check that one trial's request fits on a node of it."""
    cluster = connect_ray(address)
    check_resources(space.resources.cpu, space.resources.gpu, cluster)
    cuda = [p for p in space.space if p.name == "device" and any(str(v).startswith("cuda") for v in p.values)]
    if cuda and space.resources.gpu == 0:
        raise FerTuneError(
            f"{space.path}: space.device: {cuda[0].values[0]!r} needs a GPU, but each trial asks for none "
            "(resources.gpu: 0); use device auto, or --gpus-per-trial"
        )


def missing_weights(space: SpaceFile) -> dict[str, str]:
    """The candidate models whose ImageNet weights a trial may ask for but the local cache lacks.

    Checked once here, on the driver (a stat per model, and one download of a missing file where the
    network allows, into the cache the trials read): trials that would need them fail at once
    with this reason, instead of each failing in the middle of building its model. Where no trial
    could run at all, the sweep is refused before it starts.
    """
    pretrained = next((p for p in space.space if p.name == "pretrained"), None)
    if pretrained is None or True not in pretrained.values:
        return {}
    model = next((p for p in space.space if p.name == "model"), None)
    names = list(model.values) if model is not None and model.kind != "fixed" else [space.default_point().model]
    missing = {}
    for name in names:
        if capabilities(name).pretrained:
            try:
                fetch_pretrained(name)
            except FerTuneError as err:
                missing[name] = str(err)
    if missing and pretrained.kind == "fixed" and set(names) <= set(missing):
        raise FerTuneError(f"{space.path}: no trial can run: {next(iter(missing.values()))}")
    for reason in dict.fromkeys(missing.values()):
        print(f"[fer-tune] warning: {reason}; trials with pretrained: true on it will fail", flush=True)
    return missing


def total_trials(space: SpaceFile) -> int:
    per_sample = len(grid_points(space)) if space.search.algorithm == "grid" else 1
    return per_sample * space.budget.num_samples


def sweep_chance_rule(space: SpaceFile, data: FerDataset) -> ChanceRule | None:
    """The dead-trial rule of this sweep: the space's `dead_trials:` on the validation split's majority class."""
    return chance_rule(space, data.validation.class_counts(data.num_classes))


def _console(space: SpaceFile, storage: str, name: str, rule: ChanceRule | None = None) -> ConsoleReport:
    return ConsoleReport(space, total_trials(space), error_root=redact(f"{storage}/{name}"), rule=rule)


def _tune_config(
    space: SpaceFile, experiment: str, rule: ChanceRule | None = None, warm: WarmStart | None = None
) -> tune.TuneConfig:
    earlier = warm.curves() if warm is not None else None
    return tune.TuneConfig(
        metric=space.metric,
        mode=space.mode,
        search_alg=build_searcher(space, warm),
        scheduler=build_scheduler(space, state_dir=experiment, rule=rule, earlier=earlier),
        num_samples=space.budget.num_samples,
        # grid's BasicVariantGenerator limits concurrency itself; Ray warns that a second limit is ignored
        max_concurrent_trials=None if space.search.algorithm == "grid" else space.budget.max_concurrent,
        trial_dirname_creator=trial_dirname,
    )


def _run_config(
    space: SpaceFile, name: str, storage: str, callbacks: list, verbose: int, rule: ChanceRule | None = None
) -> tune.RunConfig:
    return tune.RunConfig(
        name=name,
        stop=DeadTrialStop(rule) if rule is not None else None,  # a dead trial stops under any pruner
        storage_path=storage,
        callbacks=callbacks,
        verbose=verbose,
        checkpoint_config=tune.CheckpointConfig(
            num_to_keep=1,  # the best one; Ray also always keeps the latest, for resuming
            checkpoint_score_attribute=space.metric,
            checkpoint_score_order=space.mode,
        ),
        # Retry a failed trial from its last checkpoint (budget.max_failures; 0, the default, never retries).
        failure_config=tune.FailureConfig(max_failures=space.budget.max_failures),
    )


def _param_space(space: SpaceFile) -> dict:
    if space.search.algorithm == "grid":
        return {GRID_KEY: tune.grid_search(grid_points(space))}
    return {}  # Optuna's define-by-run function is the space


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
    return interrupted(tune.ExperimentAnalysis(result_grid.experiment_path).trials, total_trials(space))


def _best(records: list[TrialRecord], space: SpaceFile) -> TrialRecord | None:
    if space.multi_objective or space.champion is not None:  # the front member the `champion:` rule picks
        return pick_champion(records, space)
    scored = [r for r in records if r.best_metric is not None]
    if not scored:
        return None
    return best_of(scored, key=lambda r: r.best_metric, mode=space.mode)
