"""Trial packing: K trials of one architecture trained as one vmapped model in one process, against K processes.

    .venv/bin/python -m bench.packing                        # K = 1, 2, 4: model3 at width 0.25 on the CPU
    .venv/bin/python -m bench.packing --k 1 2 4 8 --width 1 --device cuda

A small CNN on 48 px faces cannot fill a GPU: each step is a few dozen small kernels, and the
GPU waits on their launches. Packing stacks the K trials' weights (torch.func.stack_module_state)
and runs one forward and backward over all of them (torch.func.functional_call under vmap), so
each kernel does K trials' work. Each trial keeps its own weights, its own learning rate, its own
Adam moments (`PackedAdam`: slices of stacked tensors), its own batches, augmentation draws and
dropout masks (vmap randomness="different"), and its own loss and accuracy. What it cannot do is
differ in architecture or batch size: it packs the trials of one model, as a sweep's grid over
optimizer settings has.

Measured: images/s of training steps (augmentation, forward, backward, optimizer) of
* packed: one process, K trials in one vmapped step, `--steps` timed steps after `WARMUP_STEPS`;
* separate: K processes side by side, each one trial in fer_tune.core.training.train_one_epoch
  (the project's loop) for the same steps, started together after their warm-up; aggregate
  images/s = all images / (last end - first start), wall clock across processes.
Both sides use the same torch threads in total (the separate side splits the cores between its
processes). Results: results/bench/packing.json. tests/test_bench_gpu.py checks that a packed step
gives each trial the loss an unpacked step gives it, so the prototype cannot rot.
"""

from __future__ import annotations

import argparse
import copy
import json
import select
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state

from bench.common import Recorder, write_readme
from fer_tune.core.augment import create_augmentation
from fer_tune.core.checkpoint import TrainState
from fer_tune.core.classifier import build_model
from fer_tune.core.config import TrainConfig
from fer_tune.core.optim import create_optimizer, create_schedule
from fer_tune.core.training import parameter_groups, train_one_epoch
from fer_tune.data import load_dataset
from fer_tune.data.dataset import FerDataset, Split, unit_scale

MODEL = "model3"  # the seeds' best CNN, Tandon 2020
WIDTH = 0.25  # a quarter of model3's channels: a batch-64 step in 0.1-0.4 s on the 2-core CPU, not seconds
BATCH_SIZE = 64  # TrainConfig's default
AUGMENTATION = "trans4"  # TrainConfig's default
KS = (1, 2, 4)  # trials packed (and processes side by side)
STEPS = 20  # timed steps per measurement
ROUNDS = 2  # measurements of each side, alternating, best kept
WARMUP_STEPS = 2  # untimed: first-call costs (allocator, kernels, thread pools)
LRS = (1e-3, 3e-4, 3e-3, 1e-4, 2e-3, 5e-4, 1e-2, 2e-4)  # one per trial: what a sweep over lr packs
IMAGES = 2000  # synthetic faces to draw batches from
PROTOCOL = "@bench "  # stdout lines of a side-by-side worker that its parent reads
SIDE_BY_SIDE_TIMEOUT_S = 300  # a worker silent this long is stuck: its group is stopped


# ---------------------------------------------------------------- packed trials


class PackedAdam:
    """torch.optim.Adam (its defaults: betas (0.9, 0.999), eps 1e-8, no weight decay) over stacked
    parameters [K, ...], with one learning rate per trial. Adam is elementwise, so each trial's slice
    of the moments is exactly its own optimizer state; only lr needs the per-trial view."""

    def __init__(self, params: dict[str, torch.Tensor], lrs: torch.Tensor, betas=(0.9, 0.999), eps: float = 1e-8):
        self.params = list(params.values())
        self.lrs = [lrs.view(-1, *[1] * (p.dim() - 1)).to(p) for p in self.params]  # broadcast over each param
        self.betas, self.eps, self.steps = betas, eps, 0
        self.exp_avg = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        # torch's single-tensor Adam, term for term; _foreach_ ops: a few kernels for all tensors, not a few each
        self.steps += 1
        beta1, beta2 = self.betas
        grads = [p.grad for p in self.params]
        torch._foreach_lerp_(self.exp_avg, grads, 1 - beta1)
        torch._foreach_mul_(self.exp_avg_sq, beta2)
        torch._foreach_addcmul_(self.exp_avg_sq, grads, grads, value=1 - beta2)
        denom = torch._foreach_sqrt(self.exp_avg_sq)
        torch._foreach_div_(denom, (1 - beta2**self.steps) ** 0.5)
        torch._foreach_add_(denom, self.eps)
        updates = torch._foreach_div(self.exp_avg, denom)
        torch._foreach_mul_(updates, self.lrs)
        torch._foreach_sub_(self.params, torch._foreach_div(updates, 1 - beta1**self.steps))


