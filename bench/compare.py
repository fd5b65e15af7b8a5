"""Search efficiency over several search seeds: grid vs random+ASHA vs TPE+ASHA (with and without the
thin-rung rule) vs warm-started TPE+ASHA.

    .venv/bin/python -m bench.sweep --compare                       # synthetic faces and sklearn digits, 5 seeds
    .venv/bin/python -m bench.sweep --compare --seeds 2 --datasets digits --max-epochs 3   # a reduced run

On each dataset (synthetic faces; scikit-learn's 8x8 handwritten digits written as an image folder):
* grid: the tandon2020-shaped grid (COMPARE_GRID, 60 points), every trial to the last epoch; it has no
  search seed, so it runs once per dataset.
* random+ASHA and TPE+ASHA: the same axes as choices, the same number of trials and the same ASHA
  rungs (equal epoch budgets: COMPARE_SHARE of the grid's), once per search seed.
* TPE+ASHA with the opt-in thin-rung rule (pruner.min_rung_results: 3): the rule measured on its own.
* warm TPE+ASHA: TPE+ASHA with seed s warm-started (`--warm-start`) from the cold TPE+ASHA sweep of the
  next seed: a different-seed earlier sweep on the same data.
Figures: median and spread (min, max) over the seeds of the best validation accuracy and of the epochs
trained; the gaps the targets name; and for the warm sweeps the epochs (in the order they were trained)
until one of its trials reached the cold sweep's final best, as a share of the cold sweep's epochs.
Sweeps are untracked (--no-track): this compares searchers, not tracking overhead (bench.sweep's quick/).
"""

from __future__ import annotations

import math
import statistics
import time
from pathlib import Path

TARGETS = {"tpe_vs_grid": ">= 1", "tpe_grid_epochs": "<= 15", "tpe_vs_random": ">= 0.5", "warm_share": "<= 50"}


def digits_folder(root: Path) -> Path:
    """scikit-learn's handwritten digits (1,797 8x8 images) as ROOT/train/<digit>/*.png and ROOT/test."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    if (root / "train").is_dir():
        return root
    digits = load_digits()
    rng = np.random.default_rng(0)
    order = rng.permutation(len(digits.target))
    for rank, index in enumerate(order):
        split = "test" if rank % 5 == 0 else "train"  # 20% test; validation is carved from train
        folder = root / split / str(digits.target[index])
        folder.mkdir(parents=True, exist_ok=True)
        pixels = (digits.images[index] * (255 / 16)).astype("uint8")
        Image.fromarray(pixels).save(folder / f"{index}.png")
    return root


# The grid: tandon2020.yaml's own axes (2 models x 5 augmentations x 3 schedules x 2 filter sizes; one
# cos_warm setting) at bench.sweep's short width, with vgg and deep for its model2 and model3, which
# learn nothing in a few CPU epochs (bench.sweep's SHORT_GRID says why).
COMPARE_GRID = {
    "model": ("vgg", "deep"),
    "augmentation": ("trans1", "trans3", "trans4", "trans7", "trans10"),
    "scheduler": ("plateau", "step", "cos_warm"),
    "T_0": (2,),
    "T_mult": (10,),
    "kernel_size": (2, 3),
}
# The searchers get the share of the grid's epochs the target names (<= 15%), as trials: epochs /
# (ASHA's expected epochs per trial x bench.sweep's allowance for asynchronous promotion).
COMPARE_SHARE = 0.15
COMPARE_ASHA = dict(grace_period=1, reduction_factor=3)
THIN_RUNG = 3  # the opt-in rule's N for the tpe_floor arm: the reduction factor


def spaces_for(dataset: str, data_source: str | None, max_epochs: int, n: int):
    """(grid, choices space, setup): the tandon2020-shaped grid and the same axes as choices for the
    searchers, with as many ASHA trials as COMPARE_SHARE of the grid's epochs allows."""
    from bench.sweep import SHORT_WIDTH, grid_and_asha
    from fer_tune.search.sweep_file import DataConfig

    data = DataConfig(source="synthetic", n=n, seed=0)
    grid, asha, setup = grid_and_asha(
        COMPARE_GRID, SHORT_WIDTH, data, max_epochs, COMPARE_SHARE, COMPARE_ASHA, max_concurrent=2
    )
    grid = grid.model_copy(update={"name": f"cmp-{dataset}-grid"})
    asha = asha.model_copy(update={"name": f"cmp-{dataset}-asha"})
    setup.update(grid_axes={k: list(v) for k, v in COMPARE_GRID.items()}, data_source=data_source or "synthetic")
    return grid, asha, setup


def sweep_run(space, name: str, data_source: str | None, warm: str | None = None):
    from fer_tune.cli.sweep import run_space

    return run_space(space, name=name, data_source=data_source, track=False, warm_start=warm)[0]


def reports(sweep) -> list[float]:
    """The metric of every epoch of the sweep in the order the epochs ended (all trials together)."""
    rows = []
    for result in sweep.result_grid:
        frame = result.metrics_dataframe
        if frame is not None and "reported_at" in frame:
            rows += list(zip(frame["reported_at"], frame[sweep.space.metric]))
    return [value for _, value in sorted(rows)]


def epochs_to_reach(values: list[float], target: float) -> int | None:
    for count, value in enumerate(values, start=1):
        if value >= target - 1e-9:
            return count
    return None


def summary(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "values": values}


