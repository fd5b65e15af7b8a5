"""Augmentation throughput: fer-tune's batched pipeline against torchvision one image at a time.

    .venv/bin/python -m bench.pipeline                  # short: 2,048 images per measurement
    .venv/bin/python -m bench.pipeline --full           # 28,709 images: one FER2013 training epoch
    .venv/bin/python -m bench.pipeline --before 7aeb2c1 # also time augment.py as it was at a commit

For each strategy and batch size (64, TrainConfig's default, and 128), images/s of one pass
over the same N synthetic faces:
* batched: uint8 batch -> float [0, 1] -> create_augmentation(name)(batch, generator), as `fit`
  does; the best of 1 thread and all cores (on a shared machine one thread can be faster);
* per image: the seed's way, a Dataset of PIL images, torchvision.transforms.v2 and a DataLoader;
  the best of 0, 1 and 2 workers and of two layouts: "pil" (geometry on the PIL image, then
  ToImage, ToDtype, RandomErasing, as the seeds do) and "tensor" (ToImage, ToDtype, then
  `torchvision_reference(name)`: what tests/test_augment.py compares against).
The first batch of every pass is left out of the timing (worker start-up, first-call costs);
each side is measured in `--rounds` rounds that alternate with the other side, best kept.
The ratio batched / per-image has a target of at least 10 on CPU. `--tune-malloc` first stops
glibc from returning freed memory to the OS (bench.common.tune_malloc): the batched side then
stops page-faulting its temporaries in again every batch (figures get a "+mallopt" suffix).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from bench.common import MALLOC_TUNING, Recorder, tune_malloc, write_readme
from bench.reference import torchvision_reference
from fer_tune.core.augment import create_augmentation, list_augmentations
from fer_tune.data import load_dataset
from fer_tune.data.dataset import unit_scale

BATCH_SIZES = (64, 128)  # TrainConfig's default, and full.yaml's next choice
SHORT_IMAGES = 2048
ROUNDS = 2  # measurements of each side per strategy, best kept
FULL_IMAGES = 28709  # FER2013's training split: one epoch
WORKERS = (0, 1, 2)  # DataLoader worker counts tried for the per-image pipeline
LAYOUTS = ("pil", "tensor")
TARGET_RATIO = 10  # issue 5: the batched pipeline >= 10x per-image torchvision on CPU
BATCHED_REPEATS = 2  # passes per thread count and round (best kept): a pass takes under a second


def faces(n: int) -> torch.Tensor:
    """n synthetic 48x48 uint8 faces (cycled if the training split is smaller)."""
    images = load_dataset("synthetic", n=max(n * 5 // 4, 200), seed=0).train.images
    return images.repeat((n + len(images) - 1) // len(images), 1, 1)[:n]


def batched_rate(images: torch.Tensor, augment, batch_size: int, device: torch.device) -> float:
    """images/s of one pass: slice, scale to [0, 1], augment; first batch untimed."""
    images = images.to(device)
    generator = torch.Generator(device=device).manual_seed(0)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    augment(unit_scale(images[:batch_size].unsqueeze(1)), generator)  # warm-up
    sync()
    start = time.perf_counter()
    for i in range(batch_size, len(images), batch_size):
        augment(unit_scale(images[i : i + batch_size].unsqueeze(1)), generator)
    sync()
    return (len(images) - batch_size) / (time.perf_counter() - start)


def best_batched(images: torch.Tensor, augment, batch_size: int, device: torch.device) -> tuple[float, int]:
    """(images/s, torch threads) of the fastest thread count on CPU; CUDA runs once per repeat."""
    threads_before = torch.get_num_threads()
    options = sorted({1, os.cpu_count() or 1}) if device.type == "cpu" else [threads_before]
    best = (0.0, threads_before)
    try:
        for threads in options:
            torch.set_num_threads(threads)
            for _ in range(BATCHED_REPEATS):
                best = max(best, (batched_rate(images, augment, batch_size, device), threads))
    finally:
        torch.set_num_threads(threads_before)
    return best


class PilImages(Dataset):
    """The seed's dataset: PIL images, transformed one at a time in __getitem__."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform):
        from PIL import Image

        self.images = [Image.fromarray(image.numpy()) for image in images]  # 2-D uint8 -> mode "L"
        self.labels = labels.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.transform(self.images[i]), self.labels[i]


def seed_transform(name: str, layout: str, normalize: tuple[float, float] | None = None):
    """The per-image torchvision v2 pipeline of strategy `name` for a PIL image (see module doc)."""
    from torchvision.transforms import v2

    reference = torchvision_reference(name)
    to_float = [v2.ToImage(), v2.ToDtype(torch.float32, scale=True)]
    if layout == "tensor":
        steps = [*to_float, reference]
    else:  # RandomErasing works on tensors only, so it comes after the conversion
        erase = [t for t in reference.transforms if isinstance(t, v2.RandomErasing)]
        geometry = [t for t in reference.transforms if not isinstance(t, v2.RandomErasing)]
        steps = [*geometry, *to_float, *erase]
    if normalize is not None:
        steps.append(v2.Normalize([normalize[0]], [normalize[1]]))
    return v2.Compose(steps)


