"""`fer-tune ui` serves the MLflow UI; headless Chromium renders the experiment and its nested runs."""

import re
import shutil
import subprocess
import sys

import pytest
from mlflow import MlflowClient
from mlflow_helpers import free_port, report, serving, tune_trial

from fer_tune.tracking.callback import MlflowCallback
from fer_tune.tracking.runs import SweepRuns
from fer_tune.tracking.store import tracking_uri

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def rendered_text(url: str, profile) -> str:
    """The page's text after its JavaScript ran (React renders the MLflow UI client-side)."""
    command = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={profile}", "--virtual-time-budget=15000", "--dump-dom", url,
    ]  # fmt: skip
    dom = subprocess.run(command, capture_output=True, text=True, timeout=120).stdout
    text = re.sub(r"<(script|style)[^>]*>.*?</\1>", " ", dom, flags=re.S)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", text))


def test_ui_shows_the_experiment_and_its_nested_runs(workdir, monkeypatch):
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (.ci/run installs it: apt-get install chromium)")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    # A sweep's runs as the driver logs them (the sweep itself is tested in test_tracking.py).
    runs = SweepRuns(tracking_uri(), "ui-check", "ui-check-1", {}, {"metric": "val_accuracy"})
    callback = MlflowCallback(runs, max_epochs=2)
    callback.setup(total_num_samples=2)
    trials = [tune_trial(f"ui_{i:05d}", {"lr": 0.001 * (i + 1), "epochs": 2}) for i in range(2)]
    for trial in trials:
        callback.on_trial_start(iteration=0, trials=trials, trial=trial)
        report(callback, trial, [1, 2])
        trial.set_status("TERMINATED")
        callback.on_trial_complete(iteration=2, trials=trials, trial=trial)
    callback.on_experiment_end(trials=trials)
    client = MlflowClient(runs.uri)
    experiment = client.get_experiment_by_name("ui-check").experiment_id

    port = free_port()
    command = [sys.executable, "-m", "fer_tune.cli", "ui", "--port", str(port)]
    with serving(command, "/health", port, cwd=workdir) as base:
        listing = rendered_text(f"{base}/#/experiments/{experiment}/runs", workdir / "chromium")
        assert "ui-check" in listing and "ui-check-1" in listing, listing[:2000]
        assert "3 matching runs" in listing  # the parent and its two children (collapsed under it)
        # The parent's page lists its nested runs by name.
        parent = runs.parent()
        page = rendered_text(f"{base}/#/experiments/{experiment}/runs/{parent}", workdir / "chromium")
        assert "Child runs" in page, page[:2000]
        for trial in trials:
            assert str(trial) in page
