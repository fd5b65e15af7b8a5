"""Training throughput per model: fer-tune's `fit` against a seed-style training loop.

    .venv/bin/python -m bench.trial                    # short: 2 timed batches per model on CPU, 200 on CUDA
    .venv/bin/python -m bench.trial --full             # 448 timed batches: one FER2013 epoch
    .venv/bin/python -m bench.trial --models model3 --batches 8

For every registered model, on synthetic faces, batch size 64, augmentation trans4:
* fit: `fer_tune.core.training.fit` as a trial runs it (data on the device as uint8, batched
  augmentation; on CUDA bf16 autocast and channels_last, `--compile` adds torch.compile);
* seed: the seeds' loop: a Dataset of PIL images, per-image torchvision transforms (with
  Normalize) in a DataLoader with 2 workers, the model in fp32, Adam.
Each trains two epochs of `--batches` batches and times the second (the first pays for
start-up: DataLoader workers, cuDNN autotuning, compilation); both epochs end with the same
64-image validation pass. images/s = training images of the timed epoch / its seconds.
Every run is a fresh process. Peak memory: torch.cuda.max_memory_allocated on CUDA; on CPU
the process's peak RSS (resource.getrusage; Python, torch and the data included, DataLoader
workers not).

On CPU, short mode also times model3 at width 1/8 (quick.yaml's CPU-sized nets): at full width a
CPU spends seconds per batch in the network, and the input pipeline cannot show.
model3's time for one FER2013 training epoch (28,709 images) is extrapolated from the timed
epoch (time per image x 28,709) and said so. On CUDA, `--concurrent K` (default 4, as
full.yaml's gpu: 0.25) also runs K fit processes of model3 on one GPU at once and reports
their aggregate images/s.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch
import torch.nn.functional as F

from bench.common import Recorder, peak_rss_mb, write_readme
from bench.pipeline import PilImages, seed_loader, seed_transform
from fer_tune.constants import IMAGE_SIZE
from fer_tune.core.config import TrainConfig
from fer_tune.core.models import capabilities, create_model, list_models
from fer_tune.core.training import fit
from fer_tune.data import load_dataset
from fer_tune.data.dataset import FerDataset, Split

BATCH_SIZE = 64  # TrainConfig's default
AUGMENTATION = "trans4"  # TrainConfig's default (Tandon 2020's best)
VAL_IMAGES = 64  # a small validation pass ends every epoch, as in fit
SEED_WORKERS = 2  # DataLoader workers of the seed loop
FER2013_TRAIN = 28709  # images in FER2013's training split: one epoch
SHORT_BATCHES = {"cpu": 2, "cuda": 200}  # timed batches per model and loop
FULL_BATCHES = 448  # 28,709 // 64: a FER2013 epoch
CONCURRENT = 4  # trials sharing one GPU (full.yaml: resources.gpu 0.25)
NARROW_WIDTH = 0.125  # quick.yaml's width: CPU-sized nets, where the input pipeline matters
NARROW_BATCHES = 20  # timed batches for the narrow net in short mode
TARGETS = {"gpu_aggregate": ">= 50000", "fer2013_epoch_cuda": "< 1"}


def bench_data(batches: int, batch_size: int) -> FerDataset:
    """Synthetic faces: a train split of exactly batches * batch_size images, VAL_IMAGES to validate."""
    n_train = batches * batch_size
    data = load_dataset("synthetic", n=max(2000, min(n_train * 5 // 4, 36000)), seed=0)
    repeat = (n_train + len(data.train) - 1) // len(data.train)
    take = lambda t: t.repeat(repeat, *[1] * (t.dim() - 1))[:n_train]  # noqa: E731
    train = Split(take(data.train.images), take(data.train.labels))
    validation = Split(data.validation.images[:VAL_IMAGES], data.validation.labels[:VAL_IMAGES])
    return FerDataset(train, validation, None, data.classes, data.source)


def _memory_start(device: torch.device) -> float:
    """Start a peak-memory window; returns the process's peak RSS so far (MB)."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    return peak_rss_mb()


def _memory_peak(device: torch.device, before: float) -> dict:
    if device.type == "cuda":
        return {"peak_mb": torch.cuda.max_memory_allocated() / 2**20, "memory": "cuda max_memory_allocated"}
    return {"peak_mb": peak_rss_mb(), "memory": f"peak RSS of a fresh process; {before:.0f} MB before training"}


