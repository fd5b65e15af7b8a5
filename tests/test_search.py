"""Sweeps on real Ray (no mocks): optuna+ASHA, grid, a conditional space, resume, a 3-node cluster.

What is tested here is orchestration, so the trials are `trainable: curve` (trainables/curve.py): real Ray,
Optuna, ASHA and MLflow, with each epoch's metrics read from a deterministic curve instead of trained. Where
a test cuts a sweep short, the curve's hold pauses the trials at an epoch the test chooses.
"""

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from interrupt import assert_same_trials, cli_env, epochs_reported, kill_when, run_here, trial_dirs

from fer_tune.cli.main import main
from fer_tune.cli.sweep import run_space
from fer_tune.search.sweep_file import load_space

pytestmark = pytest.mark.integration

CURVE = "trainable: curve\n"  # orchestration, not learning: trials report curves (see the docstring)
FAST = """
  model: basic
  batch_size: 16
  augmentation: none
  dropout: 0.0
"""


def space_file(folder: Path, name: str, body: str):
    path = folder / f"{name}.yaml"
    path.write_text(f"name: {name}\n{CURVE}{body}")
    return load_space(path)


def run_sweep(space, **options):
    """An untracked sweep (tests/test_tracking.py covers MLflow)."""
    return run_space(space, track=False, **options)[0]


def trial_epochs(sweep) -> dict[str, list[int]]:
    curves = pd.read_csv(sweep.out_dir / "curves.csv")
    return {trial: list(group["epoch"]) for trial, group in curves.groupby("trial_id")}


@pytest.mark.slow(seconds=50)
def test_optuna_asha_sweep_prunes_and_writes_results(ray_local, workdir, blob_csv, capsys):
    space = space_file(
        workdir,
        "asha",
        "search: {algorithm: optuna, seed: 1}\n"
        "pruner: {name: asha, grace_period: 1, reduction_factor: 2}\n"
        "budget: {num_samples: 6, max_epochs: 4, max_concurrent: 2}\n"
        "space:" + FAST + "  lr: {loguniform: [1.0e-5, 2.0e-2]}\n",  # above ~2.5e-2 a curve diverges
    )
    sweep = run_sweep(space, data_source=str(blob_csv), storage=workdir / "ray", verbose=0)
    trials = sweep.trials
    assert len(trials) == 6 and set(trials["status"]) <= {"completed", "stopped early"}
    assert (trials["status"] == "stopped early").any(), "ASHA stopped no trial"
    assert (trials["epochs_run"] == 4).any()
    assert trials["stopped_early"].equals(trials["epochs_run"] < 4)
    for epochs in trial_epochs(sweep).values():
        assert epochs == list(range(1, len(epochs) + 1))
    assert sweep.best.best_metric == pytest.approx(trials["best_val_accuracy"].max())
    assert sweep.best.best_metric > 0.3  # a good lr's curve learns; chance is 1/7
    for name in ("trials.csv", "curves.csv", "leaderboard.md", "curves.png", "by_parameter.png", "parallel.png"):
        assert (sweep.out_dir / name).stat().st_size > 0, name
    assert sweep.best.trial_id in (sweep.out_dir / "leaderboard.md").read_text()

    capsys.readouterr()
    assert main(["results"]) == 0  # the latest sweep by default
    printed = capsys.readouterr().out
    assert f"sweep {sweep.name}: 6 trials" in printed and sweep.best.trial_id in printed


@pytest.mark.slow(seconds=40)
def test_grid_sweep_runs_every_point_once(ray_local, workdir, blob_csv):
    space = space_file(
        workdir,
        "grid",
        "search: {algorithm: grid}\npruner: {name: none}\nbudget: {num_samples: 1, max_epochs: 1}\n"
        "space:" + FAST + "  kernel_size: {grid: [2, 3]}\n  scheduler: {grid: [plateau, cos_warm]}\n"
        "  T_0: {grid: [1, 2], when: {scheduler: cos_warm}}\n",
    )
    trials = run_sweep(space, data_source=str(blob_csv), storage=workdir / "ray", verbose=0).trials
    combos = {(k, s, None if pd.isna(t) else int(t)) for k, s, t in trials[["kernel_size", "scheduler", "T_0"]].values}
    assert len(trials) == 6 and combos == {
        (k, s, t) for k in (2, 3) for s, t in (("plateau", None), ("cos_warm", 1), ("cos_warm", 2))
    }
    assert (trials["status"] == "completed").all()


