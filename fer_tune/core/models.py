"""Model registry and the FER2013 CNNs that fer-tune searches over.

Every model maps a normalized float tensor [B, 1, 48, 48] to logits [B, num_classes],
works with `model.to(memory_format=torch.channels_last)` and under bf16 autocast.

    >>> import torch
    >>> from fer_tune.core.models import create_model, list_models
    >>> model = create_model("model3", kernel_size=3, padding=1, dropout=0.5)
    >>> model(torch.zeros(2, 1, 48, 48)).shape
    torch.Size([2, 7])

Knobs shared by every model (checked by `Knobs`, so a bad value fails before any layer
is built, with a FerTuneError naming the argument):
- kernel_size in {2, 3} and padding in {0, 1}: Tandon 2020 (table 4) compares 2x2 filters
  without padding against 3x3 filters with padding 1. They apply to every 2x2/3x3 conv of
  the source architectures; a source's other convs (deep's 5x5) keep their size.
- dropout in [0, 1): used at the places the source puts dropout; models whose source has
  none get one nn.Dropout before the classifier. 0 adds no Dropout module at all.
- width > 0: multiplies every conv channel count and hidden linear width (rounded, >= 1).
- pretrained, freeze_depth: ResNets only (see `_resnet`).

Where a source is public code we follow it layer for layer; each builder's docstring says
which. Parameter counts are for 7 classes at the default knobs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torchvision
from torch import nn

from fer_tune.constants import EMOTIONS, IMAGE_SIZE
from fer_tune.errors import FerTuneError
from fer_tune.registry import Registry

NUM_CLASSES = len(EMOTIONS)  # FER2013's seven emotions
KERNEL_SIZES = (2, 3)  # Tandon 2020, table 4: 2x2 vs 3x3 filters
PADDINGS = (0, 1)  # ... with zero padding 0 vs 1
VGG_HIDDEN = 1024  # Khaireddin & Chen use 4096; 1024 cuts the head from 36M to 6M params
# so a search trial stays trainable on a CPU; width scales it like the convs.
RESNET_FREEZE_ORDER = ("conv1", "bn1", "layer1", "layer2", "layer3", "layer4")  # stem, stages
MAX_FREEZE_DEPTH = 5  # stem + 4 residual stages: everything but the classifier

MODELS = Registry("model")


def register_model(fn):
    """Register a builder under its function name (shorthand for MODELS.register())."""
    return MODELS.register()(fn)


def list_models() -> list[str]:
    """Names accepted by `create_model`, in registration order."""
    return MODELS.names()


def create_model(
    name: str,
    *,
    num_classes: int = NUM_CLASSES,
    kernel_size: int = 3,
    padding: int = 1,
    dropout: float = 0.0,
    width: float = 1.0,
    pretrained: bool = False,
    freeze_depth: int = 0,
) -> nn.Module:
    """Build the registered model `name`; unknown names raise FerTuneError listing them."""
    builder = MODELS.get(name)
    return builder(
        num_classes=num_classes,
        kernel_size=kernel_size,
        padding=padding,
        dropout=dropout,
        width=width,
        pretrained=pretrained,
        freeze_depth=freeze_depth,
    )


@dataclass(frozen=True)
class Knobs:
    """The validated keyword arguments every builder receives."""

    num_classes: int = NUM_CLASSES
    kernel_size: int = 3  # 3x3 with padding 1 was Tandon's best (68.6% val, table 4)
    padding: int = 1
    dropout: float = 0.0  # off unless the search turns it on; sources used 0.2-0.5
    width: float = 1.0
    pretrained: bool = False
    freeze_depth: int = 0

    def __post_init__(self):
        checks = [
            ("num_classes", isinstance(self.num_classes, int) and self.num_classes >= 1, "an integer >= 1"),
            (
                "kernel_size",
                self.kernel_size in KERNEL_SIZES and isinstance(self.kernel_size, int),
                f"one of {KERNEL_SIZES}",
            ),
            ("padding", self.padding in PADDINGS and isinstance(self.padding, int), f"one of {PADDINGS}"),
            ("dropout", isinstance(self.dropout, (int, float)) and 0 <= self.dropout < 1, "a number in [0, 1)"),
            ("width", isinstance(self.width, (int, float)) and self.width > 0, "a number > 0"),
            (
                "freeze_depth",
                isinstance(self.freeze_depth, int) and 0 <= self.freeze_depth <= MAX_FREEZE_DEPTH,
                f"an integer in 0..{MAX_FREEZE_DEPTH}",
            ),
        ]
        for arg, ok, allowed in checks:
            if not ok:
                raise FerTuneError(f"model argument {arg}={getattr(self, arg)!r} is invalid; expected {allowed}")

    def ch(self, n: int) -> int:
        """A channel count or hidden width scaled by `width`."""
        return max(1, round(n * self.width))

    def no_transfer(self, name: str) -> Knobs:
        """Reject the ResNet-only knobs for a model trained from scratch."""
        if self.pretrained or self.freeze_depth:
            raise FerTuneError(
                f"model {name!r} has no pretrained weights: pretrained and "
                f"freeze_depth apply to resnet18/resnet34 only (got pretrained="
                f"{self.pretrained}, freeze_depth={self.freeze_depth})"
            )
        return self


def conv_block(
    c_in: int,
    c_out: int,
    kernel_size: int,
    padding: int,
    *,
    batch_norm: bool = False,
    pool: bool = False,
    dropout: float = 0.0,
) -> list[nn.Module]:
    """conv -> [BN] -> ReLU -> [2x2 max-pool] -> [dropout], as a list of layers."""
    # A conv bias right before BatchNorm is cancelled by the mean subtraction: it would
    # only add a parameter whose gradient is always zero.
    layers = [nn.Conv2d(c_in, c_out, kernel_size, padding=padding, bias=not batch_norm)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(c_out))
    layers.append(nn.ReLU(inplace=True))
    if pool:
        layers.append(nn.MaxPool2d(2))
    if dropout > 0:
        layers.append(nn.Dropout(dropout))
    return layers


def mlp_head(
    n_in: int,
    hidden: list[int],
    num_classes: int,
    *,
    hidden_dropout: float = 0.0,
    last_dropout: float = 0.0,
    batch_norm: bool = False,
) -> list[nn.Module]:
    """Linear -> [BN] -> ReLU -> [dropout] per hidden width, then [dropout] -> Linear."""
    layers: list[nn.Module] = []
    for n_out in hidden:
        layers.append(nn.Linear(n_in, n_out, bias=not batch_norm))
        if batch_norm:
            layers.append(nn.BatchNorm1d(n_out))
        layers.append(nn.ReLU(inplace=True))
        if hidden_dropout > 0:
            layers.append(nn.Dropout(hidden_dropout))
        n_in = n_out
    if last_dropout > 0:
        layers.append(nn.Dropout(last_dropout))
    layers.append(nn.Linear(n_in, num_classes))
    return layers


def _flat_size(features: nn.Module) -> int:
    """Features per image after `features`, measured on one dummy 48x48 image."""
    was_training = features.training
    features.eval()  # in train mode BatchNorm would fold the dummy into its running stats
    try:
        with torch.no_grad():
            out = features(torch.zeros(1, 1, IMAGE_SIZE, IMAGE_SIZE))
    except RuntimeError as err:
        raise FerTuneError(f"a {IMAGE_SIZE}x{IMAGE_SIZE} image shrinks to nothing in this model: {err}") from None
    finally:
        features.train(was_training)
    return out[0].numel()


class ConvNet(nn.Module):
    """features -> flatten -> MLP classifier, sized from a dummy forward pass."""

    def __init__(
        self,
        features: list[nn.Module],
        hidden: list[int],
        num_classes: int,
        *,
        hidden_dropout: float = 0.0,
        last_dropout: float = 0.0,
        batch_norm: bool = False,
    ):
        super().__init__()
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(
            *mlp_head(
                _flat_size(self.features),
                hidden,
                num_classes,
                hidden_dropout=hidden_dropout,
                last_dropout=last_dropout,
                batch_norm=batch_norm,
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


def _tandon_pairs(k: Knobs, channels: tuple[int, int, int], dropout: float) -> list[nn.Module]:
    """Tandon's model 2/3 trunk: 3 x (conv-ReLU, conv-ReLU, pool, [dropout]) + global avg pool."""
    layers, c_in = [], 1
    for c in channels:
        layers += conv_block(c_in, k.ch(c), k.kernel_size, k.padding)
        layers += conv_block(k.ch(c), k.ch(c), k.kernel_size, k.padding, pool=True, dropout=dropout)
        c_in = k.ch(c)
    return layers + [nn.AdaptiveAvgPool2d(1)]


