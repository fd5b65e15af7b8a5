"""Scoring a classifier on a split: `evaluate`, used by `fit` every epoch and by the champion's test.

scores = evaluate(model, data.validation, data.num_classes)
scores["accuracy"], scores["macro_f1"], scores["confusion"]
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import nn

from fer_tune.core.augment import check_tta, tta_views
from fer_tune.data.dataset import Split, unit_scale


@torch.no_grad()
def evaluate(
    model: nn.Module,
    split: Split,
    num_classes: int,
    *,
    batch_size: int = 1024,
    autocast=None,
    tta: str = "none",
    keep_probabilities: bool = False,
) -> dict:
    """Loss, accuracy, macro-F1, per-class precision/recall/F1 and the confusion matrix of `model` on `split`.

    `model` maps images in [0, 1] to logits. `tta` (fer_tune.core.augment.TTA_MODES): each
    image's probabilities are the mean over its test-time views, `none` (the image), `flip`
    (and its mirror image) or `tencrop` (ten 40 px crops, for a model trained on them), as
    `Predictor` does, and the loss is taken on that mean. `keep_probabilities` adds them
    ([N, C], on the CPU) for plots of the mistakes.
    """
    check_tta(tta)
    model.eval()
    autocast = autocast or contextlib.nullcontext()
    log_probabilities = []
    for start in range(0, len(split), batch_size):
        images = unit_scale(split.images[start : start + batch_size].unsqueeze(1))
        views = tta_views(images, tta)
        with autocast:
            per_view = torch.stack([model(view).float().log_softmax(1) for view in views])
        # log of the mean probability over the views; exactly log_softmax for a single view
        log_probabilities.append(per_view.logsumexp(0) - math.log(len(views)))
    log_probabilities = torch.cat(log_probabilities)
    predictions = log_probabilities.argmax(1)
    confusion = confusion_matrix(split.labels, predictions, num_classes)
    scores = {
        "loss": F.nll_loss(log_probabilities, split.labels).item(),
        "accuracy": (predictions == split.labels).float().mean().item(),
        **per_class_scores(confusion),
        "confusion": confusion.cpu(),
    }
    if keep_probabilities:
        scores["probabilities"] = log_probabilities.exp().cpu()
    return scores


def confusion_matrix(labels: torch.Tensor, predictions: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Counts [true class, predicted class]."""
    return torch.bincount(labels * num_classes + predictions, minlength=num_classes**2).reshape(
        num_classes, num_classes
    )


def per_class_scores(confusion: torch.Tensor) -> dict:
    """Precision, recall and F1 per class (rows = true class) and their unweighted mean, macro-F1."""
    confusion = confusion.double()
    true_positive = confusion.diag()
    precision = true_positive / confusion.sum(0).clamp(min=1)
    recall = true_positive / confusion.sum(1).clamp(min=1)
    f1 = 2 * precision * recall / (precision + recall).clamp(min=1e-12)
    present = confusion.sum(1) > 0  # a class absent from the split does not drag macro-F1 down
    return {
        "macro_f1": f1[present].mean().item() if present.any() else 0.0,
        "precision": precision.tolist(),
        "recall": recall.tolist(),
        "f1": f1.tolist(),
    }


def class_weights(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Inverse-frequency weights with mean 1 over the classes present."""
    counts = torch.bincount(labels, minlength=num_classes).float()
    weights = torch.where(counts > 0, counts.sum() / (num_classes * counts.clamp(min=1)), 0.0)
    return weights / weights[counts > 0].mean()
