"""Transfer learning: ImageNet weights from the local cache only, freezing, the backbone's own
learning rate, resizing inside the model, and the config rule saying which model takes what.

Weights are never downloaded here: each test writes a state dict of the right architecture
(torchvision's builder with weights=None) under torchvision's file name into a temporary
TORCH_HOME, and checks that exactly those numbers are what the model holds.
"""

import math
import urllib.request

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from fer_tune.core.classifier import Normalized, build_model
from fer_tune.core.config import TrainConfig, make_train_config
from fer_tune.core.models import (
    ALL_BLOCKS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    KERNEL_SIZES,
    capabilities,
    check_pretrained_available,
    create_model,
    list_models,
    weights_path,
)
from fer_tune.core.optim import create_optimizer, create_schedule
from fer_tune.core.training import fit, parameter_groups
from fer_tune.errors import FerTuneError

torch.set_num_threads(1)  # the test machine is shared

PRETRAINED = [name for name in list_models() if capabilities(name).pretrained]
# One model per way of cutting a backbone into blocks (rmn and resnet34 cut as resnet18 and resnet50 do).
BLOCK_LAYOUTS = ["resnet18", "resnet50", "vgg16", "efficientnet_b0"]
# (parameter in our model, key in torchvision's state dict): one deep weight per model
LOADED_AT = {
    "resnet18": ("backbone.layer3.0.conv1.weight", "layer3.0.conv1.weight"),
    "resnet50": ("backbone.layer4.0.conv3.weight", "layer4.0.conv3.weight"),
    "vgg16": ("backbone.block5.0.weight", "features.24.weight"),
    "vgg16_bn": ("backbone.block5.0.weight", "features.34.weight"),
    "efficientnet_b0": ("backbone.features.6.0.block.1.0.weight", "features.6.0.block.1.0.weight"),
    "rmn": ("backbone.layer3.1.conv1.weight", "layer3.1.conv1.weight"),
}


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    """An empty torch cache: torch.hub.get_dir() reads TORCH_HOME at each call."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    return tmp_path


@pytest.fixture
def offline(monkeypatch):
    """Any attempt at the network fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("fer-tune tried to download")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)


def write_imagenet(name: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """A stand-in for torchvision's ImageNet file of model `name`, where fer-tune looks for it."""
    builder = capabilities(name).imagenet[0]
    torch.manual_seed(seed)
    if builder.startswith("vgg"):
        # VGG's classifier (124M of 138M params, dropped by the model) would make this a 0.5 GB
        # file; the convs are laid out exactly as torchvision's vgg16 state dict has them.
        layers = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["D"], batch_norm=builder == "vgg16_bn")
        state = {f"features.{k}": v for k, v in layers.state_dict().items()}
    else:
        state = getattr(torchvision.models, builder)(weights=None).state_dict()
    for key, value in state.items():  # distinct from any initialization: BN stats too
        if value.is_floating_point():
            state[key] = value + 0.01 * torch.randn_like(value)
    path = weights_path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return state


def images(n: int, size: int = 48, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 1, size, size, generator=torch.Generator().manual_seed(seed))


def test_missing_weights_are_one_line_naming_the_file_its_path_and_how_to_fetch_it(torch_home, offline):
    path = torch_home / "hub" / "checkpoints" / "resnet50-0676ba61.pth"
    with pytest.raises(FerTuneError) as err:
        check_pretrained_available("resnet50")
    message = str(err.value)
    assert "\n" not in message
    assert f"expected resnet50-0676ba61.pth at {path}" in message
    assert "torchvision.models.resnet50(weights='IMAGENET1K_V1')" in message
    assert "~/.cache/torch/hub/checkpoints/resnet50-0676ba61.pth" in message and "pretrained: false" in message
    with pytest.raises(FerTuneError, match="ImageNet weights for resnet50 not found"):
        create_model("resnet50", pretrained=True, input_size=48)


def test_check_pretrained_available_takes_a_name_or_a_config(torch_home, offline):
    check_pretrained_available(TrainConfig(model="vgg16"))  # pretrained false: nothing to check
    with pytest.raises(FerTuneError, match="vgg16-397923af.pth"):
        check_pretrained_available(TrainConfig(model="vgg16", pretrained=True))
    with pytest.raises(FerTuneError, match="model 'model3' has no pretrained weights"):
        check_pretrained_available("model3")
    write_imagenet("vgg16")
    check_pretrained_available(TrainConfig(model="vgg16", pretrained=True))


def test_rmn_uses_resnet34_weights():
    assert weights_path("rmn") == weights_path("resnet34")


