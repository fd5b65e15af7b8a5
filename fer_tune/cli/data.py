"""`fer-tune data synth|inspect|clean` and `fer-tune train`: datasets, and one training run without Ray."""

from __future__ import annotations

import argparse
from pathlib import Path

from fer_tune.cli.paths import writable_file
from fer_tune.constants import RESULTS_DIR
from fer_tune.errors import FerTuneError


def add_commands(commands: argparse._SubParsersAction) -> None:
    data = commands.add_parser("data", help="create or inspect a dataset").add_subparsers(metavar="ACTION")
    synth = data.add_parser("synth", help="write a FER2013-format CSV of synthetic faces")
    synth.add_argument("--out", required=True, type=Path, help="CSV file to write")
    synth.add_argument("--n", type=int, default=30000, help="number of images (default 30000)")
    synth.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    synth.set_defaults(handler=cmd_data_synth)
    inspect = data.add_parser("inspect", help="class counts per split, mean/std, average face per class")
    inspect.add_argument("source", help="'synthetic', a FER2013 CSV, or an image folder")
    inspect.add_argument(
        "--out", type=Path, default=None, help="PNG of average faces (default results/<name>_faces.png)"
    )
    inspect.set_defaults(handler=cmd_data_inspect)
    clean = data.add_parser(
        "clean", help="copy a dataset without non-faces and near-duplicates, and report leaks (Dzubak's screening)"
    )
    clean.add_argument("source", help="a FER2013 CSV or an image folder")
    clean.add_argument("--out", required=True, type=Path, help="the cleaned copy, in the source's format")
    clean.add_argument(
        "--no-face-check", dest="face_check", action="store_false", help="keep images where OpenCV finds no face"
    )
    clean.add_argument("--no-dedup", dest="dedup", action="store_false", help="keep near-duplicates within a split")
    clean.add_argument(
        "--drop-leaks", action="store_true", help="drop validation/test images also in train (default: report them)"
    )
    # The default is fer_tune.data.clean.HASH_DISTANCE (tests check it); importing it here would load torch.
    clean.add_argument(
        "--hash-distance",
        type=int,
        default=None,
        metavar="N",
        help="near-duplicates: pHash at most N of 64 bits apart (default 4)",
    )
    clean.add_argument("--force", action="store_true", help="replace --out if it exists")
    clean.set_defaults(handler=cmd_data_clean)

    train = commands.add_parser("train", help="train a space's default point once, without Ray")
    train.add_argument("space", type=Path, help="search-space YAML file")
    train.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a parameter (repeatable)"
    )
    train.add_argument("--data", default=None, help="data source overriding the file's data.source")
    train.add_argument("--save", type=Path, default=None, help="write the final training state (a .pt file)")
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


def cmd_data_synth(args) -> int:
    from fer_tune.data import write_fer2013_csv
    from fer_tune.data.synthetic import generate_faces

    if args.n < 70:
        raise FerTuneError(f"--n {args.n}: expected at least 70 images (10 per class)")
    writable_file(args.out, "--out")
    images, labels, usage = generate_faces(args.n, args.seed)
    write_fer2013_csv(args.out, images, labels, usage)
    print(f"wrote {args.n} synthetic faces (seed {args.seed}) to {args.out}")
    return 0


def cmd_data_inspect(args) -> int:
    from fer_tune.data import load_dataset
    from fer_tune.data.inspect import inspect_dataset

    out = writable_file(args.out or RESULTS_DIR / f"{Path(args.source).stem}_faces.png", "--out")
    data = load_dataset(args.source)
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


def cmd_data_clean(args) -> int:
    from fer_tune.data.clean import clean_dataset

    distance = {} if args.hash_distance is None else {"hash_distance": args.hash_distance}
    result = clean_dataset(
        args.source,
        args.out,
        face_check=args.face_check,
        dedup=args.dedup,
        drop_leaks=args.drop_leaks,
        force=args.force,
        **distance,
    )
    print(result.summary_line())
    return 0


def cmd_train(args) -> int:
    from fer_tune.search.space import load_space

    space = load_space(args.space)
    config = space.default_point(parse_overrides(args.set))
    if args.save:
        writable_file(args.save, "--save")  # before training: a run must not end unable to save
    source = args.data or space.data.source

    import torch
    from tqdm import tqdm

    from fer_tune.core.training import fit

    data = space.data.load(source)
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
    shown = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "val_macro_f1")
    print(f"final: epoch {final['epoch']}  " + "  ".join(f"{key} {final[key]:.4f}" for key in shown))
    print(f"best val_accuracy {best['val_accuracy']:.4f} at epoch {best['epoch']}")
    if args.save:
        torch.save(final_state["state"].state_dict(), args.save)  # weights_only-loadable: see core.checkpoint
        print(f"saved training state to {args.save}")
    return 0
