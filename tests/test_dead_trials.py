"""Dead trials: a trial no better than the validation split's majority class stops at its grace epoch,
with that reason on the console, in trials.csv and in MLflow; ASHA's thin rungs do not promote blindly."""

from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from fer_tune.constants import EMOTIONS
from fer_tune.data.dataset import Split
from fer_tune.search.outcome import COMPLETED, STOPPED, ChanceRule, majority_rate, trial_outcome
from fer_tune.search.pruners import DeadTrialStop, RungFloorASHA, build_pruner, chance_rule
from fer_tune.search.sweep_file import load_space

FAST = "  model: basic\n  batch_size: 16\n  augmentation: none\n  dropout: 0.0\n"


def space_from(folder, body: str):
    path = folder / "dead.yaml"
    path.write_text("name: dead\n" + body)
    return load_space(path)


def test_the_rule_reads_the_majority_rate_margin_and_grace():
    rule = ChanceRule(majority_rate([30, 7, 7, 7, 7, 6, 6]), margin=0.0, grace=2)
    assert rule.rate == pytest.approx(30 / 70)
    assert not rule.dead(1, 0.1)  # inside its grace
    assert rule.dead(2, 30 / 70) and rule.dead(3, 0.05)  # at or below chance after it
    assert not rule.dead(2, 0.44)  # a slow learner just above chance goes on
    assert ChanceRule(0.25, margin=0.05, grace=1).dead(1, 0.29)  # the margin raises the floor
    stopper = DeadTrialStop(rule)
    assert stopper("t", {"epoch": 2, "val_accuracy": 0.2}) and not stopper("t", {"epoch": 2, "val_accuracy": 0.6})


def test_the_reason_goes_with_a_trial_stopped_at_chance_only():
    rule = ChanceRule(0.255, grace=2)
    dead = trial_outcome(2, 6, accuracy=0.255, rule=rule)
    assert dead.status == STOPPED and "no better than chance" in dead.reason and "0.2550" in dead.reason
    assert "stopped early at epoch 2 of 6: no better than chance" in dead.describe()
    assert trial_outcome(2, 6, accuracy=0.4, rule=rule).reason is None  # stopped by ASHA's quantile
    assert trial_outcome(6, 6, accuracy=0.255, rule=rule).status == COMPLETED


def test_the_space_switches_the_rule_off_or_changes_it(tmp_path):
    assert chance_rule(space_from(tmp_path, "dead_trials: {enabled: false}\n"), [5, 5]) is None
    rule = chance_rule(space_from(tmp_path, "dead_trials: {grace: 3, margin: 0.02}\n"), [30, 10])
    assert rule == ChanceRule(0.75, 0.02, 3)


def asha(tmp_path, rule, min_rung_results=None):
    extra = "" if min_rung_results is None else f", min_rung_results: {min_rung_results}"
    space = space_from(
        tmp_path, f"pruner: {{name: asha, grace_period: 1, reduction_factor: 2{extra}}}\nbudget: {{max_epochs: 8}}\n"
    )
    pruner = build_pruner(space, rule=rule)
    pruner.set_search_properties("val_accuracy", "max")
    return pruner


def report(pruner, trial_id: str, epoch: int, accuracy: float) -> str:
    trial = SimpleNamespace(trial_id=trial_id)
    if trial_id not in pruner._trial_info:
        pruner.on_trial_add(None, trial)
    return pruner.on_trial_result(None, trial, {"epoch": epoch, "val_accuracy": accuracy})


def test_a_thin_rung_does_not_promote_a_trial_at_chance(tmp_path):
    """Ray's ASHA continues the first trial at every rung whatever its score; asked to (min_rung_results: 2),
    ours asks it to beat chance until the rung holds 2 results. By default it is Ray's ASHA."""
    rule = ChanceRule(0.25, grace=4)
    ours, plain = asha(tmp_path, rule, min_rung_results=2), asha(tmp_path, None)
    assert report(asha(tmp_path, rule), "a", 1, 0.25) == plain.CONTINUE  # the default: off
    assert isinstance(ours, RungFloorASHA)
    assert report(plain, "a", 1, 0.25) == plain.CONTINUE  # blind promotion
    assert report(ours, "a", 1, 0.25) == ours.STOP  # first at rung 1, at chance, inside the dead grace
    assert report(ours, "b", 1, 0.30) == ours.CONTINUE  # first above chance: continues
    assert report(ours, "c", 1, 0.26) == ours.STOP  # ASHA's own quantile of (0.25, 0.30)
    assert report(ours, "b", 2, 0.5) == ours.CONTINUE  # rung 2 (epochs 1, 2, 4): first, above chance
    assert report(ours, "b", 3, 0.2) == ours.CONTINUE  # between rungs: nothing to judge
    assert report(ours, "d", 2, 0.24) == ours.STOP  # rung 2 holds one result: at chance is not enough
    wide = asha(tmp_path, rule, min_rung_results=0)  # 0: plain ASHA
    assert report(wide, "a", 1, 0.25) == wide.CONTINUE


