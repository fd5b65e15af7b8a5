"""`fer-tune data synth|inspect|clean`: create, describe and clean datasets."""

from __future__ import annotations

import argparse
from pathlib import Path

from fer_tune.cli.paths import given, given_path, writable_file
from fer_tune.constants import RESULTS_DIR
from fer_tune.errors import FerTuneError
from fer_tune.numbers import parse_int


def add_commands(commands: argparse._SubParsersAction) -> None:
    data = commands.add_parser("data", help="create or inspect a dataset").add_subparsers(metavar="ACTION")
    synth = data.add_parser("synth", help="write a FER2013-format CSV of synthetic faces")
    synth.add_argument("--out", required=True, type=given_path, help="CSV file to write")
    synth.add_argument("--n", type=parse_int, default=30000, help="number of images (default 30000)")
    synth.add_argument("--seed", type=parse_int, default=0, help="generator seed (default 0)")
    synth.set_defaults(handler=cmd_data_synth)
    inspect = data.add_parser("inspect", help="class counts per split, mean/std, average face per class")
    inspect.add_argument("source", type=given, help="'synthetic', a FER2013 CSV, or an image folder")
    inspect.add_argument(
        "--out", type=Path, default=None, help="PNG of average faces (default results/<name>_faces.png)"
    )
    inspect.set_defaults(handler=cmd_data_inspect)
    clean = data.add_parser(
        "clean", help="copy a dataset without non-faces and near-duplicates, and report leaks (Dzubak's screening)"
    )
    clean.add_argument("source", type=given, help="a FER2013 CSV or an image folder")
    clean.add_argument("--out", required=True, type=given_path, help="the cleaned copy, in the source's format")
    clean.add_argument(
        "--no-face-check", dest="face_check", action="store_false", help="keep images where OpenCV finds no face"
    )
    clean.add_argument("--no-dedup", dest="dedup", action="store_false", help="keep near-duplicates within a split")
    clean.add_argument(
        "--drop-leaks", action="store_true", help="drop validation/test images also in train (default: report them)"
    )
    # The default is fer_tune.data.phash.HASH_DISTANCE (tests check it); importing it here would load torch.
    clean.add_argument(
        "--hash-distance",
        type=int,
        default=None,
        metavar="N",
        help="near-duplicates: pHash at most N of 64 bits apart (default 4)",
    )
    clean.add_argument("--force", action="store_true", help="replace --out if it exists")
    clean.set_defaults(handler=cmd_data_clean)


def cmd_data_synth(args) -> int:
    from fer_tune.data import write_fer2013_csv
    from fer_tune.data.synthetic import check_seed, check_size, generate_faces

    check_size(args.n, "--n")
    check_seed(args.seed, "--seed")
    writable_file(args.out, "--out")
    images, labels, usage = generate_faces(args.n, args.seed)
    try:
        write_fer2013_csv(args.out, images, labels, usage)
    except OSError as err:  # a full disk (or /dev/full): nothing half-written is left behind as if complete
        if args.out.is_file():
            args.out.unlink(missing_ok=True)
        raise FerTuneError(f"--out {args.out}: cannot write it ({err.strerror or err})") from None
    print(f"wrote {args.n} synthetic faces (seed {args.seed}) to {args.out}")
    return 0


def cmd_data_inspect(args) -> int:
    from fer_tune.data import load_dataset
    from fer_tune.data.describe import inspect_dataset

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
