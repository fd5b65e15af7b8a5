"""Warm starts: earlier trials mapped into a changed space, given to Optuna, seeding the pruner's rungs."""

import json
from pathlib import Path

import pandas as pd
import pytest
from interrupt import epochs_reported, kill_when, run_here, trial_dirs

from fer_tune.errors import FerTuneError
from fer_tune.search.searchers import EARLIER_ATTR, WarmOptunaSearch, build_searcher
from fer_tune.search.sweep_file import load_space
from fer_tune.search.warm_start import auto_sweeps, check_data, map_trials, parse_sources, read_results

OLD_SPACE = """
  model: basic
  lr: {loguniform: [1.0e-4, 1.0e-2]}
  dropout: {choice: [0.0, 0.25]}
  scheduler: {choice: [onecycle, cos_warm]}
  T_0: {choice: [1, 2], when: {scheduler: cos_warm}}
"""
NEW_SPACE = """
  model: basic
  lr: {loguniform: [5.0e-4, 1.0e-2]}
  scheduler: {choice: [onecycle, plateau]}
  batch_size: {choice: [16, 32]}
"""


def space_from(folder: Path, name: str, body: str, extra: str = ""):
    path = folder / f"{name}.yaml"
    path.write_text(f"name: {name}\nbudget: {{max_epochs: 3}}\n{extra}space:{body}")
    return load_space(path)


def write_earlier(results: Path, name: str, space, rows: list[dict], fingerprint: str = "aaaa") -> None:
    """A results/<name>/ folder as write_results leaves it (trials.csv, curves.csv, sweep.json)."""
    folder = results / name
    folder.mkdir(parents=True)
    trials, curves = [], []
    for row in rows:
        best = max(row["curve"], default=float("nan"))
        trials.append(
            {
                "trial_id": row["id"],
                "best_val_accuracy": best,
                **row["params"],
                "status": row.get("status", "completed"),
            }
        )
        curves += [{"trial_id": row["id"], "epoch": e + 1, "val_accuracy": v} for e, v in enumerate(row["curve"])]
    pd.DataFrame(trials).to_csv(folder / "trials.csv", index=False)
    pd.DataFrame(curves).to_csv(folder / "curves.csv", index=False)
    meta = {"space": space.model_dump(mode="json"), "data": {"sources": []}, "run": {"data_fingerprint": fingerprint}}
    (folder / "sweep.json").write_text(json.dumps(meta))


EARLIER = [  # lr 3e-4 is outside the narrowed range; cos_warm is no longer a choice
    {"id": "t1", "params": {"lr": 1e-3, "dropout": 0.25, "scheduler": "onecycle"}, "curve": [0.5, 0.7, 0.8]},
    {"id": "t2", "params": {"lr": 3e-4, "dropout": 0.0, "scheduler": "onecycle"}, "curve": [0.4, 0.6, 0.9]},
    {"id": "t3", "params": {"lr": 2e-3, "dropout": 0.0, "scheduler": "cos_warm", "T_0": 2}, "curve": [0.3, 0.5, 0.6]},
    {
        "id": "t4",
        "params": {"lr": 5e-3, "dropout": 0.0, "scheduler": "onecycle"},
        "curve": [0.2],
        "status": "stopped early",
    },
    {"id": "t5", "params": {"lr": 8e-3, "dropout": 0.0, "scheduler": "onecycle"}, "curve": [], "status": "failed"},
    {"id": "t6", "params": {"lr": 7e-4, "dropout": 0.0, "scheduler": "onecycle"}, "curve": [0.5, 0.6, 0.75]},
]


@pytest.fixture
def earlier(tmp_path):
    old = space_from(tmp_path, "old", OLD_SPACE)
    write_earlier(tmp_path / "results", "old-1", old, EARLIER)
    return read_results("old-1", "val_accuracy", tmp_path / "results")


