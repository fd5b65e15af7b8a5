"""What a model costs to run: parameters, multiply-accumulates and CPU latency for one face.

    from fer_tune.core.cost import model_cost
    model_cost(TrainConfig(model="model3", width=0.125), num_classes=7)
    # {'params': 22159, 'macs': 2811392, 'latency_ms': 0.61}

- `params`: trainable and frozen parameters alike (what the file and memory hold).
- `macs`: multiply-accumulates of one forward pass of one image at the trial's input size,
  counted by forward hooks on every Conv and Linear layer (the layers that hold nearly all the
  arithmetic; pooling, activations and normalization are left out). Deterministic: the steady
  proxy for speed.
- `latency_ms`: the median wall time of a batch-1 forward pass on the CPU, after warm-up, with
  torch's intra-op threads pinned (LATENCY_THREADS). A wall clock: on a busy machine it is
  noisy, and two trials of the same model can differ by tens of percent; `macs` does not.
"""

from __future__ import annotations

import statistics
import time

import torch
from torch import nn

from fer_tune.core.classifier import build_model
from fer_tune.core.config import TrainConfig

COST_METRICS = ("params", "macs", "latency_ms")  # reported once per trial, beside every epoch's metrics
LATENCY_THREADS = 1  # one thread: what a serving worker on a small CPU gets, and the least noisy
WARMUP_RUNS = 5  # first passes allocate and pick kernels; not timed
TIMED_RUNS = 30  # median of these


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, image_size: int, channels: int = 1) -> int:
    """Multiply-accumulates of Conv and Linear layers for one image of `channels` x `image_size`²."""
    total = 0

    def conv(module: nn.Conv2d, _inputs, output: torch.Tensor) -> None:
        nonlocal total
        kernel = module.kernel_size[0] * module.kernel_size[1]
        total += output[0].numel() * (module.in_channels // module.groups) * kernel

    def linear(module: nn.Linear, _inputs, output: torch.Tensor) -> None:
        nonlocal total
        total += output[0].numel() * module.in_features

    hooks = [
        m.register_forward_hook(conv if isinstance(m, nn.Conv2d) else linear)
        for m in model.modules()
        if isinstance(m, nn.Conv2d | nn.Linear)
    ]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, channels, image_size, image_size))
    finally:
        for hook in hooks:
            hook.remove()
    return int(total)


def latency_ms(model: nn.Module, image_size: int, channels: int = 1, runs: int = TIMED_RUNS) -> float:
    """Median milliseconds of one batch-1 forward pass on the CPU, threads pinned to LATENCY_THREADS."""
    threads = torch.get_num_threads()
    torch.set_num_threads(LATENCY_THREADS)
    image = torch.rand(1, channels, image_size, image_size)
    model = model.eval()
    try:
        with torch.inference_mode():
            for _ in range(WARMUP_RUNS):
                model(image)
            times = []
            for _ in range(runs):
                started = time.perf_counter()
                model(image)
                times.append(time.perf_counter() - started)
    finally:
        torch.set_num_threads(threads)
    return round(1000 * statistics.median(times), 3)


def model_cost(config: TrainConfig, num_classes: int, runs: int = TIMED_RUNS) -> dict[str, float]:
    """params, macs and latency_ms of `config`'s model (untrained: cost depends on shape only), on the CPU.

    The RNG streams are left as they were: building the model draws from them, and a trial measures its
    cost mid-training, so its next epochs (dropout) must not depend on whether it measured.
    """
    with torch.random.fork_rng(devices=[]):
        model = build_model(config, num_classes, mean=0.0, std=1.0).cpu()
        return {
            "params": count_params(model),
            "macs": count_macs(model, config.image_size),
            "latency_ms": latency_ms(model, config.image_size, runs=runs),
        }
