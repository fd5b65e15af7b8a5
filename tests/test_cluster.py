"""A lab's Ray cluster on one machine (ray.cluster_utils.Cluster): a lost node, fractional GPUs without CUDA.

The sweeps run the `curve` trainable (trainables/curve.py), whose hold makes the trials wait at an epoch until the
test, having seen the cluster in the state it wants, creates the hold's file from a thread beside the sweep.
"""

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient

from fer_tune.cli.main import main
from fer_tune.cli.sweep import run_space
from fer_tune.search.sweep_file import load_space

pytestmark = pytest.mark.integration

FAST = "space:\n  model: basic\n  batch_size: 16\n  augmentation: none\n  dropout: 0.0\n"
SMALL_NODE = {"object_store_memory": 80 * 2**20}


def start_cluster():
    """A head with no CPU (the driver's); worker nodes are added by the test."""
    import ray
    from ray.cluster_utils import Cluster

    ray.shutdown()  # leave the shared local instance; it restarts on next use
    return Cluster(initialize_head=True, head_node_args={"num_cpus": 0, **SMALL_NODE})


def stop_cluster(cluster) -> None:
    import ray

    ray.shutdown()
    cluster.shutdown()


@pytest.fixture
def cluster():
    cluster = start_cluster()
    yield cluster
    stop_cluster(cluster)


@pytest.fixture(scope="module")
def gpu_cluster():
    """One worker node declaring 8 CPUs and one logical GPU (there is no CUDA here), shared by the GPU tests."""
    cluster = start_cluster()
    cluster.add_node(num_cpus=8, num_gpus=1, **SMALL_NODE)
    cluster.wait_for_nodes()
    yield cluster
    stop_cluster(cluster)


def space(folder: Path, name: str, body: str):
    (folder / f"{name}.yaml").write_text(f"name: {name}\n{body}")
    return load_space(folder / f"{name}.yaml")


class Watcher(threading.Thread):
    """Beside the sweep: waits until `ready()` holds, then runs `then()`, then creates `gate` (the curve's hold).

    The gate is created however the wait ends (a timeout, an error), so a held sweep always ends; `.ok` says
    whether `ready()` held and `then()` ran, `.error` what went wrong otherwise."""

    def __init__(self, gate: Path, ready: Callable[[], bool], then: Callable[[], None] = lambda: None):
        super().__init__(daemon=True)
        self.gate, self.ready, self.then = gate, ready, then
        self.ok, self.error = False, "the sweep ended first"
        self.done = threading.Event()

    def run(self) -> None:
        deadline = time.time() + 300
        try:
            while not self.done.is_set():
                if self.ready():
                    self.then()
                    self.ok = True
                    return
                if time.time() > deadline:
                    self.error = "timed out"
                    return
                time.sleep(0.2)
        except Exception as err:  # noqa: BLE001 - reported by the test's assertion on .ok
            self.error = f"{type(err).__name__}: {err}"
        finally:
            self.gate.touch()

    def stop(self) -> None:
        self.done.set()
        self.join(timeout=120)


def reported(storage: Path, name: str, epoch: int) -> list[dict]:
    """The results for `epoch` in the trials' result.json, one per trial that got there. The driver writes them
    in a staging folder of its own and copies them to the storage when it saves the experiment's state (forced
    after each trial checkpoint), so they arrive there a little after the trial reported them."""
    rows = []
    for path in storage.glob(f"{name}/*/result.json"):
        lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        rows += [row for row in lines if row["epoch"] == epoch]
    return rows


def last_results(storage: Path, name: str) -> list[dict]:
    """Each trial's last reported result, read from the sweep's Ray storage."""
    results = []
    for path in storage.glob(f"{name}/*/result.json"):
        lines = [line for line in path.read_text().splitlines() if line.strip()]
        results.append(json.loads(lines[-1]))
    return results


def checkpoints(storage: Path, name: str) -> list[list[str]]:
    """Each trial's checkpoint folders, by trial folder."""
    return [sorted(c.name for c in trial.glob("checkpoint_*")) for trial in sorted(storage.glob(f"{name}/train_*"))]


