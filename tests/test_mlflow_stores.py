"""A sweep tracked on an `mlflow server`, a server that goes away mid-sweep, unreachable stores (curve trials)."""

import sys

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow_helpers import Outage, free_port, serving, subprocess_env

from fer_tune.cli.main import main
from fer_tune.cli.sweep import run_space
from fer_tune.search.sweep_file import load_space


def mlflow_server(workdir, port: int) -> list[str]:
    """An `mlflow server` on a loopback port, its store and proxied artifacts in `workdir`."""
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{workdir / 'server.db'}"]
    command += ["--serve-artifacts", "--artifacts-destination", str(workdir / "served")]
    return command + ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]


@pytest.mark.integration
@pytest.mark.slow(seconds=80)
def test_sweep_tracked_on_an_mlflow_server(ray_local, workdir, blob_csv, monkeypatch):
    port = free_port()
    command = mlflow_server(workdir, port)
    (workdir / "served.yaml").write_text(
        "name: served\ntrainable: curve\npruner: {name: none}\n"
        "budget: {num_samples: 2, max_epochs: 1, max_concurrent: 2}\n"
        "mlflow: {register_as: fer-served}\n"
        "space:\n  model: basic\n  batch_size: 16\n  augmentation: none\n  lr: {loguniform: [1.0e-3, 3.0e-3]}\n"
    )
    env = subprocess_env(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")  # GenAI job runner: not needed
    with serving(command, "/health", port, cwd=workdir, env=env) as base:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", base)
        space = load_space("served.yaml")
        sweep, tracking = run_space(space, data_source=str(blob_csv), storage=workdir / "ray", verbose=0)
        registration = tracking.registration
        client = MlflowClient(base)
        experiment = client.get_experiment_by_name("served")
        assert experiment.artifact_location.startswith("mlflow-artifacts:/")  # the server's proxied root
        runs = client.search_runs([experiment.experiment_id])
        roles = sorted(run.data.tags["fer_tune.role"] for run in runs)
        assert roles == ["champion", "sweep", "trial", "trial"]
        [parent] = [run for run in runs if run.data.tags["fer_tune.role"] == "sweep"]
        assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in runs if r is not parent)
        assert "sweep.json" in {a.path for a in client.list_artifacts(parent.info.run_id)}
        assert registration.alias == "champion"
        model = mlflow.pyfunc.load_model("models:/fer-served@champion")
        assert model.predict(sweep.data.test.images[:4].unsqueeze(1).float().numpy()).shape == (4, 7)
    assert not (workdir / "results" / "mlflow.db").exists()  # nothing went to the default store
    assert list((workdir / "served").rglob("sweep.json")) and list((workdir / "served").rglob("model.pt2"))


@pytest.mark.parametrize("uri", ["foo://nowhere", "http://127.0.0.1:{port}", "postgresql://127.0.0.1:99999/db"])
def test_an_unusable_store_is_a_one_line_error(uri, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # a closed port fails at once
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    uri = uri.format(port=free_port())
    assert main(["models", "list", "--tracking-uri", uri]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"fer-tune: error: MLflow store {uri}: ") and err.count("\n") == 1, err


@pytest.mark.integration
@pytest.mark.slow(seconds=90)
def test_a_tracking_server_lost_mid_sweep_loses_nothing(ray_local, workdir, blob_csv, monkeypatch, capsys):
    """The server dies after the first epoch is logged (mlflow_helpers.Outage: the driver, `fer-tune run` called
    here, waits while it stops): the sweep runs on, results/ gets everything, the records MLflow could not take
    wait on disk, and `results sync` writes them once it is back."""
    port = free_port()
    server = mlflow_server(workdir, port)
    (workdir / "outage.yaml").write_text(
        "name: outage\ntrainable: curve\nsearch: {algorithm: grid}\npruner: {name: none}\n"
        "budget: {num_samples: 1, max_epochs: 2, max_concurrent: 1}\nresources: {cpu: 1}\n"
        "space:\n  model: basic\n  batch_size: 16\n  augmentation: none\n"
        "  lr: {grid: [3.0e-3, 2.0e-3, 1.0e-3]}\n"
    )
    uri = f"http://127.0.0.1:{port}"
    env = subprocess_env(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    outage = Outage(server, port, workdir, env, restart=False)
    outage.patch(monkeypatch)
    outage.start()
    try:
        assert main(["run", "outage.yaml", "--data", str(blob_csv), "--name", "o1"]) == 0
    finally:
        outage.stop()
    output = capsys.readouterr().out
    assert outage.phase == "down", outage.log
    after_stop = [kind for kind, _, _ in outage.log[outage.stopped_at + 1 :]]
    assert after_stop.count("trial_open") == 2, outage.log  # the server stopped with two trials still to train
    pending_file = workdir / "results" / "o1" / "mlflow-pending.jsonl"
    assert f"MLflow store {uri} unreachable" in output and str(pending_file.relative_to(workdir)) in output
    trials = pd.read_csv(workdir / "results" / "o1" / "trials.csv")
    assert len(trials) == 3 and (trials["status"] == "completed").all()  # the sweep itself lost nothing
    assert pending_file.is_file() and len(pending_file.read_text().splitlines()) > 0

    with serving(server, "/health", port, cwd=workdir, env=env):  # the same store, back on the same port
        assert main(["results", "sync", "o1"]) == 0
        synced = capsys.readouterr()
        assert "pending records written" in synced.out and "registered models:/fer-emotion/" in synced.out, synced
        assert not pending_file.exists()
        client = MlflowClient(uri)
        runs = client.search_runs([client.get_experiment_by_name("outage").experiment_id])
        roles = sorted(run.data.tags["fer_tune.role"] for run in runs)
        assert roles == ["champion", "sweep", "trial", "trial", "trial"]
        children = {run.data.tags["ray.trial_id"]: run for run in runs if run.data.tags["fer_tune.role"] == "trial"}
        assert set(children) == set(trials["trial_id"])
        for run in children.values():
            assert run.info.status == "FINISHED"
            assert [m.step for m in client.get_metric_history(run.info.run_id, "val_accuracy")] == [1, 2]
        [parent] = [run for run in runs if run.data.tags["fer_tune.role"] == "sweep"]
        assert parent.info.status == "FINISHED" and "trials.csv" in {
            a.path for a in client.list_artifacts(parent.info.run_id)
        }
        assert main(["results", "sync", "o1"]) == 0 and "nothing pending" in capsys.readouterr().out
