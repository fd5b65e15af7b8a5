"""torchvision's ImageNet weights: fetched once by the sweep's driver, read by trials from the local cache.

Trials never download: they may run on machines without network, and many trials fetching
100 MB at once is a failure mode of its own. The driver fetches a missing file once, before the
first trial, with torchvision's own URL and torch.hub's download and checksum (the SHA-256
prefix in the file name), into the file torchvision itself caches,
`torch.hub.get_dir()/checkpoints/<file>` (TORCH_HOME moves it). Where the network does not
allow it, `check_pretrained_available` says in one line where the file is missing and how to get it.

    fetch_pretrained("resnet50")                # on the driver: download if missing (FerTuneError offline)
    check_pretrained_available("resnet50")      # FerTuneError if missing
    state = imagenet_state_dict("resnet50")     # torchvision's resnet50 state dict
"""

from __future__ import annotations

import socket
import urllib.error
from pathlib import Path
from typing import Any

import torch

from fer_tune.core.models.registry import capabilities, models_taking
from fer_tune.errors import FerTuneError

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # torchvision's ImageNet normalization, per RGB channel
IMAGENET_STD = (0.229, 0.224, 0.225)
WEIGHTS = "IMAGENET1K_V1"  # the classic release of every backbone here (torchvision's names)
DOWNLOAD_TIMEOUT_S = 20.0  # per connect and per read: a machine without network fails in seconds, not minutes


def weights_url(name: str) -> str:
    """torchvision's download URL of model `name`'s ImageNet weights."""
    imagenet = capabilities(name).imagenet
    if imagenet is None:
        raise FerTuneError(
            f"model {name!r} has no pretrained weights; pretrained applies to {models_taking('pretrained')}"
        )
    import torchvision  # lazily, as in transfer.py: its import costs seconds every process would pay

    return getattr(torchvision.models, imagenet[1])[WEIGHTS].url


def weights_path(name: str) -> Path:
    """Where model `name`'s ImageNet weights must be: torchvision's own cache file name."""
    return Path(torch.hub.get_dir()) / "checkpoints" / weights_url(name).rsplit("/", 1)[-1]


def fetch_pretrained(name: str) -> None:
    """Download model `name`'s ImageNet weights into the cache unless they are there (on the driver, once).

    Raises check_pretrained_available's one-line FerTuneError, with the download's reason, where the
    network does not allow it.
    """
    path = weights_path(name)
    if path.is_file():
        return
    try:
        download_weights(weights_url(name), path)
    except FerTuneError as err:
        try:
            check_pretrained_available(name)
        except FerTuneError as missing:
            raise FerTuneError(f"{missing} [download failed: {err}]") from None


def download_weights(url: str, path: Path) -> None:
    """torch.hub's download of `url` to `path`, checked against the SHA-256 prefix in the file name
    (as torchvision checks it), with a timeout; a one-line FerTuneError where it fails, and no file."""
    match = torch.hub.HASH_REGEX.search(url.rsplit("/", 1)[-1])
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:  # TORCH_HOME a file, or a folder this user cannot write
        raise FerTuneError(
            f"cannot make {path.parent} ({err.strerror}); set TORCH_HOME to a folder this user can write"
        ) from None
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)  # torch.hub's urlopen takes no timeout of its own
    try:
        torch.hub.download_url_to_file(url, str(path), hash_prefix=match.group(1) if match else None, progress=False)
    except urllib.error.HTTPError as err:
        raise FerTuneError(f"{url}: HTTP {err.code} {err.reason}") from None
    except urllib.error.URLError as err:  # no network: a name that does not resolve, a refused connection
        raise FerTuneError(f"{url}: {err.reason}") from None
    except (OSError, RuntimeError) as err:  # a timeout, a refused connection, or a checksum mismatch
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise FerTuneError(f"{url}: {reason}") from None
    finally:
        socket.setdefaulttimeout(previous)


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
            f"ImageNet weights for {name} not found: expected {path.name} at {path} (trials never download); "
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
