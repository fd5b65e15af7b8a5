"""Multi-objective sweeps on real Ray, Optuna and MLflow: pruning by rank, the front, its registration,
the champion under a constraint, a SIGKILLed sweep resumed, and Optuna's multi-objective samplers
(MOTPE, NSGA-II) under multi-objective ASHA.

The trials are `trainable: curve` (trainables/curve.py): the learning curves are a deterministic function of
the config, and the MACs those of the real model the config builds, so a narrower width costs fewer MACs.
The grid runs one trial at a time (max_concurrent 1), so the rungs fill in a known order:
wide/lr 3e-3 learns; wide/lr 1e-5 learns far more slowly at the same MACs, so it is dominated
and multi-objective ASHA stops it at the first rung; narrow/lr 3e-3 has a quarter of the MACs, is
on the front whatever its accuracy, and is the only trial within the champion rule's MACs bound.
"""

import json
import pickle
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
from interrupt import assert_same_trials, epochs_reported, kill_when, run_here, trial_dirs
from mlflow import MlflowClient
from optuna.study import StudyDirection
from optuna.trial import TrialState

from fer_tune.cli.main import main
from fer_tune.cli.sweep import run_space
from fer_tune.core.config import TrainConfig
from fer_tune.core.cost import model_cost
from fer_tune.search.sweep_file import load_space

pytestmark = pytest.mark.integration

MODEL = "fer-moo"


def narrow_macs() -> int:
    return model_cost(TrainConfig(model="basic", width=0.25), num_classes=7, runs=1)["macs"]


def space_text(name: str, axes: str, bound: float, epochs: int = 3, curve: str = "") -> str:
    return f"""name: {name}
trainable: curve
{curve}objectives:
  - {{metric: val_accuracy, mode: max}}
  - {{metric: macs, mode: min}}
champion: {{metric: val_accuracy, where: {{macs: "<= {bound}"}}}}
search: {{algorithm: grid}}
pruner: {{name: asha, grace_period: 1, reduction_factor: 2}}
budget: {{num_samples: 1, max_epochs: {epochs}, max_concurrent: 1}}
mlflow: {{experiment: fer-moo, register_as: {MODEL}}}
space:
  model: basic
  batch_size: 16
  augmentation: none
  dropout: 0.0
{axes}"""


# In this order: (1.0, 3e-3), (1.0, 1e-5), (0.25, 3e-3), (0.25, 1e-5)
GRID = "  width: {grid: [1.0, 0.25]}\n  lr: {grid: [3.0e-3, 1.0e-5]}\n"


