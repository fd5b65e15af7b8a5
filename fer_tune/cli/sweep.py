"""`fer-tune run` (a sweep, tracked in MLflow unless --no-track) and `fer-tune results [sync]`."""

from __future__ import annotations

import argparse
from pathlib import Path

from fer_tune.cli.paths import writable_folder
from fer_tune.errors import FerTuneError


class SweepFinished(FerTuneError):
    """--resume of a sweep that already ran to its end: nothing to do, and nothing is changed."""


def add_commands(commands: argparse._SubParsersAction) -> None:
    run = commands.add_parser("run", help="run a search-space file as a Ray Tune sweep")
    run.add_argument("space", type=Path, help="search-space YAML file")
    run.add_argument("--data", default=None, help="data source overriding the file's data.source")
    run.add_argument("--name", default=None, help="sweep name (default SPACE-DATE-TIME; with --resume: the latest)")
    run.add_argument("--num-samples", type=int, default=None, help="override budget.num_samples")
    run.add_argument("--max-epochs", type=int, default=None, help="override budget.max_epochs")
    run.add_argument("--cpus-per-trial", type=float, default=None, help="override resources.cpu")
    run.add_argument("--gpus-per-trial", type=float, default=None, help="override resources.gpu (0.25: 4 per GPU)")
    run.add_argument("--address", default=None, help="join a Ray cluster (default: RAY_ADDRESS, else local Ray)")
    run.add_argument("--storage", default=None, help="Ray storage path shared by all nodes (default results/ray)")
    run.add_argument("--resume", action="store_true", help="continue an interrupted sweep")
    run.add_argument(
        "--no-track", dest="track", action="store_false", help="write results/ only; touch no MLflow store"
    )
    run.add_argument(
        "--warm-start",
        default=None,
        metavar="SWEEP[,SWEEP...]|auto",
        help="seed the search with earlier sweeps' trials (auto: earlier sweeps of this space on the same data)",
    )
    run.add_argument("--any-data", action="store_true", help="with --warm-start: allow sweeps run on other data")
    run.add_argument("--verbose", action="store_true", help="also print Ray Tune's trial tables")
    run.add_argument("--smoke", action="store_true", help="2 trials of 1 epoch on CPUs: check a space runs end to end")
    run.set_defaults(handler=cmd_run)

    results = commands.add_parser(
        "results", help="print the leaderboard of a sweep; `results sync NAME` writes tracking records left pending"
    )
    results.add_argument("name", nargs="?", default=None, help="sweep name (default: the latest), or `sync`")
    results.add_argument("sweep", nargs="?", default=None, help="with `sync`: the sweep whose records to write")
    results.add_argument("--top", type=int, default=10, help="rows to show (default 10)")
    results.set_defaults(handler=cmd_results)


def cmd_run(args) -> int:
    from fer_tune.search.results import leaderboard_markdown
    from fer_tune.search.sweep_file import load_space, with_budget

    if args.any_data and not args.warm_start:
        raise FerTuneError("--any-data: only meaningful with --warm-start SWEEP; add --warm-start or drop it")

    space = with_budget(load_space(args.space), num_samples=args.num_samples, max_epochs=args.max_epochs)
    if args.smoke:
        from fer_tune.search.sweep_file import smoke

        space = smoke(space)
    space = with_resources(space, cpu=args.cpus_per_trial, gpu=args.gpus_per_trial)
    try:
        sweep, tracking = run_space(
            space,
            data_source=args.data,
            name=args.name,
            address=args.address,
            resume=args.resume,
            storage=args.storage,
            track=args.track,
            verbose=2 if args.verbose else 0,
            warm_start=args.warm_start,
            any_data=args.any_data,
        )
    except SweepFinished as done:
        print(done)
        return 0
    print(
        f"\nsweep {sweep.name}: {len(sweep.trials)} trials in {sweep.wall_seconds:.0f} s; results in {sweep.out_dir}/"
    )
    print(leaderboard_markdown(sweep.trials, space.metric, space.mode))
    print(outcome_summary(sweep))
    if sweep.best is not None:
        print(f"best trial {sweep.best.trial_id}: {space.metric} {sweep.best.best_metric:.4f}")
        print("best configuration: " + ", ".join(f"{k}={v}" for k, v in sweep.best.params.items() if v is not None))
    if tracking is not None:
        print(tracking.message)
        if not tracking.pending:
            print("browse the sweep with `fer-tune ui`; list the registry with `fer-tune models list`")
    if sweep.best is None:
        raise FerTuneError(f"no trial of sweep {sweep.name} produced a score; see the failures above")
    return 0


def with_resources(space, cpu: float | None, gpu: float | None):
    """The space with --cpus-per-trial / --gpus-per-trial applied (None keeps the file's value)."""
    if cpu is not None and cpu <= 0:
        raise FerTuneError(f"--cpus-per-trial {cpu:g}: expected a positive number")
    if gpu is not None and gpu < 0:
        raise FerTuneError(f"--gpus-per-trial {gpu:g}: expected 0 or a positive number")
    updates = {key: value for key, value in (("cpu", cpu), ("gpu", gpu)) if value is not None}
    return space.model_copy(update={"resources": space.resources.model_copy(update=updates)}) if updates else space


