"""Exploratory look at a dataset: counts, normalization statistics, average face per class.

    >>> summary = inspect_dataset(load_dataset("fer2013.csv"), Path("eda/average_faces.png"))
    >>> summary["splits"]["train"]["disgust"]
    436

The average face per class (over all labelled splits) is seed 001's EDA: it shows at a
glance whether each class has a distinct mean expression (FER2013's "happy" smiles).
"""

from __future__ import annotations

from pathlib import Path

import torch

from fer_tune.data.dataset import FerDataset


def inspect_dataset(data: FerDataset, out_png: Path) -> dict:
    """Write the average face per class to `out_png` and return `data.summary()`."""
    # Figure + Agg canvas, not pyplot: no global backend switch, no GUI, thread-safe.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    images = torch.cat([split.images for split in data.splits().values()])
    labels = torch.cat([split.labels for split in data.splits().values()])
    columns = min(data.num_classes, 7)
    rows = -(-data.num_classes // columns)
    figure = Figure(figsize=(2 * columns, 2.3 * rows))
    FigureCanvasAgg(figure)
    for index, name in enumerate(data.classes):
        members = images[labels == index]
        axes = figure.add_subplot(rows, columns, index + 1)
        if len(members):
            axes.imshow(members.float().mean(0).numpy(), cmap="gray", vmin=0, vmax=255)
        axes.set_title(f"{name} ({len(members)})")
        axes.axis("off")
    figure.suptitle(f"Average face per class: {data.source}"[:100], fontsize=9)
    figure.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out_png, dpi=100)
    return data.summary()
