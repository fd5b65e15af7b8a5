"""torchvision's ImageNet weights, read from the local torch hub cache only.

A sweep never downloads: trials run on machines that may have no network, and many trials
fetching 100 MB at once is a failure mode of its own. The weights of model `name` are the
file torchvision itself caches, `torch.hub.get_dir()/checkpoints/<file>` (TORCH_HOME moves
it); `check_pretrained_available` says in one line where it is missing and how to fetch it.

    check_pretrained_available("resnet50")      # before a sweep starts: FerTuneError if missing
    state = imagenet_state_dict("resnet50")     # torchvision's resnet50 state dict
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torchvision

from fer_tune.core.models.registry import capabilities, models_taking
from fer_tune.errors import FerTuneError

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # torchvision's ImageNet normalization, per RGB channel
IMAGENET_STD = (0.229, 0.224, 0.225)
WEIGHTS = "IMAGENET1K_V1"  # the classic release of every backbone here (torchvision's names)


def weights_path(name: str) -> Path:
    """Where model `name`'s ImageNet weights must be: torchvision's own cache file name."""
    imagenet = capabilities(name).imagenet
    if imagenet is None:
        raise FerTuneError(
            f"model {name!r} has no pretrained weights; pretrained applies to {models_taking('pretrained')}"
        )
    url = getattr(torchvision.models, imagenet[1])[WEIGHTS].url
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]


def check_pretrained_available(model: Any) -> None:
    """Raise a one-line FerTuneError unless the ImageNet weights `model` needs are in the local cache.

    `model` is a model name, or a config with `.model` and `.pretrained` (a TrainConfig): a
    config with pretrained false needs nothing. Cheap (a stat), so a sweep driver can call
    it for every candidate model before the first trial starts.
    """
    name = model if isinstance(model, str) else model.model
    if not isinstance(model, str) and not model.pretrained:
        return
    path = weights_path(name)
    if not path.is_file():
        builder = capabilities(name).imagenet[0]
        fetch = f"python -c \"import torchvision; torchvision.models.{builder}(weights='{WEIGHTS}')\""
        raise FerTuneError(
            f"ImageNet weights for {name} not found: expected {path.name} at {path} (fer-tune never downloads); "
            f"on a machine with internet run {fetch}, then copy ~/.cache/torch/hub/checkpoints/{path.name} to "
            f"{path.parent} (or point TORCH_HOME at a folder holding hub/checkpoints/{path.name}), "
            "or train with pretrained: false"
        )


def imagenet_state_dict(name: str) -> dict[str, torch.Tensor]:
    """The torchvision state dict of model `name`'s backbone, from the local cache only."""
    check_pretrained_available(name)
    path = weights_path(name)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated copy, or not a state dict at all: same remedy
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]  # torch's are paragraphs
        raise FerTuneError(
            f"could not read ImageNet weights for {name} from {path} ({reason}); fetch the file again"
        ) from None


def load_into(module: torch.nn.Module, name: str, state: dict[str, torch.Tensor]) -> None:
    """`module.load_state_dict(state)`, with a one-line error naming the file when they do not fit."""
    try:
        module.load_state_dict(state)
    except RuntimeError as err:
        first = str(err).replace("\n", " ").replace("\t", "")[:300]
        raise FerTuneError(
            f"ImageNet weights in {weights_path(name)} do not fit {name}: {first}; fetch the file again"
        ) from None
