"""A test-only model, `oom_net`, whose forward pass fails as the CUDA allocator does when a batch does
not fit: `torch.cuda.OutOfMemoryError`, raised inside a real trial (no GPU is needed to raise it).

The driver registers it for one test with `registered()` (so the other tests see the registry as
users do); Ray's workers by `register`, which a test names as Ray's `worker_process_setup_hook`
(run once in each worker process before any task).
"""

from contextlib import contextmanager

import torch
from torch import nn

from fer_tune.core.models.registry import MODELS, list_models, register_model

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


@contextmanager
def registered():
    """`oom_net` in this process's registry for the length of a block."""
    register()
    try:
        yield
    finally:
        MODELS._entries.pop(NAME, None)  # test-only model: gone again for every later test
