"""Sweep overheads and search efficiency, on real Ray with synthetic data.

    .venv/bin/python -m bench.sweep           # short: ~10 min on a 2-core CPU
    .venv/bin/python -m bench.sweep --full    # the whole tandon2020 grid at 150 epochs on 30,000
                                              # faces (sized for GPUs: months on a CPU)
    .venv/bin/python -m bench.sweep --compare # grid vs random+ASHA vs TPE+ASHA vs warm-started
                                              # TPE+ASHA over 5 search seeds (bench/compare.py)

Figures:
* cli_help: wall time of `fer-tune --help` in a fresh process, best of 5.
* quick/*: `run_sweep` on search_spaces/quick.yaml. Its wall time (the whole call: loading the
  data, starting Ray, trials, reporting, checkpoints, tracking, results and plots) is split into
  training, the time during which at least one trial was inside `fit` (the union over trials of
  [fit called or previous epoch reported, epoch reported] intervals, so two trials training at
  once count once), and orchestration, the rest. A second split divides trainer-seconds (the sum
  of those intervals) by the concurrency instead; it charges a trial waiting for a free slot to
  orchestration, so it is the more pessimistic of the two.
* efficiency/*: the tandon2020.yaml grid, every trial to the last epoch, against Optuna TPE +
  ASHA over the same space (its grid axes as choices; full.yaml's searcher and rungs: grace 5,
  reduction 3) with at most a quarter of the grid's epochs: best validation accuracy of each and
  the epochs each trained (the sum over trials).
quick.yaml is CPU-sized, so both modes run it as it is. For efficiency, short mode shrinks the data,
the epochs and the grid (12 points: vgg and deep at width 1/8, quick.yaml's nets, in place of
model2 and model3, which learn nothing in 6 epochs), all recorded in the JSON lines: it shows the
comparison works end to end; at that size its accuracies are weak evidence.
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from bench.common import Recorder, write_readme
from fer_tune.search.sweep_file import (
    BudgetConfig,
    DataConfig,
    PrunerConfig,
    ResourcesConfig,
    SearchConfig,
    SpaceFile,
    load_space,
)
from fer_tune.search.syntax import Param

ROOT = Path(__file__).resolve().parents[1]
QUICK, TANDON = ROOT / "search_spaces" / "quick.yaml", ROOT / "search_spaces" / "tandon2020.yaml"
HELP_REPEATS = 5
TARGETS = {
    "orchestration": "<= 15",
    "cli_help": "< 1",
    "gap": "<= 0.5",
    "epoch_share": "<= 25",
    "full_gpu_hour": "<= 1",
}
EPOCH_BUDGET_SHARE = 0.25  # Optuna+ASHA gets at most this share of the grid's epochs
SHORT_GRID = {  # tandon2020.yaml shrunk to 2 x 3 x 2 = 12 trials. Its model2 and model3 stay at the
    # class prior for more epochs than short mode trains (no BatchNorm); quick.yaml's BatchNorm nets learn.
    "model": ("vgg", "deep"),
    "augmentation": ("trans1", "trans4", "trans10"),
    "scheduler": ("plateau", "cos_warm"),
    "T_0": (2,),
    "T_mult": (10,),
    "kernel_size": (3,),
}
SHORT_WIDTH = 0.125  # short mode scales every conv to 1/8 of its channels, as quick.yaml does
SHORT_EFFICIENCY = dict(n=4000, max_epochs=6, grace_period=1, reduction_factor=3)  # rungs 1, 3, 6
# Asynchronous promotion trains more than synchronous halving's expectation (1.5-1.7x measured on
# 6-trial sweeps: early trials are promoted before a rung has others to compare with), so the
# trial count leaves that much room in the budget.
ASHA_ASYNC_FACTOR = 2.0
FULL_ASHA = dict(grace_period=5, reduction_factor=3)  # full.yaml's pruner
# Bench sweeps are tracked like any sweep (tracking is part of the overhead measured), into their
# own store and under their own model name, so they never mix with real experiments.
BENCH_MLFLOW = {"tracking_uri": f"sqlite:///{ROOT / 'results' / 'mlflow-bench.db'}", "register_as": "fer-emotion-bench"}


def cli_help_seconds() -> list[float]:
    command = [str(Path(sys.executable).with_name("fer-tune")), "--help"]
    times = []
    for _ in range(HELP_REPEATS):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return times


def union_seconds(intervals: list[tuple[float, float]]) -> float:
    """Total length of the union of [start, end] intervals."""
    total, reach = 0.0, -math.inf
    for start, end in sorted(intervals):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


def fit_intervals(sweep) -> list[tuple[float, float]]:
    """(began, ended) wall-clock times of every epoch inside `fit`: each report's time less the
    epoch's own measured seconds (`epoch_seconds` from fit, `reported_at` from the trainable)."""
    intervals = []
    for result in sweep.result_grid:
        frame = result.metrics_dataframe
        if frame is not None and "reported_at" in frame:
            frame = frame.dropna(subset=["reported_at", "epoch_seconds"])
            intervals += [(end - seconds, end) for end, seconds in zip(frame["reported_at"], frame["epoch_seconds"])]
    return intervals


