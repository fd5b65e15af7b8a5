"""The curve trainable's source (fer_tune.core.curves) and its space-file section; the trainable itself runs
inside Ray in the orchestration tests (test_search, test_cluster, test_moo, test_warm_start, ...)."""

import math
import threading
import time

import pytest

from fer_tune.core.config import make_train_config
from fer_tune.core.curves import CurveSettings, FormulaCurves, Hold, hold
from fer_tune.errors import FerTuneError
from fer_tune.search.sweep_file import load_space

CHANCE = 0.25


def curve(epochs: int = 8, **config) -> list[dict | None]:
    train = make_train_config({"model": "basic", "epochs": epochs, **config})
    return [FormulaCurves().metrics(train, epoch, CHANCE) for epoch in range(1, epochs + 1)]


def accuracies(**config) -> list[float]:
    return [m["val_accuracy"] for m in curve(**config)]


def test_the_same_configuration_and_seed_give_the_same_curve():
    assert curve(lr=1e-3, seed=4) == curve(lr=1e-3, seed=4)


def test_another_seed_moves_the_curve_a_little():
    one, other = accuracies(lr=1e-3, seed=1), accuracies(lr=1e-3, seed=2)
    assert one != other and max(abs(a - b) for a, b in zip(one, other)) < 0.05


def test_a_good_learning_rate_learns_a_tiny_one_stays_at_chance_a_huge_one_diverges():
    good = accuracies(lr=1e-3)
    assert good[-1] > 0.7 and good[-1] > good[0]
    assert accuracies(lr=1e-7) == [CHANCE] * 8
    diverged = curve(lr=1.0)
    assert diverged[-1] is None and diverged[: diverged.index(None)] == [m for m in diverged if m is not None]


def test_hyperparameters_order_the_final_scores():
    finals = {lr: accuracies(lr=lr)[-1] for lr in (1e-5, 1e-4, 1e-3)}
    assert finals[1e-5] < finals[1e-4] < finals[1e-3]
    assert accuracies(lr=1e-3, dropout=0.3)[-1] > accuracies(lr=1e-3, dropout=0.9)[-1]


def test_every_metric_fit_reports_is_there_and_finite():
    [metrics] = curve(epochs=1, lr=1e-3)
    assert set(metrics) == {"train_loss", "train_accuracy", "val_loss", "val_accuracy", "val_macro_f1", "lr"}
    assert all(math.isfinite(v) for v in metrics.values())


def test_the_epochs_budget_does_not_change_the_curve():
    assert accuracies(lr=1e-3, epochs=4) == accuracies(lr=1e-3, epochs=8)[:4]


def test_a_hold_waits_for_its_file_at_its_epoch_only(tmp_path):
    gate = tmp_path / "go"
    settings = CurveSettings(hold=Hold(epoch=2, until=str(gate)))
    hold(settings, 1)  # another epoch: no wait
    released = []
    waiter = threading.Thread(target=lambda: (hold(settings, 2), released.append(True)))
    waiter.start()
    time.sleep(0.3)
    assert not released, "the hold let the trial go before its file existed"
    gate.touch()
    waiter.join(timeout=10)
    assert released


def test_the_curve_section_is_validated_and_needs_the_curve_trainable(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: c\ntrainable: curve\ncurve: {sleep_s: 0.5}\nspace:\n  model: basic\n")
    assert load_space(path).curve.sleep_s == 0.5
    path.write_text("name: c\ncurve: {sleep_s: 0.5}\nspace:\n  model: basic\n")
    with pytest.raises(FerTuneError, match=r"c.yaml: curve: applies to trainable: curve only; .* fer_cnn"):
        load_space(path)
    path.write_text("name: c\ntrainable: curve\ncurve: {sleep_s: -1}\nspace:\n  model: basic\n")
    with pytest.raises(FerTuneError, match=r"curve.sleep_s: .*greater than or equal to 0 \(got -1\)"):
        load_space(path)
