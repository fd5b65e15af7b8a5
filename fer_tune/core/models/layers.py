"""Building blocks the model families share: conv blocks, MLP heads, a sized ConvNet."""

from __future__ import annotations

import torch
from torch import nn

from fer_tune.errors import FerTuneError


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


def separate_convs(module: nn.Module) -> nn.Module:
    """`module` with every square conv over several channels made depthwise-separable (in place):
    a k x k conv per channel, then a 1x1 conv across channels (MobileNet, Howard et al. 2017).
    MACs per output position drop from c_in * c_out * k^2 to c_in * (k^2 + c_out). A first conv
    over one gray channel stays as it is: there is nothing to separate."""
    for name, child in module.named_children():
        if isinstance(child, nn.Conv2d) and child.groups == 1 and child.in_channels > 1 and child.kernel_size[0] > 1:
            c_in, bias = child.in_channels, child.bias is not None
            depthwise = nn.Conv2d(c_in, c_in, child.kernel_size, padding=child.padding, groups=c_in, bias=False)
            setattr(module, name, nn.Sequential(depthwise, nn.Conv2d(c_in, child.out_channels, 1, bias=bias)))
        else:
            separate_convs(child)
    return module


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


def flat_size(features: nn.Module, image_size: int) -> int:
    """Features per image after `features`, measured on one dummy 1 x image_size x image_size image."""
    was_training = features.training
    features.eval()  # in train mode BatchNorm would fold the dummy into its running stats
    try:
        with torch.no_grad():
            out = features(torch.zeros(1, 1, image_size, image_size))
    except RuntimeError as err:
        raise FerTuneError(f"a {image_size}x{image_size} image shrinks to nothing in this model: {err}") from None
    finally:
        features.train(was_training)
    return out[0].numel()


class ConvNet(nn.Module):
    """features -> flatten -> MLP classifier, sized from a dummy forward pass at `image_size`."""

    def __init__(
        self,
        features: list[nn.Module],
        hidden: list[int],
        num_classes: int,
        *,
        image_size: int,
        hidden_dropout: float = 0.0,
        last_dropout: float = 0.0,
        batch_norm: bool = False,
    ):
        super().__init__()
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(
            *mlp_head(
                flat_size(self.features, image_size),
                hidden,
                num_classes,
                hidden_dropout=hidden_dropout,
                last_dropout=last_dropout,
                batch_norm=batch_norm,
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))