@pytest.mark.slow(seconds=40)
def test_conditional_space_trains_with_the_sampled_values(ray_local, workdir, blob_csv):
    space = space_file(
        workdir,
        "conditional",
        "search: {algorithm: random, seed: 3}\npruner: {name: none}\nbudget: {num_samples: 6, max_epochs: 1}\n"
        "space:" + FAST + "  scheduler: {choice: [cos_warm, step]}\n"
        "  T_0: {choice: [3, 4], when: {scheduler: cos_warm}}\n"
        "  step_size: {choice: [5, 6], when: {scheduler: step}}\n",
    )
    sweep = run_sweep(space, data_source=str(blob_csv), storage=workdir / "ray", verbose=0)
    assert set(sweep.trials["scheduler"]) == {"cos_warm", "step"}
    for record in (sweep.result_grid[i] for i in range(len(sweep.result_grid))):
        config = record.config
        assert ("T_0" in config) == (config["scheduler"] == "cos_warm")
        assert ("step_size" in config) == (config["scheduler"] == "step")
        assert config.get("T_0", 3) in (3, 4) and config.get("step_size", 5) in (5, 6)
    rows = sweep.trials
    assert rows.loc[rows["scheduler"] == "step", "T_0"].isna().all()
    assert rows.loc[rows["scheduler"] == "cos_warm", "step_size"].isna().all()


