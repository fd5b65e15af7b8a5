"""The resume tests' shared steps: run the CLI's driver as a process, SIGKILL it once the sweep has got
somewhere, resume it, and compare what it ends with against an uninterrupted run."""

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
import ray_cluster


def cli_env() -> dict[str, str]:
    """The environment a driver runs in: it joins the test run's Ray (tests/ray_cluster.py)."""
    return ray_cluster.env()


def trial_dirs(experiment: Path) -> list[Path]:
    return sorted(experiment.glob("train_*_*"))  # train_fer_cnn_ID or train_curve_ID


def epochs_reported(trial_dir: Path) -> list[int]:
    path = trial_dir / "result.json"
    if not path.exists():
        return []
    return [json.loads(line)["epoch"] for line in path.read_text().splitlines() if line.strip()]


def has_checkpoint(trial_dir: Path) -> bool:
    return any(trial_dir.glob("checkpoint_*"))


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:]


def kill_when(command: list[str], workdir: Path, ready: Callable[[], bool], timeout: float = 300) -> None:
    """Start the driver and SIGKILL it (no handler runs, nothing is saved on the way out) once `ready()`.

    Fails at once, with the driver's output, if it ends before that or does not get there in `timeout` s.
    """
    log = workdir / "driver.log"
    with log.open("w") as out:
        driver = subprocess.Popen(command, cwd=workdir, env=cli_env(), stdout=out, stderr=subprocess.STDOUT)
    deadline = time.time() + timeout
    while not ready():
        if driver.poll() is not None:
            pytest.fail(f"the sweep ended (exit {driver.returncode}) before it could be cut short:\n{_tail(log)}")
        if time.time() > deadline:
            driver.kill()
            driver.wait(timeout=60)
            pytest.fail(f"the sweep did not get far enough in {timeout} s to be cut short:\n{_tail(log)}")
        time.sleep(0.1)
    driver.kill()
    driver.wait(timeout=60)


def run_here(command: list[str], capsys) -> str:
    """Run the driver `command` (as kill_when takes it) in this process, which joined the test run's Ray (the
    `ray_local` fixture): a run that is not the one killed needs no process of its own, and saves the 15-20 s a
    driver takes to import and join on 2 cores. It must succeed; returns what it printed."""
    from fer_tune.cli.main import main

    argv = command[command.index("fer_tune.cli") + 1 :]
    capsys.readouterr()
    code = main(argv)
    printed = capsys.readouterr()
    assert code == 0, (printed.out + printed.err)[-3000:]
    return printed.out


def assert_same_trials(workdir: Path, whole: str, cut: str, columns: list[str], by: list[str]) -> pd.DataFrame:
    """results/<cut>/trials.csv equals results/<whole>/trials.csv on `columns` (rows matched by `by`)."""
    expected, got = (
        pd.read_csv(workdir / "results" / name / "trials.csv")[columns].sort_values(by).reset_index(drop=True)
        for name in (whole, cut)
    )
    pd.testing.assert_frame_equal(got, expected)
    return expected