@register_model
def basic(**kw) -> nn.Module:
    """Tandon 2020 "model 1": 3 x (conv-ReLU-maxpool) with 16/32/64 channels, global average
    pool, Linear(64 -> classes). Found code: FER_basic_model in Tandon-A/MLEND_Udacity
    Capstone_Project/FER_Experiments.ipynb (2x2 convs, no padding; no dropout there, so
    dropout > 0 goes before the classifier). 24k params (3x3, padding 1)."""
    k = Knobs(**kw).no_transfer("basic")
    layers, c_in = [], 1
    for c in (16, 32, 64):
        layers += conv_block(c_in, k.ch(c), k.kernel_size, k.padding, pool=True)
        c_in = k.ch(c)
    return ConvNet(layers + [nn.AdaptiveAvgPool2d(1)], [], k.num_classes, last_dropout=k.dropout)


@register_model
def model2(**kw) -> nn.Module:
    """Tandon 2020 "model 2": 3 x (conv-ReLU, conv-ReLU, maxpool) with 32/64/128 channels,
    global average pool, MLP 128 -> 1024 -> 1024 -> classes (ReLU). Found code:
    FER_basic_model2 (2x2, padding 0) / FER_basic_model2_new (3x3, padding 1) in
    FER_Experiments.ipynb; no dropout there, so dropout > 0 goes before the classifier.
    1.5M params."""
    k = Knobs(**kw).no_transfer("model2")
    return ConvNet(
        _tandon_pairs(k, (32, 64, 128), dropout=0.0), [k.ch(1024), k.ch(1024)], k.num_classes, last_dropout=k.dropout
    )