def trial_params(trial_dir: Path) -> dict:
    """The trial's config as Ray wrote it when the trial started ({} before that, or while it is written)."""
    try:
        return json.loads((trial_dir / "params.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


@pytest.mark.slow(seconds=90)
def test_resume_after_the_driver_is_interrupted(ray_local, workdir, blob_csv, capsys):
    """SIGINT the driver while one trial is done and one is half-way; --resume finishes the sweep
    without re-running the finished trial and continues the half-done one from its checkpoint.

    The cut is placed, not raced: every trial holds before epoch 4 until `go` exists, and it does not
    until the resume. Optuna (seed 0) gives the trials 3, 8 and 8 epochs, one at a time: the first
    finishes below the hold, the second waits at 3 of 8 epochs, the third has not started."""
    gate = workdir / "go"
    (workdir / "resume.yaml").write_text(
        f"name: resume\n{CURVE}curve: {{hold: {{epoch: 4, until: {gate}}}}}\n"
        "search: {algorithm: optuna, seed: 0}\npruner: {name: none}\n"
        "budget: {num_samples: 3, max_epochs: 8, max_concurrent: 1}\nresources: {cpu: 1}\n"
        "space:" + FAST + "  lr: {loguniform: [1.0e-3, 3.0e-3]}\n  epochs: {choice: [3, 8]}\n"
    )
    command = [sys.executable, "-m", "fer_tune.cli", "run", "resume.yaml", "--data", str(blob_csv), "--name", "r1"]
    driver = subprocess.Popen(
        command, cwd=workdir, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    experiment = workdir / "results" / "ray" / "r1"

    def cut_point() -> bool:  # a trial ran all of its 3 epochs; one of 8 epochs waits at the hold
        runs = [(trial_params(d).get("epochs"), epochs_reported(d)) for d in trial_dirs(experiment)]
        return (3, [1, 2, 3]) in runs and (8, [1, 2, 3]) in runs

    deadline = time.time() + 600  # generous: a loaded 2-core machine takes minutes to start a driver and Ray
    while not cut_point():
        if driver.poll() is not None or time.time() > deadline:
            driver.kill()
            pytest.fail("the sweep never reached a finished and a held trial:\n" + driver.communicate()[0][-3000:])
        time.sleep(0.2)
    driver.send_signal(signal.SIGINT)
    output = driver.communicate(timeout=120)[0]
    assert driver.returncode == 1, output[-3000:]
    assert "interrupted; continue it with: fer-tune run resume.yaml --resume --name r1" in output
    before = {d.name: epochs_reported(d) for d in trial_dirs(experiment)}
    [finished] = [d.name for d in trial_dirs(experiment) if trial_params(d)["epochs"] == 3]
    partial = {name: epochs for name, epochs in before.items() if name != finished and epochs}
    assert before[finished] == [1, 2, 3] and list(partial.values()) == [[1, 2, 3]], before  # held: nothing more

    gate.touch()
    run_here(command + ["--resume"], capsys)  # the resume needs no process of its own
    after = {d.name: epochs_reported(d) for d in trial_dirs(experiment)}
    epochs = {d.name: trial_params(d)["epochs"] for d in trial_dirs(experiment)}
    assert len(after) == 3 and all(after[name] == list(range(1, epochs[name] + 1)) for name in after), after
    assert after[finished] == before[finished]  # not re-run: no new results
    for name, reported in partial.items():  # continued from its last checkpoint, not from epoch 1
        assert after[name] == reported + list(range(reported[-1] + 1, 9))
    trials = pd.read_csv(workdir / "results" / "r1" / "trials.csv")
    assert len(trials) == 3 and (trials["epochs_run"] == trials["epochs"]).all()
    assert (trials["status"] == "completed").all()

    # MLflow through Ray's real restore: the restored callback found its runs again by tag.
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{workdir / 'results' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("resume").experiment_id])
    [parent] = [r for r in runs if r.data.tags["fer_tune.role"] == "sweep"]
    children = {r.data.tags["ray.trial_id"]: r for r in runs if r.data.tags["fer_tune.role"] == "trial"}
    assert parent.info.status == "FINISHED" and "fer_tune.interrupted" not in parent.data.tags
    assert set(children) == set(trials["trial_id"])  # one child per trial, none duplicated by the resume
    for trial_id, trial_epochs in zip(trials["trial_id"], trials["epochs"]):
        run = children[trial_id]
        assert run.info.status == "FINISHED" and run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_accuracy")]
        # every epoch once, the resumed ones included: none missing, none logged twice
        assert sorted(steps) == list(range(1, trial_epochs + 1)), (trial_id, steps)


@pytest.mark.slow(seconds=60)
def test_asha_resumed_after_sigkill_stops_the_same_trials(ray_local, workdir, blob_csv, capsys):
    """Ray's Tuner.restore forgets ASHA's rungs (ray-project/ray#30838); fer-tune persists them. A sweep
    SIGKILLed part-way and resumed ends with the trials.csv of an uninterrupted run (up to timings).

    The cut is placed: trials run one at a time in grid order and hold before epoch 3 until `go` exists.
    The first two (lr 1e-7, at chance) are stopped at epoch 2 by the dead-trial rule, in ASHA's rungs at
    epochs 1 and 2 by then; the third waits at the hold, so the kill finds two trials decided and a third
    training, every time. Without the rungs the resumed sweep stops other trials than the whole one."""
    gate = workdir / "go"
    (workdir / "exact.yaml").write_text(
        f"name: exact\n{CURVE}curve: {{hold: {{epoch: 3, until: {gate}}}}}\n"
        "search: {algorithm: grid}\npruner: {name: asha, grace_period: 1, reduction_factor: 2}\n"
        "budget: {num_samples: 1, max_epochs: 4, max_concurrent: 1}\nresources: {cpu: 1}\n"
        "space:" + FAST + "  lr: {grid: [1.0e-7, 2.0e-7, 3.0e-3, 2.0e-3, 1.0e-3, 1.0e-5, 3.0e-5, 1.0e-4]}\n"
    )
    base = [sys.executable, "-m", "fer_tune.cli", "run", "exact.yaml", "--data", str(blob_csv), "--no-track"]
    gate.touch()
    run_here(base + ["--name", "whole"], capsys)  # only the run that is killed needs its own process

    gate.unlink()
    experiment = workdir / "results" / "ray" / "cut"
    held = lambda: [epochs_reported(d) for d in trial_dirs(experiment)] == [[1, 2]] * 3
    kill_when(base + ["--name", "cut"], workdir, held, timeout=600)  # two trials decided, a third held
    assert not (workdir / "results" / "cut" / "trials.csv").exists()  # it really was cut short
    assert (experiment / "pruner_state.pkl").is_file()

    gate.touch()
    run_here(base + ["--name", "cut", "--resume"], capsys)
    columns = ["lr", "epochs_run", "status", "stop_reason", "best_val_accuracy", "best_epoch"]
    expected = assert_same_trials(workdir, "whole", "cut", columns, by=["lr"])
    by_asha = (expected["status"] == "stopped early") & expected["stop_reason"].isna()  # not the dead-trial rule
    assert by_asha.sum() >= 2, expected  # ASHA had decisions to lose
    assert (expected.loc[expected["lr"] < 1e-6, "status"] == "stopped early").all()


@pytest.fixture
def three_node_cluster():
    """A head and two worker nodes on this machine (ray.cluster_utils.Cluster), one CPU each."""
    import ray
    from ray.cluster_utils import Cluster

    ray.shutdown()  # leave the shared local instance; it restarts on next use
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "object_store_memory": 80 * 2**20})
    for _ in range(2):
        cluster.add_node(num_cpus=1, object_store_memory=80 * 2**20)
    cluster.wait_for_nodes()
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def release_when(gate: Path, ready: Callable[[], bool], timeout: float = 180) -> threading.Thread:
    """Create `gate` (a curve hold's file) once `ready()`, or after `timeout` s so the sweep still ends
    (and the test's assertions say what did not happen); poll from a thread while the sweep runs."""

    def watch() -> None:
        deadline = time.time() + timeout
        while not ready() and time.time() < deadline:
            time.sleep(0.1)
        gate.touch()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