def for_bench(space: SpaceFile) -> SpaceFile:
    """The bench's tracking store; without a GPU, trials ask for one CPU and no GPU (a file's
    gpu: 0.25 would never start)."""
    space = space.model_copy(update={"mlflow": BENCH_MLFLOW})
    if torch.cuda.is_available() or space.resources.gpu == 0:
        return space
    return space.model_copy(update={"resources": ResourcesConfig(cpu=1, gpu=0)})


def tracked_sweep(space: SpaceFile, name: str, verbose: int):
    """Run `space` as `fer-tune run` does, tracked (tracking is part of the overhead measured)."""
    from fer_tune.cli.sweep import run_space

    return run_space(space, name=name, verbose=verbose)[0]


def run_quick(record: Recorder, space: SpaceFile, verbose: int) -> list[dict]:
    """Wall time of one tracked sweep of `space` (quick.yaml in both modes: it is CPU-sized already), split
    into time inside `fit` and the rest."""
    space = for_bench(space)
    called = time.time()
    sweep = tracked_sweep(space, f"bench-quick-{time.strftime('%Y%m%d-%H%M%S')}", verbose)
    returned = time.time()
    intervals = fit_intervals(sweep)
    wall, training, trainer_seconds = sweep.wall_seconds, union_seconds(intervals), sum(e - b for b, e in intervals)
    where = {  # where the orchestration time went, roughly
        "until_first_fit_s": round(min(b for b, _ in intervals) - called, 2),  # data, Ray start, first trial start
        "after_last_fit_s": round(returned - max(e for _, e in intervals), 2),  # last report, results, tracking
    }
    cpus = os.cpu_count() or 1
    concurrency = min(space.budget.max_concurrent or cpus, max(1, int(cpus // space.resources.cpu)))
    setup = dict(space=space.path, trials=len(sweep.trials), epochs_trained=int(sweep.trials["epochs_run"].sum()))
    return [
        record("quick/wall", wall, "s", definition="run_sweep from call to return", **setup),
        record(
            "quick/training",
            training,
            "s",
            definition="union over trials of time inside fit (epoch start to epoch reported)",
            **setup,
        ),
        record(
            "quick/orchestration_share",
            100 * (wall - training) / wall,
            "%",
            target=TARGETS["orchestration"],
            definition="(wall - training) / wall: time when no trial was inside fit",
            **where,
            **setup,
        ),
        record(
            "quick/orchestration_share_by_trainer_seconds",
            100 * max(0.0, 1 - trainer_seconds / (concurrency * wall)),
            "%",
            definition=f"1 - trainer-seconds / ({concurrency} concurrent x wall)",
            trainer_seconds=round(trainer_seconds, 2),
            **setup,
        ),
    ]


def _as_choices(space: SpaceFile, values: dict | None, width: float | None) -> tuple[SpaceFile, SpaceFile]:
    """(the grid, its axes restricted to `values` and `width` fixed if given; the same space with
    choices for Optuna)."""
    grid = tuple(
        p.model_copy(update={"values": values[p.name]}) if values and p.name in values else p for p in space.space
    )
    if width is not None:
        grid += (Param(name="width", kind="fixed", values=(width,)),)
    choices = tuple(p.model_copy(update={"kind": "choice"}) if p.kind == "grid" else p for p in grid)
    return space.model_copy(update={"space": grid}), space.model_copy(update={"space": choices})


def asha_epochs_per_trial(grace: int, reduction: float, max_t: int) -> float:
    """Expected epochs of one trial under synchronous successive halving (ASHA's ideal)."""
    epochs, rung, share = float(grace), grace, 1.0
    while rung < max_t:
        share /= reduction
        nxt = min(max_t, rung * reduction)
        epochs += share * (nxt - rung)
        rung = nxt
    return epochs


def efficiency_spaces(full: bool) -> tuple[SpaceFile, SpaceFile, dict]:
    tandon = load_space(TANDON)
    settings = FULL_ASHA if full else SHORT_EFFICIENCY
    data = DataConfig(source="synthetic", n=tandon.data.n if full else settings["n"], seed=0)
    max_epochs = tandon.budget.max_epochs if full else settings["max_epochs"]
    grid, asha, setup = grid_and_asha(
        None if full else SHORT_GRID,
        None if full else SHORT_WIDTH,
        data,
        max_epochs,
        EPOCH_BUDGET_SHARE,
        dict(grace_period=settings["grace_period"], reduction_factor=settings["reduction_factor"]),
    )
    grid = grid.model_copy(update={"name": "bench-grid"})
    asha = asha.model_copy(update={"name": "bench-asha"})
    setup["sub_grid"] = None if full else {k: list(v) for k, v in SHORT_GRID.items()}
    return grid, asha, setup


def grid_and_asha(
    values: dict | None, width: float | None, data: DataConfig, max_epochs: int, share: float, asha: dict, **budget
) -> tuple[SpaceFile, SpaceFile, dict]:
    """tandon2020.yaml as a grid (its axes restricted to `values`, `width` fixed if given) and the same
    axes as choices for Optuna + ASHA (`asha`: grace_period, reduction_factor) with as many trials as
    `share` of the grid's epochs allows, at most one per grid point; and the setup to record.
    `budget`: more BudgetConfig fields for both (max_concurrent)."""
    from fer_tune.search.sampling import grid_points

    grid, choices = _as_choices(load_space(TANDON), values, width)
    grid = for_bench(
        grid.model_copy(update={"data": data, "budget": BudgetConfig(num_samples=1, max_epochs=max_epochs, **budget)})
    )
    points = len(grid_points(grid))
    epochs = share * points * max_epochs
    per_trial = asha_epochs_per_trial(asha["grace_period"], asha["reduction_factor"], max_epochs)
    samples = max(1, min(points, int(epochs // (ASHA_ASYNC_FACTOR * per_trial))))
    searched = for_bench(
        choices.model_copy(
            update={
                "data": data,
                "search": SearchConfig(algorithm="optuna", seed=0),
                "pruner": PrunerConfig(name="asha", **asha),
                "budget": BudgetConfig(num_samples=samples, max_epochs=max_epochs, **budget),
            }
        )
    )
    setup = dict(
        grid_points=points,
        max_epochs=max_epochs,
        data_n=data.n,
        asha_trials=samples,
        asha=asha,
        epoch_budget=epochs,
        width=width,
    )
    return grid, searched, setup


def run_efficiency(record: Recorder, full: bool, verbose: int) -> list[dict]:
    grid_space, asha_space, setup = efficiency_spaces(full)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    grid = tracked_sweep(grid_space, f"bench-grid-{stamp}", verbose)
    asha = tracked_sweep(asha_space, f"bench-asha-{stamp}", verbose)
    grid_epochs, asha_epochs = int(grid.trials["epochs_run"].sum()), int(asha.trials["epochs_run"].sum())
    grid_best = grid.best.best_metric if grid.best else float("nan")
    asha_best = asha.best.best_metric if asha.best else float("nan")
    return [
        record(
            "efficiency/grid_best_val_accuracy",
            100 * grid_best,
            "%",
            epochs=grid_epochs,
            wall_seconds=round(grid.wall_seconds, 1),
            **setup,
        ),
        record(
            "efficiency/asha_best_val_accuracy",
            100 * asha_best,
            "%",
            epochs=asha_epochs,
            wall_seconds=round(asha.wall_seconds, 1),
            **setup,
        ),
        record(
            "efficiency/accuracy_gap",
            100 * (grid_best - asha_best),
            "points",
            target=TARGETS["gap"],
            definition="grid best - Optuna+ASHA best validation accuracy",
            **setup,
        ),
        record(
            "efficiency/asha_epoch_share",
            100 * asha_epochs / grid_epochs,
            "%",
            target=TARGETS["epoch_share"],
            definition="epochs Optuna+ASHA trained / epochs the grid trained",
            grid_epochs=grid_epochs,
            asha_epochs=asha_epochs,
            **setup,
        ),
    ]


def run(args: argparse.Namespace) -> list[dict]:
    if args.compare:
        from bench.compare import run_compare

        record = Recorder("sweep", "compare" if args.seeds >= 5 else "compare-reduced", args.out)
        datasets = args.datasets.split(",")
        seeds = list(range(args.seeds))
        lines = run_compare(record, datasets, seeds, args.max_epochs, args.n, ROOT / "results", not args.no_grid)
        write_readme(args.out)
        return lines
    record = Recorder("sweep", "full" if args.full else "short", args.out)
    times = cli_help_seconds()
    lines = [
        record(
            "cli_help",
            min(times),
            "s",
            target=TARGETS["cli_help"],
            definition=f"wall time of `fer-tune --help` in a new process, best of {HELP_REPEATS}",
            all=[round(t, 3) for t in times],
        )
    ]
    if not args.skip_quick:
        lines += run_quick(record, load_space(QUICK), args.verbose)
    if not args.skip_efficiency:
        lines += run_efficiency(record, args.full, args.verbose)
    why = {"why": "not run by this bench: time `fer-tune run search_spaces/full.yaml` on the GPU"}
    lines.append(
        record.not_measured(
            "full_yaml_gpu_hours", "GPU-hours", TARGETS["full_gpu_hour"], **(why if torch.cuda.is_available() else {})
        )
    )
    write_readme(args.out)
    return lines


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.sweep", description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="quick.yaml as it is and the whole tandon2020 grid")
    parser.add_argument("--skip-quick", action="store_true")
    parser.add_argument("--skip-efficiency", action="store_true")
    parser.add_argument("--compare", action="store_true", help="only the searcher comparison over seeds")
    parser.add_argument("--seeds", type=int, default=5, help="--compare: search seeds (fewer: a reduced run)")
    parser.add_argument("--datasets", default="synthetic,digits", help="--compare: synthetic, digits or both")
    parser.add_argument("--max-epochs", type=int, default=6, help="--compare: epochs per trial")
    parser.add_argument("--no-grid", action="store_true", help="--compare: leave the grid out (a reduced run)")
    parser.add_argument("--n", type=int, default=4000, help="--compare: synthetic faces generated")
    parser.add_argument("--verbose", type=int, default=0, help="Ray Tune's verbosity (0-3)")
    parser.add_argument("--out", type=Path, help="results folder (default results/bench)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