def test_earlier_trials_are_mapped_into_the_changed_space_and_counted(tmp_path, earlier):
    new = space_from(tmp_path, "new", NEW_SPACE)
    warm = map_trials(new, [earlier])
    assert [seed.key for seed in warm.seeds] == ["old-1/t1", "old-1/t4", "old-1/t6"]
    assert warm.seeds[0].params == {"lr": 1e-3, "scheduler": "onecycle"}  # dropout dropped; batch_size left to TPE
    assert warm.dropped == ("T_0", "dropout")
    assert warm.skipped == {"with lr outside the space": 1, "with scheduler outside the space": 1, "without a score": 1}
    assert warm.summary() == (
        "warm start from old-1: 3 of 6 earlier trials used (1 with lr outside the space; 1 with scheduler outside "
        "the space; 1 without a score; parameters no longer in the space dropped: T_0, dropout)"
    )
    assert [seed.key for seed in warm.best("max")] == ["old-1/t1", "old-1/t6", "old-1/t4"]  # 0.8, 0.75, 0.2
    assert not warm.seeds[1].completed and warm.seeds[1].curve == {1: 0.2}


def test_an_inactive_conditional_parameter_is_left_out(tmp_path, earlier):
    old = space_from(tmp_path, "old2", OLD_SPACE)
    warm = map_trials(old, [earlier])  # the same space: T_0 only where scheduler is cos_warm
    by_key = {seed.key: seed.params for seed in warm.seeds}
    assert by_key["old-1/t3"]["T_0"] == 2 and "T_0" not in by_key["old-1/t1"]
    assert len(warm.seeds) == 5  # every trial with a score


def test_the_searcher_holds_them_as_observations_and_proposes_the_best_first(tmp_path, earlier):
    new = space_from(tmp_path, "new", NEW_SPACE, extra="warm_start: {top_k: 2}\n")
    searcher = build_searcher(new, map_trials(new, [earlier]))
    assert isinstance(searcher, WarmOptunaSearch)
    study = searcher._ot_study
    seeded = {t.user_attrs[EARLIER_ATTR]: t for t in study.trials if EARLIER_ATTR in t.user_attrs}
    assert set(seeded) == {"old-1/t1", "old-1/t4", "old-1/t6"}
    assert seeded["old-1/t1"].state.name == "COMPLETE" and seeded["old-1/t1"].value == 0.8
    assert seeded["old-1/t4"].state.name == "PRUNED" and seeded["old-1/t4"].intermediate_values == {1: 0.2}
    first, second = searcher.suggest("a"), searcher.suggest("b")
    assert (first["lr"], first["scheduler"]) == (1e-3, "onecycle")  # the earlier best, then the next
    assert second["lr"] == 7e-4 and 5e-4 <= searcher.suggest("c")["lr"] <= 1e-2


def test_auto_finds_only_sweeps_of_the_same_space_on_the_same_data(tmp_path):
    old = space_from(tmp_path, "quick", OLD_SPACE)
    other = space_from(tmp_path, "other", OLD_SPACE)
    results = tmp_path / "results"
    write_earlier(results, "quick-1", old, EARLIER[:1], fingerprint="aaaa")
    write_earlier(results, "quick-2", old, EARLIER[:1], fingerprint="bbbb")  # other data
    write_earlier(results, "other-1", other, EARLIER[:1], fingerprint="aaaa")  # another space
    assert auto_sweeps("quick", "aaaa", results) == ["quick-1"]
    assert auto_sweeps("quick", "cccc", results) == []


def test_other_data_needs_any_data(tmp_path, earlier):
    with pytest.raises(FerTuneError, match=r"--warm-start old-1: it ran on other data .* add --any-data"):
        check_data([earlier], "ffff", any_data=False)
    assert check_data([earlier], "ffff", any_data=True) is True
    assert check_data([earlier], "aaaa", any_data=False) is False


@pytest.mark.parametrize(
    ("text", "message"),
    [(",", "expected a sweep name"), ("auto,old", "give auto alone")],
)
def test_bad_warm_start_values_are_one_line_errors(text, message):
    with pytest.raises(FerTuneError, match=message):
        parse_sources(text)


def test_a_sweep_sharing_no_searched_parameter_is_refused(tmp_path, earlier):
    """The earlier sweep searched lr, dropout, scheduler, T_0; this one searches width alone: every earlier
    parameter would be dropped, so "6 of 6 used" would be a claim about nothing."""
    unrelated = space_from(tmp_path, "widths", "\n  model: basic\n  width: {choice: [0.5, 1.0]}\n")
    with pytest.raises(FerTuneError, match=r"--warm-start old-1: shares no searched parameter with .*widths.yaml "
                                           r"\(it searched T_0, dropout, lr, model, scheduler; this space searches "
                                           r"width\): nothing to start from$"):  # fmt: skip
        map_trials(unrelated, [earlier])


