"""torchvision backbones with a new head: transfer learning as Tynasello and Dzubak did it.

Every model here is a `TransferNet`: a torchvision trunk (its ImageNet classifier dropped),
global average pooling and a new head, [Linear(dense_units) -> ReLU -> Dropout] -> Linear,
or Dropout -> Linear when dense_units is 0 (Dzubak's models 5-8 add the dense layer).

Knobs, one meaning for every model (the registry's `knob_problem` checks their ranges):
- pretrained: torchvision's ImageNet weights (IMAGENET1K_V1), read from the torch hub cache
  only (fer_tune.core.models.imagenet); the head is always new.
- freeze_depth: how many of the backbone's LAST blocks train; the head always trains.
  0 = head only (a fixed feature extractor), 1 = the last block too, 2 = the last two, ...,
  ALL_BLOCKS (-1, the default) or the block count = everything. A model's blocks are listed
  in its docstring (Dzubak's ladder: frozen, last block, last two, last three, all). Frozen
  blocks stay in eval mode while the model trains (`TransferNet.train`): their BatchNorm
  statistics and stochastic depth are those of the fixed feature extractor they are.
- input_size (ImageNet backbones): the batch is resized on the device, bilinearly, from the
  images it gets (48 px, or ten-crop's 40) to input_size, inside the model, so an exported
  model still takes 48 px faces. 224 is the size the ImageNet weights were trained at.
- dense_units: the width of the extra dense layer, 0 for none. dropout: in the head.

Normalization: a gray face replicated to RGB (R = G = B) is what these trunks see. With
pretrained weights `build_model` (fer_tune.core.classifier) normalizes each channel with
ImageNet's mean and std instead of the train split's, so the trunk's first layer gets the
input distribution its weights were trained on (a gray pixel v becomes (v - mean_c) / std_c,
exactly what torchvision's transforms give an RGB image with R = G = B = v). The 3-channel
tensor then arrives here already; a 1-channel input (a from-scratch trunk, or a bare
`create_model`) is replicated here.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from fer_tune.core.models.imagenet import imagenet_state_dict, load_into
from fer_tune.core.models.layers import mlp_head
from fer_tune.core.models.registry import ALL_BLOCKS, TRANSFER_SIZES, Knobs, register_model

# torchvision is imported where a backbone is built, not here: importing it pulls in torch._dynamo (3.4 s
# on a 2-core machine), and every Ray worker and driver imports this registry, most never building one.

RESNET_BLOCKS = (("conv1", "bn1"), ("layer1",), ("layer2",), ("layer3",), ("layer4",))  # stem, 4 stages
VGG_BLOCKS = 5  # conv stages, each ending in a 2x2 max-pool (Keras' block1..block5)
EFFICIENTNET_BLOCKS = 9  # torchvision's features: stem conv, 7 MBConv stages, the 1x1 conv to 1280
IMAGENET_SIZE = 224  # the input size the ImageNet weights were trained at: the default input_size


class TransferNet(nn.Module):
    """[B, 1 or 3, H, W] normalized images -> [resize] -> [gray to RGB] -> backbone -> head -> logits."""

    # TorchScript cannot type an empty list attribute, and forward never reads it.
    __jit_ignored_attributes__ = ["frozen"]

    def __init__(
        self,
        backbone: nn.Module,
        features: int,
        blocks: tuple[tuple[str, ...], ...],
        k: Knobs,
        *,
        in_channels: int = 3,
        resize: int = 0,
        imagenet_normalized: bool = False,
    ):
        super().__init__()
        self.backbone = backbone  # images -> pooled features [B, features]
        self.head = nn.Sequential(*head_layers(features, k))
        self.in_channels = in_channels
        self.resize = resize  # 0: the backbone takes the images at their own size
        self.imagenet_normalized = imagenet_normalized  # build_model reads it (see the module docstring)
        self.frozen = freeze(backbone, blocks, k.freeze_depth)

    def train(self, mode: bool = True) -> TransferNet:
        super().train(mode)
        for name in self.frozen:
            self.backbone.get_submodule(name).eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(self.prepare(x)))

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """The batch as the backbone takes it: resized to `resize`, with `in_channels` channels."""
        if self.resize > 0 and (x.shape[-2] != self.resize or x.shape[-1] != self.resize):
            x = F.interpolate(x, size=(self.resize, self.resize), mode="bilinear", align_corners=False)
        if x.shape[1] != self.in_channels:
            x = x.expand(-1, self.in_channels, -1, -1)  # gray -> R = G = B (a view: no copy)
        return x


def head_layers(n_in: int, k: Knobs) -> list[nn.Module]:
    """The new classifier: [Linear(dense_units) -> ReLU -> Dropout] -> Linear, or Dropout -> Linear."""
    if k.dense_units:
        return mlp_head(n_in, [k.dense_units], k.num_classes, hidden_dropout=k.dropout)
    return mlp_head(n_in, [], k.num_classes, last_dropout=k.dropout)


def freeze(backbone: nn.Module, blocks: tuple[tuple[str, ...], ...], freeze_depth: int) -> list[str]:
    """Freeze all but the last `freeze_depth` blocks (ALL_BLOCKS: none); returns the frozen modules' names."""
    trainable = len(blocks) if freeze_depth == ALL_BLOCKS else freeze_depth
    frozen = [name for block in blocks[: len(blocks) - trainable] for name in block]
    for name in frozen:
        backbone.get_submodule(name).requires_grad_(False)
    return frozen


