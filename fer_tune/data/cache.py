"""Cache parsed datasets as tensor files, so a second load takes a fraction of a second.

    >>> data = cached_dataset("fer2013-v1-<sha256>", lambda: read_fer2013_csv(path))

Files live in $FER_TUNE_CACHE, else ~/.cache/fer-tune/, one `<key>.pt` per dataset: a
torch.save'd dict of uint8/int64 tensors, the class names and the source. The key must
change whenever the data could (loaders hash file contents or paths+sizes+mtimes). A
missing, stale or corrupt file is rebuilt, never an error.
"""

from __future__ import annotations

import contextlib
import os
import re
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

from fer_tune.data.dataset import FerDataset, Split
from fer_tune.errors import FerTuneError

CACHE_VERSION = 1  # bump when the file layout below changes


def cache_dir() -> Path:
    """Where cached datasets live: $FER_TUNE_CACHE, else ~/.cache/fer-tune.

    An empty or relative HOME (HOME='' made it /.cache/fer-tune) is one line: the cache would land in
    a folder the user never chose.
    """
    if os.environ.get("FER_TUNE_CACHE"):
        return Path(os.environ["FER_TUNE_CACHE"])
    home = os.environ.get("HOME", str(Path.home()))
    if not home or not Path(home).is_absolute():
        raise FerTuneError(
            f"HOME {home!r}: not an absolute path, so there is no ~/.cache for parsed datasets; "
            "set HOME, or FER_TUNE_CACHE to the folder to cache them in"
        )
    return Path(home) / ".cache" / "fer-tune"


def cache_path(key: str) -> Path:
    return cache_dir() / (re.sub(r"[^A-Za-z0-9._-]", "_", key) + ".pt")


def cached_dataset(key: str, build: Callable[[], FerDataset]) -> FerDataset:
    """Load the dataset cached under `key`, or `build()` it and cache it."""
    path = cache_path(key)
    if path.exists():
        data = _load(path, key)
        if data is not None:
            return data
    data = build()
    _save(path, key, data)
    return data


def _load(path: Path, key: str) -> FerDataset | None:
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        if saved["version"] != CACHE_VERSION or saved["key"] != key:
            return None
        train, validation, test = (
            Split(saved[f"{name}_images"], saved[f"{name}_labels"]) if f"{name}_images" in saved else None
            for name in ("train", "validation", "test")
        )
        return FerDataset(train, validation, test, tuple(saved["classes"]), saved["source"])
    # A truncated or foreign file fails in many ways (unpickling, zip, key, shape
    # assertions); all of them mean "rebuild it".
    except Exception:  # noqa: BLE001
        return None


def _save(path: Path, key: str, data: FerDataset) -> None:
    saved = {"version": CACHE_VERSION, "key": key, "classes": list(data.classes), "source": data.source}
    for name, split in data.splits().items():
        # clone: torch.save writes a view's whole storage, not just the view
        saved[f"{name}_images"] = split.images.contiguous().clone()
        saved[f"{name}_labels"] = split.labels.contiguous().clone()
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(saved, tmp)
        os.replace(tmp, path)  # atomic: parallel trials never read a half-written file
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        warnings.warn(f"could not cache dataset at {path}: {exc}", stacklevel=3)