def outcome_summary(sweep) -> str:
    """Counts of completed, stopped and failed trials, the failure reasons, and where the records are."""
    counts = sweep.trials["status"].value_counts()
    parts = [f"{counts.get(status, 0)} {status}" for status in ("completed", "stopped early", "failed")]
    lines = ["trials: " + ", ".join(parts)]
    failed = sweep.trials[sweep.trials["status"] == "failed"]
    for reason, group in failed.groupby("error"):
        lines.append(f"  failed x{len(group)}: {reason}")
    at_chance = int(sweep.trials["stop_reason"].notna().sum()) if "stop_reason" in sweep.trials else 0
    if at_chance:
        lines.append(f"  stopped early x{at_chance}: no better than chance (dead_trials)")
    lines.append(f"records: {sweep.out_dir}/ (trials.csv, curves.csv, leaderboard.md, plots)")
    return "\n".join(lines)


def run_space(
    space,
    *,
    data_source: str | None = None,
    name: str | None = None,
    address: str | None = None,
    resume: bool = False,
    storage: str | Path | None = None,
    track: bool = True,
    verbose: int = 0,
    warm_start: str | None = None,
    any_data: bool = False,
):
    """Check, load, run and track one sweep: the one place that wires tracking into a sweep.

    Cheap checks first (paths, the sweep's name, the tracking store, Ray and the resources a trial
    asks for), then the data, then the sweep; with `track`, the Tracker's callbacks go in and its
    finish (artifacts, the champion) comes after. Returns (Sweep, TrackingOutcome or None).
    """
    from fer_tune.constants import RESULTS_DIR
    from fer_tune.search.sweep import (
        check_new,
        check_resumable,
        finished,
        prepare_cluster,
        run_sweep,
        storage_path,
        sweep_name,
    )

    writable_folder(RESULTS_DIR, "results folder")
    storage = storage_path(storage)
    if "://" not in storage:
        writable_folder(Path(storage), "--storage")
    name = name or sweep_name(space, storage, resume)
    if resume:
        check_resumable(name, storage)
        if finished(name):
            raise SweepFinished(_finished_message(space, name, track))
    else:
        check_new(name, storage)
    if track:
        from fer_tune.tracking.store import check_store, tracking_uri

        check_store(tracking_uri(space.mlflow.tracking_uri), write=True)
    prepare_cluster(space, address)
    data = space.data.load(data_source)
    warm = _warm_start(space, name, data, warm_start, any_data, track, resume) if warm_start else None
    tracker = _tracker(space, name, data) if track else None
    if tracker is not None and warm is not None:
        tracker.record_warm_start(warm.sources, warm.any_data)
    callbacks = tracker.callbacks() if tracker else []
    sweep = run_sweep(
        space,
        data,
        name=name,
        address=address,
        resume=resume,
        storage=storage,
        callbacks=callbacks,
        verbose=verbose,
        data_source=data_source,
        warm=warm,
    )
    return sweep, (tracker.finish(sweep) if tracker else None)


def _warm_start(space, name: str, data, text: str, any_data: bool, track: bool, resume: bool):
    if resume:  # the searcher and pruner restored from the experiment hold the seeds they started with
        print("[fer-tune] --warm-start: a resumed sweep keeps the seeds it started with; not seeding again")
        return None
    from fer_tune.cli.warm import load_warm_start

    return load_warm_start(space, name, data, text, any_data, track)


def _finished_message(space, name: str, track: bool) -> str:
    if track:
        from fer_tune.tracking.tracker import Tracker

        tracker = Tracker.resume(space, name) if _has_tracking(name) else None
        if tracker is not None and not tracker.finished:
            return sync(name)
    return f"sweep {name} is finished; nothing to resume (see `fer-tune results {name}`); nothing was changed"


def _has_tracking(name: str) -> bool:
    from fer_tune.constants import RESULTS_DIR
    from fer_tune.tracking.tracker import STATE_FILE

    return (RESULTS_DIR / name / STATE_FILE).is_file()


def _tracker(space, name: str, data):
    from fer_tune.tracking.tracker import Tracker

    return Tracker.for_sweep(space, name, data)


def sync(name: str) -> str:
    """Write a sweep's pending tracking records and finish its tracking (artifacts, the champion)."""
    from fer_tune.search.sweep import reload_sweep
    from fer_tune.tracking.store import check_store, tracking_uri
    from fer_tune.tracking.tracker import Tracker

    sweep = reload_sweep(name)
    tracker = Tracker.resume(sweep.space, name)
    if tracker.finished:
        return f"sweep {name}: nothing pending; its tracking is complete"
    check_store(tracking_uri(sweep.space.mlflow.tracking_uri), write=True)
    outcome = tracker.finish(sweep)
    if outcome.pending:
        raise FerTuneError(outcome.message)
    return f"sweep {name}: pending records written; {outcome.message}"


def cmd_results(args) -> int:
    from fer_tune.search.results import leaderboard_markdown, load_sweep

    if args.name == "sync":
        if not args.sweep:
            raise FerTuneError("results sync: expected the sweep's name (fer-tune results sync NAME)")
        print(sync(args.sweep))
        return 0
    if args.top < 1:
        raise FerTuneError(f"--top {args.top}: expected a positive number of rows")
    sweep = load_sweep(args.name)
    print(f"sweep {sweep.name}: {len(sweep.trials)} trials")
    print(leaderboard_markdown(sweep.trials, sweep.metric, sweep.mode, args.top))
    return 0