@pytest.mark.slow(seconds=60)
def test_sweep_across_a_three_node_cluster(three_node_cluster, workdir, blob_csv):
    """Three one-CPU trials held at once (each waits before epoch 2 until all three have reported
    epoch 1) need the three one-CPU nodes: one trial each."""
    import ray

    gate = workdir / "go"
    space = space_file(
        workdir,
        "cluster",
        f"curve: {{hold: {{epoch: 2, until: {gate}}}}}\n"
        "pruner: {name: none}\nbudget: {num_samples: 3, max_epochs: 3, max_concurrent: 3}\nresources: {cpu: 1}\n"
        "space:" + FAST + "  lr: {loguniform: [1.0e-3, 3.0e-3]}\n",
    )
    experiment = workdir / "ray" / "c1"
    all_running = lambda: sum(epochs_reported(d) == [1] for d in trial_dirs(experiment)) == 3
    watcher = release_when(gate, all_running)
    sweep = run_sweep(
        space,
        data_source=str(blob_csv),
        name="c1",
        address=three_node_cluster.address,
        storage=workdir / "ray",
        verbose=0,
    )
    watcher.join(timeout=10)
    assert len(ray.nodes()) == 3
    nodes = {sweep.result_grid[i].metrics["node_id"] for i in range(len(sweep.result_grid))}
    assert len(nodes) == 3, "three concurrent one-CPU trials should land on three different nodes"
    assert (sweep.trials["status"] == "completed").all() and (sweep.trials["epochs_run"] == 3).all()


