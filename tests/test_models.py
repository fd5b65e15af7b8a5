"""Tests for fer_tune.models, parametrized over the registry (the timm pattern)."""

import copy
import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fer_tune.core.models import (
    ALL_BLOCKS,
    KERNEL_SIZES,
    PADDINGS,
    RESNET_BLOCKS,
    capabilities,
    create_model,
    list_models,
    register_model,
)
from fer_tune.errors import FerTuneError

torch.set_num_threads(1)  # the test machine is shared; these models are small anyway

EXPECTED = [
    *["basic", "model2", "model3", "shallow", "deep", "custom6", "vgg"],  # seed CNNs, from scratch
    *["resnet18", "resnet34", "resnet50", "vgg16", "vgg16_bn", "efficientnet_b0", "rmn"],  # ImageNet backbones
]
TRANSFER = [name for name in EXPECTED if capabilities(name).pretrained]
PLAIN = [name for name in EXPECTED if name not in TRANSFER]
KERNEL_MODELS = [name for name in EXPECTED if capabilities(name).kernels]


def batch_size(name: str) -> int:
    # A ResNet at 48x48 with a stride-1 stem is ~1 GFLOP per image on CPU; 2 is the
    # smallest batch BatchNorm trains on.
    return 2 if name in TRANSFER else 4


def small(name: str, **knobs) -> nn.Module:
    """`create_model(name, **knobs)` with the backbone at 48 px: 224 px would cost ~20x on a CPU."""
    native = {"input_size": 48} if capabilities(name).resizes else {}
    return create_model(name, **native, **knobs)


def images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 1, 48, 48, generator=torch.Generator().manual_seed(seed))


def test_registry_lists_every_model():
    assert list_models() == EXPECTED
    assert TRANSFER == ["resnet18", "resnet34", "resnet50", "vgg16", "vgg16_bn", "efficientnet_b0", "rmn"]


@pytest.mark.parametrize("name", list_models())
def test_trains_one_step(name):
    torch.manual_seed(0)
    model = small(name).train()
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
        assert small(name, num_classes=4).eval()(images(2)).shape == (2, 4)


@pytest.mark.parametrize(
    "name,kernel_size,padding", [(n, k, p) for n in KERNEL_MODELS for k, p in itertools.product(KERNEL_SIZES, PADDINGS)]
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

    assert n_dropout(small(name, dropout=0.0)) == 0
    with_dropout = small(name, dropout=0.3)
    assert n_dropout(with_dropout) >= 1
    assert all(m.p == 0.3 for m in with_dropout.modules() if isinstance(m, nn.Dropout))


def test_unknown_name_lists_valid_names():
    with pytest.raises(FerTuneError) as err:
        create_model("resnet101")
    assert "resnet101" in str(err.value)
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
@pytest.mark.parametrize(
    "knob,value", [("pretrained", True), ("freeze_depth", 1), ("input_size", 96), ("dense_units", 256)]
)
def test_transfer_knobs_are_refused_by_models_trained_from_scratch(name, knob, value):
    with pytest.raises(FerTuneError, match=f"^model argument {knob}: model '{name}' .*\\(got {value}\\)$"):
        create_model(name, **{knob: value})


@pytest.mark.parametrize("name", PLAIN)
def test_models_without_a_backbone_train_every_layer_at_freeze_depth_0_or_all(name):
    """No backbone blocks: 0 and all (-1) trainable last blocks are the same model, every layer training."""
    for depth in (0, ALL_BLOCKS):
        assert all(p.requires_grad for p in create_model(name, freeze_depth=depth).parameters())


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "rmn"])
def test_torchvision_widths_are_fixed(name):
    with pytest.raises(FerTuneError, match="width"):
        small(name, width=2.0)


@pytest.mark.parametrize("name", ["resnet50", "vgg16", "efficientnet_b0", "rmn"])
def test_torchvision_kernels_are_fixed(name):
    with pytest.raises(FerTuneError, match="kernel_size"):
        small(name, kernel_size=2)


@pytest.mark.parametrize("depth", [*range(len(RESNET_BLOCKS) + 1), ALL_BLOCKS])
def test_freeze_depth_trains_the_last_blocks_and_the_head(depth):
    """freeze_depth d: the last d of (stem, layer1..layer4) train, the earlier ones are frozen;
    0 trains the head only, 5 and all (-1) everything."""
    model = create_model("resnet18", freeze_depth=depth)
    trainable = len(RESNET_BLOCKS) if depth == ALL_BLOCKS else depth
    training_groups = {name for block in RESNET_BLOCKS[len(RESNET_BLOCKS) - trainable :] for name in block}
    for name, param in model.named_parameters():
        part, group = name.split(".")[:2]
        assert param.requires_grad == (part == "head" or group in training_groups), name
    if depth == 0:
        trainable_names = {n for n, p in model.named_parameters() if p.requires_grad}
        assert trainable_names == {"head.0.weight", "head.0.bias"}


@pytest.mark.parametrize("depth", [6, -2])
def test_freeze_depth_out_of_range(depth):
    with pytest.raises(
        FerTuneError, match=rf"freeze_depth: .*expected 0 \(head only\) to 5, or -1 \(all\) \(got {depth}\)"
    ):
        create_model("resnet18", freeze_depth=depth)


def test_channels_last_matches_default_format():
    model = create_model("model3", dropout=0.5).eval()
    last = copy.deepcopy(model).to(memory_format=torch.channels_last)
    x = images(4)
    with torch.no_grad():
        expected = model(x)
        got = last(x.to(memory_format=torch.channels_last))
    assert torch.allclose(got, expected, atol=1e-4)


@pytest.mark.parametrize("name", ["model3", "vgg", "efficientnet_b0"])
def test_bf16_autocast(name):
    model = small(name).train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(images(2))
    assert logits.shape == (2, 7) and torch.isfinite(logits.float()).all()