def run_compare(
    record, datasets: list[str], seeds: list[int], max_epochs: int, n: int, workdir: Path, grid: bool = True
) -> list[dict]:
    """Every figure of the module docstring; without `grid`, the grid and its gaps are left out (a reduced run)."""
    lines = []
    run_grid = grid
    for dataset in datasets:
        source = str(digits_folder(workdir / "digits")) if dataset == "digits" else None
        grid_space, asha_space, setup = spaces_for(dataset, source, max_epochs, n)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        grid_best, grid_epochs = math.nan, 0
        if run_grid:
            grid = sweep_run(grid_space, f"cmp-{dataset}-grid-{stamp}", source)
            grid_best, grid_epochs = 100 * grid.best.best_metric, int(grid.trials["epochs_run"].sum())
        found: dict[str, dict[int, tuple[float, int]]] = {"random": {}, "tpe": {}, "tpe_floor": {}, "warm": {}}
        cold = {}
        floored = asha_space.pruner.model_copy(update={"min_rung_results": THIN_RUNG})
        for seed in seeds:
            for method, algorithm in (("random", "random"), ("tpe", "optuna"), ("tpe_floor", "optuna")):
                space = asha_space.model_copy(
                    update={"search": asha_space.search.model_copy(update={"algorithm": algorithm, "seed": seed})}
                )
                if method == "tpe_floor":  # the opt-in thin-rung rule on
                    space = space.model_copy(update={"pruner": floored})
                sweep = sweep_run(space, f"cmp-{dataset}-{method}-s{seed}-{stamp}", source)
                found[method][seed] = (100 * sweep.best.best_metric, int(sweep.trials["epochs_run"].sum()))
                if method == "tpe":
                    cold[seed] = sweep
        warm_share = []
        for position, seed in enumerate(seeds):
            if len(seeds) < 2:
                break
            earlier = cold[seeds[(position + 1) % len(seeds)]]
            space = asha_space.model_copy(
                update={"search": asha_space.search.model_copy(update={"algorithm": "optuna", "seed": seed})}
            )
            sweep = sweep_run(space, f"cmp-{dataset}-warm-s{seed}-{stamp}", source, warm=earlier.name)
            found["warm"][seed] = (100 * sweep.best.best_metric, int(sweep.trials["epochs_run"].sum()))
            target = cold[seed].best.best_metric
            reached = epochs_to_reach(reports(sweep), target)
            cold_epochs = int(cold[seed].trials["epochs_run"].sum())
            warm_share.append(100 * reached / cold_epochs if reached is not None else None)
        context = dict(dataset=dataset, seeds=seeds, **setup)
        if run_grid:
            lines.append(record(f"compare/{dataset}/grid_best", grid_best, "%", epochs=grid_epochs, **context))
        for method in ("random", "tpe", "tpe_floor", "warm"):
            if not found[method]:
                continue
            best = [found[method][s][0] for s in seeds if s in found[method]]
            epochs = [found[method][s][1] for s in seeds if s in found[method]]
            lines.append(
                record(
                    f"compare/{dataset}/{method}_best",
                    statistics.median(best),
                    "%",
                    spread=summary(best),
                    epochs=summary(epochs),
                    **context,
                )
            )
        tpe = [found["tpe"][s][0] for s in seeds]
        rnd = [found["random"][s][0] for s in seeds]
        tpe_epochs = statistics.median(found["tpe"][s][1] for s in seeds)
        lines.append(
            record(
                f"compare/{dataset}/tpe_minus_grid",
                None if not run_grid else statistics.median(tpe) - grid_best,
                "points",
                target=TARGETS["tpe_vs_grid"],
                definition="median over seeds of TPE+ASHA best - grid best (validation accuracy)",
                epoch_share=round(100 * tpe_epochs / grid_epochs, 1) if run_grid else None,
                epoch_share_target=TARGETS["tpe_grid_epochs"],
                **context,
            )
        )
        lines.append(
            record(
                f"compare/{dataset}/tpe_minus_random",
                statistics.median(t - r for t, r in zip(tpe, rnd)),
                "points",
                target=TARGETS["tpe_vs_random"],
                definition="median over seeds of (TPE+ASHA best - random+ASHA best), same seed and budget",
                **context,
            )
        )
        floor = [found["tpe_floor"][s][0] - found["tpe"][s][0] for s in seeds]
        floor_epochs = [found["tpe_floor"][s][1] - found["tpe"][s][1] for s in seeds]
        lines.append(
            record(
                f"compare/{dataset}/thin_rung_rule",
                statistics.median(floor),
                "points",
                definition=f"median over seeds of (TPE+ASHA best with pruner.min_rung_results: {THIN_RUNG} - "
                "without it); epochs: the same difference in epochs trained",
                spread=summary(floor),
                epochs=summary(floor_epochs),
                **context,
            )
        )
        if warm_share:
            reached = [s for s in warm_share if s is not None]
            lines.append(
                record(
                    f"compare/{dataset}/warm_epochs_to_cold_best",
                    statistics.median(reached) if reached else None,
                    "%",
                    target=TARGETS["warm_share"],
                    definition="epochs a warm-started TPE+ASHA sweep trained until it reached the cold sweep's "
                    "final best, / the cold sweep's epochs (median over seeds that reached it)",
                    per_seed=warm_share,
                    reached=f"{len(reached)} of {len(warm_share)}",
                    **context,
                )
            )
    return lines