@pytest.mark.parametrize("pruner", ["none", "asha"])
@pytest.mark.slow(seconds=60)
def test_a_trials_outcome_is_judged_by_its_own_epochs(pruner, ray_local, workdir, blob_csv, capsys):
    """A space that searches `epochs` below max_epochs: a trial that ran all of *its* epochs completed,
    on the console, in trials.csv and in MLflow alike; only the pruner stops a trial early."""
    from mlflow import MlflowClient

    space = space_file(
        workdir,
        f"epochs_{pruner}",
        f"search: {{algorithm: random, seed: 0}}\npruner: {{name: {pruner}, grace_period: 1, reduction_factor: 2}}\n"
        "dead_trials: {enabled: false}\n"  # only the pruner stops here (tests/test_dead_trials.py: the rule)
        "budget: {num_samples: 6, max_epochs: 4, max_concurrent: 2}\n"
        "space:" + FAST + "  lr: {loguniform: [1.0e-5, 3.0e-3]}\n  epochs: {choice: [1, 2, 3]}\n",
    )
    sweep, _ = run_space(space, data_source=str(blob_csv), storage=workdir / "ray", verbose=0)
    trials = sweep.trials.set_index("trial_id")
    assert (trials["epochs_run"] < 4).all()  # no trial reached max_epochs: the old rule called each one stopped
    stopped = trials["epochs_run"] < trials["epochs"]  # ran fewer epochs than this trial was given
    assert trials["stopped_early"].equals(stopped)
    assert trials["status"].equals(stopped.map({True: "stopped early", False: "completed"}))
    if pruner == "none":
        assert not stopped.any()
    console = capsys.readouterr().out
    client = MlflowClient(f"sqlite:///{workdir / 'results' / 'mlflow.db'}")
    children = client.search_runs(
        [client.get_experiment_by_name(space.name).experiment_id], "tags.`fer_tune.role` = 'trial'"
    )
    statuses = {run.data.tags["ray.trial_id"]: run.info.status for run in children}
    for trial_id, row in trials.iterrows():
        assert statuses[trial_id] == ("KILLED" if row["stopped_early"] else "FINISHED"), trial_id
        said = "stopped early at epoch" if row["stopped_early"] else f"completed {row['epochs_run']} epochs"
        assert f"trial {trial_id} {said}" in console
    if pruner == "none":  # --resume of a finished, tracked sweep re-registers nothing and moves no alias
        versions = client.search_model_versions("name = 'fer-emotion'")
        argv = ["run", str(workdir / f"epochs_{pruner}.yaml"), "--resume", "--name", sweep.name]
        assert main([*argv, "--storage", str(workdir / "ray"), "--data", str(blob_csv)]) == 0
        assert f"sweep {sweep.name} is finished; nothing to resume" in capsys.readouterr().out
        assert len(client.search_model_versions("name = 'fer-emotion'")) == len(versions)


@pytest.mark.slow(seconds=30)
def test_no_track_writes_results_and_touches_no_store(ray_local, workdir, blob_csv, monkeypatch, capsys):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (workdir / "untracked.yaml").write_text(
        f"name: untracked\n{CURVE}pruner: {{name: none}}\nbudget: {{num_samples: 1, max_epochs: 1}}\nspace:" + FAST
    )
    argv = ["run", "untracked.yaml", "--data", str(blob_csv), "--name", "u1", "--storage", str(workdir / "ray")]
    assert main([*argv, "--no-track"]) == 0
    assert len(pd.read_csv(workdir / "results" / "u1" / "trials.csv")) == 1
    assert not (workdir / "results" / "mlflow.db").exists() and not (workdir / "results" / "mlartifacts").exists()
    assert "registered" not in capsys.readouterr().out
    trials_csv = workdir / "results" / "u1" / "trials.csv"
    before = (trials_csv.read_bytes(), trials_csv.stat().st_mtime_ns)
    assert main([*argv, "--no-track", "--resume"]) == 0  # a finished sweep: said, and nothing changed
    assert "sweep u1 is finished; nothing to resume" in capsys.readouterr().out
    assert (trials_csv.read_bytes(), trials_csv.stat().st_mtime_ns) == before
