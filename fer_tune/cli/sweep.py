"""`fer-tune run` (a sweep, tracked in MLflow unless --no-track) and `fer-tune results [sync]`."""

from __future__ import annotations

import argparse
from pathlib import Path

from fer_tune.cli.paths import given, given_path, writable_folder
from fer_tune.errors import FerTuneError
from fer_tune.names import check_sweep_name
from fer_tune.numbers import finite_number, parse_int


class SweepFinished(FerTuneError):
    """--resume of a sweep that already ran to its end: nothing to do, and nothing is changed."""


def add_commands(commands: argparse._SubParsersAction) -> None:
    run = commands.add_parser("run", help="run a search-space file as a Ray Tune sweep")
    run.add_argument("space", type=given_path, help="search-space YAML file")
    run.add_argument("--data", type=given, help="data source overriding the file's data.source")
    run.add_argument("--name", type=given, help="sweep name (default SPACE-DATE-TIME; with --resume: the latest)")
    run.add_argument("--num-samples", type=parse_int, default=None, help="override budget.num_samples")
    run.add_argument("--max-epochs", type=parse_int, default=None, help="override budget.max_epochs")
    run.add_argument("--cpus-per-trial", type=float, default=None, help="override resources.cpu")
    run.add_argument("--gpus-per-trial", type=float, default=None, help="override resources.gpu (0.25: 4 per GPU)")
    run.add_argument("--address", type=given, help="join a Ray cluster (default: RAY_ADDRESS, else local Ray)")
    run.add_argument("--storage", type=given, help="Ray storage path shared by all nodes (default results/ray)")
    run.add_argument("--resume", action="store_true", help="continue an interrupted sweep")
    run.add_argument(
        "--no-track", dest="track", action="store_false", help="write results/ only; touch no MLflow store"
    )
    run.add_argument(
        "--warm-start",
        type=given,
        default=None,
        metavar="SWEEP[,SWEEP...]|auto",
        help="seed the search with earlier sweeps' trials (auto: earlier sweeps of this space on the same data)",
    )
    run.add_argument("--any-data", action="store_true", help="with --warm-start: allow sweeps run on other data")
    run.add_argument(
        "--verbose", action="store_true", help="also print Ray's, MLflow's and Optuna's own lines and trial tables"
    )
    run.add_argument("--smoke", action="store_true", help="2 trials of 1 epoch on CPUs: check a space runs end to end")
    run.set_defaults(handler=cmd_run)

    results = commands.add_parser(
        "results", help="print the leaderboard of a sweep; `results sync NAME` writes tracking records left pending"
    )
    results.add_argument("name", nargs="?", default=None, help="sweep name (default: the latest), or `sync`")
    results.add_argument("sweep", nargs="?", default=None, help="with `sync`: the sweep whose records to write")
    results.add_argument("--top", type=parse_int, default=10, help="rows to show (default 10)")
    results.set_defaults(handler=cmd_results)


def cmd_run(args) -> int:
    from fer_tune.cli import quiet

    if not args.verbose:
        quiet.quiet_environment()  # before Ray starts: only fer-tune's lines on the console (cli/quiet.py)
    from fer_tune.search.results import leaderboard_markdown
    from fer_tune.search.sweep_file import load_space, with_budget

    if args.any_data and not args.warm_start:
        raise FerTuneError("--any-data: only meaningful with --warm-start SWEEP; add --warm-start or drop it")

    space = with_budget(load_space(args.space), num_samples=args.num_samples, max_epochs=args.max_epochs)
    if args.warm_start and space.multi_objective:
        raise FerTuneError(f"--warm-start with {args.space}: warm starts seed single-objective sweeps only; drop one")
    if args.smoke and (args.num_samples is not None or args.max_epochs is not None):
        flag = "--num-samples" if args.num_samples is not None else "--max-epochs"
        raise FerTuneError(f"--smoke with {flag}: --smoke runs 2 trials of 1 epoch; leave out one or the other")
    if args.smoke:
        from fer_tune.search.sweep_file import smoke

        space = smoke(space)
    space = with_resources(space, cpu=args.cpus_per_trial, gpu=args.gpus_per_trial)
    if not args.verbose:
        quiet.quiet_libraries(tracked=args.track)
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
    if sweep.selection is not None:
        print(selection_summary(sweep))
    if sweep.best is not None:
        label = "best trial" if sweep.selection is None else "champion trial"  # with re-runs: the best mean's
        print(f"{label} {sweep.best.trial_id}: {space.metric} {sweep.best.best_metric:.4f}")
        print("best configuration: " + ", ".join(f"{k}={v}" for k, v in sweep.best.params.items() if v is not None))
    for line in tracking.lines():
        print(line)
    if sweep.best is None and sweep.trials[f"best_{space.metric}"].notna().any():  # a `champion:` rule unmet
        from fer_tune.search.pareto import no_champion_message

        raise FerTuneError(no_champion_message(space))
    if sweep.best is None:
        raise FerTuneError(f"no trial of sweep {sweep.name} produced a score; see the failures above")
    return 0