class PackedTrials:
    """K trials of `models[0]`'s architecture as one: stacked weights, per-trial lr and Adam state."""

    def __init__(self, models: list[nn.Module], lrs: list[float]):
        device = next(models[0].parameters()).device
        self.k = len(models)
        params, self.buffers = stack_module_state(models)  # leaves [K, ...] that require grad
        self.params = params
        self.base = copy.deepcopy(models[0]).to("meta")  # the architecture only: weights come from the stacks
        self.optimizer = PackedAdam(params, torch.tensor(lrs, device=device))

    def train(self, mode: bool = True) -> None:
        self.base.train(mode)

    def _one(self, params, buffers, images, labels):
        logits = functional_call(self.base, (params, buffers), (images,))
        return F.cross_entropy(logits, labels), (logits.argmax(1) == labels).sum()

    def step(self, images: torch.Tensor, labels: torch.Tensor, autocast=None) -> tuple[torch.Tensor, torch.Tensor]:
        """One training step of every trial on its own batch (images [K, B, 1, H, W], labels [K, B]);
        returns each trial's loss and correct count [K], left on the device."""
        forward = torch.vmap(self._one, randomness="different")  # each trial its own dropout masks
        with autocast or torch.autocast(images.device.type, enabled=False):
            losses, correct = forward(self.params, self.buffers, images, labels)
        self.optimizer.zero_grad()
        losses.sum().backward()  # the trials share no weight, so each gets exactly its own gradient
        self.optimizer.step()
        return losses.detach(), correct


def trial_models(k: int, width: float, device: torch.device, data: FerDataset, dropout: float = 0.25) -> list:
    """K fresh models as fer-tune builds them (normalization inside), each from its own seed."""
    models = []
    for seed in range(k):
        torch.manual_seed(seed)
        config = TrainConfig(model=MODEL, width=width, dropout=dropout)
        models.append(build_model(config, data.num_classes, data.mean, data.std).to(device))
    return models


def packed_batches(train: Split, k: int, batch_size: int, generator: torch.Generator, augment):
    """K batches (each trial its own images and augmentation draws): images [K, B, 1, 48, 48], labels [K, B]."""
    index = torch.randint(len(train), (k * batch_size,), generator=generator, device=train.images.device)
    images = augment(unit_scale(train.images[index].unsqueeze(1)), generator)
    return images.view(k, batch_size, *images.shape[1:]), train.labels[index].view(k, batch_size)


def packed_rate(
    data: FerDataset, k: int, width: float, batch_size: int, steps: int, device: torch.device, autocast=None
) -> dict:
    """images/s of K packed trials training `steps` steps (after WARMUP_STEPS), and each trial's mean loss."""
    train = Split(data.train.images.to(device), data.train.labels.to(device))
    packed = PackedTrials(trial_models(k, width, device, data), list(LRS[:k]))
    packed.train()
    augment, generator = create_augmentation(AUGMENTATION), torch.Generator(device=device).manual_seed(0)
    for _ in range(WARMUP_STEPS):
        packed.step(*packed_batches(train, k, batch_size, generator, augment), autocast)
    synchronize(device)
    started = time.perf_counter()
    total_loss = torch.zeros(k, device=device)
    for _ in range(steps):
        losses, _ = packed.step(*packed_batches(train, k, batch_size, generator, augment), autocast)
        total_loss += losses.float()
    synchronize(device)
    seconds = time.perf_counter() - started
    return {
        "images_per_s": k * batch_size * steps / seconds,
        "seconds": seconds,
        "loss_per_trial": [round(v, 4) for v in (total_loss / steps).tolist()],  # once, after the clock stopped
    }


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------- trials in separate processes