@register_model
def model3(**kw) -> nn.Module:
    """Tandon 2020 "model 3" (the report's best, 68.6% val at 3x3): model 2 with 64/128/256
    channels, dropout after each pool and after each hidden linear, MLP 256 -> 512 -> 256 ->
    classes. Found code: FER_basic_model3 / FER_basic_model3_new in FER_Experiments.ipynb,
    which used dropout 0.5 at all five places. 1.4M params."""
    k = Knobs(**kw).no_transfer("model3")
    return ConvNet(
        _tandon_pairs(k, (64, 128, 256), dropout=k.dropout),
        [k.ch(512), k.ch(256)],
        k.num_classes,
        hidden_dropout=k.dropout,
    )


@register_model
def shallow(**kw) -> nn.Module:
    """Alizadeh & Fazel 2017 (arXiv 1704.06756) shallow baseline: conv 32 (BN, ReLU,
    dropout, no pool), conv 64 (BN, ReLU, 2x2 max-pool, dropout), FC 512 (ReLU), classifier.
    Our reading of the paper's text (no code published); the paper names no FC dropout.
    Only one pool, so the 24x24x64 map makes the FC layer big: 18.9M params."""
    k = Knobs(**kw).no_transfer("shallow")
    layers = conv_block(1, k.ch(32), k.kernel_size, k.padding, batch_norm=True, dropout=k.dropout) + conv_block(
        k.ch(32), k.ch(64), k.kernel_size, k.padding, batch_norm=True, pool=True, dropout=k.dropout
    )
    return ConvNet(layers, [k.ch(512)], k.num_classes)


