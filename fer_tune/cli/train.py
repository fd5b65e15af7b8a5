"""`fer-tune train`: one training run of a space's default point, or of a sweep's trial again, without Ray.

fer-tune train search_spaces/quick.yaml --set lr=0.01      # the space's default point, lr changed
fer-tune train --trial quick-20261121-101500/3f2a9c1e      # a trial's configuration and data, again
"""

from __future__ import annotations

import argparse

from fer_tune.cli.paths import given, given_path, writable_file
from fer_tune.errors import FerTuneError
from fer_tune.numbers import parse_int, whole_number

MAX_THREADS = 1024


def add_threads_flag(parser: argparse.ArgumentParser, default: str) -> None:
    """--threads N: torch's CPU threads (fer_tune.core.threads decides them without it)."""
    parser.add_argument("--threads", type=parse_int, default=None, metavar="N", help=f"torch's CPU threads ({default})")


def checked_threads(args) -> int | None:
    """--threads, checked before any work (1 to MAX_THREADS), or None."""
    return None if args.threads is None else whole_number(args.threads, "--threads", low=1, high=MAX_THREADS)


def add_commands(commands: argparse._SubParsersAction) -> None:
    train = commands.add_parser("train", help="train a space's default point, or a sweep's trial, once without Ray")
    train.add_argument("space", type=given_path, nargs="?", help="search-space YAML file (or --trial)")
    train.add_argument(
        "--trial",
        metavar="SWEEP/TRIAL_ID",
        help="train a sweep's trial again from its record (results/SWEEP/ or MLflow): same config, data and seed",
    )
    train.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a parameter (repeatable)"
    )
    train.add_argument("--data", type=given, help="data source overriding the file's data.source")
    train.add_argument("--save", type=given_path, default=None, help="write the final training state (a .pt file)")
    add_threads_flag(train, "default: the space's resources.cpu, at most the CPUs this process may use")
    train.set_defaults(handler=cmd_train)


def parse_overrides(pairs: list[str]) -> dict:
    """`--set lr=0.01 --set model=model2` -> {"lr": 0.01, "model": "model2"}, values typed as YAML."""
    import yaml

    from fer_tune.core.config import TrainConfig, make_train_config

    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise FerTuneError(f"--set {pair}: expected KEY=VALUE")
        if key not in TrainConfig.model_fields:
            raise FerTuneError(
                f"--set {pair}: unknown key {key!r}; expected one of: {', '.join(TrainConfig.model_fields)}"
            )
        overrides[key] = yaml.safe_load(value)
        make_train_config({key: overrides[key]}, where="--set")  # name the flag, not the file, in errors
    return overrides


def cmd_train(args) -> int:
    from fer_tune.core.config import make_train_config

    if (args.space is None) == (args.trial is None):
        raise FerTuneError("train: give a search-space file or --trial SWEEP/TRIAL_ID, not both nor neither")
    overrides = parse_overrides(args.set)
    if args.trial:
        from fer_tune.tracking.retrain import find_trial

        found = find_trial(args.trial)
        space = found.space
        config = make_train_config({**found.config.model_dump(), **overrides}, where="--set")
        source = args.data or found.data_source or space.data.source
        print(f"trial {args.trial}: configuration from {found.where}")
    else:
        from fer_tune.search.sweep_file import load_space

        space = load_space(args.space)
        config = space.default_point(overrides)
        source = args.data or space.data.source
    if args.save:
        writable_file(args.save, "--save")  # before training: a run must not end unable to save
    checked_threads(args)

    import torch
    from tqdm import tqdm

    from fer_tune.core.threads import use_threads
    from fer_tune.core.training import fit

    # The CPUs a trial of this space gets (resources.cpu), as a sweep runs it: a --trial run then sums as the
    # trial did (CPU sums depend on the threads), and threads never outnumber the CPUs (core/threads.py).
    threads = use_threads(share=space.resources.cpu, override=args.threads)

    data = space.data.load(source)
    print(f"data: {data.source} — train {len(data.train)}, validation {len(data.validation)}")
    print("config: " + ", ".join(f"{k}={v}" for k, v in config.model_dump().items()))
    print(f"threads: {threads} (resources.cpu {space.resources.cpu:g}; --threads to change)")
    final_state = {}
    with tqdm(total=config.epochs, unit="epoch", desc=config.model) as bar:

        def on_epoch(metrics, state):
            bar.update(1)
            bar.set_postfix(loss=f"{metrics['train_loss']:.3f}", val_acc=f"{metrics['val_accuracy']:.3f}")
            final_state["state"] = state

        history = fit(config, data, on_epoch)
    best = max(history, key=lambda m: m["val_accuracy"])
    final = history[-1]
    shown = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "val_macro_f1")
    print(f"final: epoch {final['epoch']}  " + "  ".join(f"{key} {final[key]:.4f}" for key in shown))
    print(f"best val_accuracy {best['val_accuracy']:.4f} at epoch {best['epoch']}")
    if args.save:
        torch.save(final_state["state"].state_dict(), args.save)  # weights_only-loadable: see core.checkpoint
        print(f"saved training state to {args.save}")
    return 0
