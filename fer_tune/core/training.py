"""Train one configuration: `fit(config, data, on_epoch)`.

    from fer_tune.core.config import TrainConfig
    from fer_tune.core.training import fit
    from fer_tune.data import load_dataset

    history = fit(TrainConfig(model="model3", epochs=10), load_dataset("synthetic"))
    history[-1]["val_accuracy"]

The whole dataset is moved to the training device once as uint8; each batch is
sliced there, scaled to [0, 1], augmented as one batch (fer_tune.core.augment), cropped
at random to 40 px when the config's `tta` is tencrop, and normalized inside the model.
Validation scores the config's test-time views (`tta`), as the deployed Predictor will.
There is no DataLoader: at 48x48 the per-image Python pipeline, not the network, is what
limits throughput (see bench/).

`on_epoch(metrics, state)` is called after every epoch with the metrics named
train_loss, train_accuracy, val_loss, val_accuracy, val_macro_f1, plus epoch, lr and
epoch_seconds (the epoch's wall time, training and validation), and a `TrainState`
whose `state_dict()` resumes training exactly (model, optimizer, schedule, epoch,
RNG streams): pass it back as `resume=`.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable

import torch
from torch import nn

from fer_tune.core.augment import create_augmentation, mixup, random_crop
from fer_tune.core.checkpoint import TrainState
from fer_tune.core.classifier import Normalized, build_model
from fer_tune.core.config import TrainConfig
from fer_tune.core.metrics import class_weights, evaluate
from fer_tune.core.optim import create_optimizer, create_schedule
from fer_tune.data.dataset import FerDataset, Split, unit_scale
from fer_tune.errors import FerTuneError

OnEpoch = Callable[[dict, TrainState], None]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def fit(
    config: TrainConfig,
    data: FerDataset,
    on_epoch: OnEpoch | None = None,
    resume: dict | None = None,
) -> list[dict]:
    """Train `config` on `data` for `config.epochs` epochs; returns the per-epoch metrics."""
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    generator = torch.Generator(device=device).manual_seed(config.seed)

    train = Split(data.train.images.to(device), data.train.labels.to(device))
    validation = Split(data.validation.images.to(device), data.validation.labels.to(device))
    model = build_model(config, data.num_classes, data.mean, data.std).to(device)
    if device.type == "cuda" and config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    steps_per_epoch = max(1, len(train) // config.batch_size)
    hyperparameters = config.model_dump()
    optimizer = create_optimizer(config.optimizer, parameter_groups(model, config), **hyperparameters)
    schedule = create_schedule(config.scheduler, optimizer, steps_per_epoch=steps_per_epoch, **hyperparameters)
    state = TrainState(config, model, optimizer, schedule, generator)
    if resume is not None:
        state.load_state_dict(resume)
    network = torch.compile(model) if config.compile else model  # the state keeps the uncompiled module
    weight = class_weights(train.labels, data.num_classes) if config.class_weights else None
    loss_fn = nn.CrossEntropyLoss(weight=weight, label_smoothing=config.label_smoothing)
    autocast = _autocast(device, config.amp)

    while state.epoch < config.epochs:
        started = time.perf_counter()
        with _out_of_memory_explained(config):
            train_loss, train_accuracy = train_one_epoch(network, train, loss_fn, state, autocast)
            val = evaluate(
                network,
                validation,
                data.num_classes,
                batch_size=config.eval_batch_size,
                autocast=autocast,
                tta=config.tta,
            )
        _stop_if_diverged(state.epoch + 1, train_loss=train_loss, val_loss=val["loss"])
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
            "epoch_seconds": time.perf_counter() - started,
        }
        state.history.append(metrics)
        if on_epoch is not None:
            on_epoch(metrics, state)
    return state.history


def parameter_groups(model: Normalized, config: TrainConfig) -> list[dict]:
    """The trainable parameters as optimizer groups: the new layers at config.lr first (the lr
    fit reports), then a transfer model's backbone at lr x backbone_lr_scale, if it trains."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    backbone = getattr(model.net, "backbone", None)
    if backbone is None or config.backbone_lr_scale == 1.0:
        return [{"params": trainable}]
    in_backbone = {id(p) for p in backbone.parameters()}
    groups = [{"params": [p for p in trainable if id(p) not in in_backbone]}]
    body = [p for p in trainable if id(p) in in_backbone]
    if body:
        groups.append({"params": body, "lr": config.lr * config.backbone_lr_scale})
    return groups


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
        images = unit_scale(train.images[index].unsqueeze(1))
        labels = train.labels[index]
        images = augment(images, generator)
        if images.shape[-1] != config.image_size:  # ten-crop trains on random crops of the augmented faces
            images = random_crop(images, generator, config.image_size)
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


class Diverged(FerTuneError):
    """The loss became NaN or infinite: training cannot recover, so the trial stops at once."""


def _stop_if_diverged(epoch: int, **losses: float) -> None:
    # Checked once per epoch, on the losses fit syncs anyway: a per-step check would cost a host sync per batch.
    bad = {name: value for name, value in losses.items() if not math.isfinite(value)}
    if bad:
        shown = ", ".join(f"{name} {value}" for name, value in bad.items())
        raise Diverged(f"diverged at epoch {epoch} ({shown}); lower lr or add a schedule with warm-up")


@contextlib.contextmanager
def _out_of_memory_explained(config: TrainConfig):
    try:
        yield
    except torch.cuda.OutOfMemoryError:
        raise FerTuneError(
            f"CUDA out of memory training {config.model} at batch_size {config.batch_size} "
            f"(eval_batch_size {config.eval_batch_size}); lower them, or give each trial more of the GPU "
            "(a larger resources.gpu)"
        ) from None


def _autocast(device: torch.device, amp: bool):
    # bf16 needs no loss scaling and is what H100/H200 tensor cores run fastest; on CPU we stay fp32.
    if device.type == "cuda" and amp:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
