"""Several objectives, without Ray: cost metrics, the objectives syntax, non-dominated sorting and promotion."""

import pytest
import torch
from torch import nn

from fer_tune.core.config import TrainConfig
from fer_tune.core.cost import count_macs, count_params, latency_ms, model_cost
from fer_tune.errors import FerTuneError
from fer_tune.search.moasha import (
    dominates,
    epsilon_net_order,
    non_dominated_fronts,
    promoted,
    promoted_count,
    rank_order,
)
from fer_tune.search.sweep_file import load_space

# ---- cost metrics


def test_macs_of_a_hand_counted_net():
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 7))
    conv = 8 * 8 * 4 * 1 * 9  # output positions x output channels x inputs per output (1 channel x 3x3)
    assert count_macs(net, image_size=8) == conv + 4 * 8 * 8 * 7
    assert count_params(net) == 4 * 9 + 4 + 256 * 7 + 7


def test_grouped_convolutions_count_their_groups():
    depthwise = nn.Conv2d(8, 8, 3, padding=1, groups=8)
    assert count_macs(nn.Sequential(nn.Conv2d(1, 8, 1), depthwise), image_size=4) == 16 * 8 + 16 * 8 * 9


def test_model_cost_is_deterministic_where_it_can_be_and_grows_with_width():
    narrow = model_cost(TrainConfig(model="basic", width=0.25), num_classes=7, runs=3)
    again = model_cost(TrainConfig(model="basic", width=0.25), num_classes=7, runs=3)
    wide = model_cost(TrainConfig(model="basic", width=1.0), num_classes=7, runs=3)
    assert (narrow["params"], narrow["macs"]) == (again["params"], again["macs"])
    assert wide["macs"] > narrow["macs"] and wide["params"] > narrow["params"]
    assert narrow["latency_ms"] > 0


def test_latency_restores_the_thread_count():
    before = torch.get_num_threads()
    latency_ms(nn.Sequential(nn.Flatten(), nn.Linear(4, 4)), image_size=2, runs=2)
    assert torch.get_num_threads() == before


# ---- the objectives syntax

TWO = "objectives: [{metric: val_accuracy, mode: max}, {metric: latency_ms, mode: min}]\n"


def load(tmp_path, text):
    path = tmp_path / "moo.yaml"
    path.write_text(f"name: moo\n{text}space:\n  model: basic\n")
    return load_space(path)


def test_objectives_and_champion_rule_load(tmp_path):
    space = load(tmp_path, TWO + 'champion: {metric: val_accuracy, where: {latency_ms: "<= 5"}}\n')
    assert space.multi_objective and (space.metric, space.mode) == ("val_accuracy", "max")
    assert [o.metric for o in space.objective_list] == ["val_accuracy", "latency_ms"]
    assert space.champion.admits({"latency_ms": 4.0}) and not space.champion.admits({"latency_ms": 6.0})
    assert not space.champion.admits({})  # a trial without the metric does not meet the rule


def test_a_single_objective_keeps_its_form(tmp_path):
    space = load(tmp_path, "metric: val_loss\nmode: min\n")
    assert not space.multi_objective and space.objectives == () and space.champion is None
    assert [(o.metric, o.mode) for o in space.objective_list] == [("val_loss", "min")]


@pytest.mark.parametrize(
    "text, message",
    [
        (TWO.replace("latency_ms", "latncy_ms"), r"objectives\.1\.metric: .*'latency_ms'.*\(got 'latncy_ms'\)"),
        (TWO.replace("latency_ms", "val_accuracy"), r"objectives\.1\.metric: val_accuracy is listed twice"),
        (TWO.replace(", mode: min", ""), r"objectives\.1\.mode: Field required"),
        (TWO + "champion: {where: {latncy: '<= 5'}}\n", r"champion\.where: latncy: not a recorded metric"),
        (TWO + "champion: {where: {latency_ms: 'fast'}}\n", r"latency_ms: 'fast' is not a condition"),
        (TWO + "champion: {metric: macs}\n", r"champion\.metric: macs is not an objective"),
        ("metric: val_loss\n" + TWO, r"metric: val_loss: objectives: replaces metric and mode"),
        (TWO.replace("val_accuracy", "macs"), r"objectives: macs, latency_ms: expected at least one of val_"),
    ],
)
def test_bad_objectives_are_one_line_errors(tmp_path, text, message):
    with pytest.raises(FerTuneError, match=message) as caught:
        load(tmp_path, text)
    assert "\n" not in str(caught.value) and str(caught.value).startswith(str(tmp_path / "moo.yaml"))


# ---- non-dominated sorting and MOASHA's promotion rule (every vector maximized)


def test_dominance():
    assert dominates([1, 1], [1, 0]) and not dominates([1, 0], [1, 0]) and not dominates([1, 0], [0, 1])


