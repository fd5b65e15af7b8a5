"""Merge extra labelled sources into a primary dataset's train split, as Pham 2020 added FACES and JAFFE.

    >>> jaffe = ExtraSource("data/jaffe", classes={"disgusted": "disgust", "fearful": "fear", "surprised": "surprise"})
    >>> data = load_dataset("data/fer2013.csv", extra=[jaffe])
    >>> [(s["role"], s["source"]) for s in data.summary()["sources"]]
    [('primary', 'data/fer2013.csv'), ('extra', 'data/jaffe')]

The primary source decides the classes and gives validation and test, untouched. Every image of an
extra source, from its train, validation and test splits alike, joins train: Pham 2020 trained on the
extra datasets only, and as no extra image is ever evaluated, holding some back would only waste them.

Class names: an extra's class keeps its name when the primary has that class; `classes` maps its
other names (or renames any) onto the primary's; `drop` leaves classes out. Any other class is an
error naming it and the source. An extra with fewer classes than the primary (Dzubak's happy, sad,
surprise, neutral) simply adds no images to the others; a primary with fewer classes than an extra
needs the extra's surplus classes dropped.

Leakage: extra images within `hash_distance` bits (pHash, as `data clean`) of a primary validation or
test image are counted per source in the summary and warned about; `drop_leaks` leaves them out.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from fer_tune.data.dataset import FerDataset, Split
from fer_tune.data.phash import HASH_DISTANCE, near_pairs, perceptual_hashes
from fer_tune.errors import FerTuneError


@dataclass(frozen=True)
class ExtraSource:
    """An extra source for train: its path, its class names mapped onto the primary's, classes left out."""

    source: str  # a FER2013 CSV or an image folder
    classes: Mapping[str, str] = field(default_factory=dict)  # its class -> the primary's class
    drop: tuple[str, ...] = ()  # its classes to leave out
    drop_leaks: bool = False  # leave out its images that match a primary validation or test image


def check_distinct(primary: str, extras: Sequence[ExtraSource]) -> None:
    """Each source at most once: an extra equal to the primary would put validation and test into train."""
    seen = {_where(primary): "the primary source"}
    for index, spec in enumerate(extras):
        where = _where(spec.source)
        if where in seen:
            raise FerTuneError(
                f"extra source {index + 1} '{spec.source}' is {seen[where]} again: expected each source once"
            )
        seen[where] = f"extra source {index + 1}"


def merge_sources(
    primary: FerDataset, extras: Sequence[tuple[ExtraSource, FerDataset]], *, hash_distance: int = HASH_DISTANCE
) -> FerDataset:
    """`primary` with every image of each extra dataset added to train, relabelled onto its classes."""
    splits = primary.splits()
    held_out = {name: perceptual_hashes(splits[name].images.numpy()) for name in splits if name != "train"}
    images, labels = [primary.train.images], [primary.train.labels]
    counts = primary.counts()
    entries = [{"source": primary.source, "role": "primary", "fingerprint": primary.fingerprint(), "splits": counts}]
    for spec, data in extras:
        mapping = class_mapping(spec, data.classes, primary.classes)
        extra_images, extra_labels = _relabelled(data, mapping, primary.classes)
        leaks, leaked = _find_leaks(spec, extra_images, held_out, hash_distance)
        if spec.drop_leaks:
            extra_images, extra_labels = extra_images[~leaked], extra_labels[~leaked]
        images.append(extra_images)
        labels.append(extra_labels)
        added = torch.bincount(extra_labels, minlength=len(primary.classes)).tolist()
        entries.append(
            {
                "source": data.source,
                "role": "extra",
                "fingerprint": data.fingerprint(),
                "classes": {name: target or "(dropped)" for name, target in mapping.items()},
                "splits": {"train": dict(zip(primary.classes, added))},
                "leaks": {**leaks, "dropped": spec.drop_leaks},
            }
        )
    train = Split(torch.cat(images), torch.cat(labels))
    added = len(train) - len(primary.train)
    source = f"{primary.source} + {added:,} train images from {', '.join(spec.source for spec, _ in extras)}"
    return FerDataset(train, primary.validation, primary.test, primary.classes, source, sources=tuple(entries))


def _find_leaks(
    spec: ExtraSource, images: torch.Tensor, held_out: dict[str, np.ndarray], max_distance: int
) -> tuple[dict[str, int], torch.Tensor]:
    """How many of an extra's `images` match a primary image per held-out split, and which match any."""
    hashes = perceptual_hashes(images.numpy())
    leaked = np.zeros(len(images), dtype=bool)
    counts = {}
    for name, targets in held_out.items():
        matching = np.unique(near_pairs(hashes, targets, max_distance=max_distance)[0])
        counts[name] = int(matching.size)
        leaked[matching] = True
    if leaked.any():
        action = "left out (drop_leaks)" if spec.drop_leaks else "kept: set drop_leaks to leave them out"
        warnings.warn(
            f"extra source {spec.source}: {leaked.sum()} images match the primary's validation/test images "
            f"({', '.join(f'{n} {name}' for name, n in counts.items())}); {action}",
            stacklevel=3,
        )
    return counts, torch.from_numpy(leaked)


def class_mapping(spec: ExtraSource, classes: Sequence[str], targets: Sequence[str]) -> dict[str, str | None]:
    """Each of an extra source's `classes` -> one of the primary's `targets`, or None where dropped."""
    where = f"extra source {spec.source}"
    named = [*((name, "classes maps") for name in spec.classes), *((name, "drop lists") for name in spec.drop)]
    for name, how in named:
        if name not in classes:
            raise FerTuneError(
                f"{where}: {how} '{name}', which is not a class of this source: expected one of {', '.join(classes)}"
            )
    for name, target in spec.classes.items():
        if name in spec.drop:
            raise FerTuneError(f"{where}: class '{name}' is both mapped (classes) and dropped (drop): expected one")
        if target not in targets:
            raise FerTuneError(
                f"{where}: classes maps '{name}' to '{target}', not a class of the primary source: "
                f"expected one of {', '.join(targets)}"
            )
    mapping = {}
    for name in classes:
        if name not in spec.drop and name not in spec.classes and name not in targets:
            raise FerTuneError(
                f"{where}: class '{name}' is not one of the primary's classes ({', '.join(targets)}): "
                f"expected it mapped (classes: {{{name}: <class>}}) or left out (drop: [{name}])"
            )
        mapping[name] = None if name in spec.drop else spec.classes.get(name, name)
    return mapping


def _relabelled(data: FerDataset, mapping: dict[str, str | None], targets: Sequence[str]):
    """All of `data`'s images (every split) with labels in `targets` order; dropped classes left out."""
    images = torch.cat([split.images for split in data.splits().values()])
    labels = torch.cat([split.labels for split in data.splits().values()])
    lookup = torch.tensor([targets.index(mapping[name]) if mapping[name] else -1 for name in data.classes])
    labels = lookup[labels]
    kept = labels >= 0
    return images[kept], labels[kept]


def _where(source: str) -> str:
    return source if source == "synthetic" else str(Path(source).expanduser().resolve())