@register_model
def deep(**kw) -> nn.Module:
    """Alizadeh & Fazel 2017 deep baseline: convs 64 (3x3), 128 (5x5), 512 (3x3), 512 (3x3),
    each with BN, ReLU, 2x2 max-pool and dropout; FC 256 and FC 512, each with BN, ReLU and
    dropout; classifier. Our reading of the paper's text. The 5x5 conv keeps its size and
    uses padding 2 (the paper gives none) so 48x48 survives all four pools with every
    kernel/padding knob. 4.5M params."""
    k = Knobs(**kw).no_transfer("deep")
    bn = dict(batch_norm=True, pool=True, dropout=k.dropout)
    layers = (
        conv_block(1, k.ch(64), k.kernel_size, k.padding, **bn)
        + conv_block(k.ch(64), k.ch(128), 5, 2, **bn)
        + conv_block(k.ch(128), k.ch(512), k.kernel_size, k.padding, **bn)
        + conv_block(k.ch(512), k.ch(512), k.kernel_size, k.padding, **bn)
    )
    return ConvNet(layers, [k.ch(256), k.ch(512)], k.num_classes, hidden_dropout=k.dropout, batch_norm=True)


@register_model
def custom6(**kw) -> nn.Module:
    """Tynasello's custom CNN: convs 32, 64 | pool | 128, 128 | pool | 64, 32 | pool (ReLU after
    each), MLP -> 512 -> 64 -> classes with dropout after both hidden layers. Found code:
    CustomModel in Tynasello/facial-expression-classification src/models/models.py (3x3
    convs, dropout 0.5, RGB input; its first conv is unpadded, here all six take the
    padding knob). 1.0M params."""
    k = Knobs(**kw).no_transfer("custom6")
    layers, c_in = [], 1
    for i, c in enumerate((32, 64, 128, 128, 64, 32)):
        layers += conv_block(c_in, k.ch(c), k.kernel_size, k.padding, pool=i % 2 == 1)
        c_in = k.ch(c)
    return ConvNet(layers, [k.ch(512), k.ch(64)], k.num_classes, hidden_dropout=k.dropout)


@register_model
def vgg(**kw) -> nn.Module:
    """Khaireddin & Chen 2021 VGG variant: 4 stages of 2 x (conv-BN-ReLU) + 2x2 max-pool with
    64/128/256/512 channels, FC -> FC (ReLU, dropout after each), classifier. Found code:
    models/vgg.py in usef-kh/fer (dropout 0.2, 40x40 crops). Deviations: hidden width
    VGG_HIDDEN=1024 instead of 4096 (CPU-trainable search); the padding knob sets the first
    conv of each stage while the second keeps the paper's padding 1, because eight unpadded
    3x3 convs and four pools shrink 48x48 to nothing before the last stage. 10.5M params."""
    k = Knobs(**kw).no_transfer("vgg")
    layers, c_in = [], 1
    for c in (64, 128, 256, 512):
        layers += conv_block(c_in, k.ch(c), k.kernel_size, k.padding, batch_norm=True)
        layers += conv_block(k.ch(c), k.ch(c), k.kernel_size, 1, batch_norm=True, pool=True)
        c_in = k.ch(c)
    return ConvNet(layers, [k.ch(VGG_HIDDEN)] * 2, k.num_classes, hidden_dropout=k.dropout)


def _imagenet_state_dict(name: str, weights: torchvision.models.WeightsEnum) -> dict:
    """torchvision's ImageNet weights, or a FerTuneError saying how to do without them."""
    try:
        return weights.get_state_dict(progress=False)
    except Exception as err:  # no network, bad cache file, hash mismatch: all mean the same
        cache = f"{torch.hub.get_dir()}/checkpoints/{weights.url.rsplit('/', 1)[-1]}"
        raise FerTuneError(
            f"could not load ImageNet weights for {name}: {err}; train with "
            f"pretrained: false or place the weights in the torch hub cache "
            f"({cache})"
        ) from None


