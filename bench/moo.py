"""Multi-objective search: the hypervolume of the front each strategy finds, and the epochs it costs.

    .venv/bin/python -m bench.moo              # short: a few seeds on small synthetic data
    .venv/bin/python -m bench.moo --full       # quick.yaml's data size, 10 trials, 6 epochs, 5 seeds

Objectives: validation accuracy (max) and MACs (min; deterministic, where latency_ms is a noisy wall
clock on a shared CPU). The space is quick.yaml's models (vgg, deep, model3), with `width` and the
depthwise-separable knob added so cost really varies. Four strategies, each with the same number of
trials and the same epochs per trial:
  (a) mo_tpe_moasha   multi-objective TPE + multi-objective ASHA (fer-tune's `objectives:` sweep)
  (b) mo_tpe_none     the same without pruning (every trial to the last epoch)
  (c) tpe_asha_acc    single-objective TPE + ASHA on accuracy, its trials filtered to a front afterwards
  (d) random_moasha   random sampling + multi-objective ASHA
Hypervolume: of the scored trials' (accuracy, log10 MACs) points against the reference point
(accuracy 0, log10 of 1.1 x the largest MACs of the space), larger is better; the figure per
strategy is the median over search seeds. Goals (issue 18): (a) >= (b) at <= 40% of its epochs,
(a) > (c), (a) > (d). Short mode is small (weak evidence), and says so in every JSON line.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import tempfile
from pathlib import Path

from bench.common import Recorder, write_readme
from fer_tune.core.config import TrainConfig
from fer_tune.core.cost import count_macs
from fer_tune.search.moasha import non_dominated_fronts

ROOT = Path(__file__).resolve().parents[1]
STRATEGIES = ("mo_tpe_moasha", "mo_tpe_none", "tpe_asha_acc", "random_moasha")
SPACE = """
space:
  model: {{choice: [vgg, deep, model3]}}
  width: {{choice: [0.0625, 0.125, 0.25]}}
  separable: {{choice: [false, true]}}
  dropout: {{choice: [0.0, 0.25]}}
  augmentation: {{choice: [trans1, none]}}
  lr: {{loguniform: [3.0e-4, 3.0e-3], default: 1.0e-3}}
  batch_size: 32
  scheduler: onecycle