def load_pretrained(model: nn.Module, name: str, k: Knobs) -> nn.Module:
    """`model` (a torchvision builder's output) with its ImageNet weights loaded when k.pretrained."""
    if k.pretrained:
        load_into(model, name, imagenet_state_dict(name))
    return model


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


def _cifar_resnet(name: str, k: Knobs) -> TransferNet:
    """torchvision's ResNet adapted to 1x48x48, as CIFAR adaptations do: the 7x7 stride-2 stem
    becomes a 1-channel kernel_size conv with stride 1 and the stem max-pool is removed (a
    48x48 face would otherwise reach layer4 at 2x2; here layer1 works at 48x48, as an
    ImageNet stem does at 192 px, so there is no input_size to choose); the blocks are
    torchvision's. Pretrained: ImageNet's stem reaches the 1-channel conv through `_gray_stem`
    (RGB summed: the replication to R = G = B folded into the weights), and the input keeps
    the train split's normalization, which gives faces zero mean and unit variance as ImageNet's
    gives ImageNet photos. Blocks for freeze_depth: stem (conv1 + bn1), layer1..layer4.
    """
    import torchvision  # lazily: see the note at the imports

    model = load_pretrained(getattr(torchvision.models, name)(weights=None), name, k)
    rgb_stem = model.conv1.weight.detach()
    model.conv1 = nn.Conv2d(1, rgb_stem.shape[0], k.kernel_size, padding=k.padding, bias=False)
    if k.pretrained:
        with torch.no_grad():
            model.conv1.weight.copy_(_gray_stem(rgb_stem, k.kernel_size))
    model.maxpool = nn.Identity()
    features, model.fc = model.fc.in_features, nn.Identity()
    return TransferNet(model, features, RESNET_BLOCKS, k, in_channels=1)


CIFAR_RESNET = dict(max_freeze_depth=len(RESNET_BLOCKS), dense_units=True, width=False)


@register_model(imagenet=("resnet18", "ResNet18_Weights"), **CIFAR_RESNET)
def resnet18(**kw) -> nn.Module:
    """ResNet-18 for 1x48x48 (see `_cifar_resnet`). Tandon 2020 fine-tuned an ImageNet
    ResNet-18 keeping the stride-2 stem and max-pool (65.5% val); our stem is the CIFAR-style
    one. 11.2M params."""
    return _cifar_resnet("resnet18", Knobs(**kw))


@register_model(imagenet=("resnet34", "ResNet34_Weights"), **CIFAR_RESNET)
def resnet34(**kw) -> nn.Module:
    """ResNet-34 for 1x48x48 (see `_cifar_resnet`); Tandon 2020: 65.8% val pretrained. 21.3M params."""
    return _cifar_resnet("resnet34", Knobs(**kw))


def _imagenet_net(backbone: nn.Module, features: int, blocks, k: Knobs) -> TransferNet:
    return TransferNet(backbone, features, blocks, k, resize=k.input_size, imagenet_normalized=k.pretrained)