def time_fit(model: str, batches: int, batch_size: int, device: str, compile: bool, width: float = 1.0) -> dict:
    """Seconds of fit's second epoch, and peak memory (run it in a fresh process: `isolated`)."""
    data, device = bench_data(batches, batch_size), torch.device(device)
    config = TrainConfig(
        model=model,
        augmentation=AUGMENTATION,
        batch_size=batch_size,
        epochs=2,
        device=str(device),
        compile=compile,
        width=width,
    )
    before = _memory_start(device)
    history = fit(config, data)
    return {"seconds": history[1]["epoch_seconds"], **_memory_peak(device, before)}


def time_seed_loop(model: str, batches: int, batch_size: int, device: str, workers: int, width: float = 1.0) -> dict:
    """The seeds' training loop: PIL images, per-image transforms in a DataLoader, fp32."""
    data, device = bench_data(batches, batch_size), torch.device(device)
    torch.manual_seed(0)
    normalize = (data.mean, data.std)
    train = PilImages(data.train.images, data.train.labels, seed_transform(AUGMENTATION, "pil", normalize))
    validation = PilImages(data.validation.images, data.validation.labels, seed_transform("none", "pil", normalize))
    net = create_model(model, dropout=TrainConfig().dropout, width=width).to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=TrainConfig().lr)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    ends = []
    before = _memory_start(device)
    for _ in range(2):
        net.train()
        for images, labels in seed_loader(train, batch_size, workers):
            images, labels = images.to(device), labels.to(device)
            loss = F.cross_entropy(net(images), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        net.eval()
        with torch.no_grad():
            for images, labels in seed_loader(validation, batch_size, workers, shuffle=False):
                net(images.to(device)).argmax(1).eq(labels.to(device)).float().mean().item()
        sync()
        ends.append(time.perf_counter())
    return {"seconds": ends[1] - ends[0], **_memory_peak(device, before)}


def isolated(fn, *args):
    """fn(*args) in a fresh process, so peak memory and allocator state are the run's own."""
    with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as pool:  # CUDA cannot be forked
        return pool.submit(_with_start_method, mp.get_start_method(), fn, *args).result()


def _with_start_method(method: str, fn, *args):
    # A spawned process makes spawn its default, and DataLoader workers would then re-import
    # torch (seconds each): start them as a script on this platform does.
    mp.set_start_method(method, force=True)
    return fn(*args)


def _concurrent_worker(
    model: str, batches: int, batch_size: int, epochs: int, compile: bool, device: str, barrier, results
) -> None:
    """One of K trials sharing the GPU: a warm-up epoch, wait for the others, then `epochs` timed."""
    torch.set_num_threads(1)
    data = bench_data(batches, batch_size)
    config = TrainConfig(
        model=model, augmentation=AUGMENTATION, batch_size=batch_size, epochs=1 + epochs, device=device, compile=compile
    )
    marks: list[float] = []

    def on_epoch(metrics, state):
        if metrics["epoch"] == 1:
            barrier.wait()
        marks.append(time.time())  # wall clock: comparable across processes

    fit(config, data, on_epoch=on_epoch)
    results.put({"images": epochs * batches * batch_size, "start": marks[0], "end": marks[-1]})


def concurrent_rate(
    k: int, model: str, batches: int, batch_size: int, epochs: int, compile: bool, device: str = "cuda"
) -> dict:
    """Aggregate images/s of k fit processes sharing one GPU (timed epochs only)."""
    context = mp.get_context("spawn")  # CUDA cannot be forked
    barrier, results = context.Barrier(k), context.Queue()
    workers = [
        context.Process(
            target=_concurrent_worker, args=(model, batches, batch_size, epochs, compile, device, barrier, results)
        )
        for _ in range(k)
    ]
    for worker in workers:
        worker.start()
    runs = [results.get() for _ in workers]
    for worker in workers:
        worker.join()
    wall = max(r["end"] for r in runs) - min(r["start"] for r in runs)
    return {"images_per_s": sum(r["images"] for r in runs) / wall, "wall_seconds": wall, "processes": k}


def run(args: argparse.Namespace) -> list[dict]:
    mode = "full" if args.full else "short"
    record = Recorder("trial", mode, args.out)
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    if args.cpu_only:
        devices = devices[:1]
    lines = []
    for device in devices:
        batches = args.batches or (FULL_BATCHES if args.full else SHORT_BATCHES[device.type])
        setup = dict(
            device=device.type,
            batches=batches,
            batch_size=args.batch_size,
            augmentation=AUGMENTATION,
            timed="second of two epochs, incl. a 64-image validation pass",
        )
        runs = [(model, 1.0, batches) for model in args.models]
        if device.type == "cpu" and "model3" in args.models:  # CPU-sized nets, where the pipeline shows
            runs.append(("model3", NARROW_WIDTH, max(batches, NARROW_BATCHES)))
        for model, width, n_batches in runs:
            name = model if width == 1.0 else f"{model}_w{width}"
            images = n_batches * args.batch_size
            setup = dict(setup, batches=n_batches, width=width)
            ours = isolated(
                time_fit, model, n_batches, args.batch_size, device.type, args.compile and device.type == "cuda", width
            )
            seed = isolated(time_seed_loop, model, n_batches, args.batch_size, device.type, args.seed_workers, width)
            for loop, run_ in (("fit", ours), ("seed", seed)):
                lines.append(
                    record(
                        f"{name}/{device.type}/{loop}_images_per_s",
                        images / run_["seconds"],
                        "images/s",
                        epoch_seconds=round(run_["seconds"], 3),
                        **setup,
                        **({"seed_workers": args.seed_workers} if loop == "seed" else {}),
                    )
                )
                lines.append(
                    record(
                        f"{name}/{device.type}/{loop}_peak_memory",
                        run_["peak_mb"],
                        "MB",
                        measure=run_["memory"],
                        device=device.type,
                    )
                )
            lines.append(
                record(
                    f"{name}/{device.type}/speedup",
                    seed["seconds"] / ours["seconds"],
                    "x",
                    definition="seed-loop epoch seconds / fit epoch seconds",
                    device=device.type,
                )
            )
            if name == "model3":
                for loop, run_ in (("fit", ours), ("seed", seed)):
                    lines.append(
                        record(
                            f"model3/{device.type}/fer2013_epoch_{loop}",
                            run_["seconds"] * FER2013_TRAIN / images,
                            "s",
                            target=TARGETS["fer2013_epoch_cuda"] if device.type == "cuda" else None,
                            note=f"extrapolated from {images:,} images: seconds per image x {FER2013_TRAIN:,}",
                            **setup,
                        )
                    )
    if torch.cuda.is_available() and not args.cpu_only:
        batches = args.batches or (FULL_BATCHES if args.full else SHORT_BATCHES["cuda"])
        result = concurrent_rate(
            args.concurrent, "model3", batches, args.batch_size, 2 if args.full else 1, args.compile
        )
        lines.append(
            record(
                "model3/cuda/concurrent_images_per_s",
                result["images_per_s"],
                "images/s",
                target=TARGETS["gpu_aggregate"],
                **result,
                batches=batches,
            )
        )
    else:
        lines.append(record.not_measured("model3/cuda/concurrent_images_per_s", "images/s", TARGETS["gpu_aggregate"]))
        lines.append(record.not_measured("model3/cuda/fer2013_epoch_fit", "s", TARGETS["fer2013_epoch_cuda"]))
    write_readme(args.out)
    return lines


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.trial", description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help=f"{FULL_BATCHES} timed batches per model")
    parser.add_argument("--batches", type=int, help="timed batches per model and loop (overrides --full)")
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    # 48 px models by default: the ImageNet backbones at 224 px are bench/models.py's business.
    native = [m for m in list_models() if capabilities(m).default_input_size == IMAGE_SIZE]
    parser.add_argument("--models", nargs="+", default=native, choices=list_models())
    parser.add_argument("--seed-workers", type=int, default=SEED_WORKERS)
    parser.add_argument("--compile", action="store_true", help="torch.compile fit's model on CUDA")
    parser.add_argument("--concurrent", type=int, default=CONCURRENT, help="trials sharing the GPU (CUDA only)")
    parser.add_argument("--cpu-only", action="store_true", help="skip the CUDA measurements")
    parser.add_argument("--out", type=Path, help="results folder (default results/bench)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