def side_by_side(commands: list[list[str]], env: dict | None = None, timeout_s: float = SIDE_BY_SIDE_TIMEOUT_S):
    """Run K worker processes that each warm up, say ready, wait for `go` and then report: the timed parts start
    together. Returns each worker's ready and result messages and when it was launched (wall clock).

    A worker talks on stdout in lines starting with PROTOCOL (`announce`); everything else it prints is passed
    on. A worker that exits, errs or stays silent past timeout_s stops the group with an error."""
    launched = time.time()
    workers = [
        subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        for command in commands
    ]
    try:
        ready = [_next_message(worker, timeout_s) for worker in workers]
        for worker in workers:
            worker.stdin.write("go\n")
            worker.stdin.flush()
        results = [_next_message(worker, timeout_s) for worker in workers]
        for worker in workers:
            worker.wait(timeout=timeout_s)
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    return [{"launched": launched, **r, **s} for r, s in zip(ready, results)]


def _next_message(worker: subprocess.Popen, timeout_s: float) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([worker.stdout], [], [], left)[0]:
            raise RuntimeError(f"worker {worker.pid} silent for {timeout_s:.0f} s")
        line = worker.stdout.readline()
        if not line:
            raise RuntimeError(f"worker {worker.pid} exited ({worker.wait()}) before reporting; see its stderr")
        if line.startswith(PROTOCOL):
            message = json.loads(line[len(PROTOCOL) :])
            if "error" in message:
                raise RuntimeError(f"worker {worker.pid}: {message['error']}")
            return message
        print(line, end="", flush=True)


def announce(**message) -> None:
    """A worker's message to side_by_side."""
    print(PROTOCOL + json.dumps(message), flush=True)


def wait_for_go() -> None:
    if sys.stdin.readline().strip() != "go":
        raise SystemExit("side-by-side worker: parent gone")


def aggregate(runs: list[dict]) -> dict:
    """Images/s of workers run side by side: all their images over the span from the first start to the last end."""
    wall = max(r["end"] for r in runs) - min(r["start"] for r in runs)
    return {
        "images_per_s": sum(r["images"] for r in runs) / wall,
        "wall_seconds": round(wall, 3),
        "processes": len(runs),
    }


def save_faces(data: FerDataset, folder: Path) -> Path:
    """The dataset as one tensor file a worker loads in milliseconds (generating it again takes seconds)."""
    path = folder / "faces.pt"
    torch.save(
        {
            "train": (data.train.images, data.train.labels),
            "validation": (data.validation.images, data.validation.labels),
        },
        path,
    )
    return path


def load_faces(path: str | Path) -> FerDataset:
    saved = torch.load(path, weights_only=True)
    from fer_tune.constants import EMOTIONS

    return FerDataset(Split(*saved["train"]), Split(*saved["validation"]), None, EMOTIONS, f"bench faces {path}")


def separate_trial(spec: dict) -> None:
    """Worker: one trial in the project's loop (train_one_epoch), warm-up, `go`, then spec['steps'] timed steps."""
    torch.set_num_threads(spec["threads"])
    device = torch.device(spec["device"])
    data = load_faces(spec["faces"])
    torch.manual_seed(spec["trial"])
    config = TrainConfig(
        model=MODEL,
        width=spec["width"],
        batch_size=spec["batch_size"],
        lr=LRS[spec["trial"]],
        augmentation=AUGMENTATION,
        device=spec["device"],
        scheduler="none",
        amp=spec["amp"],
    )
    state, network = fresh_state(config, data, device)
    train = Split(data.train.images.to(device), data.train.labels.to(device))
    autocast = bf16_autocast(device, config.amp)
    loss_fn = nn.CrossEntropyLoss()
    train_one_epoch(network, first(train, WARMUP_STEPS * config.batch_size), loss_fn, state, autocast)
    synchronize(device)
    announce(ready=time.time())
    wait_for_go()
    timed = first(train, spec["steps"] * config.batch_size)
    start = time.time()
    train_one_epoch(network, timed, loss_fn, state, autocast)  # returns .item()s: the device has finished
    announce(start=start, end=time.time(), images=len(timed))