def with_resources(space, cpu: float | None, gpu: float | None):
    """The space with --cpus-per-trial / --gpus-per-trial applied (None keeps the file's value)."""
    from fer_tune.search.sweep_file import MAX_CPUS, MAX_GPUS

    if cpu is not None:
        finite_number(cpu, "--cpus-per-trial", low=0, low_open=True, high=MAX_CPUS)
    if gpu is not None:
        finite_number(gpu, "--gpus-per-trial", low=0, high=MAX_GPUS)
    updates = {key: value for key, value in (("cpu", cpu), ("gpu", gpu)) if value is not None}
    return space.model_copy(update={"resources": space.resources.model_copy(update=updates)}) if updates else space


def selection_summary(sweep) -> str:
    """The re-trained configurations (`select:`) with their mean ± sd over fresh seeds, and the champion."""
    from fer_tune.search.reruns import mean_sd, selection_markdown

    summary, metric = sweep.selection, sweep.space.metric
    lines = [f"re-runs, {sweep.space.select.seeds} fresh seeds each (reruns.csv, reruns_summary.csv):"]
    lines.append(selection_markdown(summary, metric))
    chosen = summary[summary["champion"]]
    if len(chosen):
        row = chosen.iloc[0]
        lines.append(f"champion: trial {row['trial_id']}, the best mean {metric} over its re-runs, "
                     f"{mean_sd(row['mean'], row['sd'])} (n {row['n']})")  # fmt: skip
    else:
        lines.append("champion: no re-run completed, so the search's best trial")
    return "\n".join(lines)