def seed_loader(dataset: Dataset, batch_size: int, workers: int, shuffle: bool = True) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=workers, drop_last=True)


def per_image_rate(images: torch.Tensor, name: str, layout: str, workers: int, batch_size: int) -> float:
    """images/s of one DataLoader pass; the first batch (and the workers' start) untimed."""
    dataset = PilImages(images, torch.zeros(len(images), dtype=torch.long), seed_transform(name, layout))
    torch.manual_seed(0)
    batches = iter(seed_loader(dataset, batch_size, workers))
    next(batches)
    start, seen = time.perf_counter(), 0
    for batch, _ in batches:
        seen += len(batch)
    return seen / (time.perf_counter() - start)


def load_augment_at(rev: str):
    """fer_tune/augment.py as it was at git revision `rev`, imported as a separate module."""
    root = Path(__file__).resolve().parents[1]
    source = subprocess.run(
        ["git", "show", f"{rev}:fer_tune/augment.py"], cwd=root, check=True, capture_output=True, text=True
    ).stdout
    path = Path(tempfile.mkdtemp()) / f"augment_{rev}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(f"augment_{rev}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(args: argparse.Namespace) -> list[dict]:
    mode = "full" if args.full else "short"
    record = Recorder("pipeline", mode, args.out)
    malloc = MALLOC_TUNING if args.tune_malloc and tune_malloc() else "glibc default"
    suffix = "+mallopt" if malloc != "glibc default" else ""
    n = args.images or (FULL_IMAGES if args.full else SHORT_IMAGES)
    images = faces(n)
    cpu = torch.device("cpu")
    before = load_augment_at(args.before) if args.before else None
    lines = []
    for batch_size in args.batch_sizes:
        common = dict(images=n, batch_size=batch_size, rounds=args.rounds, malloc=malloc)
        for name in args.strategies:
            figure = f"{name}/b{batch_size}{suffix}"
            # Rounds alternate the two sides, and each keeps its best: a busy moment on a shared
            # machine then slows one round rather than one side.
            batched, per_image, old = (0.0, 1), {}, (0.0, 1)
            for _ in range(args.rounds):
                batched = max(batched, best_batched(images, create_augmentation(name), batch_size, cpu))
                for layout in args.layouts:
                    for workers in args.workers:
                        key = f"{layout}/workers={workers}"
                        per_image[key] = max(
                            per_image.get(key, 0.0), per_image_rate(images, name, layout, workers, batch_size)
                        )
                if before is not None:
                    old = max(old, best_batched(images, before.create_augmentation(name), batch_size, cpu))
            best = max(per_image, key=per_image.get)
            lines.append(
                record(f"{figure}/batched", batched[0], "images/s", threads=batched[1], device="cpu", **common)
            )
            lines.append(
                record(
                    f"{figure}/per_image",
                    per_image[best],
                    "images/s",
                    best=best,
                    all={k: round(v) for k, v in per_image.items()},
                    **common,
                )
            )
            lines.append(
                record(
                    f"{figure}/ratio",
                    batched[0] / per_image[best],
                    "x",
                    target=f">= {TARGET_RATIO}",
                    definition="batched images/s / best per-image torchvision DataLoader images/s",
                    **common,
                )
            )
            if before is not None:
                lines.append(record(f"{figure}/batched@{args.before}", old[0], "images/s", threads=old[1], **common))
                lines.append(record(f"{figure}/ratio@{args.before}", old[0] / per_image[best], "x", **common))
    if torch.cuda.is_available():
        cuda = torch.device("cuda")
        gpu_images = faces(FULL_IMAGES)
        for batch_size in args.batch_sizes:
            for name in args.strategies:
                rate, _ = best_batched(gpu_images, create_augmentation(name), batch_size, cuda)
                lines.append(
                    record(
                        f"{name}/b{batch_size}/batched_cuda",
                        rate,
                        "images/s",
                        device="cuda",
                        images=FULL_IMAGES,
                        batch_size=batch_size,
                    )
                )
    else:
        lines.append(record.not_measured("batched_cuda", "images/s"))
    write_readme(args.out)
    return lines


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.pipeline", description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help=f"{FULL_IMAGES:,} images (default {SHORT_IMAGES:,})")
    parser.add_argument("--images", type=int, help="images per pass (overrides --full)")
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=list(BATCH_SIZES))
    parser.add_argument("--strategies", nargs="+", default=list_augmentations(), choices=list_augmentations())
    parser.add_argument("--workers", nargs="+", type=int, default=list(WORKERS))
    parser.add_argument("--layouts", nargs="+", default=list(LAYOUTS), choices=LAYOUTS)
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="measurements of each side, best kept")
    parser.add_argument("--tune-malloc", action="store_true", help=f"first apply {MALLOC_TUNING} (see bench.common)")
    parser.add_argument("--before", metavar="REV", help="also time fer_tune/augment.py at this git revision")
    parser.add_argument("--out", type=Path, help="results folder (default results/bench)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
