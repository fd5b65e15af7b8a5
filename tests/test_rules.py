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


def test_the_mlflow_section_is_checked_by_tracking_even_with_no_track(workdir, capsys):
    """The sweep file holds `mlflow:` opaque; tracking validates it, one line naming the file and the key,
    before anything is written (also under --no-track, whose do-nothing twin checks the file the same)."""
    from fer_tune.cli.main import main

    (workdir / "s.yaml").write_text("name: s\nmlflow: {experimnt: x}\nspace:\n  model: basic\n")
    for flags in ([], ["--no-track"]):
        assert main(["run", "s.yaml", *flags]) == 1
        err = capsys.readouterr().err
        assert err.startswith("fer-tune: error: s.yaml: mlflow.experimnt: unknown key; expected one of: ")
        assert "register_as" in err and err.count("\n") == 1
    assert sorted(p.name for p in workdir.iterdir()) == ["s.yaml"]  # not even results/


def test_the_do_nothing_tracker_has_the_trackers_methods():
    import inspect

    from fer_tune.search.sweep_file import SpaceFile
    from fer_tune.tracking.trackers import MlflowTracking, NoTracking, SweepTracking, open_tracking

    methods = [name for name, _ in inspect.getmembers(SweepTracking, inspect.isfunction) if not name.startswith("_")]
    assert methods == ["callbacks", "check", "finish", "record_warm_start", "unfinished"]
    for twin in (MlflowTracking, NoTracking):
        for name in methods:
            assert inspect.signature(getattr(twin, name)).parameters.keys() == (
                inspect.signature(getattr(SweepTracking, name)).parameters.keys()
            ), (twin, name)
    space = SpaceFile(name="s")
    untracked = open_tracking(space, track=False)
    assert isinstance(untracked, NoTracking) and isinstance(open_tracking(space, track=True), MlflowTracking)
    untracked.check()
    assert untracked.callbacks("s-1", None) == [] and not untracked.unfinished("s-1")
    assert untracked.finish(None).lines() == [] and untracked.finish(None).pending == 0


def test_the_model_knobs_are_one_list_forwarded_by_name():
    """Knobs is the one list: TrainConfig supplies each knob by name and build_model forwards them all."""
    from fer_tune.core.classifier import build_model
    from fer_tune.core.config import TrainConfig, make_train_config
    from fer_tune.core.models import KNOB_NAMES, create_model
    from fer_tune.errors import FerTuneError

    config = make_train_config({"model": "basic", "kernel_size": 2, "padding": "auto", "width": 0.5, "tta": "tencrop"})
    knobs = config.model_knobs()
    assert set(knobs) == set(KNOB_NAMES) - {"num_classes"}
    assert knobs["padding"] == 0 and knobs["image_size"] == 40 and knobs["width"] == 0.5
    built = build_model(config, num_classes=5, mean=0.5, std=0.25).net
    direct = create_model("basic", num_classes=5, kernel_size=2, padding=0, width=0.5, image_size=40)
    assert [p.shape for p in built.parameters()] == [p.shape for p in direct.parameters()]
    assert all(name in TrainConfig.model_fields or hasattr(TrainConfig, name) for name in knobs)
    with pytest.raises(FerTuneError, match=r"^model argument widht: unknown; expected one of: num_classes, "):
        create_model("basic", widht=0.5)
