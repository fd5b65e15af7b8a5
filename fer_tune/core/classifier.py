"""The exportable model: normalization inside (`Normalized`), and the deployed form (`Predictor`).

    model = build_model(config, num_classes=7, mean=0.5, std=0.25)   # [0, 1] images -> logits
    predictor = Predictor(model, tta=config.tta)                     # pixel values 0..255 -> probabilities

Keeping the train split's statistics inside the model means a saved or exported model
needs nothing else to predict; `Predictor` adds the one input convention every exported
form shares (MLflow model, TorchScript file, web API): grayscale pixel values 0..255.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from fer_tune.core.augment import check_tta, tta_views
from fer_tune.core.config import TrainConfig
from fer_tune.core.models import IMAGENET_MEAN, IMAGENET_STD, create_model
from fer_tune.data.dataset import unit_scale


class Normalized(nn.Module):
    """A classifier that takes images in [0, 1] and normalizes them: with the train split's
    statistics (floats), or per channel (sequences: ImageNet's for a pretrained backbone,
    which turns the gray batch into R = G = B channels by broadcasting)."""

    def __init__(self, net: nn.Module, mean: float | Sequence[float], std: float | Sequence[float]):
        super().__init__()
        self.net = net
        self.register_buffer("mean", _statistic(mean))
        self.register_buffer("std", _statistic(std))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net((images - self.mean) / self.std)


def _statistic(value: float | Sequence[float]) -> torch.Tensor:
    # A scalar stays a 0-d buffer, as in every checkpoint written before per-channel statistics.
    tensor = torch.tensor(value, dtype=torch.float32)
    return tensor.view(-1, 1, 1) if tensor.dim() else tensor


def build_model(config: TrainConfig, num_classes: int, mean: float, std: float) -> Normalized:
    """The model of `config`, normalizing inside: with the train split's `mean` and `std`, or
    ImageNet's per channel for a pretrained ImageNet backbone (see fer_tune.core.models.transfer)."""
    net = create_model(
        config.model,
        num_classes=num_classes,
        kernel_size=config.kernel_size,
        padding=config.resolved_padding,
        dropout=config.dropout,
        width=config.width,
        separable=config.separable,
        pretrained=config.pretrained,
        freeze_depth=config.freeze_depth,
        input_size=config.input_size,
        dense_units=config.dense_units,
        image_size=config.image_size,
    )
    if getattr(net, "imagenet_normalized", False):
        return Normalized(net, IMAGENET_MEAN, IMAGENET_STD)
    return Normalized(net, mean, std)


class Predictor(nn.Module):
    """Pixel values 0..255 (uint8 or float, [N, 48, 48] or [N, 1, 48, 48]) -> probabilities [N, C].

    Each face's probabilities are the mean over its test-time views (`tta`, as `evaluate` scores
    them): `none`; `flip`, the face and its mirror image (faces are left-right symmetric and
    training flips them too, so the average is a free, steadier vote); `tencrop`, ten 40 px
    crops, for a model trained on random 40 px crops (config.tta == "tencrop"). The input is
    always the 48 px face.
    """

    def __init__(self, model: nn.Module, tta: str = "flip"):
        super().__init__()
        self.model = model  # a Normalized classifier: takes [0, 1] images, normalizes inside
        self.tta = check_tta(tta)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() == 3:
            images = images.unsqueeze(1)
        images = unit_scale(images)
        views = tta_views(images, self.tta)
        probabilities = self.model(torch.cat(views)).softmax(1)  # one batch of every view
        return probabilities.view(len(views), images.shape[0], -1).mean(0)