TRANSFER = dict(
    input_sizes=TRANSFER_SIZES, default_input_size=IMAGENET_SIZE, dense_units=True, width=False, kernels=False
)


@register_model(imagenet=("resnet50", "ResNet50_Weights"), max_freeze_depth=len(RESNET_BLOCKS), **TRANSFER)
def resnet50(**kw) -> nn.Module:
    """torchvision's ResNet-50 as it is (7x7 stride-2 stem, max-pool, bottleneck stages), the
    gray face replicated to RGB. Tynasello's transfer model, which trained it whole (SGD,
    momentum 0.9) at 48 px on a 128-128 MLP head. Blocks for freeze_depth: stem (conv1 +
    bn1), layer1..layer4. 23.5M params (7 classes, no dense layer)."""
    k = Knobs(**kw)
    import torchvision  # lazily: see the note at the imports

    model = load_pretrained(torchvision.models.resnet50(weights=None), "resnet50", k)
    features, model.fc = model.fc.in_features, nn.Identity()
    return _imagenet_net(model, features, RESNET_BLOCKS, k)


def _vgg16(name: str, batch_norm: bool, k: Knobs) -> TransferNet:
    """VGG-16's 13 convs (configuration D) in 5 blocks, the ImageNet classifier (124M of its 138M
    params) never built: global average pooling and the new head replace it, as Keras'
    include_top=False with pooling does for Dzubak."""
    # torchvision's own layer list and initialization; building vgg16() whole would spend ~2 s
    # initializing the classifier we drop.
    import torchvision  # lazily: see the note at the imports

    layers = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["D"], batch_norm=batch_norm)
    for m in layers.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    if k.pretrained:
        state = imagenet_state_dict(name)
        prefix = "features."
        load_into(layers, name, {key[len(prefix) :]: v for key, v in state.items() if key.startswith(prefix)})
    blocks, current = OrderedDict(), []
    for layer in layers:
        current.append(layer)
        if isinstance(layer, nn.MaxPool2d):
            blocks[f"block{len(blocks) + 1}"] = nn.Sequential(*current)
            current = []
    backbone = nn.Sequential(blocks)
    backbone.add_module("pool", nn.AdaptiveAvgPool2d(1))
    backbone.add_module("flatten", nn.Flatten(1))
    return _imagenet_net(backbone, 512, tuple((block,) for block in blocks), k)


@register_model(imagenet=("vgg16", "VGG16_Weights"), max_freeze_depth=VGG_BLOCKS, **TRANSFER)
def vgg16(**kw) -> nn.Module:
    """VGG-16 without BatchNorm (Dzubak's first backbone; see `_vgg16`). Blocks for
    freeze_depth: block1..block5. 14.7M params (7 classes, no dense layer)."""
    return _vgg16("vgg16", False, Knobs(**kw))


@register_model(imagenet=("vgg16_bn", "VGG16_BN_Weights"), max_freeze_depth=VGG_BLOCKS, **TRANSFER)
def vgg16_bn(**kw) -> nn.Module:
    """VGG-16 with BatchNorm after every conv (see `_vgg16`). Blocks for freeze_depth:
    block1..block5. 14.7M params."""
    return _vgg16("vgg16_bn", True, Knobs(**kw))


@register_model(
    imagenet=("efficientnet_b0", "EfficientNet_B0_Weights"), max_freeze_depth=EFFICIENTNET_BLOCKS, **TRANSFER
)
def efficientnet_b0(**kw) -> nn.Module:
    """torchvision's EfficientNet-B0 (Dzubak's third backbone): its classifier (dropout 0.2,
    Linear) replaced by the new head. Blocks for freeze_depth: features.0 (stem) ..
    features.8 (the 1x1 conv to 1280 channels), torchvision's Keras-like stages. 4.0M params."""
    k = Knobs(**kw)
    import torchvision  # lazily: see the note at the imports

    model = load_pretrained(torchvision.models.efficientnet_b0(weights=None), "efficientnet_b0", k)
    backbone = nn.Sequential(OrderedDict(features=model.features, pool=model.avgpool, flatten=nn.Flatten(1)))
    blocks = tuple((f"features.{i}",) for i in range(EFFICIENTNET_BLOCKS))
    return _imagenet_net(backbone, model.classifier[1].in_features, blocks, k)
