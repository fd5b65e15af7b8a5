"""The seed projects' CNNs, trained from scratch on 1 x 48 x 48 faces.

Knobs (checked by `Knobs` and the registry's `knob_problem`):
- kernel_size in {2, 3} and padding in {0, 1}: Tandon 2020 (table 4) compares 2x2 filters
  without padding against 3x3 filters with padding 1. They apply to every 2x2/3x3 conv of
  the source architectures; a source's other convs (deep's 5x5) keep their size.
- dropout in [0, 1): used at the places the source puts dropout; models whose source has
  none get one nn.Dropout before the classifier. 0 adds no Dropout module at all.
- width > 0: multiplies every conv channel count and hidden linear width (rounded, >= 1).
- separable: every conv over several channels becomes depthwise-separable (layers.separate_convs):
  an efficiency axis for multi-objective sweeps (fewer MACs and parameters, usually less accuracy).
- image_size: the classifier is sized for it (48, or 40 for ten-crop's training crops).

Where a source is public code we follow it layer for layer; each builder's docstring says
which. Parameter counts are for 7 classes at the default knobs.
"""

from __future__ import annotations

from torch import nn

from fer_tune.core.models.layers import ConvNet, conv_block
from fer_tune.core.models.registry import Knobs, register_model

VGG_HIDDEN = 1024  # Khaireddin & Chen use 4096; 1024 cuts the head from 36M to 6M params
# so a search trial stays trainable on a CPU; width scales it like the convs.


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
    k = Knobs(**kw)
    layers, c_in = [], 1
    for c in (16, 32, 64):
        layers += conv_block(c_in, k.ch(c), k.kernel_size, k.padding, pool=True)
        c_in = k.ch(c)
    return ConvNet(
        layers + [nn.AdaptiveAvgPool2d(1)], [], k.num_classes, image_size=k.image_size, last_dropout=k.dropout
    )


@register_model
def model2(**kw) -> nn.Module:
    """Tandon 2020 "model 2": 3 x (conv-ReLU, conv-ReLU, maxpool) with 32/64/128 channels,
    global average pool, MLP 128 -> 1024 -> 1024 -> classes (ReLU). Found code:
    FER_basic_model2 (2x2, padding 0) / FER_basic_model2_new (3x3, padding 1) in
    FER_Experiments.ipynb; no dropout there, so dropout > 0 goes before the classifier.
    1.5M params."""
    k = Knobs(**kw)
    return ConvNet(
        _tandon_pairs(k, (32, 64, 128), dropout=0.0),
        [k.ch(1024), k.ch(1024)],
        k.num_classes,
        image_size=k.image_size,
        last_dropout=k.dropout,
    )


@register_model
def model3(**kw) -> nn.Module:
    """Tandon 2020 "model 3" (the report's best, 68.6% val at 3x3): model 2 with 64/128/256
    channels, dropout after each pool and after each hidden linear, MLP 256 -> 512 -> 256 ->
    classes. Found code: FER_basic_model3 / FER_basic_model3_new in FER_Experiments.ipynb,
    which used dropout 0.5 at all five places. 1.4M params."""
    k = Knobs(**kw)
    return ConvNet(
        _tandon_pairs(k, (64, 128, 256), dropout=k.dropout),
        [k.ch(512), k.ch(256)],
        k.num_classes,
        image_size=k.image_size,
        hidden_dropout=k.dropout,
    )


@register_model
def shallow(**kw) -> nn.Module:
    """Alizadeh & Fazel 2017 (arXiv 1704.06756) shallow baseline: conv 32 (BN, ReLU,
    dropout, no pool), conv 64 (BN, ReLU, 2x2 max-pool, dropout), FC 512 (ReLU), classifier.
    Our reading of the paper's text (no code published); the paper names no FC dropout.
    Only one pool, so the 24x24x64 map makes the FC layer big: 18.9M params."""
    k = Knobs(**kw)
    layers = conv_block(1, k.ch(32), k.kernel_size, k.padding, batch_norm=True, dropout=k.dropout) + conv_block(
        k.ch(32), k.ch(64), k.kernel_size, k.padding, batch_norm=True, pool=True, dropout=k.dropout
    )
    return ConvNet(layers, [k.ch(512)], k.num_classes, image_size=k.image_size)


@register_model
def deep(**kw) -> nn.Module:
    """Alizadeh & Fazel 2017 deep baseline: convs 64 (3x3), 128 (5x5), 512 (3x3), 512 (3x3),
    each with BN, ReLU, 2x2 max-pool and dropout; FC 256 and FC 512, each with BN, ReLU and
    dropout; classifier. Our reading of the paper's text. The 5x5 conv keeps its size and
    uses padding 2 (the paper gives none) so 48x48 survives all four pools with every
    kernel/padding knob. 4.5M params."""
    k = Knobs(**kw)
    bn = dict(batch_norm=True, pool=True, dropout=k.dropout)
    layers = (
        conv_block(1, k.ch(64), k.kernel_size, k.padding, **bn)
        + conv_block(k.ch(64), k.ch(128), 5, 2, **bn)
        + conv_block(k.ch(128), k.ch(512), k.kernel_size, k.padding, **bn)
        + conv_block(k.ch(512), k.ch(512), k.kernel_size, k.padding, **bn)
    )
    return ConvNet(
        layers,
        [k.ch(256), k.ch(512)],
        k.num_classes,
        image_size=k.image_size,
        hidden_dropout=k.dropout,
        batch_norm=True,
    )


@register_model
def custom6(**kw) -> nn.Module:
    """Tynasello's custom CNN: convs 32, 64 | pool | 128, 128 | pool | 64, 32 | pool (ReLU after
    each), MLP -> 512 -> 64 -> classes with dropout after both hidden layers. Found code:
    CustomModel in Tynasello/facial-expression-classification src/models/models.py (3x3
    convs, dropout 0.5, RGB input; its first conv is unpadded, here all six take the
    padding knob). 1.0M params."""
    k = Knobs(**kw)
    layers, c_in = [], 1
    for i, c in enumerate((32, 64, 128, 128, 64, 32)):
        layers += conv_block(c_in, k.ch(c), k.kernel_size, k.padding, pool=i % 2 == 1)
        c_in = k.ch(c)
    return ConvNet(layers, [k.ch(512), k.ch(64)], k.num_classes, image_size=k.image_size, hidden_dropout=k.dropout)


@register_model
def vgg(**kw) -> nn.Module:
    """Khaireddin & Chen 2021 VGG variant: 4 stages of 2 x (conv-BN-ReLU) + 2x2 max-pool with
    64/128/256/512 channels, FC -> FC (ReLU, dropout after each), classifier. Found code:
    models/vgg.py in usef-kh/fer (dropout 0.2, 40x40 crops). Deviations: hidden width
    VGG_HIDDEN=1024 instead of 4096 (CPU-trainable search); the padding knob sets the first
    conv of each stage while the second keeps the paper's padding 1, because eight unpadded
    3x3 convs and four pools shrink 48x48 to nothing before the last stage. 10.5M params."""
    k = Knobs(**kw)
    layers, c_in = [], 1
    for c in (64, 128, 256, 512):
        layers += conv_block(c_in, k.ch(c), k.kernel_size, k.padding, batch_norm=True)
        layers += conv_block(k.ch(c), k.ch(c), k.kernel_size, 1, batch_norm=True, pool=True)
        c_in = k.ch(c)
    return ConvNet(layers, [k.ch(VGG_HIDDEN)] * 2, k.num_classes, image_size=k.image_size, hidden_dropout=k.dropout)
