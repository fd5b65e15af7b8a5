"""Run a search-space file as a Ray Tune sweep.

    from fer_tune.data import load_dataset
    from fer_tune.search.sweep_file import load_space
    from fer_tune.search.plan import prepare_sweep, start_cluster
    from fer_tune.search.sweep import run_sweep

    space = load_space("search_spaces/quick.yaml")
    plan = prepare_sweep(space)  # the name, Ray's storage, checked once (fer_tune.search.plan)
    start_cluster(plan)
    sweep = run_sweep(plan, load_dataset("synthetic", n=space.data.n))
    sweep.trials  # pandas DataFrame, one row per trial; also written to results/<name>/

Searchers: optuna (TPE over the define-by-run space, default), random (Optuna's
random sampler over the same space), grid (every combination, Ray's grid
search). Pruners (Ray's trial schedulers): asha (default), hyperband, median,
none; all use our own `epoch` as their time attribute. A space with `select:` then
re-trains its best trials with fresh seeds, a second Tune run with the same callbacks,
and its champion is the best mean (fer_tune.search.reruns). The dataset reaches every
trial through Ray's object store, put there once. Tracking is not this module's
business: the caller passes Tune callbacks (the CLI passes MLflow's).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from ray import tune

from fer_tune.core.checkpoint import load_checkpoint
from fer_tune.core.config import GRID_KEY, trial_point
from fer_tune.core.models import capabilities, fetch_pretrained
from fer_tune.data import FerDataset
from fer_tune.errors import FerTuneError
from fer_tune.search.checkpoint_refs import repair_checkpoint_refs
from fer_tune.search.console import PREFIX, ConsoleReport
from fer_tune.search.direction import best_of
from fer_tune.search.mo_pruner import build_scheduler
from fer_tune.search.outcome import ChanceRule, interrupted
from fer_tune.search.pareto import pick_champion
from fer_tune.search.plan import SweepPlan, storage_path
from fer_tune.search.pruners import TIME_ATTR, DeadTrialStop, build_pruner, chance_rule
from fer_tune.search.reruns import RERUN_FOLDER, rerun_configs, rerun_table, top_trials, write_reruns
from fer_tune.search.results import RESULTS_DIR, TrialRecord, read_sweep_json, saved_space, write_results
from fer_tune.search.sampling import grid_points
from fer_tune.search.searchers import FixedConfigs, build_searcher
from fer_tune.search.sweep_file import SpaceFile, load_space
from fer_tune.search.warm_start import WarmStart
from fer_tune.uris import redact
from trainables import TRAINABLES

WARM_FILE = "warm_start.json"  # results/<name>/: what a warm-started sweep was seeded from

__all__ = ["TIME_ATTR", "Sweep", "build_pruner", "build_searcher", "run_sweep"]


# A trial after the first runs in its predecessor's Ray actor: no new worker process, no second import
# of torch (15-25 s a trial on a 2-core CPU, more than a small trial's training). Ray resets the actor
# between trials, and falls back to a fresh one where a stopped trial's thread does not end in time.
REUSE_ACTORS = True


@dataclass
class Sweep:
    name: str
    space: SpaceFile
    data: FerDataset
    trials: pd.DataFrame  # one row per trial (results/<name>/trials.csv)
    records: list[TrialRecord]
    best: TrialRecord | None  # the best trial by the space's metric; with `select:`, the best mean's trial
    out_dir: Path
    wall_seconds: float
    result_grid: Any  # Ray's ResultGrid, for checkpoints
    selection: pd.DataFrame | None = None  # `select:`'s re-trained configurations (results/<name>/reruns_summary.csv)

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
    plan: SweepPlan,
    data: FerDataset,
    *,
    callbacks: Sequence[tune.Callback] = (),
    verbose: int = 0,
    warm: WarmStart | None = None,
) -> Sweep:
    """Run (or with `plan.resume`, continue) the planned sweep on a started cluster and write its results folder.

    The plan's checks are not repeated here (see fer_tune.search.plan); `verbose` > 0 adds Ray's trial tables.
    `warm`: earlier trials mapped into this space (fer_tune.search.warm_start) seed a new sweep's searcher and pruner.
    """
    started = time.perf_counter()
    space, name, storage = plan.space, plan.name, plan.storage
    # Per-epoch checkpoints with num_to_keep force frequent experiment snapshots; on local disk they
    # take milliseconds, so Ray's warning about them is noise here.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    unavailable = missing_weights(space)
    rule = sweep_chance_rule(space, data)
    if warm is not None and not plan.resume:  # kept beside the results: a resumed run writes sweep.json again
        (RESULTS_DIR / name).mkdir(parents=True, exist_ok=True)
        (RESULTS_DIR / name / WARM_FILE).write_text(json.dumps(warm.record(space.mode), indent=2))
    trainable = tune.with_resources(
        # one put into the object store; trials needing missing weights fail at once with the driver's reason
        tune.with_parameters(
            TRAINABLES.get(space.trainable), data=data, unavailable=unavailable, **space.trainable_options()
        ),
        {"cpu": space.resources.cpu, "gpu": space.resources.gpu},
    )
    if plan.resume:
        # Ray restores the callbacks pickled with the first run (ours look their MLflow runs up again
        # by tag), so `callbacks` only take effect in new sweeps.
        for trial_id in repair_checkpoint_refs(plan.experiment):
            print(f"{PREFIX} trial {trial_id}: its recorded checkpoint was replaced as the sweep was cut; "
                  "resuming from the newer one", flush=True)  # fmt: skip
        tuner = tune.Tuner.restore(plan.experiment, trainable=trainable, resume_unfinished=True, resume_errored=True)
    else:
        tuner = tune.Tuner(
            trainable,
            param_space=_param_space(space),
            tune_config=_tune_config(space, plan.experiment, rule, warm),
            run_config=_run_config(
                space, name, storage, [_console(space, storage, name, rule), *callbacks], verbose, rule
            ),
        )
    result_grid = tuner.fit()
    if _interrupted(result_grid, space):
        raise FerTuneError(
            f"sweep {name} interrupted; continue it with: fer-tune run {space.path} --resume --name {name}"
        )
    reruns = _rerun(plan, trainable, result_grid, rule, list(callbacks), verbose) if space.select else None
    run = {"storage": storage, "data_source": plan.data_source, "data_fingerprint": data.fingerprint()}
    if (RESULTS_DIR / name / WARM_FILE).is_file():
        run["warm_start"] = json.loads((RESULTS_DIR / name / WARM_FILE).read_text())
    return _sweep(name, space, data, result_grid, time.perf_counter() - started, run, reruns)


def _rerun(plan: SweepPlan, trainable, result_grid, rule: ChanceRule | None, callbacks: list, verbose: int):
    """Re-train the search's best trials with fresh seeds (fer_tune.search.reruns): Ray's results of the re-runs.

    A second Tune run, in the sweep's experiment folder, with the sweep's callbacks (each re-run is
    tracked under the sweep's run, marked as a re-run by its config) and no pruner, searcher or
    dead-trial stop: every re-run trains its configuration's full epochs. None when no trial completed.
    """
    space = plan.space
    records = [TrialRecord.from_result(result, space, rule) for result in result_grid]
    points = {result.path: trial_point(result.config or {}) for result in result_grid}
    top = top_trials(records, space)
    if not top:
        print(f"{PREFIX} select: no trial ran all its epochs, so none is re-trained", flush=True)
        return None
    configs = rerun_configs([(r.trial_id, points[r.path]) for r in top], space.select.seeds)
    folder = f"{plan.experiment}/{RERUN_FOLDER}"
    if plan.resume and tune.Tuner.can_restore(folder):  # interrupted during its re-runs: they go on
        tuner = tune.Tuner.restore(folder, trainable=trainable, resume_unfinished=True, resume_errored=True)
    else:
        print(f"{PREFIX} select: re-training the top {len(top)} trials with {space.select.seeds} fresh seeds each "
              f"({len(configs)} runs)", flush=True)  # fmt: skip
        console = ConsoleReport(space, len(configs), error_root=redact(folder), rule=rule)
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                metric=space.metric,
                mode=space.mode,
                search_alg=FixedConfigs(configs),
                num_samples=len(configs),
                max_concurrent_trials=space.budget.max_concurrent,
                trial_dirname_creator=trial_dirname,
                reuse_actors=REUSE_ACTORS,
            ),
            run_config=_run_config(space, RERUN_FOLDER, plan.experiment, [console, *callbacks], verbose),
        )
    grid = tuner.fit()
    if interrupted(tune.ExperimentAnalysis(grid.experiment_path).trials, len(configs)):
        raise FerTuneError(
            f"sweep {plan.name} interrupted during its re-runs; continue it with: "
            f"fer-tune run {space.path} --resume --name {plan.name}"
        )
    return grid


def _sweep(
    name: str, space: SpaceFile, data: FerDataset, result_grid, seconds: float, run: dict, rerun_grid=None
) -> Sweep:
    rule = sweep_chance_rule(space, data)
    records = [TrialRecord.from_result(result, space, rule) for result in result_grid]
    out_dir = RESULTS_DIR / name
    best, selection = _best(records, space), None
    if space.champion is not None:  # whether its rule was met, for the report (sweep.json's run.champion_rule)
        run = {**run, "champion_rule": {"rule": space.champion.describe(), "met_by": best and best.trial_id}}
    trials = write_results(out_dir, records, space, data.summary(), run)
    if rerun_grid is not None:  # the champion is the configuration with the best mean over fresh seeds
        order = [r.trial_id for r in top_trials(records, space)]
        selection = write_reruns(out_dir, rerun_table(rerun_grid, space, order, rule), trials, space)
        chosen = set(selection.loc[selection["champion"], "trial_id"])
        best = next((r for r in records if r.trial_id in chosen), best)
    return Sweep(name, space, data, trials, records, best, out_dir, seconds, result_grid, selection)


def reload_sweep(name: str) -> Sweep:
    """A finished sweep rebuilt from results/<name>/sweep.json and Ray's storage (for `results sync`).

    The space is read again from its file where it still exists (the copy in sweep.json has no
    passwords), the data is loaded again, and the results folder is rewritten identically.
    """
    meta_file = RESULTS_DIR / name / "sweep.json"
    if not meta_file.is_file():
        raise FerTuneError(f"{meta_file}: not found; sweep {name} has not finished (resume it with --resume)")
    meta = read_sweep_json(meta_file)
    saved = meta["space"]
    space = load_space(saved["path"]) if Path(saved["path"]).is_file() else saved_space(saved, meta_file)
    run = meta.get("run") or {}
    storage = run.get("storage") or storage_path(None)
    data = space.data.load(run.get("data_source"))
    result_grid = tune.ResultGrid(tune.ExperimentAnalysis(f"{storage}/{name}"))
    reruns = f"{storage}/{name}/{RERUN_FOLDER}"
    ran = space.select is not None and tune.Tuner.can_restore(reruns)
    rerun_grid = tune.ResultGrid(tune.ExperimentAnalysis(reruns)) if ran else None
    return _sweep(name, space, data, result_grid, 0.0, run, rerun_grid)


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
        reuse_actors=REUSE_ACTORS,
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
