"""Run every benchmark and rewrite results/bench/README.md: `make bench`.

    .venv/bin/python -m bench.run_all                   # short versions (~15 min on a 2-core CPU)
    .venv/bin/python -m bench.run_all --full            # the real sizes (GPU-sized: days on a CPU)
    .venv/bin/python -m bench.run_all --only pipeline   # one or more of: pipeline trial models sweep serve tracking moo

Each bench appends one JSON line per figure to results/bench/<bench>.json and prints it;
the README's table shows the latest line of every figure. Timings are only as quiet as the
machine: run this on an otherwise idle one.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from bench import models, moo, pipeline, serve, sweep, tracking, trial
from bench.common import RESULTS, write_readme

BENCHES = {
    "pipeline": pipeline,
    "trial": trial,
    "models": models,
    "sweep": sweep,
    "serve": serve,
    "tracking": tracking,
    "moo": moo,
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.run_all", description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="the real sizes instead of the short versions")
    parser.add_argument("--only", nargs="+", choices=list(BENCHES), default=list(BENCHES))
    parser.add_argument("--out", type=Path, help=f"results folder (default {RESULTS})")
    args = parser.parse_args(argv)
    common = (["--full"] if args.full else []) + (["--out", str(args.out)] if args.out else [])
    for name in args.only:
        start = time.perf_counter()
        BENCHES[name].main(common)
        print(f"[bench] {name} took {time.perf_counter() - start:.0f} s", flush=True)
    print(f"[bench] table: {write_readme(args.out)}")


if __name__ == "__main__":
    sys.exit(main())