def test_seeded_rungs_judge_the_first_trial(tmp_path):
    """Rungs seeded from an earlier sweep's curves compare a new trial with them from its first rung."""
    pruner = asha(tmp_path, ChanceRule(0.25, grace=4))
    assert pruner.seed_rungs({"old1": {1: 0.6, 2: 0.7}, "old2": {1: 0.5}}, mode="max") == 3
    assert pruner.seed_rungs({"old1": {1: 0.6, 2: 0.7}, "old2": {1: 0.5}}, mode="max") == 3  # idempotent
    rung1 = dict(pruner._brackets[0]._rungs)[1]
    assert rung1 == {"earlier:old1": 0.6, "earlier:old2": 0.5}
    assert report(pruner, "new", 1, 0.4) == pruner.STOP  # below the earlier trials' quantile
    assert report(pruner, "good", 1, 0.65) == pruner.CONTINUE


@pytest.fixture(scope="module")
def skewed_csv(tmp_path_factory):
    """Blobs whose validation split is 30 of 70 class 0: the majority-class rate is 0.4286."""
    from conftest import blob_split

    from fer_tune.data import write_fer2013_csv

    full = blob_split(280, seed=2)
    labels = full.labels.tolist()
    majority = [i for i, label in enumerate(labels) if label == 0][:30]
    keep = majority + [i for i, label in enumerate(labels) if label][:40]
    validation = Split(full.images[torch.tensor(keep)], full.labels[torch.tensor(keep)])
    test = blob_split(70, seed=3)
    splits = [(blob_split(280, seed=1), "Training"), (validation, "PublicTest"), (test, "PrivateTest")]
    path = tmp_path_factory.mktemp("skewed") / "skewed.csv"
    write_fer2013_csv(
        path,
        torch.cat([s.images for s, _ in splits]),
        torch.cat([s.labels for s, _ in splits]),
        [usage for s, usage in splits for _ in range(len(s))],
    )
    assert len(EMOTIONS) == 7
    return path


@pytest.mark.integration
@pytest.mark.slow(seconds=50)
def test_a_dead_trial_stops_at_its_grace_epoch_and_says_why(ray_local, workdir, skewed_csv, capsys):
    """lr 1e-7 learns nothing (at or below 0.4286 after 2 epochs): stopped at epoch 2 with the reason on the
    console, in trials.csv and as an MLflow tag. lr 3.6e-6 (with dropout 0.9, weight decay 0.1, seed 66) is
    below chance after epoch 1 and above it after 2: a slow learner, not stopped. No pruner: the rule holds on
    its own. The trials are `trainable: curve` (trainables/curve.py): deterministic curves of the config."""
    from mlflow import MlflowClient

    from fer_tune.cli.sweep import run_space

    slow_learner = "  dropout: 0.9\n  weight_decay: 0.1\n  seed: 66\n"  # its epoch-1 dip is below chance
    space = space_from(
        workdir,
        "trainable: curve\nsearch: {algorithm: grid}\npruner: {name: none}\ndead_trials: {grace: 2}\n"
        "budget: {num_samples: 1, max_epochs: 3, max_concurrent: 2}\n"
        "space:\n" + FAST.replace("  dropout: 0.0\n", slow_learner) + "  lr: {grid: [1.0e-7, 3.6e-6]}\n",
    )
    sweep, _ = run_space(space, data_source=str(skewed_csv), storage=workdir / "ray", verbose=0)
    trials = sweep.trials.set_index("lr")
    dead, learner = trials.loc[1e-7], trials.loc[3.6e-6]
    assert (dead["status"], dead["epochs_run"]) == ("stopped early", 2)
    assert dead["stop_reason"].startswith("no better than chance: val_accuracy") and "0.4286" in dead["stop_reason"]
    assert (learner["status"], learner["epochs_run"]) == ("completed", 3) and pd.isna(learner["stop_reason"])
    curves = pd.read_csv(sweep.out_dir / "curves.csv")
    slow = curves[curves["trial_id"] == learner["trial_id"]].set_index("epoch")["val_accuracy"]
    assert slow[1] <= 30 / 70 < slow[2]  # it was at chance inside its grace: the grace is what saved it

    console = capsys.readouterr().out
    [line] = [line for line in console.splitlines() if f"trial {dead['trial_id']} " in line]
    assert "stopped early at epoch 2 of 3: no better than chance" in line
    assert line.count("val_accuracy") == 1 and line.count("epoch") == 1, line  # each said once
    client = MlflowClient(f"sqlite:///{workdir / 'results' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("dead").experiment_id], "tags.`fer_tune.role` = 'trial'")
    tags = {run.data.tags["ray.trial_id"]: (run.info.status, run.data.tags) for run in runs}
    status, dead_tags = tags[dead["trial_id"]]
    assert status == "KILLED" and dead_tags["fer_tune.stop_reason"] == dead["stop_reason"]
    assert "fer_tune.stop_reason" not in tags[learner["trial_id"]][1]
