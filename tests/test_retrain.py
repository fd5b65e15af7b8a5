"""Any trial can be trained again from its record alone: `fer-tune train --trial SWEEP/TRIAL_ID`.

One tiny tracked sweep (2 trials of 2 epochs, lr and weight decay sampled); each trial is then
trained again without Ray, its configuration read from results/<sweep>/ and, with that folder
gone, from MLflow. Training is seeded, so on a CPU the metrics repeat those the trial reported.
"""

import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch

from fer_tune.cli.main import main
from fer_tune.cli.sweep import run_space
from fer_tune.search.sweep_file import load_space

pytestmark = pytest.mark.integration

SPACE = """name: again
search: {algorithm: random, seed: 3}
pruner: {name: none}
budget: {num_samples: 2, max_epochs: 2, max_concurrent: 1}
mlflow: {experiment: fer-again, register_as: fer-again}
space:
  model: basic
  width: 0.25
  batch_size: 16
  augmentation: {choice: [none, trans1]}
  lr: {loguniform: [1.0e-3, 1.0e-2]}
  weight_decay: {loguniform: [1.0e-6, 1.0e-3]}
"""


@pytest.fixture
def swept(workdir, blob_csv, monkeypatch, ray_local):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # the default store, results/mlflow.db here
    (workdir / "again.yaml").write_text(SPACE)
    sweep, _ = run_space(load_space("again.yaml"), data_source=str(blob_csv), storage=workdir / "ray")
    return sweep


def retrained(ref: str, save) -> list[dict]:
    """The history `fer-tune train --trial ref` saved."""
    assert main(["train", "--trial", ref, "--save", str(save)]) == 0
    return torch.load(save, weights_only=True)["history"]


def check_same_curve(history: list[dict], curve: pd.DataFrame) -> None:
    assert [m["epoch"] for m in history] == list(curve["epoch"])
    assert [m["val_accuracy"] for m in history] == pytest.approx(list(curve["val_accuracy"]), abs=1e-6)
    assert [m["val_loss"] for m in history] == pytest.approx(list(curve["val_loss"]), rel=1e-4)
    assert [m["train_loss"] for m in history] == pytest.approx(list(curve["train_loss"]), rel=1e-4)


@pytest.mark.slow(seconds=40)
def test_a_trial_trains_again_to_its_metrics_from_each_record(swept, workdir, capsys):
    folder = workdir / "results" / swept.name
    trials = pd.read_csv(folder / "trials.csv", dtype={"trial_id": str})
    curves = pd.read_csv(folder / "curves.csv", dtype={"trial_id": str})
    assert len(trials) == 2 and (trials["status"] == "completed").all(), trials.to_string()
    assert trials["lr"].nunique() == 2  # two different configurations
    first, second = trials["trial_id"]
    curve = {trial_id: curves[curves["trial_id"] == trial_id] for trial_id in (first, second)}

    check_same_curve(retrained(f"{swept.name}/{first}", workdir / "1.pt"), curve[first])
    assert f"configuration from {workdir / 'ray' / swept.name}" in capsys.readouterr().out  # Ray's params.json

    shutil.rmtree(workdir / "ray")  # Ray's folders gone: the trials.csv row holds every parameter
    check_same_curve(retrained(f"{swept.name}/{second}", workdir / "2.pt"), curve[second])
    assert f"configuration from {Path('results', swept.name, 'trials.csv')}" in capsys.readouterr().out  # cwd: workdir

    shutil.rmtree(folder)  # results/ gone too (another machine): MLflow's record is enough
    check_same_curve(retrained(f"{swept.name}/{first}", workdir / "3.pt"), curve[first])
    assert "configuration from MLflow run" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--trial", "no-slash"], r"--trial no-slash: expected SWEEP/TRIAL_ID"),
        (
            ["--trial", "nowhere/abc123"],
            r"--trial nowhere/abc123: no results/nowhere/ here, and MLflow store .*: no such",
        ),
        ([], r"train: give a search-space file or --trial SWEEP/TRIAL_ID"),
    ],
)
def test_a_bad_trial_reference_is_one_line(workdir, monkeypatch, capsys, argv, message):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{workdir / 'empty.db'}")
    import re

    assert main(["train", *argv]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and re.search(message, error), error
