"""The `fer-tune` command: parse arguments, build the config, dispatch.

Only argparse is imported at module level: torch, ray and mlflow are imported
inside the commands, so `fer-tune --help` answers at once.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fer_tune import commands_mlflow
from fer_tune.errors import FerTuneError


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "handler"):
        parser.print_help()
        return 2
    try:
        return args.handler(args) or 0
    except FerTuneError as err:
        print(f"fer-tune: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("fer-tune: interrupted", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fer-tune", description="Hyperparameter search for facial-emotion-recognition CNNs."
    )
    commands = parser.add_subparsers(metavar="COMMAND")

    data = commands.add_parser("data", help="create or inspect a dataset").add_subparsers(metavar="ACTION")
    synth = data.add_parser("synth", help="write a FER2013-format CSV of synthetic faces")
    synth.add_argument("--out", required=True, type=Path, help="CSV file to write")
    synth.add_argument("--n", type=int, default=30000, help="number of images (default 30000)")
    synth.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    synth.set_defaults(handler=cmd_data_synth)
    inspect = data.add_parser("inspect", help="class counts per split, mean/std, average face per class")
    inspect.add_argument("source", help="'synthetic', a FER2013 CSV, or an image folder")
    inspect.add_argument("--out", type=Path, default=None, help="PNG of average faces (default results/<name>_faces.png)")
    inspect.set_defaults(handler=cmd_data_inspect)

    train = commands.add_parser("train", help="train a space's default point once, without Ray")
    train.add_argument("space", type=Path, help="search-space YAML file")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a parameter (repeatable)")
    train.add_argument("--data", default=None, help="data source overriding the file's data.source")
    train.add_argument("--save", type=Path, default=None, help="write the final training state (a .pt file)")
    train.set_defaults(handler=cmd_train)

    run = commands.add_parser("run", help="run a search-space file as a Ray Tune sweep")
    run.add_argument("space", type=Path, help="search-space YAML file")
    run.add_argument("--data", default=None, help="data source overriding the file's data.source")
    run.add_argument("--name", default=None, help="sweep name (default SPACE-DATE-TIME; with --resume: the latest)")
    run.add_argument("--num-samples", type=int, default=None, help="override budget.num_samples")
    run.add_argument("--max-epochs", type=int, default=None, help="override budget.max_epochs")
    run.add_argument("--address", default=None, help="join a Ray cluster (default: RAY_ADDRESS, else local Ray)")
    run.add_argument("--storage", default=None, help="Ray storage path shared by all nodes (default results/ray)")
    run.add_argument("--resume", action="store_true", help="continue an interrupted sweep")
    run.set_defaults(handler=cmd_run)

    results = commands.add_parser("results", help="print the leaderboard of a sweep")
    results.add_argument("name", nargs="?", default=None, help="sweep name (default: the latest)")
    results.add_argument("--top", type=int, default=10)
    results.set_defaults(handler=cmd_results)
    commands_mlflow.add_commands(commands)  # ui, models list|download, predict
    return parser


def parse_overrides(pairs: list[str]) -> dict:
    """`--set lr=0.01 --set model=model2` -> {"lr": 0.01, "model": "model2"}, values typed as YAML."""
    import yaml

    from fer_tune.config import TrainConfig, make_train_config

    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise FerTuneError(f"--set {pair}: expected KEY=VALUE")
        if key not in TrainConfig.model_fields:
            raise FerTuneError(f"--set {pair}: unknown key {key!r}; expected one of: {', '.join(TrainConfig.model_fields)}")
        overrides[key] = yaml.safe_load(value)
        make_train_config({key: overrides[key]}, where="--set")  # name the flag, not the file, in errors
    return overrides


def cmd_data_synth(args) -> int:
    from fer_tune.data import write_fer2013_csv
    from fer_tune.data.synthetic import generate_faces

    if args.n < 70:
        raise FerTuneError(f"--n {args.n}: expected at least 70 images (10 per class)")
    images, labels, usage = generate_faces(args.n, args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_fer2013_csv(args.out, images, labels, usage)
    print(f"wrote {args.n} synthetic faces (seed {args.seed}) to {args.out}")
    return 0


def cmd_data_inspect(args) -> int:
    from fer_tune.data import load_dataset
    from fer_tune.data.inspect import inspect_dataset

    data = load_dataset(args.source)
    out = args.out or Path("results") / f"{Path(args.source).stem}_faces.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    summary = inspect_dataset(data, out)
    print(f"{summary['source']}: mean {summary['mean']:.4f}, std {summary['std']:.4f}")
    width = max(len(name) for name in summary["classes"])
    splits = list(summary["splits"])
    print(f"{'class':<{width}}  " + "  ".join(f"{s:>10}" for s in splits))
    for name in summary["classes"]:
        print(f"{name:<{width}}  " + "  ".join(f"{summary['splits'][s][name]:>10}" for s in splits))
    totals = [sum(summary["splits"][s].values()) for s in splits]
    print(f"{'total':<{width}}  " + "  ".join(f"{t:>10}" for t in totals))
    print(f"average faces: {out}")
    return 0


def cmd_train(args) -> int:
    from fer_tune.config import load_space

    space = load_space(args.space)
    config = space.default_point(parse_overrides(args.set))
    source = args.data or space.data.source

    import torch
    from tqdm import tqdm

    from fer_tune.data import load_dataset
    from fer_tune.training import fit

    data = load_dataset(source, n=space.data.n, seed=space.data.seed, val_fraction=space.data.val_fraction)
    print(f"data: {data.source} — train {len(data.train)}, validation {len(data.validation)}")
    print("config: " + ", ".join(f"{k}={v}" for k, v in config.model_dump().items()))
    final_state = {}
    with tqdm(total=config.epochs, unit="epoch", desc=config.model) as bar:

        def on_epoch(metrics, state):
            bar.update(1)
            bar.set_postfix(loss=f"{metrics['train_loss']:.3f}", val_acc=f"{metrics['val_accuracy']:.3f}")
            final_state["state"] = state

        history = fit(config, data, on_epoch)
    best = max(history, key=lambda m: m["val_accuracy"])
    final = history[-1]
    print(
        f"final: epoch {final['epoch']}  train_loss {final['train_loss']:.4f}  train_accuracy {final['train_accuracy']:.4f}  "
        f"val_loss {final['val_loss']:.4f}  val_accuracy {final['val_accuracy']:.4f}  val_macro_f1 {final['val_macro_f1']:.4f}"
    )
    print(f"best val_accuracy {best['val_accuracy']:.4f} at epoch {best['epoch']}")
    if args.save:
        args.save.parent.mkdir(parents=True, exist_ok=True)
        torch.save(final_state["state"].state_dict(), args.save)
        print(f"saved training state to {args.save}")
    return 0


def cmd_run(args) -> int:
    from fer_tune.config import load_space, with_budget

    space = with_budget(load_space(args.space), num_samples=args.num_samples, max_epochs=args.max_epochs)
    from fer_tune.search import run_sweep

    sweep = run_sweep(
        space, name=args.name, data_source=args.data, address=args.address, resume=args.resume, storage=args.storage
    )
    from fer_tune.results import leaderboard_markdown

    print(f"\nsweep {sweep.name}: {len(sweep.trials)} trials in {sweep.wall_seconds:.0f} s; results in {sweep.out_dir}/")
    print(leaderboard_markdown(sweep.trials, space.metric, space.mode))
    if sweep.best is not None:
        print(f"\nbest trial {sweep.best.trial_id}: {space.metric} {sweep.best.best_metric:.4f}")
        print("best configuration: " + ", ".join(f"{k}={v}" for k, v in sweep.best.params.items() if v is not None))
    if sweep.registration is not None:
        print(sweep.registration.message)
        print("browse the sweep with `fer-tune ui`; list the registry with `fer-tune models list`")
    return 0


def cmd_results(args) -> int:
    from fer_tune.results import leaderboard_markdown, load_sweep

    sweep = load_sweep(args.name)
    print(f"sweep {sweep.name}: {len(sweep.trials)} trials")
    print(leaderboard_markdown(sweep.trials, sweep.metric, sweep.mode, args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