@pytest.mark.slow(seconds=50)
def test_a_multi_objective_sweep_prunes_by_rank_registers_its_front_and_picks_the_champion(
    ray_local, workdir, blob_csv, capsys
):
    bound = narrow_macs()
    (workdir / "moo.yaml").write_text(space_text("moo", GRID, bound))
    sweep, tracking = run_space(load_space("moo.yaml"), data_source=str(blob_csv), storage=workdir / "ray")
    trials = sweep.trials.set_index(["width", "lr"])
    assert {"params", "macs", "latency_ms", "on_front"} <= set(trials.columns)
    assert (trials["latency_ms"] > 0).all() and trials["macs"].gt(0).all()
    dull = trials.loc[(1.0, 1.0e-5)]
    assert dull["status"] == "stopped early" and dull["epochs_run"] == 1  # dominated: stopped at the first rung
    assert not dull["on_front"] and trials.loc[(0.25, 3.0e-3), "on_front"]

    pareto = pd.read_csv(sweep.out_dir / "pareto.csv")
    assert set(pareto["trial_id"]) == set(sweep.trials.loc[sweep.trials["on_front"], "trial_id"])
    assert pareto["champion"].sum() == 1 and pareto.loc[pareto["champion"], "macs"].item() <= bound
    assert (sweep.out_dir / "pareto.png").stat().st_size > 10_000
    assert "front" in (sweep.out_dir / "leaderboard.md").read_text()

    narrow_id = trials.loc[(0.25, 3.0e-3), "trial_id"]
    registration = tracking.registration
    assert sweep.best.trial_id == narrow_id and registration.alias == "champion"
    client = MlflowClient(f"sqlite:///{workdir / 'results' / 'mlflow.db'}")
    versions = client.search_model_versions(f"name = '{MODEL}'")
    assert {v.tags["front_trial_id"] for v in versions} == set(pareto["trial_id"])  # every member, once
    for version in versions:
        assert float(version.tags["objective.macs"]) > 0 and 0 <= float(version.tags["objective.val_accuracy"]) <= 1
    assert str(client.get_model_version_by_alias(MODEL, "champion").version) == registration.version
    parent = client.search_runs(
        [client.get_experiment_by_name("fer-moo").experiment_id], "tags.`fer_tune.role` = 'sweep'"
    )
    assert "pareto.png" in {a.path for a in client.list_artifacts(parent[0].info.run_id)}

    capsys.readouterr()
    assert main(["models", "list"]) == 0
    listing = capsys.readouterr().out
    assert "objectives" in listing and "macs=" in listing

    # A constraint no trial meets: a one-line message, and the champion alias stays where it was.
    (workdir / "none.yaml").write_text(space_text("none", "  width: 0.25\n  lr: 3.0e-3\n", 1, epochs=1))
    assert main(["run", "none.yaml", "--data", str(blob_csv), "--storage", str(workdir / "ray")]) != 0
    printed = capsys.readouterr()
    errors = printed.err.splitlines()
    assert any("champion.where: no trial on the front meets macs <= 1;" in line for line in errors), errors[-5:]
    [report] = (workdir / "results").glob("none-*/report.json")  # and its report does not call it a deployment
    assert json.loads(report.read_text())["answer"]["rule_unmet"].startswith("no trial meets the champion rule (macs")
    assert "(not deployed)" in printed.out and "No trial meets" in (report.parent / "report.html").read_text()
    assert str(client.get_model_version_by_alias(MODEL, "champion").version) == registration.version


@pytest.mark.slow(seconds=40)
def test_a_multi_objective_sweep_resumed_after_sigkill_ends_like_an_uninterrupted_one(
    ray_local, workdir, blob_csv, capsys
):
    """One trial at a time, lr outer: the three lr 1e-7 trials stay at chance; the dead-trial rule stops two at
    epoch 2 and multi-objective ASHA stops the widest at its first rung (dominated by the first). The first lr 3e-3
    trial passes its rungs and holds before epoch 3: the driver is SIGKILLed there, with three decisions made and
    a trial training, then resumed (the hold released) to end like a run that was never cut, though the
    checkpoint the cut sweep's snapshot names is gone."""
    gate = workdir / "go"
    curve = f"curve: {{hold: {{epoch: 3, until: {gate}}}}}\n"
    grid = "  lr: {grid: [1.0e-7, 3.0e-3]}\n  width: {grid: [0.5, 1.0, 0.25]}\n"
    (workdir / "exact.yaml").write_text(space_text("exact", grid, narrow_macs(), epochs=4, curve=curve))
    base = [sys.executable, "-m", "fer_tune.cli", "run", "exact.yaml", "--data", str(blob_csv), "--no-track"]
    gate.touch()
    run_here(base + ["--name", "whole"], capsys)  # only the run that is killed needs its own process

    gate.unlink()
    experiment = workdir / "results" / "ray" / "cut"
    # SIGKILL once the fourth trial has reported epoch 2: it then waits at the hold, before epoch 3
    kill_when(
        base + ["--name", "cut"], workdir, lambda: sum(2 in epochs_reported(t) for t in trial_dirs(experiment)) >= 3
    )
    # the cut: the first, third and fourth trials reached epoch 2; the second was stopped at its first rung
    # (its result.json line may be lost to the SIGKILL: what the driver had not flushed)
    reported = [epochs_reported(t) for t in trial_dirs(experiment)]
    assert [2 in epochs for epochs in reported] == [True, False, True, True] and reported[1] in ([1], []), reported
    assert not (workdir / "results" / "cut" / "trials.csv").exists()  # it really was cut short
    assert (experiment / "pruner_state.pkl").is_file()
    held = json.loads((trial_dirs(experiment)[3] / "result.json").read_text().splitlines()[-1])["pid"]
    wait_until(lambda: not alive(held))  # the killed sweep's held trial may not run on once the hold is released
    # Ray deletes a replaced checkpoint at once and names its successor in the snapshot a moment later; a kill
    # in between (this one lands right after an epoch) leaves the snapshot naming a deleted checkpoint. Made
    # certain here: the held trial's checkpoints move one number up, so the one named is gone and a newer one
    # is there. The resume re-points it (fer_tune.search.checkpoint_refs) instead of failing the trial.
    for checkpoint in sorted(trial_dirs(experiment)[3].glob("checkpoint_*"), reverse=True):
        checkpoint.rename(checkpoint.with_name(f"checkpoint_{int(checkpoint.name.split('_')[1]) + 1:06d}"))
    gate.touch()

    resumed = run_here(base + ["--name", "cut", "--resume"], capsys)
    assert "its recorded checkpoint was replaced as the sweep was cut" in resumed, resumed[-3000:]
    columns = ["width", "lr", "epochs_run", "status", "best_val_accuracy", "best_epoch", "macs", "on_front"]
    expected = assert_same_trials(workdir, "whole", "cut", columns, by=["width", "lr"])
    dead = expected[expected["lr"] == 1.0e-7].set_index("width")
    assert (dead["status"] == "stopped early").all() and dead["epochs_run"].to_dict() == {0.25: 2, 0.5: 2, 1.0: 1}
    pareto = [pd.read_csv(workdir / "results" / name / "pareto.csv") for name in ("whole", "cut")]
    assert len(pareto[0]) == len(pareto[1]) and pareto[0]["champion"].sum() == pareto[1]["champion"].sum() == 1