def test_a_file_that_is_no_state_dict_is_explained(torch_home):
    path = weights_path("efficientnet_b0")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"<html>not found</html>")
    with pytest.raises(
        FerTuneError, match=r"could not read ImageNet weights for efficientnet_b0 from .*fetch the file"
    ):
        create_model("efficientnet_b0", pretrained=True, input_size=48)
    with pytest.raises(FerTuneError) as err:
        create_model("efficientnet_b0", pretrained=True, input_size=48)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("name", [name for name in PRETRAINED if name != "resnet34"])  # as resnet18
def test_pretrained_loads_the_cached_weights(torch_home, offline, name):
    state = write_imagenet(name)
    ours, theirs = LOADED_AT[name]
    model = create_model(name, pretrained=True, input_size=48)
    assert torch.equal(model.get_parameter(ours), state[theirs])
    assert not torch.equal(create_model(name, input_size=48).get_parameter(ours), state[theirs])


@pytest.mark.parametrize("kernel_size", KERNEL_SIZES)
def test_pretrained_weights_reach_the_gray_stem(torch_home, kernel_size):
    imagenet = write_imagenet("resnet18")
    model = create_model("resnet18", pretrained=True, kernel_size=kernel_size)
    stem = model.backbone.conv1.weight
    assert stem.shape == (64, 1, kernel_size, kernel_size)
    # Summing RGB then resizing keeps each filter's response to a flat gray patch.
    flat_response = imagenet["conv1.weight"].sum(dim=(1, 2, 3))
    assert torch.allclose(stem.sum(dim=(1, 2, 3)), flat_response, atol=1e-5)


def test_pretrained_backbones_get_imagenet_normalized_rgb(torch_home):
    """With ImageNet weights the gray face reaches the trunk as R = G = B, each channel
    normalized with ImageNet's statistics; trained from scratch, with the train split's."""
    write_imagenet("efficientnet_b0")
    seen = []
    pretrained = build_model(TrainConfig(model="efficientnet_b0", pretrained=True, input_size=48), 7, 0.5, 0.25)
    pretrained.net.backbone.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    face = torch.rand(2, 1, 48, 48)
    pretrained.eval()(face)
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    assert torch.allclose(seen[0], (face - mean) / std)  # broadcast: [2, 3, 48, 48]
    scratch = build_model(TrainConfig(model="efficientnet_b0", input_size=48), 7, 0.5, 0.25)
    scratch.net.backbone.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    scratch.eval()(face)
    assert torch.allclose(seen[1], ((face - 0.5) / 0.25).expand(-1, 3, -1, -1))


@pytest.mark.parametrize("name", ["vgg16", "efficientnet_b0", "rmn"])  # the three ways a model resizes
def test_input_size_resizes_the_batch_inside_the_model(name):
    model = create_model(name, input_size=96).eval()
    seen = []
    model.backbone.register_forward_pre_hook(lambda module, args: seen.append(args[0].shape))
    with torch.no_grad():
        assert model(images(2)).shape == (2, 7)  # 48 px in
    if name == "rmn":  # its forward walks the trunk's stages itself
        assert model.prepare(images(2)).shape == (2, 3, 96, 96)
    else:
        assert seen == [torch.Size([2, 3, 96, 96])]
    assert capabilities(name).default_input_size == 224  # the size the ImageNet weights were trained at


def test_resize_is_bilinear_on_the_device():
    model = create_model("efficientnet_b0", input_size=96)
    x = images(2)
    expected = F.interpolate(x, size=(96, 96), mode="bilinear", align_corners=False).expand(-1, 3, -1, -1)
    assert torch.equal(model.prepare(x), expected)
    assert create_model("efficientnet_b0").resize == 224  # input_size None: the model's default


@pytest.mark.parametrize("name", BLOCK_LAYOUTS)
def test_freeze_depth_counts_the_last_blocks_that_train(name):
    """0: head only; d: the last d blocks too; max or all (-1): everything (Dzubak's ladder)."""
    blocks = capabilities(name).max_freeze_depth

    def trainable_backbone(depth: int) -> int:
        model = create_model(name, freeze_depth=depth, input_size=48)
        assert all(p.requires_grad for p in model.head.parameters())
        return sum(p.requires_grad for p in model.backbone.parameters())

    counts = [trainable_backbone(depth) for depth in range(blocks + 1)]
    assert counts[0] == 0
    assert counts == sorted(counts) and len(set(counts)) == len(counts)  # each block adds parameters
    total = sum(1 for _ in create_model(name, input_size=48).backbone.parameters())
    assert counts[-1] == total == trainable_backbone(ALL_BLOCKS)


def snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@pytest.mark.parametrize("name", ["resnet18", "vgg16_bn", "efficientnet_b0", "rmn"])
def test_a_training_step_moves_only_what_trains(torch_home, name):
    """freeze_depth 1: parameters and BatchNorm statistics of the frozen blocks do not move in a
    training step; those of the last block and of the head do."""
    write_imagenet(name)
    torch.manual_seed(0)
    model = create_model(name, pretrained=True, freeze_depth=1, input_size=48).train()
    frozen = [model.backbone.get_submodule(block) for block in model.frozen]
    last = [m for m in model.backbone.modules() if any(p.requires_grad for p in m.parameters(recurse=False))]
    assert frozen and not any(sub.training for block in frozen for sub in block.modules())  # though model.train()
    before = snapshot(model)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    F.cross_entropy(model(images(4)), torch.arange(4)).backward()
    optimizer.step()
    after = snapshot(model)
    names = {id(m): n for n, m in model.named_modules()}
    frozen_prefixes = tuple(f"backbone.{block}." for block in model.frozen)
    moved = {k for k in before if k.endswith(("weight", "bias", "running_mean", "running_var"))}
    moved = {k for k in moved if not torch.equal(before[k], after[k])}
    assert not {k for k in moved if k.startswith(frozen_prefixes)}, "a frozen block changed"
    assert any(k.startswith("head.") for k in moved)
    assert any(k.startswith(names[id(last[-1])]) for k in moved)  # the last block trains
    bn_stats = [k for k in moved if k.endswith("running_mean")]
    assert bn_stats and not any(k.startswith(frozen_prefixes) for k in bn_stats)


def test_frozen_blocks_follow_train_and_eval():
    model = create_model("resnet18", freeze_depth=2)  # stem, layer1, layer2 frozen
    model.train()
    assert not model.backbone.bn1.training and not model.backbone.layer2[1].bn2.training
    assert model.backbone.layer3[0].bn1.training and model.head.training
    model.eval()
    assert not any(m.training for m in model.modules())
    model.train()
    assert model.backbone.layer4.training and not model.backbone.layer1.training


def test_dense_units_adds_a_dense_layer_with_dropout():
    model = create_model("vgg16", dense_units=256, dropout=0.3, input_size=48)
    layers = [type(m) for m in model.head]
    assert layers == [nn.Linear, nn.ReLU, nn.Dropout, nn.Linear]
    assert model.head[0].out_features == 256 and model.head[3].in_features == 256
    assert [type(m) for m in create_model("vgg16", dropout=0.3, input_size=48).head] == [nn.Dropout, nn.Linear]


def test_backbone_lr_scale_gives_the_backbone_its_own_group():
    config = TrainConfig(model="efficientnet_b0", input_size=48, freeze_depth=3, lr=1e-3, backbone_lr_scale=0.1)
    model = build_model(config, 7, 0.5, 0.25)
    head, body = parameter_groups(model, config)
    assert "lr" not in head and body["lr"] == pytest.approx(1e-4)
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert {id(p) for p in head["params"]} | {id(p) for p in body["params"]} == trainable
    assert {id(p) for p in head["params"]} == {id(p) for p in model.net.head.parameters()}
    assert len(parameter_groups(model, config.model_copy(update={"backbone_lr_scale": 1.0}))) == 1
    # every schedule keeps the ratio, OneCycle included (it peaks each group at its own rate)
    for scheduler in ("onecycle", "cosine", "step"):
        optimizer = create_optimizer("adam", parameter_groups(model, config), lr=config.lr)
        schedule = create_schedule(scheduler, optimizer, steps_per_epoch=10, epochs=3, lr=config.lr, step_size=1)
        for _ in range(7):
            optimizer.step()
            schedule.after_batch()
        schedule.after_epoch(0.0)
        head_lr, body_lr = (group["lr"] for group in optimizer.param_groups)
        assert body_lr == pytest.approx(0.1 * head_lr), scheduler


def test_fit_trains_a_frozen_backbone_at_its_own_rate(tiny_data):
    config = TrainConfig(
        model="efficientnet_b0",
        input_size=48,
        freeze_depth=1,
        backbone_lr_scale=0.1,
        lr=3e-3,
        batch_size=32,
        augmentation="none",
        epochs=1,
    )
    states = []
    history = fit(config, tiny_data, lambda metrics, state: states.append(state))
    assert math.isfinite(history[0]["train_loss"]) and history[0]["lr"] == pytest.approx(3e-3)
    assert [group["lr"] for group in states[0].optimizer.param_groups] == pytest.approx([3e-3, 3e-4])