def test_a_named_sweep_none_of_whose_trials_fits_is_refused_before_ray(tmp_path, earlier, monkeypatch, capsys, no_ray):
    """Every earlier lr lies below the new range (one trial has no score): a warm start asked for by name would
    seed nothing and quietly start cold; it is one line, before Ray, saying why each trial was left out."""
    from fer_tune.cli.main import main

    monkeypatch.chdir(tmp_path)
    space_from(tmp_path, "above", "\n  model: basic\n  lr: {loguniform: [5.0e-2, 1.0e-1]}\n", "trainable: curve\n")
    assert main(["run", "above.yaml", "--no-track", "--warm-start", "old-1"]) == 1
    err = capsys.readouterr().err
    assert err == (
        "fer-tune: error: --warm-start old-1: none of its 6 trials fits "
        "above.yaml (5 with lr outside the space, 1 without a score): nothing to start from\n"
    ), err


def test_an_unknown_sweep_names_the_known_ones(tmp_path, earlier):
    with pytest.raises(FerTuneError, match=r"--warm-start nope: no finished sweep .*known: old-1"):
        read_results("nope", "val_accuracy", tmp_path / "results")


# ---------------------------------------------------------------------------------- real sweeps
# Real Ray, Optuna, ASHA and MLflow; the trials are `trainable: curve` (trainables/curve.py): each epoch's
# metrics come from a deterministic curve of the configuration, not from training a CNN.

FAST = "  model: basic\n  batch_size: 16\n  augmentation: none\n"
V1 = FAST + "  lr: {loguniform: [1.0e-4, 1.0e-2]}\n  dropout: {choice: [0.0, 0.25]}\n"
V2 = FAST + "  lr: {loguniform: [5.0e-4, 1.0e-2]}\n"  # lr narrowed, dropout removed


def sweep_yaml(
    folder: Path, name: str, body: str, samples: int, top_k: int = 2, epochs: int = 1, curve: str = "{}"
) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(
        f"name: {name}\ntrainable: curve\ncurve: {curve}\n"
        f"search: {{algorithm: optuna, seed: 3}}\npruner: {{name: none}}\n"
        f"dead_trials: {{enabled: false}}\nwarm_start: {{top_k: {top_k}}}\n"
        f"budget: {{num_samples: {samples}, max_epochs: {epochs}, max_concurrent: 1}}\nspace:\n{body}"
    )
    return path


def trials_in_order(workdir: Path, name: str, storage: Path) -> pd.DataFrame:
    """results/<name>/trials.csv in the order the trials ran (one at a time: by their first report)."""
    trials = pd.read_csv(workdir / "results" / name / "trials.csv")

    def started(trial_id: str) -> float:
        [trial_dir] = (storage / name).glob(f"train_*_{trial_id}")
        return json.loads((trial_dir / "result.json").read_text().splitlines()[0])["timestamp"]

    return trials.assign(started=trials["trial_id"].map(started)).sort_values("started").reset_index(drop=True)