def outcome_summary(sweep) -> str:
    """Counts of completed, stopped and failed trials, the failure reasons, and where the records are."""
    from fer_tune.search.outcome import FAILED, OUTCOMES

    counts = sweep.trials["status"].value_counts()
    parts = [f"{counts.get(status, 0)} {status}" for status in OUTCOMES]
    lines = ["trials: " + ", ".join(parts)]
    failed = sweep.trials[sweep.trials["status"] == FAILED]
    for reason, group in failed.groupby("error"):
        lines.append(f"  failed x{len(group)}: {reason}")
    at_chance = int(sweep.trials["stop_reason"].notna().sum()) if "stop_reason" in sweep.trials else 0
    if at_chance:
        lines.append(f"  stopped early x{at_chance}: no better than chance (dead_trials)")
    reruns = ", reruns.csv" if sweep.selection is not None else ""
    lines.append(f"records: {sweep.out_dir}/ (trials.csv, curves.csv{reruns}, leaderboard.md, plots)")
    if sweep.space.multi_objective:
        lines.append(f"front: {int(sweep.trials['on_front'].sum())} trials (pareto.csv, pareto.png)")
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

    Cheap checks first (the sweep's plan: its name and storage, checked once; paths; the tracking
    store), then Ray and the resources a trial asks for, then the data, then the sweep. The tracker
    (MLflow's, or with `track` false its do-nothing twin) adds its callbacks and, after, its finish
    (artifacts, the champion). Returns (Sweep, the tracker's outcome: `.lines()` to print).
    """
    from fer_tune.cli.warm import load_warm_start, read_sources, source_names
    from fer_tune.constants import RESULTS_DIR
    from fer_tune.data.cache import cache_dir
    from fer_tune.search.console import PREFIX
    from fer_tune.search.plan import claim_name, prepare_sweep, start_cluster
    from fer_tune.search.sweep import run_sweep
    from fer_tune.tracking.trackers import open_tracking

    if name is not None:
        check_sweep_name(name, "--name")
    sources = source_names(warm_start) if warm_start is not None else None  # checked as --name is
    tracking = open_tracking(space, track)
    where = dict(storage=storage, resume=resume, address=address, data_source=data_source)
    plan = prepare_sweep(space, name=name, **where)
    writable_folder(RESULTS_DIR, "results folder")
    cache_dir()  # where parsed datasets are cached (HOME, FER_TUNE_CACHE): an unusable HOME is one line now
    claim_name(plan.name)  # a twin run started at the same moment refuses; checked again now that it is ours:
    plan = prepare_sweep(space, name=plan.name, **where)
    if "://" not in plan.storage:
        writable_folder(Path(plan.storage), "--storage")
    else:
        from fer_tune.search.cluster import check_storage

        check_storage(plan.storage)
    if plan.finished:
        raise SweepFinished(sync(plan.name) if tracking.unfinished(plan.name) else _finished_message(plan.name))
    tracking.check(None if plan.resume else plan.name)
    for note in space.pruner.ignored():
        print(f"{PREFIX} note: {space.path}: {note}", flush=True)
    space.data.check(data_source)  # the data's header and first rows, and the space's shape: before Ray starts
    _check_shape(space)
    seeding = sources is not None and not _resumed_warm(plan.resume)
    # the earlier sweeps named are read before Ray too (None: `auto`, which needs the data to choose them)
    earlier = read_sources(space, sources, track) if seeding else None
    start_cluster(plan)
    data = space.data.load(data_source)
    warm = load_warm_start(space, plan.name, data, earlier, any_data, track) if seeding else None
    callbacks = tracking.callbacks(plan.name, data)
    if warm is not None:
        tracking.record_warm_start(warm.sources, warm.any_data)
    sweep = run_sweep(plan, data, callbacks=callbacks, verbose=verbose, warm=warm)
    _report(sweep)  # before tracking: the tracker logs results/<sweep>/, the report with it
    return sweep, tracking.finish(sweep)


def _check_shape(space) -> None:
    """A grid over a continuous range, or grid axes under Optuna: refused before Ray starts."""
    from fer_tune.search.sampling import define_by_run, grid_points

    grid_points(space) if space.search.algorithm == "grid" else define_by_run(space)


def _report(sweep) -> None:
    """Score the champion and runner-up on the test images and write the sweep's report (tracked or not).

    A report that cannot be built is a warning: the sweep, its tables and its tracking stand without it.
    """
    from fer_tune.cli.report import build
    from fer_tune.search.console import PREFIX
    from fer_tune.search.report.predictions import save_predictions

    try:
        save_predictions(sweep)
        print(f"{PREFIX} {build(sweep.name)}", flush=True)
    except Exception as err:  # noqa: BLE001 - the sweep's results are written already
        print(f"{PREFIX} warning: report of sweep {sweep.name} not written: {type(err).__name__}: {err}", flush=True)


def _resumed_warm(resume: bool) -> bool:
    """A resumed sweep is not seeded again: the searcher and pruner restored from the experiment hold the
    seeds they started with (says so)."""
    if resume:
        from fer_tune.search.console import PREFIX

        print(f"{PREFIX} --warm-start: a resumed sweep keeps the seeds it started with; not seeding again")
    return resume


def _finished_message(name: str) -> str:
    return f"sweep {name} is finished; nothing to resume (see `fer-tune results {name}`); nothing was changed"


def sync(name: str) -> str:
    """Write a sweep's pending tracking records and finish its tracking (artifacts, the champion)."""
    from fer_tune.search.sweep import reload_sweep
    from fer_tune.tracking.tracker import Tracker
    from fer_tune.tracking.trackers import MlflowTracking

    sweep = reload_sweep(name)
    tracker = Tracker.resume(sweep.space, name)
    if tracker.finished:
        return f"sweep {name}: nothing pending; its tracking is complete"
    MlflowTracking(sweep.space).check()
    outcome = tracker.finish(sweep)
    if outcome.pending:
        raise FerTuneError(outcome.message)
    return f"sweep {name}: pending records written; {outcome.message}"


def cmd_results(args) -> int:
    from fer_tune.search.results import leaderboard_markdown, load_sweep

    if args.name == "sync":
        if not args.sweep:
            raise FerTuneError("results sync: expected the sweep's name (fer-tune results sync NAME)")
        check_sweep_name(args.sweep, "results sync NAME")
        print(sync(args.sweep))
        return 0
    if args.top < 1:
        raise FerTuneError(f"--top {args.top}: expected a positive number of rows")
    if args.name is not None:
        check_sweep_name(args.name, "results NAME")
    sweep = load_sweep(args.name)
    print(f"sweep {sweep.name}: {len(sweep.trials)} trials")
    print(leaderboard_markdown(sweep.trials, sweep.metric, sweep.mode, args.top))
    return 0