def alive(pid: int) -> bool:
    """Whether process `pid` still runs (a zombie, dead but not yet reaped, does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


def wait_until(ready: Callable[[], bool], what: str, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while not ready():
        if time.time() > deadline:
            raise TimeoutError(what)
        time.sleep(0.2)


def most_at_once(intervals: list[tuple[float, float]]) -> int:
    """The largest number of [start, end] intervals that overlap at one instant."""
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    running = peak = 0
    for _, change in events:  # an end sorts before a start at the same instant
        running += change
        peak = max(peak, running)
    return peak


@pytest.mark.slow(seconds=60)
def test_a_node_lost_mid_sweep_resumes_its_trials_elsewhere(cluster, workdir, blob_csv):
    """Three one-CPU worker nodes, one trial each. Every trial reports and checkpoints epochs 1-2, then holds; one
    node is removed, and once its trial's process is gone the hold is released. That trial resumes from its epoch-2
    checkpoint on a remaining node (budget.max_failures 1), not from scratch, and the sweep ends with every trial
    once, completed, in trials.csv and in MLflow, each epoch reported and logged exactly once."""
    nodes = [cluster.add_node(num_cpus=1, **SMALL_NODE) for _ in range(3)]
    cluster.wait_for_nodes()
    epochs, gate, storage = 4, workdir / "go", workdir / "ray"
    (workdir / "lost.yaml").write_text(
        f"name: lost\ntrainable: curve\ncurve: {{hold: {{epoch: 3, until: {gate}}}}}\n"
        "search: {algorithm: grid}\npruner: {name: none}\nresources: {cpu: 1}\n"
        f"budget: {{num_samples: 1, max_epochs: {epochs}, max_concurrent: 3, max_failures: 1}}\n"
        + FAST
        + "  lr: {grid: [3.0e-3, 2.0e-3, 1.0e-3]}\n"
    )
    lost = nodes[0]

    def remove_the_node() -> None:
        [pid] = [r["pid"] for r in reported(storage, "lost", epoch=2) if r["node_id"] == lost.node_id]
        cluster.remove_node(lost)
        wait_until(lambda: not alive(pid), "the lost node's trial did not end")  # so it cannot report epoch 3

    def held() -> bool:
        """Every trial's epoch-2 checkpoint is the driver's latest once it has deleted the worse epoch-1 one
        (num_to_keep 1): a trial cut after that resumes from epoch 2. Its result.json reaches the storage later,
        when the driver syncs its own copy there. Meanwhile the trials wait at the hold, before epoch 3."""
        registered = checkpoints(storage, "lost") == [["checkpoint_000001"]] * 3
        return registered and len(reported(storage, "lost", epoch=2)) == 3

    watcher = Watcher(gate, held, remove_the_node)
    watcher.start()
    try:
        code = main(["run", "lost.yaml", "--data", str(blob_csv), "--name", "lost",
                     "--address", cluster.address, "--storage", str(storage)])  # fmt: skip
    finally:
        watcher.stop()
    assert watcher.ok, watcher.error
    assert code == 0

    trials = pd.read_csv(workdir / "results" / "lost" / "trials.csv")
    assert len(trials) == 3 and (trials["status"] == "completed").all() and (trials["epochs_run"] == epochs).all()
    moved = []
    for result in storage.glob("lost/*/result.json"):
        rows = [json.loads(line) for line in result.read_text().splitlines() if line.strip()]
        assert [r["epoch"] for r in rows] == list(range(1, epochs + 1)), rows  # each epoch once, in order
        assert rows[1]["val_accuracy"] > rows[0]["val_accuracy"]  # why epoch 1's checkpoint was deleted
        on_lost = [r["epoch"] for r in rows if r["node_id"] == lost.node_id]
        if on_lost:  # the trial of the lost node: it went on elsewhere, right after its last checkpoint
            later = [r["epoch"] for r in rows if r["node_id"] != lost.node_id]
            assert on_lost == [1, 2] and later == list(range(3, epochs + 1)), rows
            moved.append(result.parent.name)
    assert len(moved) == 1, "the removed node's trial should have resumed on another node"

    client = MlflowClient(f"sqlite:///{workdir / 'results' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("lost").experiment_id
    runs = client.search_runs([experiment], "tags.`fer_tune.role` = 'trial'")
    assert sorted(r.data.tags["ray.trial_id"] for r in runs) == sorted(trials["trial_id"])  # each trial once
    for run in runs:
        steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "val_accuracy"))
        assert steps == list(range(1, epochs + 1)), steps  # each epoch logged exactly once


@pytest.mark.parametrize(("gpu", "flag", "at_once"), [("0.25", [], 4), ("1", ["--gpus-per-trial", "0.5"], 2)])
@pytest.mark.slow(seconds=70)
def test_fractional_gpus_pack_trials_on_a_declared_gpu(gpu_cluster, workdir, blob_csv, gpu, flag, at_once):
    """One node declaring one logical GPU (no CUDA): resources.gpu 0.25 runs four trials at once, --gpus-per-trial
    0.5 two. The first trials hold before their second epoch until `at_once` of them have reported and the GPU is
    wholly taken; then the trials' own start and end times overlap `at_once` deep, and each saw the GPU id Ray
    gave it. The trials ask for `device: cpu` (there is no CUDA here), which the CUDA check leaves alone."""
    import ray

    gate, storage = workdir / "go", workdir / "ray"
    (workdir / "gpu.yaml").write_text(
        f"name: gpu\ntrainable: curve\ncurve: {{hold: {{epoch: 2, until: {gate}}}}}\n"
        "search: {algorithm: random, seed: 0}\npruner: {name: none}\n"
        f"resources: {{cpu: 1, gpu: {gpu}}}\n"
        f"budget: {{num_samples: {2 * at_once}, max_epochs: 2, max_concurrent: 8}}\n"
        + FAST
        + "  device: cpu\n  lr: {loguniform: [1.0e-3, 3.0e-3]}\n"
    )
    held = []

    def packed() -> bool:  # `at_once` trials hold before their second epoch, and the GPU is wholly theirs
        taken = ray.is_initialized() and ray.available_resources().get("GPU", 0) == 0
        return len(reported(storage, "gpu", epoch=1)) >= at_once and taken

    watcher = Watcher(gate, packed, lambda: held.extend(reported(storage, "gpu", epoch=1)))
    watcher.start()
    argv = ["run", "gpu.yaml", "--data", str(blob_csv), "--address", gpu_cluster.address, "--no-track", *flag]
    try:
        code = main([*argv, "--storage", str(storage), "--name", "gpu"])
    finally:
        watcher.stop()
    assert watcher.ok, watcher.error
    assert code == 0 and len(held) == at_once  # no more trials at once than the GPU's share allows

    trials = pd.read_csv(workdir / "results" / "gpu" / "trials.csv")
    assert len(trials) == 2 * at_once and (trials["status"] == "completed").all(), trials
    last = last_results(storage, "gpu")
    assert {m["gpu_ids"] for m in last} == {"0"}  # the one declared GPU, as Ray handed it to each trial
    assert most_at_once([(m["started_at"], m["reported_at"]) for m in last]) == at_once


@pytest.mark.slow(seconds=20)
def test_a_trial_given_a_gpu_without_cuda_fails_in_one_line(gpu_cluster, workdir, blob_csv):
    """fer_cnn's own check (trainables/fer_cnn.check_cuda), so the real trainable: it fails before any training."""
    body = "pruner: {name: none}\nresources: {cpu: 1, gpu: 1}\nbudget: {num_samples: 1, max_epochs: 1}\n" + FAST
    sweep, _ = run_space(space(workdir, "nocuda", body), data_source=str(blob_csv), address=gpu_cluster.address,
                         storage=workdir / "ray", track=False, verbose=0)  # fmt: skip
    [trial] = sweep.trials.to_dict("records")
    assert trial["status"] == "failed" and trial["epochs_run"] == 0
    assert trial["error"].startswith("FerTuneError: trial holds GPU 0 ") or "trial holds GPU 0 " in trial["error"]
    assert "CUDA is not available" in trial["error"] and "\n" not in trial["error"]
