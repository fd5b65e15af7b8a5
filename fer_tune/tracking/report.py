"""The champion's evaluation figures: confusion matrix, most confident mistakes, learning curves."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from fer_tune.data.dataset import Split  # noqa: E402
from fer_tune.search.report.figures import draw_confusion  # noqa: E402

MISTAKES_SHOWN = 25  # the most confident mistakes, as a 5x5 grid


def plot_confusion(confusion: torch.Tensor, classes, out: Path) -> None:
    """The report's confusion matrix (fer_tune.search.report.figures), titled, as a PNG file."""
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    draw_confusion(ax, confusion.numpy(), classes)
    ax.set_title("confusion matrix")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def plot_mistakes(split: Split, probabilities: torch.Tensor, classes, out: Path) -> None:
    """The most confident mistakes: each image with its true and predicted class."""
    confidence, predictions = probabilities.max(1)
    wrong = (predictions != split.labels).nonzero().flatten()
    shown = wrong[confidence[wrong].argsort(descending=True)][:MISTAKES_SHOWN].tolist()
    fig, axes = plt.subplots(5, 5, figsize=(7.5, 8.5))
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, shown):
        ax.imshow(split.images[i].numpy(), cmap="gray", vmin=0, vmax=255)
        true, predicted = classes[int(split.labels[i])], classes[int(predictions[i])]
        ax.set_title(f"{true} → {predicted}\n{confidence[i].item():.2f}", fontsize=8)
    fig.suptitle(f"most confident mistakes ({len(wrong)} of {len(split)} wrong): true → predicted")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def plot_learning_curves(curve: pd.DataFrame, checkpoint_epoch: int, out: Path) -> None:
    """Loss and accuracy per epoch of the best trial; the dashed line marks the registered checkpoint."""
    fig, (loss, accuracy) = plt.subplots(1, 2, figsize=(10, 4))
    for ax, kind in ((loss, "loss"), (accuracy, "accuracy")):
        for split in ("train", "val"):
            if f"{split}_{kind}" in curve:
                ax.plot(curve["epoch"], curve[f"{split}_{kind}"], marker=".", label=split)
        ax.axvline(checkpoint_epoch, color="gray", linestyle="--", linewidth=1)
        ax.set(xlabel="epoch", title=kind)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
