"""A multi-objective space's Optuna searcher as a sweep builds it, saved and restored as Ray does, without a sweep
(tests/test_moo.py runs the sweeps)."""

import pickle

import pytest
from optuna.study import StudyDirection
from optuna.trial import TrialState

from fer_tune.search.searchers import build_searcher
from fer_tune.search.sweep_file import load_space

SPACE = """name: mo
objectives: [{{metric: val_accuracy, mode: max}}, {{metric: macs, mode: min}}]
search: {{algorithm: optuna, sampler: {sampler}, seed: 0}}
space:
  model: basic
  width: {{choice: [0.25, 0.5, 1.0]}}
  lr: {{loguniform: [1.0e-5, 1.0e-2]}}
"""


@pytest.mark.parametrize("sampler", ["tpe", "nsga2"])
def test_a_multi_objective_searcher_is_saved_and_restored_as_ray_does_it(tmp_path, sampler):
    """Ray pickles the searcher, its sampler included, into each experiment snapshot; NSGA-II's sampler holds a
    lock, which made every NSGA-II sweep fail with `cannot pickle '_thread.lock' object` (issue 26)."""
    (tmp_path / "mo.yaml").write_text(SPACE.format(sampler=sampler))
    searcher = build_searcher(load_space(tmp_path / "mo.yaml"))
    for number in range(3):
        config = searcher.suggest(f"t{number}")
        searcher.on_trial_complete(f"t{number}", {"val_accuracy": 0.5 + number / 10, "macs": 1e6 * config["width"]})
    searcher.save(str(tmp_path / "searcher.pkl"))
    assert pickle.dumps(searcher._ot_study.sampler)  # the sampler alone, as a copy of the study would take it

    restored = build_searcher(load_space(tmp_path / "mo.yaml"))
    restored.restore(str(tmp_path / "searcher.pkl"))
    study = restored._ot_study
    assert study.directions == [StudyDirection.MAXIMIZE, StudyDirection.MINIMIZE]
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 3
    assert all(len(t.values) == 2 for t in study.trials)
    assert set(restored.suggest("t3")) >= {"lr", "width"}  # the restored sampler proposes the next trial
    restored.on_trial_complete("t3", {"val_accuracy": 0.9, "macs": 2e5})
    assert len(restored._ot_study.trials) == 4
