"""The tracking callback across a --resume, a sweep tracked on an `mlflow server`, unreachable stores."""

import pickle
import sys

import mlflow
import pytest
from mlflow import MlflowClient
from mlflow_helpers import free_port, report, serving, subprocess_env, tune_trial

from fer_tune.cli.main import main
from fer_tune.cli.sweep import run_space
from fer_tune.search.space import load_space
from fer_tune.tracking.callback import MlflowCallback
from fer_tune.tracking.runs import SweepRuns


def sweep_runs(uri: str) -> SweepRuns:
    return SweepRuns(uri, "resumed", "resumed-1", {"fer_tune.data_fingerprint": "abc"}, {"metric": "val_accuracy"})


def test_a_restored_callback_keeps_logging_into_the_same_runs(tmp_path):
    """Tuner.restore unpickles the callback pickled before any trial ran: it must find its runs again."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    first = MlflowCallback(sweep_runs(uri), max_epochs=4)
    pickled = pickle.dumps(first)  # what the RunConfig holds, before any trial
    done, cut = tune_trial("t_00000", {"lr": 0.01, "epochs": 4}), tune_trial("t_00001", {"lr": 0.02, "epochs": 4})

    first.setup(total_num_samples=2)
    for trial in (done, cut):
        first.on_trial_start(iteration=0, trials=[done, cut], trial=trial)
    report(first, done, [1, 2, 3, 4])
    done.set_status("TERMINATED")
    first.on_trial_complete(iteration=4, trials=[done, cut], trial=done)
    report(first, cut, [1, 2])
    first.on_experiment_end(trials=[done, cut])  # Ctrl+C: `cut` is still RUNNING

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("resumed").experiment_id
    [parent] = client.search_runs([experiment], "tags.`fer_tune.role` = 'sweep'")
    assert parent.info.status == "KILLED" and parent.data.tags["fer_tune.interrupted"] == "true"
    interrupted = client.search_runs([experiment], "tags.`ray.trial_id` = 't_00001'")[0]
    assert interrupted.info.status == "KILLED" and interrupted.data.tags["fer_tune.interrupted"] == "true"

    second = pickle.loads(pickled)  # the restored driver
    second.setup(total_num_samples=2)
    second.on_trial_start(iteration=0, trials=[done, cut], trial=cut)
    assert client.get_run(interrupted.info.run_id).info.status == "RUNNING"
    report(second, cut, [3, 4])
    cut.set_status("TERMINATED")
    second.on_trial_complete(iteration=4, trials=[done, cut], trial=cut)
    second.on_experiment_end(trials=[done, cut])

    runs = client.search_runs([experiment])
    assert len(runs) == 3  # still one parent and one child per trial
    parent = client.get_run(parent.info.run_id)
    assert parent.info.status == "FINISHED" and "fer_tune.interrupted" not in parent.data.tags
    resumed = client.get_run(interrupted.info.run_id)
    assert resumed.info.status == "FINISHED" and "fer_tune.interrupted" not in resumed.data.tags
    assert resumed.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert [m.step for m in client.get_metric_history(resumed.info.run_id, "val_accuracy")] == [1, 2, 3, 4]
    assert resumed.data.params["lr"] == "0.02" and resumed.data.params["epochs"] == "4"


@pytest.mark.integration
def test_sweep_tracked_on_an_mlflow_server(ray_local, workdir, blob_csv, monkeypatch):
    port = free_port()
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{workdir / 'server.db'}"]
    command += ["--serve-artifacts", "--artifacts-destination", str(workdir / "served")]
    command += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    (workdir / "served.yaml").write_text(
        "name: served\npruner: {name: none}\nbudget: {num_samples: 2, max_epochs: 1, max_concurrent: 2}\n"
        "mlflow: {register_as: fer-served}\n"
        "space:\n  model: basic\n  batch_size: 16\n  augmentation: none\n  lr: {loguniform: [1.0e-3, 3.0e-3]}\n"
    )
    env = subprocess_env(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")  # GenAI job runner: not needed
    with serving(command, "/health", port, cwd=workdir, env=env) as base:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", base)
        space = load_space("served.yaml")
        sweep, registration = run_space(space, data_source=str(blob_csv), storage=workdir / "ray", verbose=0)
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


@pytest.mark.parametrize("uri", ["foo://nowhere", "http://127.0.0.1:{port}"])
def test_an_unusable_store_is_a_one_line_error(uri, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # a closed port fails at once
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    uri = uri.format(port=free_port())
    assert main(["models", "list", "--tracking-uri", uri]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"fer-tune: error: MLflow store {uri}: ") and err.count("\n") == 1, err
