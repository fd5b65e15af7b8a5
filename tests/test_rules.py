"""Each rule decided in one place (STYLE.md §6): the helpers every caller asks."""

from __future__ import annotations

import pandas as pd
import pytest

from fer_tune.search.direction import best_first, best_label, best_of, better


@pytest.mark.parametrize(
    ("mode", "value", "than", "expected"),
    [("max", 0.6, 0.5, True), ("max", 0.4, 0.5, False), ("min", 0.4, 0.5, True), ("min", 0.6, 0.5, False),
     ("max", 0.5, 0.5, False), ("min", 0.5, 0.5, False), ("max", 0.1, None, True), ("min", 9.0, None, True)],
)  # fmt: skip
def test_better_by_mode(mode, value, than, expected):
    assert better(value, than, mode) is expected


def test_best_agrees_across_helpers():
    scores = pd.Series([0.3, float("nan"), 0.7, 0.1, 0.7])
    assert best_label(scores, "max") == 2 and best_label(scores, "min") == 3
    assert best_of([0.3, 0.7, 0.1, 0.7], key=float, mode="max") == 0.7
    assert best_of([0.3, 0.7, 0.1], key=float, mode="min") == 0.1
    frame = pd.DataFrame({"s": [0.3, 0.7, 0.1]})
    assert frame.sort_values("s", ascending=best_first("max"))["s"].iloc[0] == 0.7
    assert frame.sort_values("s", ascending=best_first("min"))["s"].iloc[0] == 0.1


def test_interrupted_by_cut_off_or_missing_trials():
    from types import SimpleNamespace

    from fer_tune.search.outcome import ended, interrupted

    done = [SimpleNamespace(status="TERMINATED"), SimpleNamespace(status="ERROR")]
    assert all(ended(t) for t in done) and not interrupted(done, total=2)
    assert interrupted(done, total=3)  # a sample the searcher never proposed
    assert interrupted([*done, SimpleNamespace(status="PENDING")], total=3)
    assert not ended(SimpleNamespace(status="RUNNING"))


def test_one_pixel_scale_for_training_evaluation_and_the_deployed_predictor():
    import torch

    from fer_tune.constants import PIXEL_MAX
    from fer_tune.data.dataset import unit_scale

    stored = torch.tensor([0, 51, PIXEL_MAX], dtype=torch.uint8)
    given = stored.float()
    assert torch.equal(unit_scale(stored), torch.tensor([0.0, 0.2, 1.0]))
    assert torch.equal(unit_scale(given), unit_scale(stored)) and given[2] == PIXEL_MAX  # the input is left as it was
    scripted = torch.jit.script(unit_scale)  # the Predictor is exported as TorchScript
    assert torch.equal(scripted(stored), unit_scale(stored))
