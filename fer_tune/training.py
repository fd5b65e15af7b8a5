"""Train one configuration: `fit(config, data, on_epoch)`.

    from fer_tune.config import TrainConfig
    from fer_tune.data import load_dataset
    from fer_tune.training import fit

    history = fit(TrainConfig(model="model3", epochs=10), load_dataset("synthetic"))
    history[-1]["val_accuracy"]

The whole dataset is moved to the training device once as uint8; each batch is
sliced there, scaled to [0, 1], augmented as one batch (fer_tune.augment) and
normalized inside the model. There is no DataLoader: at 48x48 the per-image
Python pipeline, not the network, is what limits throughput (see bench/).

`on_epoch(metrics, state)` is called after every epoch with the metrics named
train_loss, train_accuracy, val_loss, val_accuracy, val_macro_f1 (plus epoch
and lr) and a `TrainState` whose `state_dict()` resumes training exactly
(model, optimizer, schedule, epoch, RNG streams): pass it back as `resume=`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from fer_tune.augment import create_augmentation, mixup
from fer_tune.config import TrainConfig
from fer_tune.data.dataset import FerDataset, Split
from fer_tune.models import create_model
from fer_tune.optim import Schedule, create_optimizer, create_schedule

OnEpoch = Callable[[dict, "TrainState"], None]


class Normalized(nn.Module):
    """A classifier that takes images in [0, 1] and normalizes them with the train split's statistics.

    Keeping the statistics inside the model means a saved or exported model
    needs nothing else to predict.
    """

    def __init__(self, net: nn.Module, mean: float, std: float):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean))
        self.register_buffer("std", torch.tensor(std))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net((images - self.mean) / self.std)


def build_model(config: TrainConfig, num_classes: int, mean: float, std: float) -> Normalized:
    net = create_model(
        config.model,
        num_classes=num_classes,
        kernel_size=config.kernel_size,
        padding=config.resolved_padding,
        dropout=config.dropout,
        width=config.width,
        pretrained=config.pretrained,
        freeze_depth=config.freeze_depth,
    )
    return Normalized(net, mean, std)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@dataclass
class TrainState:
    """Everything needed to continue training exactly where it stopped."""

    config: TrainConfig
    model: Normalized
    optimizer: torch.optim.Optimizer
    schedule: Schedule
    generator: torch.Generator  # drives shuffling, augmentation and mixup
    epoch: int = 0  # epochs completed
    history: list[dict] = field(default_factory=list)

    def state_dict(self) -> dict:
        model = getattr(self.model, "_orig_mod", self.model)  # unwrap torch.compile
        return {
            "config": self.config.model_dump(),
            "model": model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),  # dropout draws from the global generator
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "epoch": self.epoch,
            "history": list(self.history),
        }

    def load_state_dict(self, state: dict) -> None:
        getattr(self.model, "_orig_mod", self.model).load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.epoch = state["epoch"]
        self.history = list(state["history"])


def fit(
    config: TrainConfig,
    data: FerDataset,
    on_epoch: OnEpoch | None = None,
    resume: dict | None = None,
) -> list[dict]:
    """Train `config` on `data` for `config.epochs` epochs; returns the per-epoch metrics."""
    device = resolve_device(config.device)
    on_cuda = device.type == "cuda"
    torch.manual_seed(config.seed)
    generator = torch.Generator(device=device).manual_seed(config.seed)

    train = Split(data.train.images.to(device), data.train.labels.to(device))
    validation = Split(data.validation.images.to(device), data.validation.labels.to(device))
    model = build_model(config, data.num_classes, data.mean, data.std).to(device)
    if on_cuda and config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    steps_per_epoch = max(1, len(train) // config.batch_size)
    optimizer = create_optimizer([p for p in model.parameters() if p.requires_grad], config)
    schedule = create_schedule(optimizer, config, steps_per_epoch)
    state = TrainState(config, model, optimizer, schedule, generator)
    if resume is not None:
        state.load_state_dict(resume)
    if config.compile:
        model = torch.compile(model)
    weight = class_weights(train.labels, data.num_classes) if config.class_weights else None
    loss_fn = nn.CrossEntropyLoss(weight=weight, label_smoothing=config.label_smoothing)
    autocast = _autocast(device, config.amp)

    while state.epoch < config.epochs:
        train_loss, train_accuracy = train_one_epoch(model, train, loss_fn, state, autocast)
        val = evaluate(model, validation, data.num_classes, config.eval_batch_size, autocast)
        schedule.after_epoch(val["loss"])
        state.epoch += 1
        metrics = {
            "epoch": state.epoch,
            "train_loss": train_loss,
            "train_accuracy": train_accuracy,
            "val_loss": val["loss"],
            "val_accuracy": val["accuracy"],
            "val_macro_f1": val["macro_f1"],
            "lr": optimizer.param_groups[0]["lr"],
        }
        state.history.append(metrics)
        if on_epoch is not None:
            on_epoch(metrics, state)
    return state.history


def train_one_epoch(
    model: nn.Module, train: Split, loss_fn: nn.Module, state: TrainState, autocast
) -> tuple[float, float]:
    """One pass over a fresh permutation of the train split; returns (mean loss, accuracy)."""
    config, generator = state.config, state.generator
    augment = create_augmentation(config.augmentation)
    channels_last = train.images.is_cuda and config.channels_last
    model.train()
    order = torch.randperm(len(train), device=train.images.device, generator=generator)
    steps = max(1, len(train) // config.batch_size)  # drop the ragged last batch: BatchNorm needs > 1 image
    total_loss = torch.zeros((), device=train.images.device)
    total_correct = torch.zeros((), device=train.images.device)
    for step in range(steps):
        index = order[step * config.batch_size : (step + 1) * config.batch_size]
        images = train.images[index].unsqueeze(1).float().div_(255)
        labels = train.labels[index]
        images = augment(images, generator)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        if config.mixup_alpha > 0:
            images, labels_a, labels_b, lam = mixup(images, labels, config.mixup_alpha, generator)
        else:
            labels_a, labels_b, lam = labels, labels, 1.0
        with autocast:
            logits = model(images)
            loss = lam * loss_fn(logits, labels_a) + (1 - lam) * loss_fn(logits, labels_b)
        state.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        state.optimizer.step()
        state.schedule.after_batch()
        # Accumulate on the device; one .item() per epoch avoids a sync per batch.
        predictions = logits.detach().argmax(1)
        total_loss += loss.detach() * len(index)
        total_correct += lam * (predictions == labels_a).sum() + (1 - lam) * (predictions == labels_b).sum()
    seen = steps * config.batch_size if len(train) >= config.batch_size else len(train)
    return (total_loss / seen).item(), (total_correct / seen).item()


@torch.no_grad()
def evaluate(
    model: nn.Module, split: Split, num_classes: int, batch_size: int = 1024, autocast=None
) -> dict:
    """Loss, accuracy, macro-F1, per-class precision/recall/F1 and the confusion matrix on `split`."""
    model.eval()
    autocast = autocast or contextlib.nullcontext()
    logits = []
    for start in range(0, len(split), batch_size):
        images = split.images[start : start + batch_size].unsqueeze(1).float().div_(255)
        with autocast:
            logits.append(model(images).float())
    logits = torch.cat(logits)
    predictions = logits.argmax(1)
    confusion = confusion_matrix(split.labels, predictions, num_classes)
    return {
        "loss": F.cross_entropy(logits, split.labels).item(),
        "accuracy": (predictions == split.labels).float().mean().item(),
        **per_class_scores(confusion),
        "confusion": confusion.cpu(),
        "probabilities": logits.softmax(1).cpu(),
    }


def confusion_matrix(labels: torch.Tensor, predictions: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Counts [true class, predicted class]."""
    return torch.bincount(labels * num_classes + predictions, minlength=num_classes**2).reshape(num_classes, num_classes)


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


def _autocast(device: torch.device, amp: bool):
    # bf16 needs no loss scaling and is what H100/H200 tensor cores run fastest; on CPU we stay fp32.
    if device.type == "cuda" and amp:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
