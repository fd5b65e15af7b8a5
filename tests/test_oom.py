"""CUDA out of memory inside a real trial: the trial ends failed, and trials.csv and MLflow say why.

The error comes from the model's forward pass inside `fit`, in a Ray worker running the real
`fer_cnn` trainable (tests/oom_model.py: a test-only model registered in the driver and, through
Ray's worker_process_setup_hook, in every worker), as the CUDA allocator's would on a GPU.
"""

import os
from pathlib import Path

import oom_model
import pandas as pd
import pytest
from mlflow import MlflowClient

from fer_tune.cli.sweep import run_space
from fer_tune.search.sweep_file import load_space

pytestmark = pytest.mark.integration

TESTS = Path(__file__).resolve().parent
SPACE = """name: oom
search: {algorithm: grid}
pruner: {name: none}
budget: {num_samples: 1, max_epochs: 1, max_concurrent: 1}
mlflow: {experiment: fer-oom}
space:
  model: oom_net
  batch_size: 16
  eval_batch_size: 32
  augmentation: none
"""
REASON = "CUDA out of memory training oom_net at batch_size 16 (eval_batch_size 32)"


@pytest.fixture
def ray_with_oom_net(monkeypatch):
    """Local Ray on loopback (as the CLI starts it) whose workers register oom_net before any task."""
    import ray

    from fer_tune.search import cluster

    ray.shutdown()  # the session's Ray has no hook; the next test that needs one starts it again
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])))
    cluster._local_on_loopback()
    hook = {"worker_process_setup_hook": "oom_model.register"}
    ray.init(address="local", num_cpus=2, include_dashboard=False, runtime_env=hook)
    with oom_model.registered():  # in the driver too
        yield
    ray.shutdown()


@pytest.mark.slow(seconds=30)
def test_cuda_out_of_memory_in_a_trial_is_its_recorded_failure(workdir, blob_csv, monkeypatch, ray_with_oom_net):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # the default store: results/mlflow.db here
    (workdir / "oom.yaml").write_text(SPACE)
    sweep, tracking = run_space(load_space("oom.yaml"), data_source=str(blob_csv), storage=workdir / "ray")

    [trial] = pd.read_csv(workdir / "results" / sweep.name / "trials.csv").to_dict("records")
    assert trial["status"] == "failed" and trial["epochs_run"] == 0, trial
    assert trial["error"].startswith(f"FerTuneError: {REASON}"), trial["error"]
    assert "lower them, or give each trial more of the GPU" in trial["error"]

    client = MlflowClient(f"sqlite:///{workdir / 'results' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("fer-oom")
    [run] = client.search_runs([experiment.experiment_id], "tags.`fer_tune.role` = 'trial'")
    assert run.info.status == "FAILED"
    assert run.data.tags["fer_tune.error"] == trial["error"]
    assert run.data.params["model"] == "oom_net"
