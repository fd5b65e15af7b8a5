"""Warm starts: earlier trials mapped into a changed space, given to Optuna, seeding the pruner's rungs."""

import json
from pathlib import Path

import pandas as pd
import pytest

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
        trials.append({"trial_id": row["id"], **row["params"], "status": row.get("status", "completed")})
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


def test_an_unknown_sweep_names_the_known_ones(tmp_path, earlier):
    with pytest.raises(FerTuneError, match=r"--warm-start nope: no finished sweep .*known: old-1"):
        read_results("nope", "val_accuracy", tmp_path / "results")
