"""The exportable model: normalization inside (`Normalized`), and the deployed form (`Predictor`).

    model = build_model(config, num_classes=7, mean=0.5, std=0.25)   # [0, 1] images -> logits
    predictor = Predictor(model, flip_tta=True)                      # pixel values 0..255 -> probabilities

Keeping the train split's statistics inside the model means a saved or exported model
needs nothing else to predict; `Predictor` adds the one input convention every exported
form shares (MLflow model, TorchScript file, web API): grayscale pixel values 0..255.
"""

from __future__ import annotations

import torch
from torch import nn

from fer_tune.core.config import TrainConfig
from fer_tune.core.models import create_model


class Normalized(nn.Module):
    """A classifier that takes images in [0, 1] and normalizes them with the train split's statistics."""

    def __init__(self, net: nn.Module, mean: float, std: float):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean))
        self.register_buffer("std", torch.tensor(std))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net((images - self.mean) / self.std)


def build_model(config: TrainConfig, num_classes: int, mean: float, std: float) -> Normalized:
    net = create_model(
        config.model,
        num_classes=num_classes,
        kernel_size=config.kernel_size,
        padding=config.resolved_padding,
        dropout=config.dropout,
        width=config.width,
        pretrained=config.pretrained,
        freeze_depth=config.freeze_depth,
    )
    return Normalized(net, mean, std)


class Predictor(nn.Module):
    """Pixel values 0..255 (uint8 or float, [N, 48, 48] or [N, 1, 48, 48]) -> probabilities [N, C].

    With `flip_tta`, each face's probabilities are averaged with its mirror image's: faces are
    left-right symmetric and training flips them too, so the average is a free, steadier vote.
    """

    def __init__(self, model: nn.Module, flip_tta: bool):
        super().__init__()
        self.model = model  # a Normalized classifier: takes [0, 1] images, normalizes inside
        self.flip_tta = flip_tta

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() == 3:
            images = images.unsqueeze(1)
        images = images.float() / 255.0
        probabilities = self.model(images).softmax(1)
        if self.flip_tta:
            probabilities = (probabilities + self.model(images.flip(-1)).softmax(1)) / 2
        return probabilities