BAD_POINTS = [
    ({"model": "model3", "pretrained": True}, r"pretrained: model 'model3' has no pretrained weights; .*\(got True\)"),
    ({"model": "basic", "freeze_depth": 2}, r"freeze_depth: model 'basic' has no pretrained weights, .*\(got 2\)"),
    ({"model": "resnet50", "freeze_depth": 6}, r"freeze_depth: .*resnet50's 5 backbone blocks.* to 5, .*\(got 6\)"),
    ({"model": "model3", "input_size": 96}, r"input_size: model 'model3' runs at 48 px; other sizes .*\(got 96\)"),
    ({"model": "resnet18", "input_size": 224}, r"input_size: model 'resnet18' runs at 48 px;"),
    ({"model": "model3", "dense_units": 256}, r"dense_units: model 'model3' has no extra dense layer"),
    ({"model": "vgg16", "kernel_size": 2}, r"kernel_size: vgg16 keeps torchvision's kernels: expected 3"),
    ({"model": "rmn", "width": 0.5}, r"width: rmn's layer widths are torchvision's: expected 1.0 \(got 0.5\)"),
    ({"model": "deep", "backbone_lr_scale": 0.1}, r"backbone_lr_scale: model 'deep' has no pretrained backbone"),
]


@pytest.mark.parametrize("point,message", BAD_POINTS)
def test_config_refuses_a_knob_the_model_does_not_take_in_one_line(point, message):
    with pytest.raises(FerTuneError, match=f"^trial config: {message}") as err:
        make_train_config(point, where="trial config")
    assert "\n" not in str(err.value)
    knobs = {k: v for k, v in point.items() if k not in ("model", "backbone_lr_scale")}  # no model argument
    if knobs:
        with pytest.raises(FerTuneError, match=f"^model argument {message}"):  # the same rule at build
            create_model(point["model"], **knobs)


@pytest.mark.parametrize("point", [p for p, _ in BAD_POINTS])
def test_a_lone_candidate_is_checked_without_a_model(point):
    """The space parser validates each candidate alone (TrainConfig(**{name: value})): without
    a model it passes, and the point is checked whole when the trial's config is built."""
    for name, value in point.items():
        TrainConfig(**{name: value})


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("freeze_depth", 12, r"freeze_depth: expected -1 \(all\) or 0 \(head only\) to 9 .*\(got 12\)"),
        ("freeze_depth", -2, r"freeze_depth: expected -1"),
        ("input_size", 100, r"input_size: expected one of 48, 96, 224, or null \(the model's default\) \(got 100\)"),
        ("backbone_lr_scale", 0.0, r"backbone_lr_scale: Input should be greater than 0"),
        ("dense_units", -1, r"dense_units: Input should be greater than or equal to 0"),
    ],
)
def test_a_value_no_model_takes_is_refused_alone(field, value, message):
    with pytest.raises(FerTuneError, match=f"^--set: {message}"):
        make_train_config({field: value}, where="--set")


def test_a_space_whose_default_point_breaks_the_rule_fails_at_load(tmp_path):
    from fer_tune.search.sweep_file import load_space

    path = tmp_path / "space.yaml"
    path.write_text(
        "name: t\nspace:\n  model: {choice: [model3, resnet50]}\n  pretrained: true\n  input_size: {choice: [96, 48]}\n"
    )
    with pytest.raises(FerTuneError, match=r"space.yaml: pretrained: model 'model3' has no pretrained weights"):
        load_space(path)
    path.write_text("name: t\nspace:\n  model: {choice: [resnet50, model3]}\n  freeze_depth: {choice: [1, 12]}\n")
    with pytest.raises(FerTuneError, match=r"space.yaml: space\.freeze_depth\.choice\[1\]: expected -1 \(all\)"):
        load_space(path)


def test_a_valid_transfer_point_resolves_its_sizes():
    config = make_train_config({"model": "efficientnet_b0", "pretrained": True, "freeze_depth": 2, "tta": "tencrop"})
    assert config.resolved_input_size == 224 and config.image_size == 40
    assert make_train_config({"model": "vgg16", "input_size": 96}).resolved_input_size == 96
    assert make_train_config({"model": "basic", "freeze_depth": 0}).freeze_depth == 0  # no backbone: same as all
    assert isinstance(build_model(TrainConfig(model="model3"), 7, 0.5, 0.25), Normalized)
