"""`select:` re-runs: the space file's section, the seeds, the table, the rule that picks the champion by mean,
the report's section (no Ray here); and one sweep in Ray (curve trials), tracked, whose re-runs are nested under its
MLflow run."""

import json

import numpy as np
import pandas as pd
import pytest

from fer_tune.core.config import make_train_config, trial_point
from fer_tune.errors import FerTuneError
from fer_tune.search.report.build import build_report, write_report
from fer_tune.search.reruns import (
    RERUN_KEY,
    RERUNS_FILE,
    SUMMARY_FILE,
    champion_of,
    fresh_seeds,
    rerun_configs,
    rerun_of,
    summarize,
    top_trials,
    write_reruns,
)
from fer_tune.search.results import TrialRecord, write_results
from fer_tune.search.searchers import FixedConfigs
from fer_tune.search.sweep_file import load_space, smoke

SPACE = """name: picked
budget: {num_samples: 4, max_epochs: 2}
space:
  model: basic
  lr: {loguniform: [1.0e-4, 1.0e-2]}
"""


def space_file(tmp_path, extra: str = "", body: str = SPACE):
    path = tmp_path / "picked.yaml"
    path.write_text(body + extra)
    return load_space(path)


# ------------------------------------------------------------------------------------------ the rule


def hand_made(metric: str = "val_accuracy"):
    """Trial a won the search (0.90) and has the best single re-run (0.95), but its seeds scatter: mean 0.60.
    Trial b was second (0.85) and is steady: mean 0.80. Trial c's one completed re-run is 0.70."""
    score = f"best_{metric}"
    trials = pd.DataFrame({"trial_id": ["a", "b", "c", "d"], score: [0.90, 0.85, 0.80, 0.40]})
    reruns = pd.DataFrame({
        "trial_id": ["a", "a", "a", "b", "b", "b", "c", "c", "c"],
        "seed": [1, 2, 3, 1, 2, 3, 1, 2, 3],
        score: [0.95, 0.40, 0.45, 0.79, 0.80, 0.81, 0.70, 0.99, None],
        "status": ["completed"] * 7 + ["failed", "failed"],  # c's 0.99 is a failed run's best so far: not counted
    })  # fmt: skip
    reruns.insert(2, "rerun_id", [f"r_{i:05d}" for i in range(9)])
    return trials, reruns.assign(best_epoch=2, epochs_run=[2] * 7 + [1, 0], wall_seconds=10.0, error=None)


def test_the_champion_is_the_best_mean_not_the_best_single_run():
    trials, reruns = hand_made()
    summary = summarize(reruns, trials, "val_accuracy")
    assert list(summary["trial_id"]) == ["a", "b", "c"]  # the re-runs' order; d was not re-trained
    by_trial = summary.set_index("trial_id")
    assert by_trial.loc["a", "mean"] == pytest.approx(0.60) and by_trial.loc["b", "mean"] == pytest.approx(0.80)
    assert by_trial.loc["b", "sd"] == pytest.approx(np.std([0.79, 0.80, 0.81], ddof=1))
    assert by_trial.loc["a", "search_best_val_accuracy"] == 0.90
    assert list(by_trial["n"]) == [3, 3, 1] and list(by_trial["seeds"]) == [3, 3, 3]
    assert np.isnan(by_trial.loc["c", "sd"])  # one run gives no spread
    assert champion_of(summary, "max") == "b"
    # the best single score, searched (a: 0.90) or re-run (a: 0.95, or c's failed 0.99), does not decide
    assert trials.loc[trials["best_val_accuracy"].idxmax(), "trial_id"] == "a"


def test_a_loss_is_picked_by_its_lowest_mean_and_a_tie_by_the_search_order():
    trials, reruns = hand_made("val_loss")
    assert champion_of(summarize(reruns, trials, "val_loss"), "min") == "a"  # 0.60 < 0.70 < 0.80
    tied = pd.DataFrame({"trial_id": ["x", "y"], "mean": [0.5, 0.5], "sd": [0.1, 0.0], "n": [2, 2], "seeds": [2, 2]})
    assert champion_of(tied, "max") == "x" and champion_of(tied, "min") == "x"


def test_no_completed_rerun_no_champion():
    trials, reruns = hand_made()
    reruns["status"] = "failed"
    summary = summarize(reruns, trials, "val_accuracy")
    assert (summary["n"] == 0).all() and champion_of(summary, "max") is None


