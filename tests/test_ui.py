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


@pytest.mark.slow(seconds=90)
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


@pytest.fixture(scope="module")
def empty_store(tmp_path_factory) -> str:
    """An MLflow SQLite store with no runs (the UI needs a store that exists)."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('store') / 'mlflow.db'}"
    MlflowClient(uri).search_experiments()  # creates the database
    return uri


def test_ui_on_a_taken_port_is_one_line_and_a_failure(workdir, empty_store, monkeypatch, capsys):
    """The port is checked before MLflow's server replaces this process: not its log lines and an exit 0."""
    import socket

    from fer_tune.cli.main import main

    monkeypatch.setattr("os.execv", lambda *argv: pytest.fail(f"the server was started: {argv}"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["ui", "--port", str(port), "--tracking-uri", empty_store]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"cannot listen on 127.0.0.1:{port}" in err, err


@pytest.mark.parametrize("host, shown", [("::1", "[::1]"), ("127.0.0.1", "127.0.0.1"), ("0.0.0.0", "127.0.0.1")])
def test_ui_prints_a_url_a_browser_opens(workdir, empty_store, monkeypatch, capsys, host, shown):
    """An IPv6 host is printed in brackets (http://[::1]:PORT/), and all interfaces as this machine's address;
    os.execv, which would hand this process to MLflow's server, is replaced by a record of the command."""
    from fer_tune.cli.main import main

    port = free_port()
    started = []
    monkeypatch.setattr("os.execv", lambda *argv: started.append(argv[1]))
    main(["ui", "--host", host, "--port", str(port), "--tracking-uri", empty_store])
    out = capsys.readouterr().out
    assert f" on http://{shown}:{port} (Ctrl+C stops it)" in out, out
    [command] = started
    assert command[command.index("--host") + 1] == host
