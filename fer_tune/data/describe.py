"""Exploratory look at a dataset: counts, normalization statistics, average face per class.

    >>> summary = inspect_dataset(load_dataset("fer2013.csv"), Path("eda/average_faces.png"))
    >>> summary["splits"]["train"]["disgust"]
    436

The average face per class (over all labelled splits) is Tandon 2020's EDA: it shows at a
glance whether each class has a distinct mean expression (FER2013's "happy" smiles).
"""

from __future__ import annotations

from pathlib import Path

import torch

from fer_tune.data.dataset import FerDataset
from fer_tune.data.imagegrid import save_image_grid


def inspect_dataset(data: FerDataset, out_png: Path) -> dict:
    """Write the average face per class to `out_png` and return `data.summary()`."""
    images = torch.cat([split.images for split in data.splits().values()])
    labels = torch.cat([split.labels for split in data.splits().values()])
    tiles, captions = [], []
    for index, name in enumerate(data.classes):
        members = images[labels == index]
        average = members.float().mean(0).round().to(torch.uint8) if len(members) else torch.zeros_like(images[0])
        tiles.append(average.numpy())
        captions.append(f"{name} ({len(members)})")
    title = f"Average face per class: {data.source}"
    save_image_grid(Path(out_png), tiles, captions, title=title, columns=min(data.num_classes, 7))
    return data.summary()