def test_written_tables_mark_the_champion(tmp_path, capsys):
    trials, reruns = hand_made()
    space = space_file(tmp_path, "select: {top_k: 3, seeds: 3}\n")
    summary = write_reruns(tmp_path, reruns, trials, space)
    saved = pd.read_csv(tmp_path / SUMMARY_FILE)
    assert list(saved.loc[saved["champion"], "trial_id"]) == ["b"] and list(summary["champion"]) == [False, True, False]
    assert len(pd.read_csv(tmp_path / RERUNS_FILE)) == 9


# ------------------------------------------------------------------------------ what is re-trained


def record(trial_id: str, scores: list[float], planned: int = 2) -> TrialRecord:
    curve = pd.DataFrame({"epoch": range(1, len(scores) + 1), "val_accuracy": scores})
    return TrialRecord(trial_id, {"lr": 1e-3}, curve, "val_accuracy", "max", planned)


def test_top_trials_are_the_best_that_ran_all_their_epochs(tmp_path):
    space = space_file(tmp_path, "select: {top_k: 2, seeds: 3}\n")
    records = [record("low", [0.3, 0.4]), record("stopped", [0.99]), record("high", [0.5, 0.8]),
               record("mid", [0.6, 0.7]), TrialRecord("failed", {}, record("x", [0.9, 0.9]).curve, "val_accuracy",
                                                      "max", 2, error="RuntimeError: boom")]  # fmt: skip
    assert [r.trial_id for r in top_trials(records, space)] == ["high", "mid"]


def test_rerun_configs_carry_fresh_seeds_and_the_trial_they_retrain():
    points = [("t1", {"model": "basic", "lr": 3e-3, "epochs": 2}), ("t2", {"model": "basic", "seed": 7, "epochs": 2})]
    configs = rerun_configs(points, seeds=3)
    assert [rerun_of(c) for c in configs] == [
        {"of": "t1", "seed": 1}, {"of": "t1", "seed": 2}, {"of": "t1", "seed": 3},
        {"of": "t2", "seed": 8}, {"of": "t2", "seed": 9}, {"of": "t2", "seed": 10},
    ]  # fmt: skip
    assert configs == rerun_configs(points, seeds=3)  # deterministic
    for config in configs:  # the trainable reads the point as a TrainConfig: the marker is beside it, not in it
        train = make_train_config(config)
        assert train.seed == rerun_of(config)["seed"] and train.epochs == 2 and RERUN_KEY not in trial_point(config)
    assert 7 not in fresh_seeds(7, 100) and len(set(fresh_seeds(7, 100))) == 100
    assert rerun_of({"lr": 1e-3}) is None


def test_fixed_configs_hands_out_the_list_once_and_resumes(tmp_path):
    configs = rerun_configs([("t1", {"model": "basic"})], seeds=3)
    searcher = FixedConfigs(configs)
    assert searcher.suggest("a") == configs[0]
    searcher.save(str(tmp_path / "searcher.pkl"))
    again = FixedConfigs([])
    again.restore(str(tmp_path / "searcher.pkl"))
    assert [again.suggest(i) for i in "bcd"] == [configs[1], configs[2], FixedConfigs.FINISHED]


# -------------------------------------------------------------------------------------- space file


def test_select_is_off_unless_asked_and_smoke_keeps_one_rerun(tmp_path):
    assert space_file(tmp_path).select is None
    space = space_file(tmp_path, "select: {top_k: 3, seeds: 3}\n")
    assert (space.select.top_k, space.select.seeds) == (3, 3)
    assert (smoke(space).select.top_k, smoke(space).select.seeds) == (1, 1)
    assert smoke(space_file(tmp_path)).select is None


def test_shipped_spaces_full_selects_quick_does_not():
    full, quick = load_space("search_spaces/full.yaml"), load_space("search_spaces/quick.yaml")
    assert (full.select.top_k, full.select.seeds) == (3, 3) and quick.select is None


MOO = """name: picked
objectives:
  - {metric: val_accuracy, mode: max}
  - {metric: macs, mode: min}
space:
  model: basic
"""


