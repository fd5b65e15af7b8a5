"""Optimizer and learning-rate-schedule registries, named in config.

Schedules differ in *when* they step: ReduceLROnPlateau needs the validation
loss after each epoch, StepLR counts epochs, and the cosine family and
OneCycle step every batch. `Schedule` hides that behind `after_batch()` and
`after_epoch(val_loss)`, so the training loop calls both unconditionally.

Builders take the trial's hyperparameters as keyword arguments (a TrainConfig's fields)
and read the ones they need, so this module does not depend on the config class:

    optimizer = create_optimizer("adamw", model.parameters(), lr=1e-3, weight_decay=0.01)
    schedule = create_schedule("cosine", optimizer, steps_per_epoch=100, epochs=10)

`params` may be parameter groups (dicts with their own "lr", as a transfer model's backbone
at a lower rate): `lr` is then the rate of groups without one, and every schedule keeps the
groups' ratio (they scale each group's own rate; OneCycle peaks each group at its own).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch.optim import lr_scheduler

from fer_tune.registry import Registry

OPTIMIZERS = Registry("optimizer")
SCHEDULERS = Registry("scheduler")


@OPTIMIZERS.register("adam")
def adam(params: Iterable, /, *, lr: float, weight_decay: float = 0.0, **_: Any) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)


@OPTIMIZERS.register("adamw")
def adamw(params: Iterable, /, *, lr: float, weight_decay: float = 0.0, **_: Any) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


@OPTIMIZERS.register("sgd")
def sgd(
    params: Iterable, /, *, lr: float, momentum: float = 0.9, weight_decay: float = 0.0, **_: Any
) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=True, weight_decay=weight_decay)


def create_optimizer(name: str, params: Iterable, /, **hyperparameters: Any) -> torch.optim.Optimizer:
    return OPTIMIZERS.get(name)(params, **hyperparameters)


@dataclass
class Schedule:
    """A torch LR scheduler plus the moment it steps: each batch, each epoch, on the val loss, or never."""

    scheduler: lr_scheduler.LRScheduler | lr_scheduler.ReduceLROnPlateau | None
    steps_on: Literal["batch", "epoch", "val_loss", "never"]

    def after_batch(self) -> None:
        if self.steps_on == "batch":
            self.scheduler.step()

    def after_epoch(self, val_loss: float) -> None:
        if self.steps_on == "epoch":
            self.scheduler.step()
        elif self.steps_on == "val_loss":
            self.scheduler.step(val_loss)

    def state_dict(self) -> dict:
        return self.scheduler.state_dict() if self.scheduler else {}

    def load_state_dict(self, state: dict) -> None:
        if self.scheduler:
            self.scheduler.load_state_dict(state)


@SCHEDULERS.register("none")
def constant(optimizer, /, **_: Any) -> Schedule:
    return Schedule(None, "never")


@SCHEDULERS.register("plateau")
def plateau(optimizer, /, *, plateau_factor: float = 0.1, plateau_patience: int = 10, **_: Any) -> Schedule:
    scheduler = lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=plateau_factor, patience=plateau_patience)
    return Schedule(scheduler, "val_loss")


@SCHEDULERS.register("step")
def step(optimizer, /, *, step_size: int = 20, gamma: float = 0.1, **_: Any) -> Schedule:
    return Schedule(lr_scheduler.StepLR(optimizer, step_size=step_size, gamma=gamma), "epoch")


@SCHEDULERS.register("cos_warm")
def cos_warm(optimizer, /, *, steps_per_epoch: int, T_0: int = 2, T_mult: int = 10, **_: Any) -> Schedule:
    """Tandon 2020's cos_warm(T_0, T_mult); T_0 is in epochs, stepped per batch for a smooth curve."""
    scheduler = lr_scheduler.CosineAnnealingWarmRestarts(optimizer, T_0=T_0 * steps_per_epoch, T_mult=T_mult)
    return Schedule(scheduler, "batch")


@SCHEDULERS.register("cosine")
def cosine(optimizer, /, *, steps_per_epoch: int, epochs: int, **_: Any) -> Schedule:
    scheduler = lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * steps_per_epoch)
    return Schedule(scheduler, "batch")


@SCHEDULERS.register("onecycle")
def onecycle(optimizer, /, *, steps_per_epoch: int, epochs: int, lr: float, **_: Any) -> Schedule:
    """OneCycle with `lr` as the peak learning rate (Smith & Topin 2017); a parameter group with
    its own rate peaks at that rate."""
    peaks = [group.get("lr", lr) for group in optimizer.param_groups]
    scheduler = lr_scheduler.OneCycleLR(optimizer, max_lr=peaks, total_steps=epochs * steps_per_epoch)
    return Schedule(scheduler, "batch")


def create_schedule(name: str, optimizer, /, **hyperparameters: Any) -> Schedule:
    return SCHEDULERS.get(name)(optimizer, **hyperparameters)
