"""Optimizer and learning-rate-schedule registries, named in config.

Schedules differ in *when* they step: ReduceLROnPlateau needs the validation
loss after each epoch, StepLR counts epochs, and the cosine family and
OneCycle step every batch. `Schedule` hides that behind `after_batch()` and
`after_epoch(val_loss)`, so the training loop calls both unconditionally.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Literal

import torch
from torch.optim import lr_scheduler

from fer_tune.registry import Registry

if TYPE_CHECKING:
    from fer_tune.config import TrainConfig

OPTIMIZERS = Registry("optimizer")
SCHEDULERS = Registry("scheduler")


@OPTIMIZERS.register("adam")
def adam(params: Iterable, config: TrainConfig) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)


@OPTIMIZERS.register("adamw")
def adamw(params: Iterable, config: TrainConfig) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)


@OPTIMIZERS.register("sgd")
def sgd(params: Iterable, config: TrainConfig) -> torch.optim.Optimizer:
    return torch.optim.SGD(
        params, lr=config.lr, momentum=config.momentum, nesterov=True, weight_decay=config.weight_decay
    )


def create_optimizer(params: Iterable, config: TrainConfig) -> torch.optim.Optimizer:
    return OPTIMIZERS.get(config.optimizer)(params, config)


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
def constant(optimizer, config: TrainConfig, steps_per_epoch: int) -> Schedule:
    return Schedule(None, "never")


@SCHEDULERS.register("plateau")
def plateau(optimizer, config: TrainConfig, steps_per_epoch: int) -> Schedule:
    scheduler = lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=config.plateau_factor, patience=config.plateau_patience
    )
    return Schedule(scheduler, "val_loss")


@SCHEDULERS.register("step")
def step(optimizer, config: TrainConfig, steps_per_epoch: int) -> Schedule:
    return Schedule(lr_scheduler.StepLR(optimizer, step_size=config.step_size, gamma=config.gamma), "epoch")


@SCHEDULERS.register("cos_warm")
def cos_warm(optimizer, config: TrainConfig, steps_per_epoch: int) -> Schedule:
    """Seed 001's cos_warm(T_0, T_mult); T_0 is in epochs, stepped per batch for a smooth curve."""
    scheduler = lr_scheduler.CosineAnnealingWarmRestarts(
        optimizer, T_0=config.T_0 * steps_per_epoch, T_mult=config.T_mult
    )
    return Schedule(scheduler, "batch")


@SCHEDULERS.register("cosine")
def cosine(optimizer, config: TrainConfig, steps_per_epoch: int) -> Schedule:
    scheduler = lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs * steps_per_epoch)
    return Schedule(scheduler, "batch")


@SCHEDULERS.register("onecycle")
def onecycle(optimizer, config: TrainConfig, steps_per_epoch: int) -> Schedule:
    """OneCycle with `lr` as the peak learning rate (Smith & Topin 2017)."""
    scheduler = lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, total_steps=config.epochs * steps_per_epoch)
    return Schedule(scheduler, "batch")


def create_schedule(optimizer, config: TrainConfig, steps_per_epoch: int) -> Schedule:
    return SCHEDULERS.get(config.scheduler)(optimizer, config, steps_per_epoch)