@pytest.mark.parametrize(
    ("extra", "body", "message"),
    [
        ("select: {top_k: 0}\n", SPACE, r"select\.top_k: Input should be greater than or equal to 1"),
        ("select: {seeds: 2.5}\n", SPACE, r"select\.seeds: .*integer.* \(got 2\.5\)"),
        ("select: {seeds: 0}\n", SPACE, r"select\.seeds: Input should be greater than or equal to 1"),
        ("select: {top_k: 2, seed: 3}\n", SPACE, r"select\.seed: unknown key; expected one of: top_k, seeds"),
        ("select: 3\n", SPACE, r"select: "),
        ("select: {top_k: 2}\n", MOO, r"select: re-runs choose the champion by its mean .* or objectives:"),
        ("select: {}\nchampion: {metric: val_accuracy}\n", SPACE, r"remove select: or champion:"),
    ],
)
def test_bad_select_is_a_one_line_error(tmp_path, extra, body, message):
    with pytest.raises(FerTuneError, match=message) as caught:
        space_file(tmp_path, extra, body)
    assert str(caught.value).startswith(str(tmp_path / "picked.yaml")) and "\n" not in str(caught.value)


# ------------------------------------------------------------------------------------------ report


def test_report_shows_mean_and_sd_per_configuration_and_deploys_the_best_mean(tmp_path):
    space = space_file(tmp_path, "select: {top_k: 3, seeds: 3}\n")
    records = [record(t, [s - 0.1, s]) for t, s in (("a", 0.90), ("b", 0.85), ("c", 0.80), ("d", 0.40))]
    summary = {"source": "unit", "classes": ["x", "y"], "splits": {"validation": {"x": 5, "y": 5}}}
    out = tmp_path / "results" / "picked"
    trials = write_results(out, records, space, summary)
    write_reruns(out, hand_made()[1], trials, space)
    report = write_report(out)
    reruns = report["reruns"]
    assert (reruns["top_k"], reruns["seeds"], reruns["champion"], reruns["runs"]) == (3, 3, "b", 9)
    assert (reruns["epochs"], reruns["trainer_seconds"]) == (15, 90.0)
    b = next(c for c in reruns["configurations"] if c["trial_id"] == "b")
    assert b["mean"] == pytest.approx(0.80) and b["n"] == 3 and b["champion"] and b["search_score"] == 0.85
    assert [r["seed"] for r in b["runs"]] == [1, 2, 3]
    assert report["answer"]["trial_id"] == "b"  # no predictions: the best mean is still the answer
    html = (out / "report.html").read_text()
    assert "<h2>Re-runs with fresh seeds</h2>" in html and "0.8000 ± 0.0100" in html and "b (champion)" in html
    saved = json.loads((out / "report.json").read_text())
    assert saved["reruns"]["configurations"][2]["sd"] is None  # strict JSON: c's one run has no sd
    before = {n: (out / n).read_bytes() for n in ("report.json", "report.html")}
    write_report(out)
    assert before == {n: (out / n).read_bytes() for n in ("report.json", "report.html")}
    (out / RERUNS_FILE).unlink()
    assert build_report(out)["reruns"] == {}


# -------------------------------------------------------------------------------------------- MLflow


def test_a_rerun_record_makes_a_marked_child_of_the_sweep_run(tmp_path):
    """The callback's records for a re-run (no Ray: a stand-in trial) make a child of the sweep's run with role
    rerun and its trial and seed as tags, whichever record reaches the store first (a replay after an outage)."""
    from types import SimpleNamespace

    from mlflow import MlflowClient

    from fer_tune.tracking.callback import MlflowCallback
    from fer_tune.tracking.runs import SweepRuns
    from fer_tune.tracking.writer import apply

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    [config] = rerun_configs([("t_00001", {"model": "basic", "seed": 4})], seeds=1)
    trial = SimpleNamespace(trial_id="abcd1234", config=config)
    mine = MlflowCallback._trial(trial)
    assert mine["role"] == "rerun" and mine["name"] == "rerun t_00001 seed 5"
    for first in ("trial_open", "metrics"):
        runs = SweepRuns(uri, f"e-{first}", "s", tags={}, params={})
        records = {
            "trial_open": {"kind": "trial_open", **mine, "params": {"seed": 5}},
            "metrics": {"kind": "metrics", **mine, "step": 1, "time": 0, "values": {"val_accuracy": 0.5}},
        }
        apply(runs, records[first])
        apply(runs, records["metrics" if first == "trial_open" else "trial_open"])
        client = MlflowClient(uri)
        [run] = client.search_runs([runs.experiment_id], "tags.`fer_tune.role` = 'rerun'")
        tags = run.data.tags
        assert tags["mlflow.parentRunId"] == runs.parent() and tags["ray.trial_id"] == "abcd1234"
        assert (tags["fer_tune.rerun_of"], tags["fer_tune.rerun_seed"]) == ("t_00001", "5")
        assert run.data.metrics["val_accuracy"] == 0.5
    plain = MlflowCallback._trial(SimpleNamespace(trial_id="t_00001", config={"seed": 4}))
    assert "role" not in plain and "run_tags" not in plain  # a search trial's records are as before


