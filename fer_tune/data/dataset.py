"""The in-memory dataset every loader returns: compact uint8 tensors per split.

All of FER2013 is 35,887 x 48 x 48 bytes, about 83 MB, so it lives whole in
memory (and, for training, on the training device); nothing is decoded per
batch. Normalization statistics come from the train split only (Tandon 2020).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import torch

from fer_tune.constants import IMAGE_SIZE, PIXEL_MAX
from fer_tune.errors import FerTuneError


def unit_scale(images: torch.Tensor, pixel_max: int = PIXEL_MAX) -> torch.Tensor:
    """Pixel values 0..PIXEL_MAX (uint8 or float) -> a new float32 tensor in [0, 1], the scale every model takes.

    (`pixel_max` is an argument only because TorchScript, which scripts the deployed `Predictor`, reads a
    default value but not a global.)"""
    return images.to(torch.float32, copy=True).div_(pixel_max)


@dataclass(frozen=True)
class Split:
    """One split: `images` uint8 [N, 48, 48], `labels` int64 [N]."""

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self):
        assert self.images.dtype == torch.uint8, self.images.dtype
        assert self.images.shape[1:] == (IMAGE_SIZE, IMAGE_SIZE), self.images.shape
        assert self.labels.shape == (self.images.shape[0],), self.labels.shape

    def __len__(self) -> int:
        return self.images.shape[0]

    def class_counts(self, num_classes: int) -> list[int]:
        return torch.bincount(self.labels, minlength=num_classes).tolist()


@dataclass(frozen=True)
class FerDataset:
    """Train/validation/test splits plus what a trainer needs to know about them.

    `test` is None where the source has no labelled test split (Kaggle's
    train.csv/test.csv variant). `mean`/`std` are of train pixels scaled to [0, 1].
    `sources` describes each source of a merged dataset (fer_tune.data.sources);
    empty for a dataset read from one source.
    """

    train: Split
    validation: Split
    test: Split | None
    classes: tuple[str, ...]
    source: str  # a human-readable description: a path, or "synthetic(n=..., seed=...)"
    sources: tuple[dict, ...] = ()  # merged datasets: per source its path, role, fingerprint and counts
    mean: float = field(init=False)
    std: float = field(init=False)

    def __post_init__(self):
        # From the 256-bin histogram: 4x faster than float statistics over every pixel, equal to 1e-7.
        counts = torch.bincount(self.train.images.flatten(), minlength=PIXEL_MAX + 1).double()
        levels = torch.arange(PIXEL_MAX + 1, dtype=torch.float64) / PIXEL_MAX  # unit_scale, in float64
        mean = (counts * levels).sum() / counts.sum()
        std = ((counts * (levels - mean) ** 2).sum() / (counts.sum() - 1)).sqrt()
        object.__setattr__(self, "mean", mean.item())
        object.__setattr__(self, "std", std.item())

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def splits(self) -> dict[str, Split]:
        named = {"train": self.train, "validation": self.validation}
        if self.test is not None:
            named["test"] = self.test
        return named

    def fingerprint(self) -> str:
        """A short content hash: two datasets with equal fingerprints hold the same data.

        Merged datasets hash their merged splits, so a change in any source's contribution changes it.
        """
        digest = hashlib.sha256(",".join(self.classes).encode())
        for name, split in self.splits().items():
            digest.update(name.encode())
            digest.update(split.images.contiguous().numpy().tobytes())
            digest.update(split.labels.contiguous().numpy().tobytes())
        return digest.hexdigest()[:16]

    def counts(self) -> dict[str, dict[str, int]]:
        """Images per split and class: {"train": {"angry": 3995, ...}, ...}."""
        return {
            name: dict(zip(self.classes, split.class_counts(self.num_classes))) for name, split in self.splits().items()
        }

    def summary(self) -> dict:
        """Counts per split and class, the normalization statistics, and each source's counts and fingerprint."""
        counts = self.counts()
        own = {"source": self.source, "role": "primary", "fingerprint": self.fingerprint(), "splits": counts}
        return {
            "source": self.source,
            "classes": list(self.classes),
            "mean": round(self.mean, 4),
            "std": round(self.std, 4),
            "splits": counts,
            "sources": list(self.sources) or [own],
        }


def stratified_holdout(
    labels: np.ndarray, val_fraction: float, seed: int, *, where: str
) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into (train, validation), `val_fraction` of each class to validation.

    A class with at least 2 images keeps at least one on each side, so every class is
    present in both when counts allow. Indices stay in their original order.
    """
    if not 0 < val_fraction < 1:
        raise FerTuneError(
            f"val_fraction must be strictly between 0 and 1 to carve a validation split "
            f"from {where}, got {val_fraction}"
        )
    rng = np.random.default_rng(seed)
    val_parts = []
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        n_val = min(max(round(len(members) * val_fraction), 1), len(members) - 1)
        val_parts.append(members[:n_val])
    val_mask = np.zeros(len(labels), dtype=bool)
    val_mask[np.concatenate(val_parts)] = True
    if not val_mask.any():
        raise FerTuneError(
            f"{where} has too few images to carve a validation split: expected at least 2 images of some class"
        )
    return np.flatnonzero(~val_mask), np.flatnonzero(val_mask)
