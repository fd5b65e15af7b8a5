"""The checkpoint format: `TrainState` and the file that holds it.

A checkpoint holds tensors and plain Python values only (the config as a dict, metrics as
floats, RNG states as byte tensors), so it loads with `torch.load(weights_only=True)`:
opening one never runs code from the file.

    save_checkpoint(state.state_dict(), folder)      # folder/state.pt
    resume = load_checkpoint(folder)                 # -> fit(config, data, resume=resume)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from fer_tune.core.classifier import Normalized
from fer_tune.core.config import TrainConfig
from fer_tune.core.optim import Schedule

STATE_FILE = "state.pt"  # inside a checkpoint folder


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
        return {
            "config": self.config.model_dump(),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),  # dropout draws from the global generator
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "epoch": self.epoch,
            "history": list(self.history),
        }

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.epoch = state["epoch"]
        self.history = list(state["history"])


def save_checkpoint(state: dict, folder: str | Path) -> Path:
    path = Path(folder) / STATE_FILE
    torch.save(state, path)
    return path


def load_checkpoint(folder_or_file: str | Path, map_location: str | torch.device | None = "cpu") -> dict:
    """A saved `TrainState.state_dict()`, from a checkpoint folder or its state file."""
    path = Path(folder_or_file)
    if path.is_dir():
        path = path / STATE_FILE
    return torch.load(path, map_location=map_location, weights_only=True)