# ------------------------------------------------------------------------------- a sweep in Ray

REAL = """name: reruns
trainable: curve
search: {algorithm: grid}
pruner: {name: none}
budget: {num_samples: 1, max_epochs: 1, max_concurrent: 2}
select: {top_k: 2, seeds: 2}
mlflow: {experiment: fer-reruns, register_as: fer-reruns}
space:
  model: basic
  batch_size: 16
  augmentation: none
  dropout: 0.0
  lr: {grid: [3.0e-3, 1.0e-7]}
"""


@pytest.mark.integration
@pytest.mark.slow(seconds=60)
def test_reruns_are_nested_under_the_sweep_and_the_champion_is_the_best_mean(ray_local, workdir, blob_csv, monkeypatch):
    """2 curve trials of 1 epoch, then each re-trained with 2 fresh seeds as a second Tune run: every re-run is a
    child of the sweep's MLflow run, marked as a re-run of its trial with its seed, and the registered champion
    is the trial whose re-runs have the best mean, read back from MLflow."""
    from mlflow import MlflowClient

    from fer_tune.cli.sweep import run_space

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (workdir / "reruns.yaml").write_text(REAL)
    sweep, tracking = run_space(load_space("reruns.yaml"), data_source=str(blob_csv), name="reruns")

    client = MlflowClient(f"sqlite:///{workdir / 'results' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("fer-reruns").experiment_id
    runs = lambda role: client.search_runs([experiment], f"tags.`fer_tune.role` = '{role}'")
    [parent] = runs("sweep")
    trials = {run.data.tags["ray.trial_id"]: run for run in runs("trial")}
    reruns = runs("rerun")
    assert set(trials) == set(sweep.trials["trial_id"]) and len(reruns) == 4
    scores: dict[str, list[float]] = {}
    for run in reruns:
        tags, of = run.data.tags, run.data.tags["fer_tune.rerun_of"]
        assert tags["mlflow.parentRunId"] == parent.info.run_id and tags["fer_tune.sweep"] == "reruns"
        assert of in trials and run.info.status == "FINISHED" and tags["ray.trial_id"] not in trials
        assert run.data.params["seed"] == tags["fer_tune.rerun_seed"] != trials[of].data.params["seed"]
        assert run.data.params["lr"] == trials[of].data.params["lr"]  # the same configuration, a fresh seed
        history = client.get_metric_history(run.info.run_id, "val_accuracy")
        assert [m.step for m in history] == [1]  # its trial's full epochs
        scores.setdefault(of, []).append(max(m.value for m in history))
    assert sorted(map(len, scores.values())) == [2, 2]
    means = {of: float(np.mean(values)) for of, values in scores.items()}
    best_mean = max(means.values())
    assert means[sweep.best.trial_id] == pytest.approx(best_mean)  # the champion is the best mean

    [champion] = runs("champion")
    assert tracking.registration is not None, tracking.message
    assert champion.data.tags["fer_tune.trial_id"] == sweep.best.trial_id
    assert parent.data.metrics["champion_mean_val_accuracy"] == pytest.approx(best_mean)
    saved = pd.read_csv(workdir / "results" / "reruns" / RERUNS_FILE)
    assert len(saved) == 4 and set(saved["rerun_id"]) == {run.data.tags["ray.trial_id"] for run in reruns}
    report = json.loads((workdir / "results" / "reruns" / "report.json").read_text())
    assert report["reruns"]["champion"] == report["answer"]["trial_id"] == sweep.best.trial_id
