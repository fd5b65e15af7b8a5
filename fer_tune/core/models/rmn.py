"""Residual Masking Network (Pham, Vu & Tran, "Facial Expression Recognition Using Residual
Masking Network", ICPR 2020): a ResNet-34 whose stages are each followed by a masking block.

Our reading of the paper's description (no code was consulted):
- trunk: torchvision's ResNet-34 as it is (7x7 stride-2 stem, max-pool, stages of 3/4/6/3
  basic blocks with 64/128/256/512 channels), gray replicated to RGB, optionally ImageNet's
  weights; the paper feeds it 224x224 faces, our default input_size (the 48 px face is resized
  on the device inside the model, as in fer_tune.core.models.transfer);
- a masking block after each of the four stages, of depth 4, 3, 2 and 1: a U-Net-like
  encoder-decoder at the stage's width. Each of its `depth` down levels is a residual basic
  block followed by a 2x2 max-pool (ceil mode, so a 3x3 map still halves); a basic block at
  the bottom; each up level upsamples bilinearly to the matching down level's size, adds that
  level's output (the skip) and applies a basic block; then BN-ReLU-1x1 conv twice and a
  sigmoid give a mask in (0, 1) of the stage's shape (the soft-mask output of the Residual
  Attention Network, Wang et al. 2017, whose (1 + mask) rule RMN takes up: the BatchNorms keep
  the sigmoid out of saturation, where a bare conv on the summed skips starts at 0 or 1);
- the stage's features are re-weighted as (1 + mask) x features: the mask can only amplify,
  so a mask near 0 leaves the trunk's features (and its pretrained behaviour) intact;
- global average pooling and the new head of the transfer models (dropout, dense_units).
The deeper masks sit where the maps are larger (56x56 after stage 1 at 224 px), so every
mask's bottom works at 7x7 or 4x4. At 48 px the maps are 12, 6, 3 and 2 pixels wide, and the
max-pools go down to 1x1.

freeze_depth counts the trunk's blocks, as for the ResNets (stem, layer1..layer4); the
masking blocks and the head are new and always train. 44.8M params (7 classes): 21.3M trunk
and head, 23.5M masks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fer_tune.core.models.registry import TRANSFER_SIZES, Knobs, register_model
from fer_tune.core.models.transfer import IMAGENET_SIZE, RESNET_BLOCKS, TransferNet, load_pretrained

MASK_DEPTHS = (4, 3, 2, 1)  # masking block depth after stages 1-4 (the paper)
STAGE_CHANNELS = (64, 128, 256, 512)  # ResNet-34's stage widths


class MaskingBlock(nn.Module):
    """Features [B, C, H, W] -> a mask in (0, 1) of the same shape, from an encoder-decoder of `depth` levels."""

    def __init__(self, channels: int, depth: int):
        super().__init__()
        from torchvision.models.resnet import BasicBlock  # lazily, as in transfer.py

        self.down = nn.ModuleList(BasicBlock(channels, channels) for _ in range(depth))
        self.bottom = BasicBlock(channels, channels)
        self.up = nn.ModuleList(BasicBlock(channels, channels) for _ in range(depth))
        self.to_logits = nn.Sequential(
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 1),  # zeroing this last layer gives a mask of 0.5 everywhere
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips: list[torch.Tensor] = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = F.max_pool2d(x, 2, ceil_mode=True)
        x = self.bottom(x)
        for i, block in enumerate(self.up):
            skip = skips[len(skips) - 1 - i]
            x = block(F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False) + skip)
        return torch.sigmoid(self.to_logits(x))


class ResidualMaskingNet(TransferNet):
    """ResNet-34 trunk, a `MaskingBlock` after each stage ((1 + mask) x features), the transfer head."""

    def __init__(self, k: Knobs):
        import torchvision  # lazily, as in transfer.py

        trunk = load_pretrained(torchvision.models.resnet34(weights=None), "rmn", k)
        features, trunk.fc = trunk.fc.in_features, nn.Identity()
        super().__init__(trunk, features, RESNET_BLOCKS, k, resize=k.input_size, imagenet_normalized=k.pretrained)
        self.masks = nn.ModuleList(MaskingBlock(c, d) for c, d in zip(STAGE_CHANNELS, MASK_DEPTHS))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.backbone
        x = t.maxpool(t.relu(t.bn1(t.conv1(self.prepare(x)))))
        x = t.layer1(x)
        x = x * (1 + self.masks[0](x))
        x = t.layer2(x)
        x = x * (1 + self.masks[1](x))
        x = t.layer3(x)
        x = x * (1 + self.masks[2](x))
        x = t.layer4(x)
        x = x * (1 + self.masks[3](x))
        return self.head(torch.flatten(t.avgpool(x), 1))


@register_model(
    imagenet=("resnet34", "ResNet34_Weights"),  # the trunk's
    max_freeze_depth=len(RESNET_BLOCKS),
    input_sizes=TRANSFER_SIZES,
    default_input_size=IMAGENET_SIZE,
    dense_units=True,
    width=False,
    kernels=False,
)
def rmn(**kw) -> nn.Module:
    """Residual Masking Network (Pham et al. 2020): see this module's docstring."""
    return ResidualMaskingNet(Knobs(**kw))
