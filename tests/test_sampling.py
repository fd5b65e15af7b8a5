"""Space -> Optuna define-by-run function and grid points (no Ray needed)."""

import optuna
import pytest

from fer_tune.errors import FerTuneError
from fer_tune.search.sampling import define_by_run, grid_points
from fer_tune.search.sweep_file import load_space

CONDITIONAL = """
budget: {max_epochs: 7}
space:
  model: basic
  lr: {loguniform: [1.0e-4, 1.0e-2]}
  dropout: {uniform: [0.0, 0.5], q: 0.1}
  batch_size: {randint: [16, 64], q: 16}
  scheduler: {choice: [cos_warm, plateau, step]}
  T_0: {choice: [1, 2], when: {scheduler: cos_warm}}
  T_mult: {choice: [10, 20], when: {scheduler: cos_warm}}
  step_size: {choice: [5, 10], when: {scheduler: step}}
"""


def space_from(tmp_path, text):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return load_space(path)


def test_optuna_sees_the_conditional_structure(tmp_path):
    space = space_from(tmp_path, CONDITIONAL)
    sample = define_by_run(space)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    points = []
    for _ in range(40):
        trial = study.ask()
        points.append(sample(trial))
        study.tell(trial, 0.5)
    schedulers = set()
    for trial, point in zip(study.trials, points):
        params = trial.params
        assert set(point) == set(params) | {"epochs", "model"}  # fixed values are returned, not suggested
        assert point["epochs"] == 7 and point["model"] == "basic"
        params = point
        schedulers.add(params["scheduler"])
        assert ("T_0" in params) == ("T_mult" in params) == (params["scheduler"] == "cos_warm")
        assert ("step_size" in params) == (params["scheduler"] == "step")
        assert 1e-4 <= params["lr"] <= 1e-2
        assert params["dropout"] in {0.0, 0.1, 0.2, 0.3, 0.4, 0.5}
        assert params["batch_size"] in {16, 32, 48, 64}
    assert schedulers == {"cos_warm", "plateau", "step"}


def test_grid_points_skip_inactive_axes(tmp_path):
    space = space_from(
        tmp_path,
        """
search: {algorithm: grid}
budget: {max_epochs: 3}
space:
  kernel_size: {grid: [2, 3]}
  scheduler: {grid: [plateau, cos_warm]}
  T_0: {grid: [1, 2], when: {scheduler: cos_warm}}
  lr: 0.01
""",
    )
    points = grid_points(space)
    assert len(points) == 6  # 2 kernels x (plateau + 2 cos_warm variants), no duplicate plateau trials
    assert {(p["kernel_size"], p["scheduler"], p.get("T_0")) for p in points} == {
        (k, s, t) for k in (2, 3) for s, t in (("plateau", None), ("cos_warm", 1), ("cos_warm", 2))
    }
    assert all(p["lr"] == 0.01 and p["epochs"] == 3 for p in points)


def test_grid_rejects_ranges_and_optuna_rejects_grid_axes(tmp_path):
    ranged = space_from(tmp_path, "search: {algorithm: grid}\nspace:\n  lr: {uniform: [0.1, 0.2]}\n")
    with pytest.raises(FerTuneError, match=r"space\.lr: a uniform range cannot be enumerated"):
        grid_points(ranged)
    gridded = space_from(tmp_path, "space:\n  kernel_size: {grid: [2, 3]}\n")
    with pytest.raises(FerTuneError, match=r"space\.kernel_size: grid axes need search\.algorithm: grid"):
        define_by_run(gridded)


def test_define_by_run_is_picklable(tmp_path):
    """Ray pickles the searcher into every experiment checkpoint; --resume depends on it."""
    import pickle

    sample = define_by_run(space_from(tmp_path, CONDITIONAL))
    assert pickle.loads(pickle.dumps(sample)).space == sample.space


@pytest.mark.parametrize(
    "name, expected",
    [
        ("asha", "AsyncHyperBandScheduler"),
        ("hyperband", "HyperBandScheduler"),
        ("median", "MedianStoppingRule"),
        ("none", "FIFOScheduler"),
    ],
)
def test_every_scheduler_counts_our_epochs(tmp_path, name, expected):
    from fer_tune.search.sweep import TIME_ATTR, build_pruner

    space = space_from(
        tmp_path, f"pruner: {{name: {name}, grace_period: 3, reduction_factor: 2}}\nbudget: {{max_epochs: 9}}\n"
    )
    scheduler = build_pruner(space)
    assert expected in [base.__name__ for base in type(scheduler).__mro__]  # ours extend Ray's
    if name != "none":
        assert scheduler._time_attr == TIME_ATTR == "epoch"
    if name == "asha":
        assert (scheduler._max_t, scheduler._reduction_factor) == (9, 2)
        assert [milestone for milestone, _ in scheduler._brackets[0]._rungs] == [6, 3]  # grace 3, x2, below max_t 9
    if name == "median":
        assert scheduler._grace_period == 3


@pytest.mark.parametrize(("samples", "setting", "expected"), [(10, "", 3), (8, "", 3), (40, "", 10), (400, "", 10),
                                                              (10, "startup_trials: 5, ", 5)])  # fmt: skip
def test_tpe_models_the_results_after_a_quarter_of_the_sweep(tmp_path, samples, setting, expected):
    """Optuna's 10 random startup trials would make a 10-trial TPE sweep a random search."""
    from fer_tune.search.searchers import build_searcher

    space = space_from(
        tmp_path,
        f"search: {{algorithm: optuna, {setting}seed: 0}}\nbudget: {{num_samples: {samples}}}\n"
        "space:\n  lr: {loguniform: [1.0e-4, 1.0e-2]}\n",
    )
    sampler = build_searcher(space)._sampler
    assert isinstance(sampler, optuna.samplers.TPESampler) and sampler._n_startup_trials == expected
