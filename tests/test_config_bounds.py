"""Hyperparameters that broke the first time someone used them (issue 26, part 2): each is one line at
load, naming the key, the value and what is allowed, before Ray starts or memory is asked for."""

import pytest

from fer_tune.cli.main import main
from fer_tune.core.config import MAX_SEED, MAX_WIDTH, make_train_config
from fer_tune.errors import FerTuneError


@pytest.mark.parametrize("model", ["resnet18", "resnet34"])
def test_separable_on_a_transfer_backbone_is_refused(model):
    with pytest.raises(FerTuneError, match=rf"separable: {model} keeps torchvision's convs: expected false; "
                                           r"separable applies to basic, .*vgg \(got True\)"):  # fmt: skip
        make_train_config({"model": model, "separable": True})


def test_separable_on_a_seed_cnn_is_taken():
    assert make_train_config({"model": "model3", "separable": True}).separable


@pytest.mark.parametrize("seed", [-1, MAX_SEED + 1, 2**70])
def test_a_seed_outside_the_generators_range_is_refused(seed):
    with pytest.raises(FerTuneError, match=r"seed: Input should be (greater|less) than or equal to (0|4294967295)"):
        make_train_config({"seed": seed})


@pytest.mark.parametrize("width", [1e7, MAX_WIDTH * 2, float("inf")])
def test_a_width_beyond_any_machines_memory_is_refused(width):
    with pytest.raises(FerTuneError, match=r"width: "):
        make_train_config({"width": width})


def test_set_on_the_command_line_is_checked_before_anything_runs(workdir, capsys):
    (workdir / "s.yaml").write_text("name: s\nspace:\n  model: basic\n")
    assert main(["train", "s.yaml", "--set", "model=resnet18", "--set", "separable=true"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "separable: resnet18 keeps torchvision's convs" in err, err
