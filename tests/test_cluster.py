"""A lab's Ray cluster on one machine (ray.cluster_utils.Cluster): fractional GPUs without CUDA, a lost node."""

import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow_helpers import subprocess_env

from fer_tune.cli.main import main
from fer_tune.cli.sweep import run_space
from fer_tune.search.sweep_file import load_space

pytestmark = pytest.mark.integration

FAST = "space:\n  model: basic\n  batch_size: 16\n  augmentation: none\n  dropout: 0.0\n"
SMALL_NODE = {"object_store_memory": 80 * 2**20}


@pytest.fixture
def cluster():
    """A head with no CPU (the driver's), worker nodes added by the test."""
    import ray
    from ray.cluster_utils import Cluster

    ray.shutdown()  # leave the shared local instance; it restarts on next use
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, **SMALL_NODE})
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def space(folder: Path, name: str, body: str):
    (folder / f"{name}.yaml").write_text(f"name: {name}\n{body}")
    return load_space(folder / f"{name}.yaml")


def most_at_once(intervals: list[tuple[float, float]]) -> int:
    """The largest number of [start, end] intervals that overlap at one instant."""
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    running = peak = 0
    for _, change in events:  # an end sorts before a start at the same instant
        running += change
        peak = max(peak, running)
    return peak


def last_results(storage: Path, name: str) -> list[dict]:
    """Each trial's last reported result, read from the sweep's Ray storage."""
    results = []
    for path in storage.glob(f"{name}/*/result.json"):
        lines = [line for line in path.read_text().splitlines() if line.strip()]
        results.append(json.loads(lines[-1]))
    return results


@pytest.mark.parametrize(("gpu", "flag", "at_once"), [("0.25", [], 4), ("1", ["--gpus-per-trial", "0.5"], 2)])
@pytest.mark.slow(seconds=90)
def test_fractional_gpus_pack_trials_on_a_declared_gpu(cluster, workdir, blob_csv, gpu, flag, at_once):
    """One node declaring one logical GPU (no CUDA): resources.gpu 0.25 runs four trials at once, --gpus-per-trial
    0.5 two, measured from the trials' own start and end times; each saw the GPU id Ray gave it. The trials ask
    for `device: cpu` (there is no CUDA here), which the CUDA check leaves alone."""
    cluster.add_node(num_cpus=8, num_gpus=1, **SMALL_NODE)
    cluster.wait_for_nodes()
    (workdir / "gpu.yaml").write_text(
        "name: gpu\nsearch: {algorithm: random, seed: 0}\npruner: {name: none}\n"
        f"resources: {{cpu: 1, gpu: {gpu}}}\n"
        f"budget: {{num_samples: {2 * at_once}, max_epochs: 2, max_concurrent: 8}}\n"
        + FAST
        + "  device: cpu\n  lr: {loguniform: [1.0e-3, 3.0e-3]}\n"
    )
    argv = ["run", "gpu.yaml", "--data", str(blob_csv), "--address", cluster.address, "--no-track", *flag]
    assert main([*argv, "--storage", str(workdir / "ray"), "--name", "gpu"]) == 0
    trials = pd.read_csv(workdir / "results" / "gpu" / "trials.csv")
    assert len(trials) == 2 * at_once and (trials["status"] == "completed").all(), trials
    last = last_results(workdir / "ray", "gpu")
    assert {m["gpu_ids"] for m in last} == {"0"}  # the one declared GPU, as Ray handed it to each trial
    assert most_at_once([(m["started_at"], m["reported_at"]) for m in last]) == at_once


@pytest.mark.slow(seconds=30)
def test_a_trial_given_a_gpu_without_cuda_fails_in_one_line(cluster, workdir, blob_csv):
    cluster.add_node(num_cpus=2, num_gpus=1, **SMALL_NODE)
    cluster.wait_for_nodes()
    body = "pruner: {name: none}\nresources: {cpu: 1, gpu: 1}\nbudget: {num_samples: 1, max_epochs: 1}\n" + FAST
    sweep, _ = run_space(space(workdir, "nocuda", body), data_source=str(blob_csv), address=cluster.address,
                         storage=workdir / "ray", track=False, verbose=0)  # fmt: skip
    [trial] = sweep.trials.to_dict("records")
    assert trial["status"] == "failed" and trial["epochs_run"] == 0
    assert trial["error"].startswith("FerTuneError: trial holds GPU 0 ") or "trial holds GPU 0 " in trial["error"]
    assert "CUDA is not available" in trial["error"] and "\n" not in trial["error"]


@pytest.mark.slow(seconds=120)
def test_a_node_lost_mid_sweep_resumes_its_trials_elsewhere(cluster, workdir, blob_csv):
    """Three one-CPU worker nodes, one trial each; once every trial has a checkpoint one node is removed. Its
    trial resumes from its last checkpoint on a remaining node (budget.max_failures 1), and the sweep ends with
    every trial once, completed, in trials.csv and in MLflow, each epoch logged once."""
    nodes = [cluster.add_node(num_cpus=1, **SMALL_NODE) for _ in range(3)]
    cluster.wait_for_nodes()
    epochs = 6
    (workdir / "lost.yaml").write_text(
        "name: lost\nsearch: {algorithm: grid}\npruner: {name: none}\nresources: {cpu: 1}\n"
        f"budget: {{num_samples: 1, max_epochs: {epochs}, max_concurrent: 3, max_failures: 1}}\n"
        + FAST
        + "  lr: {grid: [3.0e-3, 2.0e-3, 1.0e-3]}\n"
    )
    storage = workdir / "ray"
    command = [sys.executable, "-m", "fer_tune.cli", "run", "lost.yaml", "--data", str(blob_csv), "--name", "lost"]
    command += ["--address", cluster.address, "--storage", str(storage)]
    driver = subprocess.Popen(command, cwd=workdir, env=subprocess_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)  # fmt: skip
    deadline = time.time() + 300
    while len(list(storage.glob("lost/*/checkpoint_000000"))) < 3:  # every trial has saved its first epoch
        assert driver.poll() is None and time.time() < deadline, driver.communicate()[0][-3000:]
        time.sleep(0.3)
    lost = nodes[0]
    cluster.remove_node(lost)
    output = driver.communicate(timeout=600)[0]
    assert driver.returncode == 0, output[-3000:]

    trials = pd.read_csv(workdir / "results" / "lost" / "trials.csv")
    assert len(trials) == 3 and (trials["status"] == "completed").all() and (trials["epochs_run"] == epochs).all()
    moved = []
    for result in storage.glob("lost/*/result.json"):
        rows = [json.loads(line) for line in result.read_text().splitlines() if line.strip()]
        on_lost = [r["epoch"] for r in rows if r["node_id"] == lost.node_id]
        if on_lost:  # the trial of the lost node: it went on elsewhere, from the epoch after its checkpoint
            later = [r["epoch"] for r in rows if r["node_id"] != lost.node_id]
            assert later and min(later) > max(on_lost) - 1 and max(later) == epochs, rows
            moved.append(result.parent.name)
    assert len(moved) == 1, "the removed node's trial should have resumed on another node"

    client = MlflowClient(f"sqlite:///{workdir / 'results' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("lost").experiment_id
    runs = client.search_runs([experiment], "tags.`fer_tune.role` = 'trial'")
    assert sorted(r.data.tags["ray.trial_id"] for r in runs) == sorted(trials["trial_id"])  # each trial once
    for run in runs:
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_accuracy")]
        assert sorted(set(steps)) == list(range(1, epochs + 1)), steps