@pytest.mark.integration
@pytest.mark.slow(seconds=80)
def test_warm_start_from_an_untracked_then_from_a_tracked_sweep(ray_local, workdir, blob_csv, capsys):
    """e1 (untracked, --no-track) -> w1 warm-started from results/e1/ in a changed space (counts reported,
    the earlier best proposed first, recorded on the parent run) -> w2 warm-started from w1 read from MLflow."""
    from mlflow import MlflowClient

    from fer_tune.cli.main import main

    common = ["--data", str(blob_csv), "--storage", str(workdir / "ray")]
    v1 = sweep_yaml(workdir, "digits", V1, samples=4)
    assert main(["run", str(v1), "--name", "e1", "--no-track", *common]) == 0
    earlier = pd.read_csv(workdir / "results" / "e1" / "trials.csv")
    inside = earlier[earlier["lr"] >= 5e-4].sort_values("best_val_accuracy", ascending=False)
    capsys.readouterr()

    v2 = sweep_yaml(workdir, "digits", V2, samples=3)  # the same space name, changed
    assert main(["run", str(v2), "--name", "w1", "--warm-start", "e1", *common]) == 0
    out = capsys.readouterr().out
    outside = len(earlier) - len(inside)
    skipped = f"{outside} with lr outside the space; " if outside else ""
    assert (
        f"warm start from e1: {len(inside)} of 4 earlier trials used ({skipped}"
        "parameters no longer in the space dropped: dropout)"
    ) in out
    w1 = trials_in_order(workdir, "w1", workdir / "ray")
    best = list(inside["lr"])[:2]
    assert list(w1["lr"])[: len(best)] == pytest.approx(best)  # the earlier best first, best of all first
    meta = json.loads((workdir / "results" / "w1" / "sweep.json").read_text())
    assert meta["run"]["warm_start"]["sources"] == ["e1"] and meta["run"]["warm_start"]["used"] == len(inside)
    client = MlflowClient(f"sqlite:///{workdir / 'results' / 'mlflow.db'}")
    parent = client.search_runs(
        [client.get_experiment_by_name("digits").experiment_id], "tags.`fer_tune.role` = 'sweep'"
    )[0]
    assert parent.data.tags["fer_tune.warm_start"] == "e1"
    assert parent.data.tags["fer_tune.warm_start_any_data"] == "false"

    (workdir / "results" / "w1").rename(workdir / "w1-moved")  # only MLflow holds w1 now
    v3 = sweep_yaml(workdir, "digits", V2, samples=1, top_k=1)
    assert main(["run", str(v3), "--name", "w2", "--warm-start", "w1", *common]) == 0
    assert "warm start from w1: 3 of 3 earlier trials used" in capsys.readouterr().out
    moved = pd.read_csv(workdir / "w1-moved" / "trials.csv")
    best_of_w1 = moved[moved["best_val_accuracy"] == moved["best_val_accuracy"].max()]["lr"]  # ties, if any
    first = trials_in_order(workdir, "w2", workdir / "ray")["lr"][0]
    assert any(first == pytest.approx(lr) for lr in best_of_w1), (first, list(best_of_w1))


@pytest.mark.integration
@pytest.mark.slow(seconds=40)
def test_a_resumed_warm_sweep_is_not_seeded_twice(ray_local, workdir, blob_csv, capsys):
    """SIGKILL a warm-started sweep once its first trial has reported, --resume it: the study it ends with
    holds each earlier trial once, and every trial of the sweep ran once. The cut is placed: trials hold
    before epoch 2 until `go` exists, which it does from the resume on."""
    import pickle
    import sys

    old = space_from(workdir, "old", OLD_SPACE)
    write_earlier(workdir / "results", "old-1", old, EARLIER)  # its data fingerprint is made up: --any-data
    gate = workdir / "go"
    sweep_yaml(workdir, "resumed", V2, samples=4, epochs=2, curve=f"{{hold: {{epoch: 2, until: {gate}}}}}")
    base = [sys.executable, "-m", "fer_tune.cli", "run", "resumed.yaml", "--data", str(blob_csv), "--no-track"]
    base += ["--name", "cut", "--warm-start", "old-1", "--any-data"]
    experiment = workdir / "results" / "ray" / "cut"
    kill_when(base, workdir, lambda: [epochs_reported(d) for d in trial_dirs(experiment)] == [[1]], timeout=600)
    assert not (workdir / "results" / "cut" / "trials.csv").exists()

    gate.touch()
    resumed = run_here(base + ["--resume"], capsys)  # only the run that is killed needs its own process
    assert "not seeding again" in resumed
    trials = trials_in_order(workdir, "cut", workdir / "results" / "ray")
    assert len(trials) == 4 and trials["lr"][0] == pytest.approx(1e-3)  # t1, the earlier best in range
    assert [epochs_reported(d)[-1] for d in trial_dirs(experiment)] == [2] * 4  # the cut one ran to its end too
    state = max(experiment.glob("searcher-state-*.pkl"), key=lambda p: p.stat().st_mtime)
    saved = pickle.loads(state.read_bytes())
    study = saved["_ot_study"] if isinstance(saved, dict) and "_ot_study" in saved else saved["searcher"]._ot_study
    seeded = [t.user_attrs[EARLIER_ATTR] for t in study.trials if EARLIER_ATTR in t.user_attrs]
    # once each: every earlier trial with a score and lr in range (V2 has no scheduler: t3's cos_warm is dropped)
    assert sorted(seeded) == ["old-1/t1", "old-1/t3", "old-1/t4", "old-1/t6"]
    # the sweep's own trials, none twice; Ray saves the searcher on a timer, so its last file may predate the last
    new = [t.params.get("lr", t.system_attrs.get("fixed_params", {}).get("lr")) for t in study.trials
           if EARLIER_ATTR not in t.user_attrs]  # fmt: skip
    assert 1 <= len(new) <= 4 and len(set(new)) == len(new), new