SAMPLER_SPACE = """name: {name}
trainable: curve
objectives:
  - {{metric: val_accuracy, mode: max}}
  - {{metric: macs, mode: min}}
search: {{algorithm: optuna, sampler: {sampler}, seed: 0}}
pruner: {{name: asha, grace_period: 1, reduction_factor: 2}}
budget: {{num_samples: 8, max_epochs: 3, max_concurrent: 1}}
space:
  model: basic
  batch_size: 16
  augmentation: none
  dropout: 0.0
  width: {{choice: [0.25, 0.5, 1.0]}}
  lr: {{loguniform: [1.0e-6, 1.0e-2]}}
"""


@pytest.mark.parametrize(("sampler", "kind"), [("tpe", "TPESampler"), ("nsga2", "NSGAIISampler")])
@pytest.mark.slow(seconds=30)
def test_optuna_multi_objective_samplers_run_a_sweep_under_multi_objective_asha(
    ray_local, workdir, blob_csv, sampler, kind
):
    """MOTPE (search.sampler tpe with several objectives) and NSGA-II propose every trial of a sweep that
    multi-objective ASHA prunes. Ray pickles the searcher into the experiment (NSGA-II's sampler could not be
    pickled: issue 26); the saved study has one direction per objective and every trial told both objectives."""
    (workdir / "mo.yaml").write_text(SAMPLER_SPACE.format(name=sampler, sampler=sampler))
    sweep, _ = run_space(load_space("mo.yaml"), data_source=str(blob_csv), storage=workdir / "ray", track=False)
    trials = sweep.trials
    assert len(trials) == 8 and set(trials["status"]) == {"completed", "stopped early"}, trials
    assert trials["on_front"].any() and trials["width"].nunique() > 1 and trials["lr"].nunique() == 8

    [saved] = (workdir / "ray").glob("*/searcher-state-*.pkl")
    study = pickle.loads(saved.read_bytes())["_ot_study"]
    assert isinstance(study.sampler, getattr(optuna.samplers, kind))  # TPE is MOTPE with two directions
    assert study.directions == [StudyDirection.MAXIMIZE, StudyDirection.MINIMIZE]
    told = {t.params["lr"]: t.values for t in study.trials if t.state == TrialState.COMPLETE}
    assert len(told) == 8 and all(len(values) == 2 for values in told.values())
    assert sorted(values[1] for values in told.values()) == sorted(trials["macs"])  # macs, as each trial ended


def wait_until(ready, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while not ready():
        assert time.time() < deadline, "timed out"
        time.sleep(0.2)


def alive(pid: int) -> bool:
    """Whether process `pid` still runs (a zombie, dead but not yet reaped, does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")