"""
SIZES = {  # mode -> data size, trials, epochs, seeds
    "short": dict(n=1200, trials=8, epochs=4, seeds=3),
    "full": dict(n=4000, trials=10, epochs=6, seeds=5),
}


def space_yaml(strategy: str, seed: int, n: int, trials: int, epochs: int) -> str:
    multi = strategy != "tpe_asha_acc"
    goal = (
        "objectives:\n  - {metric: val_accuracy, mode: max}\n  - {metric: macs, mode: min}\n"
        if multi
        else "metric: val_accuracy\nmode: max\n"
    )
    algorithm = "random" if strategy == "random_moasha" else "optuna"
    pruner = "none" if strategy == "mo_tpe_none" else "asha"
    return (
        f"name: moo-{strategy}-{seed}\ndata: {{source: synthetic, n: {n}, seed: 0}}\n{goal}"
        f"search: {{algorithm: {algorithm}, seed: {seed}}}\n"
        f"pruner: {{name: {pruner}, grace_period: 1, reduction_factor: 2}}\n"
        f"dead_trials: {{enabled: {'false' if pruner == 'none' else 'true'}}}\n"  # (b): no early stop of any kind
        f"budget: {{num_samples: {trials}, max_epochs: {epochs}, max_concurrent: 2}}\n"
        "resources: {cpu: 1, gpu: 0}\n" + SPACE.format()
    )


def largest_macs() -> int:
    return max(
        count_macs(build(TrainConfig(model=m, width=0.25, separable=False)), 48) for m in ("vgg", "deep", "model3")
    )


def build(config: TrainConfig):
    from fer_tune.core.classifier import build_model

    return build_model(config, 7, 0.0, 1.0)


def hypervolume(points: list[tuple[float, float]], reference: tuple[float, float]) -> float:
    """2-D hypervolume of (accuracy, log10 MACs) points, accuracy maximized and MACs minimized,
    dominated region bounded by `reference` = (worst accuracy, worst log10 MACs)."""
    inside = [(a, m) for a, m in points if a > reference[0] and m < reference[1]]
    if not inside:
        return 0.0
    front = [inside[i] for i in non_dominated_fronts([(a, -m) for a, m in inside])[0]]
    front = sorted(set(front), key=lambda p: p[1])  # cheapest first; accuracy rises along the front
    volume, best = 0.0, reference[0]
    for (accuracy, cost), following in zip(front, [*front[1:], (None, reference[1])]):
        best = max(best, accuracy)
        volume += (following[1] - cost) * (best - reference[0])
    return volume


def run_one(strategy: str, seed: int, size: dict, folder: Path) -> tuple[float, int]:
    """One sweep: (hypervolume, epochs trained summed over trials)."""
    from fer_tune.cli.sweep import run_space
    from fer_tune.search.sweep_file import load_space

    path = folder / f"{strategy}-{seed}.yaml"
    path.write_text(space_yaml(strategy, seed, size["n"], size["trials"], size["epochs"]))
    sweep = run_space(load_space(path), name=f"moo-{strategy}-{seed}", storage=folder / "ray", track=False)[0]
    trials = sweep.trials.dropna(subset=["best_val_accuracy", "macs"])
    points = [(float(a), math.log10(float(m))) for a, m in zip(trials["best_val_accuracy"], trials["macs"])]
    return hypervolume(points, (0.0, math.log10(1.1 * REFERENCE_MACS))), int(sweep.trials["epochs_run"].sum())


REFERENCE_MACS = 0  # set in main: the largest MACs of the space


def main(argv: list[str] | None = None) -> int:
    global REFERENCE_MACS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true")
    parser.add_argument("--seeds", type=int, default=None)
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "bench", help="results folder")
    args = parser.parse_args(argv)
    mode = "full" if args.full else "short"
    size = {**SIZES[mode], **({"seeds": args.seeds} if args.seeds else {})}
    REFERENCE_MACS = largest_macs()
    record = Recorder("moo", mode, args.out)
    results: dict[str, list[tuple[float, int]]] = {s: [] for s in STRATEGIES}
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)  # results/<sweep>/ of these sweeps stay out of the repository
        for seed in range(size["seeds"]):
            for strategy in STRATEGIES:
                results[strategy].append(run_one(strategy, seed, size, Path(tmp)))
                print(f"[bench.moo] seed {seed} {strategy}: {results[strategy][-1]}", flush=True)
        os.chdir(ROOT)
    setup = dict(
        size, reference_macs=REFERENCE_MACS, note="short mode: small data, weak evidence" if mode == "short" else ""
    )
    median = {s: statistics.median(h for h, _ in results[s]) for s in STRATEGIES}
    epochs = {s: statistics.median(e for _, e in results[s]) for s in STRATEGIES}
    for strategy in STRATEGIES:
        record(f"hypervolume/{strategy}", median[strategy], "HV", per_seed=results[strategy], **setup)
        record(f"epochs/{strategy}", epochs[strategy], "epochs", **setup)
    a, b = "mo_tpe_moasha", "mo_tpe_none"
    record("hv_ratio/a_over_b", median[a] / median[b] if median[b] else None, "ratio", ">= 1", **setup)
    record("epoch_share/a_of_b", 100 * epochs[a] / epochs[b], "%", "<= 40", **setup)
    record("hv_margin/a_minus_c", median[a] - median["tpe_asha_acc"], "HV", "> 0", **setup)
    record("hv_margin/a_minus_d", median[a] - median["random_moasha"], "HV", "> 0", **setup)
    write_readme(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