SEEDING = [  # an earlier sweep's two trials, each 4 epochs: what ASHA's rungs are seeded with
    {"id": "s1", "params": {"lr": 1e-3}, "curve": [0.60, 0.75, 0.85, 0.90]},
    {"id": "s2", "params": {"lr": 2e-3}, "curve": [0.55, 0.70, 0.80, 0.85]},
]


@pytest.mark.integration
@pytest.mark.slow(seconds=60)
def test_earlier_curves_seed_ashas_rungs_and_stop_the_first_new_trial(ray_local, workdir, blob_csv, capsys):
    """Warm-started from an earlier sweep's curves, ASHA's rungs hold them before any trial runs: the new
    sweep's first (and only) trial is judged against them at its first rung. It is the earlier best lr
    proposed again, now with dropout 0.9 (new to the space), and its epoch-1 val_accuracy (0.45) is below
    both earlier curves' (0.60, 0.55): stopped at epoch 1. Unseeded, ASHA never stops its first trial (an
    empty rung has no cutoff: test_dead_trials.py's plain ASHA); it would run all 4 epochs."""
    import pickle

    from fer_tune.cli.main import main

    old = space_from(workdir, "old", "\n  model: basic\n  lr: {choice: [1.0e-3, 2.0e-3]}\n")
    write_earlier(workdir / "results", "e1", old, SEEDING)  # its data fingerprint is made up: --any-data
    space = sweep_yaml(workdir, "seeded", FAST + "  lr: {choice: [1.0e-3, 2.0e-3]}\n  dropout: 0.9\n", samples=1)
    space.write_text(
        space.read_text()
        .replace("pruner: {name: none}", "pruner: {name: asha, grace_period: 1, reduction_factor: 2}")
        .replace("max_epochs: 1", "max_epochs: 4")
    )
    argv = ["run", str(space), "--name", "w1", "--warm-start", "e1", "--any-data", "--no-track"]
    assert main([*argv, "--data", str(blob_csv), "--storage", str(workdir / "ray")]) == 0
    out = capsys.readouterr().out
    assert "warm start from e1: 2 of 2 earlier trials used" in out
    [trial] = pd.read_csv(workdir / "results" / "w1" / "trials.csv").to_dict("records")
    assert trial["lr"] == pytest.approx(1e-3) and trial["dropout"] == 0.9  # s1's lr, proposed first
    assert (trial["status"], trial["epochs_run"]) == ("stopped early", 1), trial
    assert pd.isna(trial["stop_reason"])  # by ASHA's rung, not by the dead-trial rule: it is well above chance
    assert 0.3 < trial["best_val_accuracy"] < 0.55
    assert f"trial {trial['trial_id']} stopped early at epoch 1 of 4" in out

    # the rungs it was judged at: the earlier curves at ASHA's milestones (1, 2, 4), beside its own result
    state = pickle.loads((workdir / "ray" / "w1" / "pruner_state.pkl").read_bytes())
    rungs = {int(milestone): dict(recorded) for milestone, recorded in state["_brackets"][0]._rungs}
    for milestone in (1, 2, 4):
        seeded = {key: value for key, value in rungs[milestone].items() if key.startswith("earlier:")}
        assert seeded == pytest.approx({f"earlier:e1/{row['id']}": row["curve"][milestone - 1] for row in SEEDING})
    assert rungs[1][trial["trial_id"]] == pytest.approx(trial["best_val_accuracy"])
