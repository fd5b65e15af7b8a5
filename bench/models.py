"""Size and CPU training speed of the transfer models: parameters, training images/s at 48 px
and at each model's default input_size.

    .venv/bin/python -m bench.models                         # the ImageNet backbones and rmn, a few batches each
    .venv/bin/python -m bench.models --models rmn --batches 5

For each model: its parameter count (7 classes, no dense layer, every block training), its
forward multiply-adds per 48 px face (torch.utils.flop_counter: convolutions and matrix
products; load-independent, unlike timings on a shared CPU), and the images/s of a training
step as `fit` takes it (forward with the resize inside the model, cross-entropy, backward,
Adam) on random [B, 1, 48, 48] batches, from scratch (the weights do not change the cost).
One warm-up step, then `--batches` timed steps; 224 px runs use a smaller batch so a step
stays within seconds on a CPU. A model whose only input size is 48 px gets one figure of
each. CUDA, where present, is timed too (bf16 autocast, channels_last, as fit trains there).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from bench.common import Recorder, write_readme
from fer_tune.constants import IMAGE_SIZE
from fer_tune.core.models import capabilities, create_model, list_models

MODELS = [name for name in list_models() if capabilities(name).pretrained]  # the ImageNet backbones and rmn
BATCH = {IMAGE_SIZE: 32, 96: 16, 224: 8}  # images per step by input size (a CPU does ~1-10 images/s at 224)
TIMED_BATCHES = 3


def images_per_s(name: str, input_size: int, batches: int, device: torch.device) -> float:
    """Training images/s of model `name` with its backbone at `input_size`."""
    torch.manual_seed(0)
    sizes = {"input_size": input_size} if capabilities(name).resizes else {}
    model = create_model(name, **sizes).to(device).train()
    cuda = device.type == "cuda"
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    batch = BATCH.get(input_size, 8)
    x = torch.randn(batch, 1, IMAGE_SIZE, IMAGE_SIZE, device=device)
    y = torch.arange(batch, device=device) % 7
    sync = torch.cuda.synchronize if cuda else (lambda: None)

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
            loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step()  # warm-up: allocator, kernels, cuDNN autotuning
    sync()
    start = time.perf_counter()
    for _ in range(batches):
        step()
    sync()
    return batches * batch / (time.perf_counter() - start)


def gmacs(name: str, input_size: int) -> float:
    """Forward multiply-adds (billions) for one 48 px face, with the backbone at `input_size`."""
    sizes = {"input_size": input_size} if capabilities(name).resizes else {}
    model = create_model(name, **sizes).eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, 1, IMAGE_SIZE, IMAGE_SIZE))
    return counter.get_total_flops() / 2 / 1e9  # the counter counts a multiply-add as 2 FLOPs


def run(args: argparse.Namespace) -> list[dict]:
    record = Recorder("models", "short", args.out)
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    lines = []
    for name in args.models:
        caps = capabilities(name)
        params = sum(p.numel() for p in create_model(name, input_size=caps.default_input_size).parameters())
        lines.append(record(f"{name}/params", params, "params", note="7 classes, no dense layer"))
        for size in sorted({IMAGE_SIZE, caps.default_input_size}):
            lines.append(record(f"{name}/gmacs_{size}px", gmacs(name, size), "GMAC", note="forward, one 48 px face"))
        for device in devices:
            for size in sorted({IMAGE_SIZE, caps.default_input_size}):
                rate = images_per_s(name, size, args.batches, device)
                setting = dict(input_size=size, batch_size=BATCH.get(size, 8), batches=args.batches, device=device.type)
                default = " (default)" if size == caps.default_input_size else ""
                lines.append(
                    record(
                        f"{name}/{device.type}/train_images_per_s_{size}px",
                        rate,
                        "images/s",
                        note=f"from 48 px faces, backbone at {size} px{default}; forward, backward, Adam",
                        **setting,
                    )
                )
    write_readme(args.out)
    return lines


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.models", description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=MODELS, choices=list_models())
    parser.add_argument("--batches", type=int, default=TIMED_BATCHES, help="timed training steps per figure")
    parser.add_argument("--full", action="store_true", help=f"{4 * TIMED_BATCHES} timed steps per figure")
    parser.add_argument("--out", type=Path, help="results folder (default results/bench)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.full and args.batches == TIMED_BATCHES:
        args.batches = 4 * TIMED_BATCHES
    run(args)


if __name__ == "__main__":
    sys.exit(main())
