"""`fer-tune ui` serves the MLflow UI and prints links to the latest sweep's runs and model; headless
Chromium renders those pages: the sweep's nested runs, their Dataset column, and the registered model."""

import json
import re
import shutil
import subprocess
import sys

import pytest
from mlflow import MlflowClient
from mlflow_helpers import free_port, serving

from fer_tune.cli.sweep import run_space
from fer_tune.search.sweep_file import load_space
from fer_tune.tracking.links import runs_page
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


@pytest.mark.slow(seconds=70)
def test_ui_shows_the_experiment_and_its_nested_runs(ray_local, workdir, blob_csv, monkeypatch):
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (.ci/run installs it: apt-get install chromium)")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (workdir / "ui-check.yaml").write_text(
        "name: ui-check\ntrainable: curve\n"  # the sweep's numbers only fill the pages this test reads
        "search: {algorithm: grid}\npruner: {name: none}\nbudget: {num_samples: 1, max_epochs: 1}\n"
        "space:\n  model: basic\n  batch_size: 16\n  augmentation: none\n  lr: {grid: [1.0e-3, 2.0e-3]}\n"
    )
    sweep, _ = run_space(load_space(workdir / "ui-check.yaml"), data_source=str(blob_csv), name="ui-check-1")
    client = MlflowClient(tracking_uri())
    experiment = client.get_experiment_by_name("ui-check").experiment_id
    [parent] = client.search_runs([experiment], "tags.`fer_tune.role` = 'sweep'")
    trials = client.search_runs([experiment], "tags.`fer_tune.role` = 'trial'")

    # Every run of the sweep has its data as a dataset input: digest = the data's fingerprint.
    fingerprint = parent.data.tags["fer_tune.data_fingerprint"]
    for run in [parent, *trials]:
        [given] = client.get_run(run.info.run_id).inputs.dataset_inputs
        assert given.dataset.digest == fingerprint and given.dataset.name == blob_csv.name
        assert json.loads(given.dataset.profile)["splits"] == {"train": 280, "validation": 70, "test": 70}

    port = free_port()
    command = [sys.executable, "-m", "fer_tune.cli", "ui", "--port", str(port)]
    with serving(command, "/health", port, cwd=workdir) as base:
        printed = (workdir / f"server-{port}.log").read_text()
        runs_link = runs_page(base, experiment, "ui-check-1")
        assert f"latest sweep ui-check-1: {runs_link}" in printed, printed[:2000]
        [model_line] = [line for line in printed.splitlines() if line.startswith("its model ")]
        listing = rendered_text(runs_link, workdir / "chromium")  # the printed link: the sweep's training runs
        assert "ui-check" in listing and "ui-check-1" in listing, listing[:2000]
        assert "4 matching runs" in listing  # the parent, its two trials and the champion (nested under it)
        assert blob_csv.name in listing  # the Dataset column names the data
        model_page = rendered_text(model_line.rsplit(": ", 1)[1], workdir / "chromium")
        assert "Version 1" in model_page or "version 1" in model_page.lower(), model_page[:2000]
        # The parent's page lists its nested runs by name.
        page = rendered_text(f"{base}/#/experiments/{experiment}/runs/{parent.info.run_id}", workdir / "chromium")
        assert "Child runs" in page, page[:2000]
        for trial in trials:
            assert trial.info.run_name in page
        assert len(sweep.trials) == 2
