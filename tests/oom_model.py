"""A test-only model, `oom_net`, whose forward pass fails as the CUDA allocator does when a batch does
not fit: `torch.cuda.OutOfMemoryError`, raised inside a real trial (no GPU is needed to raise it).

The driver registers it by importing this module; Ray's workers by `register`, which a test names
as Ray's `worker_process_setup_hook` (run once in each worker process before any task).
"""

import torch
from torch import nn

from fer_tune.core.models.registry import list_models, register_model

NAME = "oom_net"
MESSAGE = "CUDA out of memory. Tried to allocate 2.00 GiB"  # the allocator's own words


class OutOfMemoryNet(nn.Module):
    def __init__(self, num_classes: int):
        super().__init__()
        self.head = nn.Linear(1, num_classes)  # a parameter, so the optimizer can be built

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        raise torch.cuda.OutOfMemoryError(MESSAGE)


def oom_net(*, num_classes: int, **knobs) -> nn.Module:
    return OutOfMemoryNet(num_classes)


def register() -> None:
    """Register `oom_net` once in this process (the registry refuses a duplicate name)."""
    if NAME not in list_models():
        register_model(oom_net)


register()