def test_fronts_of_a_hand_made_rung():
    #        acc   -latency
    rung = [
        [0.9, -9.0],  # 0: most accurate, slow         front 1
        [0.8, -2.0],  # 1: a trade-off                 front 1
        [0.5, -1.0],  # 2: fastest                     front 1
        [0.7, -3.0],  # 3: dominated by 1 only         front 2
        [0.6, -9.5],  # 4: dominated by 0, 1, 3        front 3
        [0.8, -2.0],
    ]  # 5: equal to 1: not dominated   front 1
    assert non_dominated_fronts(rung) == [[0, 1, 2, 5], [3], [4]]  # fmt: skip


def test_epsilon_net_breaks_ties_by_spread():
    # One front along a line: best accuracy first, then the far end, then the middle, not the neighbour.
    front = [[1.0, -10.0], [0.95, -9.0], [0.5, -5.0], [0.0, 0.0]]
    assert epsilon_net_order(front, [0, 1, 2, 3]) == [0, 3, 2, 1]
    assert rank_order([[0.0, -1.0], *front]) == [1, 4, 3, 2, 0]


def test_nan_is_worst():
    assert non_dominated_fronts([[float("nan"), -1.0], [0.1, -1.0]]) == [[1], [0]]


@pytest.mark.parametrize("n, eta, count", [(1, 2, 1), (2, 2, 1), (3, 2, 2), (4, 3, 2), (9, 3, 3)])
def test_top_one_over_eta(n, eta, count):
    assert promoted_count(n, eta) == count


def test_promotion_on_a_hand_made_rung_table():
    rung = {"a": [0.9, -9.0], "b": [0.8, -2.0], "c": [0.5, -1.0]}
    # A dominated newcomer ranks last of 4; the top 2 of 4 go on (eta = 2).
    assert not promoted(rung, [0.4, -9.0], reduction_factor=2)
    # On the front but near a, it comes last of the four: the epsilon-net takes a, then c, then b.
    assert promoted(rung, [0.85, -5.0], reduction_factor=2) is False
    assert promoted(rung, [0.95, -3.0], reduction_factor=2)  # it dominates a and is the most accurate
    # Of two front members only the first in epsilon-net order (the more accurate) goes on; of three, a
    # fast but inaccurate newcomer at the far end goes on, where single-objective ASHA would stop it.
    assert promoted({"a": [0.9, -9.0]}, [0.2, -1.0], reduction_factor=2) is False
    assert promoted({"a": [0.9, -9.0], "b": [0.8, -8.0]}, [0.2, -1.0], reduction_factor=2)
    assert promoted({}, [0.0, 0.0], reduction_factor=3)  # the first at a rung always goes on


# ---- the Ray Tune scheduler on hand-made results (no trials run)


def moo_space(tmp_path):
    return load(
        tmp_path,
        "objectives: [{metric: val_accuracy, mode: max}, {metric: macs, mode: min}]\n"
        "pruner: {name: asha, grace_period: 1, reduction_factor: 2}\nbudget: {max_epochs: 4}\n",
    )


def test_the_scheduler_ranks_vectors_and_its_state_survives_a_restart(tmp_path):
    from types import SimpleNamespace

    from fer_tune.search.mo_pruner import MultiObjectiveASHA, build_scheduler

    def fresh():
        scheduler = build_scheduler(moo_space(tmp_path), state_dir=tmp_path / "experiment")
        scheduler.set_search_properties("val_accuracy", "max")
        return scheduler

    scheduler = fresh()
    assert isinstance(scheduler, MultiObjectiveASHA)
    trials = {name: SimpleNamespace(trial_id=name) for name in ("big", "dull", "small")}
    for trial in trials.values():
        scheduler.on_trial_add(None, trial)
    epoch1 = {"big": (0.9, 9e6), "dull": (0.2, 9e6), "small": (0.3, 1e6)}

    def report(scheduler, name):
        accuracy, macs = epoch1[name]
        return scheduler.on_trial_result(None, trials[name], {"epoch": 1, "val_accuracy": accuracy, "macs": macs})

    assert report(scheduler, "big") == "CONTINUE"  # first at the rung
    assert report(scheduler, "dull") == "STOP"  # dominated by big: single-objective ASHA would stop it too
    # Less accurate than big, so plain ASHA would stop it; on the front, second of 3, top ceil(3/2) = 2: goes on.
    assert report(scheduler, "small") == "CONTINUE"

    restarted = fresh()  # as after Tuner.restore: the rungs and decisions come back from pruner_state.pkl
    assert report(restarted, "dull") == "STOP" and report(restarted, "small") == "CONTINUE"
    assert set(restarted._brackets[0]._rungs[-1][1]) == {"big", "dull", "small"}


def test_a_single_objective_space_keeps_plain_persistent_asha(tmp_path):
    from fer_tune.search.mo_pruner import MultiObjectiveASHA, build_scheduler
    from fer_tune.search.pruners import PersistentASHA

    scheduler = build_scheduler(load(tmp_path, ""), state_dir=tmp_path)
    assert isinstance(scheduler, PersistentASHA) and not isinstance(scheduler, MultiObjectiveASHA)
