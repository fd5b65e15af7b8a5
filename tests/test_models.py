"""Tests for fer_tune.models, parametrized over the registry (the timm pattern)."""

import copy
import itertools

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from fer_tune.core.models import KERNEL_SIZES, PADDINGS, RESNET_FREEZE_ORDER, create_model, list_models, register_model
from fer_tune.errors import FerTuneError

torch.set_num_threads(1)  # the test machine is shared; these models are small anyway

EXPECTED = ["basic", "model2", "model3", "shallow", "deep", "custom6", "vgg", "resnet18", "resnet34"]
RESNETS = ["resnet18", "resnet34"]
PLAIN = [name for name in EXPECTED if name not in RESNETS]


def batch_size(name: str) -> int:
    # A ResNet at 48x48 with a stride-1 stem is ~1 GFLOP per image on CPU; 2 is the
    # smallest batch BatchNorm trains on.
    return 2 if name in RESNETS else 4


def images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 1, 48, 48, generator=torch.Generator().manual_seed(seed))


def test_registry_lists_every_model():
    assert list_models() == EXPECTED


@pytest.mark.parametrize("name", list_models())
def test_trains_one_step(name):
    torch.manual_seed(0)
    model = create_model(name).train()
    x = images(batch_size(name))
    logits = model(x)
    assert logits.shape == (len(x), 7)
    assert torch.isfinite(logits).all()
    F.cross_entropy(logits, torch.arange(len(x)) % 7).backward()
    for param_name, param in model.named_parameters():
        assert param.grad is not None, param_name
        assert torch.isfinite(param.grad).all(), param_name
        assert param.grad.abs().sum() > 0, param_name


@pytest.mark.parametrize("name", list_models())
def test_num_classes(name):
    with torch.no_grad():
        assert create_model(name, num_classes=4)(images(2)).shape == (2, 4)


@pytest.mark.parametrize(
    "name,kernel_size,padding", [(n, k, p) for n in list_models() for k, p in itertools.product(KERNEL_SIZES, PADDINGS)]
)
def test_every_kernel_and_padding_runs(name, kernel_size, padding):
    model = create_model(name, kernel_size=kernel_size, padding=padding)
    with torch.no_grad():
        logits = model(images(2))
    assert logits.shape == (2, 7) and torch.isfinite(logits).all()


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_model3_knobs_change_the_architecture():
    default = create_model("model3", kernel_size=3, padding=1)
    assert n_params(default) != n_params(create_model("model3", kernel_size=2, padding=0))
    assert n_params(create_model("model3", width=2.0)) > n_params(default)
    conv = next(m for m in default.modules() if isinstance(m, nn.Conv2d))
    assert conv.kernel_size == (3, 3) and conv.padding == (1, 1)


@pytest.mark.parametrize("name", list_models())
def test_dropout_knob_adds_dropout(name):
    def n_dropout(model):
        return sum(isinstance(m, nn.Dropout) for m in model.modules())

    assert n_dropout(create_model(name, dropout=0.0)) == 0
    with_dropout = create_model(name, dropout=0.3)
    assert n_dropout(with_dropout) >= 1
    assert all(m.p == 0.3 for m in with_dropout.modules() if isinstance(m, nn.Dropout))


def test_unknown_name_lists_valid_names():
    with pytest.raises(FerTuneError) as err:
        create_model("resnet50")
    assert "resnet50" in str(err.value)
    for name in list_models():
        assert name in str(err.value)


@pytest.mark.parametrize(
    "arg,value",
    [
        ("kernel_size", 5),
        ("kernel_size", 1),
        ("padding", 2),
        ("padding", -1),
        ("dropout", 1.0),
        ("dropout", -0.1),
        ("width", 0),
        ("width", -1.0),
        ("num_classes", 0),
    ],
)
def test_bad_knob_names_argument_and_value(arg, value):
    with pytest.raises(FerTuneError) as err:
        create_model("model3", **{arg: value})
    assert arg in str(err.value) and repr(value) in str(err.value)


def test_duplicate_registration_raises():
    def basic(**kw):
        return nn.Identity()

    with pytest.raises(ValueError, match="basic"):
        register_model(basic)


@pytest.mark.parametrize("name", PLAIN)
def test_transfer_knobs_are_resnet_only(name):
    with pytest.raises(FerTuneError, match="pretrained"):
        create_model(name, pretrained=True)
    with pytest.raises(FerTuneError, match="freeze_depth"):
        create_model(name, freeze_depth=1)


def test_resnet_rejects_width():
    with pytest.raises(FerTuneError, match="width"):
        create_model("resnet18", width=2.0)


@pytest.mark.parametrize("depth", range(6))
def test_freeze_depth_freezes_stem_then_stages(depth):
    model = create_model("resnet18", freeze_depth=depth)
    frozen_groups = set(RESNET_FREEZE_ORDER[: depth + 1]) if depth else set()
    for name, param in model.named_parameters():
        assert param.requires_grad == (name.split(".")[0] not in frozen_groups), name
    if depth == 5:
        trainable = {n for n, p in model.named_parameters() if p.requires_grad}
        assert trainable == {"fc.weight", "fc.bias"}


def test_freeze_depth_out_of_range():
    with pytest.raises(FerTuneError, match="freeze_depth"):
        create_model("resnet18", freeze_depth=6)


def test_pretrained_download_failure_is_explained(monkeypatch):
    def offline(self, *args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(torchvision.models.WeightsEnum, "get_state_dict", offline)
    with pytest.raises(
        FerTuneError, match="could not load ImageNet weights for resnet18: no network; train with pretrained: false"
    ):
        create_model("resnet18", pretrained=True)


@pytest.mark.parametrize("kernel_size", KERNEL_SIZES)
def test_pretrained_weights_reach_the_gray_stem(monkeypatch, kernel_size):
    imagenet = torchvision.models.resnet18().state_dict()  # stands in for the download
    monkeypatch.setattr(torchvision.models.WeightsEnum, "get_state_dict", lambda self, *a, **kw: imagenet)
    model = create_model("resnet18", pretrained=True, kernel_size=kernel_size)
    assert torch.equal(model.layer3[0].conv1.weight, imagenet["layer3.0.conv1.weight"])
    stem = model.conv1.weight
    assert stem.shape == (64, 1, kernel_size, kernel_size)
    # Summing RGB then resizing keeps each filter's response to a flat gray patch.
    flat_response = imagenet["conv1.weight"].sum(dim=(1, 2, 3))
    assert torch.allclose(stem.sum(dim=(1, 2, 3)), flat_response, atol=1e-5)


def test_channels_last_matches_default_format():
    model = create_model("model3", dropout=0.5).eval()
    last = copy.deepcopy(model).to(memory_format=torch.channels_last)
    x = images(4)
    with torch.no_grad():
        expected = model(x)
        got = last(x.to(memory_format=torch.channels_last))
    assert torch.allclose(got, expected, atol=1e-4)


@pytest.mark.parametrize("name", ["model3", "vgg"])
def test_bf16_autocast(name):
    model = create_model(name).train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(images(2))
    assert logits.shape == (2, 7) and torch.isfinite(logits.float()).all()