def _gray_stem(rgb: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """ImageNet's [64, 3, 7, 7] stem as [64, 1, k, k]: RGB summed (gray = R = G = B), then
    each 7x7 tap's weight spread over the k x k taps by area overlap, which keeps every
    filter's total weight (its response to a flat patch) exactly."""
    gray = rgb.sum(dim=1, keepdim=True)
    n = gray.shape[-1]
    edges = torch.linspace(0, n, kernel_size + 1)
    pixels = torch.arange(n)
    # overlap[i, j]: length shared by output tap i (width n/k) and input tap j (width 1)
    overlap = (torch.minimum(edges[1:, None], pixels + 1.0) - torch.maximum(edges[:-1, None], pixels.float())).clamp(
        min=0
    )
    return overlap @ gray @ overlap.T


def _resnet(name: str, k: Knobs) -> nn.Module:
    """torchvision's ResNet adapted to 1x48x48, as CIFAR adaptations do: the 7x7 stride-2
    stem becomes a 1-channel kernel_size conv with stride 1 and the stem max-pool is removed
    (a 48x48 face would otherwise reach layer4 at 2x2); the basic blocks are torchvision's.
    fc -> num_classes, with dropout before it if dropout > 0.

    pretrained loads torchvision's ImageNet weights; the stem gets them via `_gray_stem`.
    freeze_depth d sets requires_grad=False on the first d groups of (stem = conv1 + bn1,
    layer1, layer2, layer3, layer4): 0 freezes nothing, 1 the stem, 2 stem + layer1, ...,
    5 everything but fc. BatchNorm running statistics of frozen groups still update in train
    mode. width cannot be applied: torchvision's block widths are fixed.
    """
    if k.width != 1.0:
        raise FerTuneError(
            f"model argument width={k.width!r} is invalid for {name}: "
            "torchvision's ResNet widths are fixed; use width 1.0"
        )
    build, weights = {
        "resnet18": (torchvision.models.resnet18, "ResNet18_Weights"),
        "resnet34": (torchvision.models.resnet34, "ResNet34_Weights"),
    }[name]
    model = build(weights=None)
    if k.pretrained:
        imagenet = getattr(torchvision.models, weights).IMAGENET1K_V1
        model.load_state_dict(_imagenet_state_dict(name, imagenet))
    rgb_stem = model.conv1.weight.detach()
    model.conv1 = nn.Conv2d(1, rgb_stem.shape[0], k.kernel_size, padding=k.padding, bias=False)
    if k.pretrained:
        with torch.no_grad():
            model.conv1.weight.copy_(_gray_stem(rgb_stem, k.kernel_size))
    model.maxpool = nn.Identity()
    fc = nn.Linear(model.fc.in_features, k.num_classes)
    model.fc = nn.Sequential(nn.Dropout(k.dropout), fc) if k.dropout > 0 else fc
    frozen = RESNET_FREEZE_ORDER[: k.freeze_depth + 1] if k.freeze_depth else ()
    for param_name, param in model.named_parameters():
        if param_name.split(".")[0] in frozen:
            param.requires_grad_(False)
    return model


@register_model
def resnet18(**kw) -> nn.Module:
    """ResNet-18 for 1x48x48 (see `_resnet`). Tandon 2020 fine-tuned an ImageNet ResNet-18
    keeping the stride-2 stem and max-pool (65.5% val); our stem is the CIFAR-style one.
    11.2M params."""
    return _resnet("resnet18", Knobs(**kw))


@register_model
def resnet34(**kw) -> nn.Module:
    """ResNet-34 for 1x48x48 (see `_resnet`); Tandon 2020: 65.8% val pretrained. 21.3M params."""
    return _resnet("resnet34", Knobs(**kw))
