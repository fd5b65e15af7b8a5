"""`fer-tune run` (a sweep, tracked in MLflow unless --no-track) and `fer-tune results`."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_commands(commands: argparse._SubParsersAction) -> None:
    run = commands.add_parser("run", help="run a search-space file as a Ray Tune sweep")
    run.add_argument("space", type=Path, help="search-space YAML file")
    run.add_argument("--data", default=None, help="data source overriding the file's data.source")
    run.add_argument("--name", default=None, help="sweep name (default SPACE-DATE-TIME; with --resume: the latest)")
    run.add_argument("--num-samples", type=int, default=None, help="override budget.num_samples")
    run.add_argument("--max-epochs", type=int, default=None, help="override budget.max_epochs")
    run.add_argument("--address", default=None, help="join a Ray cluster (default: RAY_ADDRESS, else local Ray)")
    run.add_argument("--storage", default=None, help="Ray storage path shared by all nodes (default results/ray)")
    run.add_argument("--resume", action="store_true", help="continue an interrupted sweep")
    run.add_argument(
        "--no-track", dest="track", action="store_false", help="write results/ only; touch no MLflow store"
    )
    run.set_defaults(handler=cmd_run)

    results = commands.add_parser("results", help="print the leaderboard of a sweep")
    results.add_argument("name", nargs="?", default=None, help="sweep name (default: the latest)")
    results.add_argument("--top", type=int, default=10)
    results.set_defaults(handler=cmd_results)


def cmd_run(args) -> int:
    from fer_tune.search.results import leaderboard_markdown
    from fer_tune.search.space import load_space, with_budget

    space = with_budget(load_space(args.space), num_samples=args.num_samples, max_epochs=args.max_epochs)
    sweep, registration = run_space(
        space,
        data_source=args.data,
        name=args.name,
        address=args.address,
        resume=args.resume,
        storage=args.storage,
        track=args.track,
    )
    print(
        f"\nsweep {sweep.name}: {len(sweep.trials)} trials in {sweep.wall_seconds:.0f} s; results in {sweep.out_dir}/"
    )
    print(leaderboard_markdown(sweep.trials, space.metric, space.mode))
    if sweep.best is not None:
        print(f"\nbest trial {sweep.best.trial_id}: {space.metric} {sweep.best.best_metric:.4f}")
        print("best configuration: " + ", ".join(f"{k}={v}" for k, v in sweep.best.params.items() if v is not None))
    if registration is not None:
        print(registration.message)
        print("browse the sweep with `fer-tune ui`; list the registry with `fer-tune models list`")
    return 0


def run_space(
    space,
    *,
    data_source: str | None = None,
    name: str | None = None,
    address: str | None = None,
    resume: bool = False,
    storage: str | Path | None = None,
    track: bool = True,
    verbose: int = 1,
):
    """Load the data, run the sweep and, with `track`, log it to MLflow and register its best model.

    The one place that wires tracking into a sweep (the Tracker's callbacks in, its finish
    after). Returns (Sweep, Registration or None).
    """
    from fer_tune.search.sweep import run_sweep, storage_path, sweep_name

    storage = storage_path(storage)
    name = name or sweep_name(space, storage, resume)
    data = space.data.load(data_source)
    tracker = _tracker(space, name, data) if track else None
    callbacks = tracker.callbacks() if tracker else []
    sweep = run_sweep(
        space, data, name=name, address=address, resume=resume, storage=storage, callbacks=callbacks, verbose=verbose
    )
    return sweep, (tracker.finish(sweep) if tracker else None)


def _tracker(space, name: str, data):
    from fer_tune.tracking.tracker import Tracker

    return Tracker.for_sweep(space, name, data)


def cmd_results(args) -> int:
    from fer_tune.search.results import leaderboard_markdown, load_sweep

    sweep = load_sweep(args.name)
    print(f"sweep {sweep.name}: {len(sweep.trials)} trials")
    print(leaderboard_markdown(sweep.trials, sweep.metric, sweep.mode, args.top))
    return 0