def fresh_state(config: TrainConfig, data: FerDataset, device: torch.device, compile_options: dict | None = None):
    """A new trial's TrainState and the network its loop calls, built as fer_tune.core.training.fit builds them
    (fit takes no compile mode, and times validation with training: benches time the pieces)."""
    model = build_model(config, data.num_classes, data.mean, data.std).to(device)
    if device.type == "cuda" and config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    steps = max(1, len(data.train) // config.batch_size)
    hyperparameters = config.model_dump()
    optimizer = create_optimizer(config.optimizer, parameter_groups(model, config), **hyperparameters)
    schedule = create_schedule(config.scheduler, optimizer, steps_per_epoch=steps, **hyperparameters)
    state = TrainState(config, model, optimizer, schedule, torch.Generator(device=device).manual_seed(config.seed))
    network = torch.compile(model, **compile_options) if compile_options is not None else model
    return state, network


def bf16_autocast(device: torch.device, enabled: bool):
    """fit's precision rule: bf16 autocast on CUDA when asked, fp32 on the CPU."""
    enabled = enabled and device.type == "cuda"
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


def first(split: Split, n: int) -> Split:
    """The split's first n images, cycled when it has fewer."""
    repeat = -(-n // len(split))
    cycle = lambda t: t.repeat(repeat, *[1] * (t.dim() - 1))[:n]  # noqa: E731
    return Split(cycle(split.images), cycle(split.labels))


def separate_rate(faces: Path, k: int, width: float, batch_size: int, steps: int, device: str, amp: bool) -> dict:
    """Aggregate images/s of K single-trial processes side by side, the cores split between them."""
    threads = max(1, torch.get_num_threads() // k)
    commands = [
        [sys.executable, "-m", "bench.packing", "--worker", json.dumps(spec)]
        for spec in (
            dict(faces=str(faces), trial=i, width=width, batch_size=batch_size, steps=steps, device=device, amp=amp)
            | {"threads": threads}
            for i in range(k)
        )
    ]
    return {**aggregate(side_by_side(commands)), "threads_per_process": threads}


# ---------------------------------------------------------------- the bench


def faces(n: int = IMAGES) -> FerDataset:
    return load_dataset("synthetic", n=n, seed=0)


def best_of(rounds: int, *measures) -> list[dict]:
    """Each measure's fastest of `rounds` runs, the measures taking turns: a busy moment on a shared machine
    then slows one round rather than one side."""
    best: list[dict | None] = [None] * len(measures)
    for _ in range(rounds):
        for i, measure in enumerate(measures):
            result = measure()
            if best[i] is None or result["images_per_s"] > best[i]["images_per_s"]:
                best[i] = result
    return best


def run(args: argparse.Namespace) -> list[dict]:
    record = Recorder("packing", args.mode, args.out)
    device = torch.device(args.device)
    data = faces(args.images)
    setup = dict(
        model=MODEL,
        width=args.width,
        batch_size=args.batch_size,
        steps=args.steps,
        rounds=args.rounds,
        augmentation=AUGMENTATION,
        device=device.type,
        torch_threads=torch.get_num_threads(),
        command="python -m bench.packing " + " ".join(sys.argv[1:]),
        seeds="trial k: model seed k; batches: seed 0",
    )
    autocast = bf16_autocast(device, True)
    common = (args.width, args.batch_size, args.steps)
    lines = []
    with tempfile.TemporaryDirectory() as folder:
        saved = save_faces(data, Path(folder))
        for k in args.k:
            packed, separate = best_of(
                args.rounds,
                lambda: packed_rate(data, k, *common, device, autocast),  # noqa: B023 - called inside this iteration
                lambda: separate_rate(saved, k, *common, device.type, amp=True),  # noqa: B023
            )
            rate, apart = packed["images_per_s"], separate["images_per_s"]
            lines += [
                record(f"k{k}/packed_images_per_s", rate, "images/s", k=k, loss_per_trial=packed["loss_per_trial"],
                       **setup),
                record(f"k{k}/separate_images_per_s", apart, "images/s", k=k,
                       wall_seconds=separate["wall_seconds"], threads_per_process=separate["threads_per_process"],
                       **setup),
                record(f"k{k}/packed_over_separate", rate / apart, "x", k=k,
                       definition="packed images/s / separate processes' aggregate images/s", **setup),
            ]  # fmt: skip
    write_readme(args.out)
    return lines


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.packing", description=__doc__.splitlines()[0])
    parser.add_argument("--k", nargs="+", type=int, default=list(KS), help="trials packed / processes")
    parser.add_argument("--width", type=float, default=WIDTH)
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    parser.add_argument("--steps", type=int, default=STEPS, help="timed steps per measurement")
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="measurements of each side, best kept")
    parser.add_argument("--images", type=int, default=IMAGES, help="synthetic faces to draw batches from")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--mode", default="short", help="the lines' mode")
    parser.add_argument("--out", type=Path, help="results folder (default results/bench)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # JSON: run one separate trial (side_by_side)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker:
        separate_trial(json.loads(args.worker))
    else:
        run(args)


if __name__ == "__main__":
    sys.exit(main())
