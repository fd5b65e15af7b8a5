"""What tracking costs the driver: the local SQLite store against `mlflow server` on PostgreSQL.

    .venv/bin/python -m bench.tracking                 # callback cost per trial-epoch, both stores (~1 min)
    .venv/bin/python -m bench.tracking --sweep         # and a small sweep end to end: untracked, SQLite, server

Figures (results/bench/tracking.json):
- callback_ms_per_epoch/{sqlite,postgres_server}: the median driver-side wall time of
  MlflowCallback.on_trial_result, the call Ray Tune makes on the driver for every trial-epoch (one
  log_batch of the epoch's metrics; the trial's run is found or created on its first epoch and
  cached), over `--trials` x `--epochs` results; trial_open_ms/...: on_trial_start (a child run
  with the trial's full config as params).
- sweep_seconds/{untracked,sqlite,postgres_server} (--sweep): `fer-tune run` of 2 trials x 2 epochs
  on 600 synthetic faces, wall time of the whole command; the difference to `untracked` is the
  tracking's end-to-end overhead (runs, artifacts, scoring and registering the champion).

PostgreSQL: FER_TUNE_POSTGRES (a role that may create databases; default the one .ci/run makes) on
a throwaway database, dropped after; where it is unreachable those figures are null with the reason.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from contextlib import contextmanager
from pathlib import Path

from bench.common import Recorder, write_readme

POSTGRES_ADMIN = "postgresql://fer_tune_test:fer_tune_test@127.0.0.1:5432/postgres"
SPACE = """name: bench-tracking
data: {source: synthetic, n: 600, seed: 0}
search: {algorithm: random, seed: 0}
pruner: {name: none}
budget: {num_samples: 2, max_epochs: 2, max_concurrent: 2}
mlflow: {register_as: bench-tracking}
space: {model: basic, batch_size: 32, augmentation: none}
"""


class FakeTrial:
    """What the callback reads of a Ray trial: its id, config and name."""

    def __init__(self, index: int):
        self.trial_id, self.config = f"bench_{index:05d}", {"lr": 1e-3}

    def __str__(self) -> str:
        return f"train_fer_cnn_{self.trial_id}"


def callback_cost(uri: str, folder: Path, trials: int, epochs: int) -> tuple[list[float], list[float]]:
    """Seconds per on_trial_start and per on_trial_result against the store `uri`."""
    from fer_tune.tracking.callback import MlflowCallback
    from fer_tune.tracking.runs import SweepRuns
    from fer_tune.tracking.writer import TrackingWriter

    runs = SweepRuns(uri, "bench-tracking", f"bench-{uuid.uuid4().hex[:6]}", {}, {})
    writer = TrackingWriter(runs, folder / "pending.jsonl")
    callback = MlflowCallback(writer, max_epochs=epochs)
    callback.setup(total_num_samples=trials)
    opens, results = [], []
    for index in range(trials):
        trial = FakeTrial(index)
        start = time.perf_counter()
        callback.on_trial_start(0, [], trial)
        opens.append(time.perf_counter() - start)
        for epoch in range(1, epochs + 1):
            result = {"epoch": epoch, "val_accuracy": 0.5, "val_loss": 1.2, "train_loss": 1.1, "train_accuracy": 0.6}
            start = time.perf_counter()
            callback.on_trial_result(0, [], trial, result)
            results.append(time.perf_counter() - start)
    assert writer.pending == 0, f"{uri}: records left pending"
    return opens, results


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def postgres_server(folder: Path):
    """`mlflow server` on a throwaway PostgreSQL database with served artifacts; yields its URL."""
    import psycopg

    admin = os.environ.get("FER_TUNE_POSTGRES", POSTGRES_ADMIN)
    name = f"bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True, connect_timeout=5) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    port = free_port()
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", admin.rsplit("/", 1)[0] + f"/{name}"]
    command += ["--artifacts-destination", str(folder / "served"), "--serve-artifacts", "--port", str(port)]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    server = subprocess.Popen(command + ["--workers", "1"], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 180
        while True:
            try:
                with urllib.request.urlopen(url + "/health", timeout=5):
                    break
            except OSError:
                if server.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"mlflow server on {name} did not start") from None
                time.sleep(0.5)
        yield url
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def sweep_seconds(folder: Path, uri: str | None) -> float:
    (folder / "space.yaml").write_text(SPACE)
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS")}
    if uri:
        env["MLFLOW_TRACKING_URI"] = uri
    command = [sys.executable, "-m", "fer_tune.cli", "run", "space.yaml"] + ([] if uri else ["--no-track"])
    start = time.perf_counter()
    subprocess.run(command, cwd=folder, env=env, check=True, capture_output=True, timeout=1800)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.tracking", description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--sweep", action="store_true", help="also time a small sweep end to end with each store")
    parser.add_argument("--full", action="store_true", help="accepted for bench.run_all; the sizes do not change")
    parser.add_argument("--out", type=Path, help="results folder (default results/bench)")
    args = parser.parse_args(argv)
    record = Recorder("tracking", "short", args.out)
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        stores = {"sqlite": lambda: _nullcontext(f"sqlite:///{folder / 'mlflow.db'}"), "postgres_server": None}
        stores["postgres_server"] = lambda: postgres_server(folder)
        for store, opened in stores.items():
            try:
                with opened() as uri:
                    opens, results = callback_cost(uri, folder, args.trials, args.epochs)
                    record(f"callback_ms_per_epoch/{store}", 1000 * statistics.median(results), "ms",
                           n=len(results), mean_ms=round(1000 * statistics.fmean(results), 2))  # fmt: skip
                    record(f"trial_open_ms/{store}", 1000 * statistics.median(opens), "ms", n=len(opens))
                    if args.sweep:
                        (folder / store).mkdir()
                        record(f"sweep_seconds/{store}", sweep_seconds(folder / store, uri), "s")
            except (ImportError, OSError, RuntimeError) as err:  # no psycopg, PostgreSQL down
                for figure in ("callback_ms_per_epoch", "trial_open_ms"):
                    record(f"{figure}/{store}", None, "ms", note=f"not measured: {err}")
        if args.sweep:
            (folder / "untracked").mkdir()
            record("sweep_seconds/untracked", sweep_seconds(folder / "untracked", None), "s")
    write_readme(args.out)


@contextmanager
def _nullcontext(value):
    yield value


if __name__ == "__main__":
    sys.exit(main())
