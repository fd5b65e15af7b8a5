"""The GPU benchmark in one call: what a trial costs on one GPU, and what search_spaces/full.yaml would take.

    make bench-gpu                                         # prints the one device call that runs this, and
                                                           # fetches the wheels it carries (pydantic)
    python -m bench.gpu --commit "$(git rev-parse HEAD)"   # on a GPU box: no new figure after --budget-s 420
    python -m bench.gpu --smoke --out /tmp/gpu-smoke       # the same code paths on the CPU at tiny sizes (~1 min)

Every figure is a JSON line appended to <--out>/gpu.json (default results/bench/gpu.json) the moment it
is measured, so a run killed at its time limit keeps what it had; every line names the device, the
torch, CUDA and cuDNN versions, the commit, the command and the seeds. On FER2013-sized synthetic
data (28,709 training and 3,589 validation faces, 48 px, 7 classes); `plan` orders them, what the
targets and the estimate need first:

* train/<model>/<precision>/<compile>/b<batch>/{images_per_s,epoch_s}: one FER2013 training epoch of
  model3 (width 1), vgg and resnet18 in fer_tune.core.training.train_one_epoch (the loop fit runs;
  augmentation trans4 on the device, Adam), after a warm-up of WARMUP_BATCHES batches: fp32 or bf16
  autocast, channels_last (+cl) or not, eager, torch.compile's default or mode="reduce-overhead"
  (CUDA graphs), batch 64/128/256; and `seed_dataloader`: the seeds' pipeline (PIL images,
  per-image torchvision transforms in a 2-worker DataLoader, then .to(device)), Sizes.seed_batches timed.
  fit itself takes no compile mode and times validation with training, so the loop is driven here
  from the same pieces fit builds (bench.packing.fresh_state).
* fixed/<model>/...: a trial's fixed costs: eval_epoch_s (fit's validation: 3,589 faces, flip TTA),
  checkpoint_save_s (fer_tune.core.checkpoint, every epoch in a sweep), compile_<mode>_b<batch>_s
  (the first step minus a steady one), and fixed/model3/start_to_first_step_s (a fresh process's launch to
  its first training step done, from the K=1 run below).
* concurrent/model3/k<K>/...: K = 1, 2, 4, 8 trial processes (fit, as a sweep's trial runs it, width
  1, batch 64) on one device, their timed epochs started together: aggregate training images/s (the
  epochs' wall time includes their validation) and memory per trial (torch.cuda.max_memory_allocated;
  peak RSS on the CPU). With nvidia-cuda-mps-control present, K = 4, 8 again under CUDA MPS.
* packed/model3/k<K>/...: K trials as one vmapped model in one process (bench.packing) against K
  processes running the same steps.
* host_syncs/model3/per_step (CUDA): synchronizing calls per training step, from
  torch.cuda.set_sync_debug_mode over 2 and 6 steps (tests/test_host_syncs.py checks the same on the CPU).
* estimate/full_yaml/gpu_minutes: full.yaml's wall time on one GPU from the figures above (`estimate`).
* summary/*: the targets (H100/H200): >= 100,000 model3 training images/s aggregate per GPU; one
  FER2013 epoch of model3 in <= 0.3 s; full.yaml in <= 20 GPU-minutes.

A figure that fails (an error, CUDA out of memory) is a line with value null and the error as its
note; the run goes on. Once --budget-s seconds are spent no new measurement starts, and
budget/skipped names those left out. The end prints a short table: figure, value, unit, target.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from bench import packing
from bench.common import Recorder, cpu_model, git_commit, peak_rss_mb, write_readme
from fer_tune.core.augment import create_augmentation
from fer_tune.core.checkpoint import STATE_FILE, save_checkpoint
from fer_tune.core.config import TrainConfig
from fer_tune.core.metrics import evaluate
from fer_tune.core.models import capabilities
from fer_tune.core.training import fit, train_one_epoch
from fer_tune.data import load_dataset
from fer_tune.data.dataset import FerDataset, Split, unit_scale

FER2013_TRAIN, FER2013_VALIDATION = 28709, 3589  # FER2013's Training and PublicTest images
MODELS = ("model3", "vgg", "resnet18")  # the seeds' best CNN, the biggest seed CNN, a torchvision backbone
PRECISIONS = ("fp32", "bf16")  # bf16 autocast is fit's default on CUDA (amp: true)
COMPILE_MODES = ("default", "reduce-overhead")  # torch.compile's; reduce-overhead adds CUDA graphs
WARMUP_BATCHES = 3  # untimed: the first (compilation) timed alone, 2 more (cuDNN's kernel choice, CUDA graph capture)
SEED_WORKERS = 2  # DataLoader workers of the seed loop, as bench/trial.py's
BUDGET_S = 420  # default --budget-s: leaves a 600 s device call time to finish the figure in flight
DATA_SEED, TRAIN_SEED = 0, 0  # synthetic faces' seed; TrainConfig's seed (packing: trial k has seed k)
TARGETS = {
    "summary/model3_aggregate_images_per_s": ">= 100000",
    "summary/model3_fer2013_epoch_s": "<= 0.3",
    "estimate/full_yaml/gpu_minutes": "<= 20",
    "host_syncs/model3/per_step": "<= 0",
}

# search_spaces/full.yaml, read by hand: the GPU box has no PyYAML promised (tests/test_bench_gpu.py
# checks these against the file).
FULL_YAML = {
    "num_samples": 200,  # budget.num_samples
    "max_epochs": 150,  # budget.max_epochs
    "grace_period": 5,  # pruner (asha)
    "reduction_factor": 3,
    "top_k": 3,  # select: re-trained for their full epochs ...
    "seeds": 3,  # ... with this many fresh seeds each
    "gpu": 0.25,  # resources.gpu: trials sharing one GPU = 1 / gpu
    "models": ("model3", "model2", "basic", "shallow", "deep", "custom6", "vgg", "resnet18", "resnet34"),
    "batch_sizes": (64, 128, 32, 256),
}
# full.yaml's models this bench does not time, and the timed one (and factor) each is costed as: the
# seed CNNs of model3's size as model3, deep (512-channel convs) as vgg, resnet34 (twice resnet18's blocks) x2.
STAND_INS = {"model2": ("model3", 1), "basic": ("model3", 1), "shallow": ("model3", 1), "custom6": ("model3", 1)}
STAND_INS |= {"deep": ("vgg", 1), "resnet34": ("resnet18", 2)}


@dataclass(frozen=True)
class Sizes:
    """How big each measurement is: GPU (the real sizes) or SMOKE (the same code paths in seconds on a CPU)."""

    name: str
    train_images: int
    validation_images: int
    batch_sizes: tuple[int, int, int]  # small (every option is tried at it), medium, large
    width: float  # of the seed CNNs (resnet18 has none)
    concurrent_ks: tuple[int, ...]
    timed_epochs: int  # per concurrent trial
    seed_batches: int
    packed_ks: tuple[int, ...]
    packed_steps: int
    compiled_models: tuple[str, ...]
    fully_timed: tuple[str, ...]  # models timed in every eager setup; the others in their first only
    threads: int | None  # torch threads of every process; None: torch's default (the CPU cores)


GPU = Sizes(
    name="gpu",
    train_images=FER2013_TRAIN,
    validation_images=FER2013_VALIDATION,
    batch_sizes=(64, 128, 256),
    width=1.0,
    concurrent_ks=(1, 2, 4, 8),
    timed_epochs=2,
    seed_batches=100,
    packed_ks=(1, 2, 4, 8),
    packed_steps=50,
    compiled_models=MODELS,
    fully_timed=MODELS,
    threads=None,
)
SMOKE = Sizes(
    name="smoke",
    train_images=32,
    validation_images=16,
    batch_sizes=(4, 8, 16),
    width=0.125,
    concurrent_ks=(1, 2),
    timed_epochs=1,
    seed_batches=2,
    packed_ks=(2,),
    packed_steps=2,
    compiled_models=("model3",),
    fully_timed=("model3",),
    threads=1,  # two threads on two cores that other work shares ran fit's epoch 4-15x slower than one
)


@dataclass
class Bench:
    """One run: where figures go, what they were measured on, and the time left."""

    record: Recorder
    sizes: Sizes
    device: torch.device
    data: FerDataset
    faces: Path  # data as a file the worker processes load
    context: dict  # device, versions, commit, command, seeds: on every line
    deadline: float
    figures: dict = field(default_factory=dict)  # figure -> value, for the summary and the estimate
    units: dict = field(default_factory=dict)
    skipped: list = field(default_factory=list)

    def __call__(self, figure: str, value, unit: str, **details) -> None:
        target = TARGETS.get(figure) if self.device.type == "cuda" else None  # the targets are a GPU's
        self.record(figure, value, unit, target, **details, **self.context)
        self.figures[figure], self.units[figure] = value, unit

    def measure(self, name: str, fn, *args) -> None:
        """fn(self, *args) unless the budget is spent; an error becomes a null figure and the run goes on."""
        if time.monotonic() > self.deadline:
            self.skipped.append(name)
            return
        try:
            fn(self, *args)
        except Exception as error:  # noqa: BLE001 - one failed figure must not cost the rest of the call
            self(name, None, "", note=f"failed: {type(error).__name__}: {str(error).splitlines()[0][:300]}")
            if self.device.type == "cuda":
                torch.cuda.empty_cache()

    def timeout_s(self) -> float:
        """How long a worker may stay silent: past the budget by at most a minute."""
        return max(60.0, min(packing.SIDE_BY_SIDE_TIMEOUT_S, self.deadline - time.monotonic() + 60))


# ---------------------------------------------------------------- training configurations


@dataclass(frozen=True)
class Setup:
    model: str
    batch_size: int
    precision: str = "bf16"
    channels_last: bool = True
    compile: str = "eager"  # or one of COMPILE_MODES

    @property
    def name(self) -> str:
        return f"{self.model}/{self.precision}{'+cl' if self.channels_last else ''}/{self.compile}/b{self.batch_size}"


def eager_setups(model: str, sizes: Sizes) -> list[Setup]:
    """Every precision and layout at the small batch, then fit's defaults (bf16, channels_last) at the larger."""
    small, *larger = sizes.batch_sizes
    options = [Setup(model, small, precision, cl) for precision in PRECISIONS for cl in (False, True)]
    setups = options + [Setup(model, batch_size) for batch_size in larger]
    return setups if model in sizes.fully_timed else setups[:1]


def compiled_setups(model: str, sizes: Sizes) -> list[Setup]:
    small, _, large = sizes.batch_sizes
    return [Setup(model, batch_size, compile=mode) for mode in COMPILE_MODES for batch_size in (small, large)]


def train_config(bench: Bench, model: str, **overrides) -> TrainConfig:
    width = {"width": bench.sizes.width} if capabilities(model).width else {}
    return TrainConfig(model=model, device=bench.device.type, seed=TRAIN_SEED, **width, **overrides)


def compile_options(setup: Setup, device: torch.device) -> dict | None:
    if setup.compile == "eager":
        return None
    torch._dynamo.reset()  # else every compiled model adds guards to the same code: past 8 it silently runs eager
    if device.type == "cpu":  # inductor on 2 CPU cores takes minutes; dynamo alone keeps the smoke's code path
        return {"backend": "eager"}
    return {} if setup.compile == "default" else {"mode": setup.compile}


def device_split(split: Split, n: int, device: torch.device) -> Split:
    part = packing.first(split, n)
    return Split(part.images.to(device), part.labels.to(device))


def timed_epoch(network, train: Split, state, autocast, device: torch.device) -> float:
    packing.synchronize(device)
    started = time.perf_counter()
    train_one_epoch(network, train, nn.CrossEntropyLoss(), state, autocast)  # its .item()s wait for the device
    return time.perf_counter() - started


def measure_training(bench: Bench, setup: Setup) -> None:
    """One FER2013-sized epoch of `setup` after WARMUP_BATCHES batches; compile time for compiled setups."""
    config = train_config(
        bench,
        setup.model,
        batch_size=setup.batch_size,
        amp=setup.precision == "bf16",
        channels_last=setup.channels_last,
    )
    options = compile_options(setup, bench.device)
    state, network = packing.fresh_state(config, bench.data, bench.device, options)
    autocast = packing.bf16_autocast(bench.device, config.amp)
    first_batch = device_split(bench.data.train, setup.batch_size, bench.device)
    warmup = device_split(bench.data.train, (WARMUP_BATCHES - 1) * setup.batch_size, bench.device)
    train = device_split(bench.data.train, bench.sizes.train_images, bench.device)
    memory_window(bench.device)
    first_step = timed_epoch(network, first_batch, state, autocast, bench.device)
    timed_epoch(network, warmup, state, autocast, bench.device)
    seconds = timed_epoch(network, train, state, autocast, bench.device)
    images = (len(train) // setup.batch_size) * setup.batch_size  # the ragged last batch is dropped, as in fit
    details = dict(
        setup=setup.name,
        width=config.width if capabilities(setup.model).width else None,
        images=images,
        seconds=round(seconds, 4),
        compile_options=options,
        effective=effective(setup, bench.device),
        **memory_peak(bench.device),
    )
    bench(f"train/{setup.name}/images_per_s", images / seconds, "images/s", **details)
    bench(
        f"train/{setup.name}/epoch_s",
        seconds * FER2013_TRAIN / images,
        "s",
        definition=f"seconds per image x {FER2013_TRAIN:,} (one FER2013 training epoch)",
        **details,
    )
    if options is not None:
        bench(
            f"fixed/{setup.model}/compile_{setup.compile}_b{setup.batch_size}_s",
            first_step - seconds / (images // setup.batch_size),
            "s",
            definition="the first step's seconds - a steady step's (CUDA graphs are recorded in later steps)",
            compile_options=options,
        )


def effective(setup: Setup, device: torch.device) -> str:
    """What actually ran: fit applies bf16 and channels_last on CUDA only."""
    if device.type == "cuda":
        return setup.name
    return f"{setup.model}/fp32/{'dynamo eager backend' if setup.compile != 'eager' else 'eager'} (CPU)"


def memory_window(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def memory_peak(device: torch.device) -> dict:
    if device.type == "cuda":
        return {"peak_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1), "memory": "cuda max_memory_allocated"}
    return {"peak_mb": round(peak_rss_mb(), 1), "memory": "peak RSS of the process"}


# ---------------------------------------------------------------- the seeds' loop


def measure_seed_loop(bench: Bench) -> None:
    """The seeds' training loop: PIL faces, per-image transforms in DataLoader workers, fp32, .to(device)."""
    batch_size = bench.sizes.batch_sizes[0]
    config = train_config(bench, "model3", batch_size=batch_size, amp=False, channels_last=False)
    state, network = packing.fresh_state(config, bench.data, bench.device)
    n = (bench.sizes.seed_batches + 1) * batch_size  # one untimed batch: the workers' start
    images, labels = packing.first(bench.data.train, n).images, packing.first(bench.data.train, n).labels
    dataset, transforms = per_image_dataset(images, labels, bench.data)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=True, num_workers=SEED_WORKERS, drop_last=True
    )
    network.train()
    loss_fn, started, seen = nn.CrossEntropyLoss(), None, 0
    for batch, targets in loader:
        batch, targets = batch.to(bench.device), targets.to(bench.device)
        loss = loss_fn(network(batch), targets)
        state.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        state.optimizer.step()
        if started is None:
            packing.synchronize(bench.device)
            started = time.perf_counter()
        else:
            seen += len(batch)
    packing.synchronize(bench.device)
    seconds = time.perf_counter() - started
    name = f"train/model3/fp32/seed_dataloader/b{batch_size}"
    details = dict(images=seen, seconds=round(seconds, 4), workers=SEED_WORKERS, transforms=transforms)
    bench(f"{name}/images_per_s", seen / seconds, "images/s", **details)
    bench(f"{name}/epoch_s", seconds * FER2013_TRAIN / seen, "s", definition="extrapolated per image", **details)


def per_image_dataset(images: torch.Tensor, labels: torch.Tensor, data: FerDataset):
    """The seeds' Dataset: trans4 one image at a time. torchvision v2 on PIL images where installed (what the
    seeds ran: bench.reference's trans4, rebuilt here so this module loads without torchvision); else
    fer-tune's own trans4 on a batch of one, which does the same per-image work in torch."""
    try:
        from PIL import Image
        from torchvision.transforms import v2
    except ImportError:
        return _CoreOneByOne(images, labels, data.mean, data.std), "fer_tune trans4 on batches of one (no torchvision)"
    from fer_tune.core import augment

    bilinear = dict(interpolation=v2.InterpolationMode.BILINEAR, fill=0)
    transform = v2.Compose(
        [
            v2.RandomHorizontalFlip(augment.FLIP_P),
            v2.RandomRotation(augment.ROTATION_DEGREES, **bilinear),
            v2.RandomAffine(0, translate=(augment.TRANSLATE, augment.TRANSLATE), **bilinear),
            v2.ToImage(),
            v2.ToDtype(torch.float32, scale=True),
            v2.RandomErasing(augment.ERASE_P, augment.ERASE_SCALE, augment.ERASE_RATIO, value=0),
            v2.Normalize([data.mean], [data.std]),
        ]
    )
    pil = [Image.fromarray(image.numpy()) for image in images]
    return _Transformed(pil, labels.tolist(), transform), "torchvision v2 trans4 on PIL images"


class _Transformed(torch.utils.data.Dataset):
    def __init__(self, images, labels, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.transform(self.images[i]), self.labels[i]


class _CoreOneByOne(torch.utils.data.Dataset):
    def __init__(self, images, labels, mean: float, std: float):
        self.images, self.labels, self.mean, self.std = images, labels, mean, std
        self.augment, self.generator = create_augmentation("trans4"), torch.Generator().manual_seed(DATA_SEED)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        face = self.augment(unit_scale(self.images[i : i + 1].unsqueeze(1)), self.generator)[0]
        return (face - self.mean) / self.std, int(self.labels[i])


# ---------------------------------------------------------------- a trial's fixed costs


def measure_fixed_costs(bench: Bench, model: str) -> None:
    """fit's validation pass (flip TTA, eval_batch_size 1024) and one checkpoint save, each after a warm-up."""
    config = train_config(bench, model)
    state, network = packing.fresh_state(config, bench.data, bench.device)
    validation = device_split(bench.data.validation, bench.sizes.validation_images, bench.device)
    autocast = packing.bf16_autocast(bench.device, config.amp)

    def validate():
        evaluate(
            network,
            validation,
            bench.data.num_classes,
            batch_size=config.eval_batch_size,
            autocast=autocast,
            tta=config.tta,
        )

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / STATE_FILE
        save = lambda: save_checkpoint(state.state_dict(), folder)  # noqa: E731
        for name, fn in (("eval_epoch_s", validate), ("checkpoint_save_s", save)):
            fn()
            packing.synchronize(bench.device)
            started = time.perf_counter()
            fn()
            packing.synchronize(bench.device)
            seconds = time.perf_counter() - started
            if name == "eval_epoch_s":
                bench(f"fixed/{model}/{name}", seconds, "s", images=len(validation), tta=config.tta)
            else:
                bench(f"fixed/{model}/{name}", seconds, "s", megabytes=round(os.path.getsize(path) / 2**20, 2))


# ---------------------------------------------------------------- trials side by side


def fit_worker(spec: dict) -> None:
    """Worker process: one trial's fit. A one-batch fit first (the process's first step), then `go`
    after the real fit's first epoch, then spec['timed_epochs'] timed epochs."""
    torch.set_num_threads(spec["threads"])
    data = packing.load_faces(spec["faces"])
    config = TrainConfig(**spec["config"])
    one_batch = FerDataset(
        packing.first(data.train, config.batch_size),
        packing.first(data.validation, config.batch_size),
        None,
        data.classes,
        data.source,
    )
    fit(config.model_copy(update={"epochs": 1}), one_batch)
    first_step_at = time.time()
    device, marks = torch.device(spec["device"]), []

    def on_epoch(metrics: dict, state) -> None:
        if metrics["epoch"] == 1:
            packing.announce(first_step_at=first_step_at)
            packing.wait_for_go()
            memory_window(device)
        marks.append(time.time())

    fit(config, data, on_epoch)
    images = spec["timed_epochs"] * (len(data.train) // config.batch_size) * config.batch_size
    packing.announce(start=marks[0], end=marks[-1], images=images, **memory_peak(device))


def concurrent_trials(bench: Bench, k: int, env: dict | None = None, label: str = "concurrent") -> None:
    """K fit processes of model3 (batch 64, a trial's defaults) side by side on one device."""
    config = train_config(bench, "model3", batch_size=bench.sizes.batch_sizes[0], epochs=1 + bench.sizes.timed_epochs)
    spec = dict(
        faces=str(bench.faces),
        config=config.model_dump(),
        timed_epochs=bench.sizes.timed_epochs,
        device=bench.device.type,
        threads=bench.sizes.threads or max(1, (os.cpu_count() or 1) // k),
    )
    command = [sys.executable, "-m", "bench.gpu", "--worker", json.dumps(spec)]
    runs = packing.side_by_side([command] * k, env=env, timeout_s=bench.timeout_s())
    rate = packing.aggregate(runs)
    details = dict(k=k, batch_size=config.batch_size, width=config.width, timed_epochs=bench.sizes.timed_epochs)
    definition = "training images of the timed epochs / their wall time (validation included, as a trial runs)"
    bench(
        f"{label}/model3/k{k}/images_per_s",
        rate["images_per_s"],
        "images/s",
        definition=definition,
        wall_seconds=rate["wall_seconds"],
        **details,
    )
    bench(
        f"{label}/model3/k{k}/memory_per_trial_mb",
        max(r["peak_mb"] for r in runs),
        "MB",
        memory=runs[0]["memory"],
        per_trial=[r["peak_mb"] for r in runs],
        **details,
    )
    if k == 1 and label == "concurrent":
        bench(
            "fixed/model3/start_to_first_step_s",
            runs[0]["first_step_at"] - runs[0]["launched"],
            "s",
            definition="Popen to the first training step done: interpreter, imports, data, CUDA, model, 1 step",
        )


def measure_mps(bench: Bench) -> None:
    """K = 4, 8 trials again under CUDA MPS, where its control binary exists and starts."""
    binary = shutil.which("nvidia-cuda-mps-control")
    if binary is None or bench.device.type != "cuda":
        why = "no nvidia-cuda-mps-control on PATH" if binary is None else "CPU run"
        bench("mps/started", None, "bool", note=why)
        return
    folder = Path(tempfile.mkdtemp(prefix="mps-"))
    env = dict(os.environ, CUDA_MPS_PIPE_DIRECTORY=str(folder / "pipe"), CUDA_MPS_LOG_DIRECTORY=str(folder / "log"))
    started = subprocess.run([binary, "-d"], env=env, capture_output=True, text=True, timeout=30)
    bench("mps/started", float(started.returncode == 0), "bool", output=(started.stdout + started.stderr)[-300:])
    if started.returncode != 0:
        return
    try:
        for k in bench.sizes.concurrent_ks[2:]:
            bench.measure(f"concurrent_mps/model3/k{k}", concurrent_trials, k, env, "concurrent_mps")
    finally:
        subprocess.run([binary], input="quit\n", env=env, capture_output=True, text=True, timeout=30)


def measure_packed(bench: Bench, k: int) -> None:
    """K model3 trials as one vmapped model (bench.packing) against K processes of the same steps."""
    width, batch_size, steps = bench.sizes.width, bench.sizes.batch_sizes[0], bench.sizes.packed_steps
    autocast = packing.bf16_autocast(bench.device, True)
    packed = packing.packed_rate(bench.data, k, width, batch_size, steps, bench.device, autocast)
    separate = packing.separate_rate(bench.faces, k, width, batch_size, steps, bench.device.type, amp=True)
    details = dict(k=k, width=width, batch_size=batch_size, steps=steps)
    bench(
        f"packed/model3/k{k}/images_per_s",
        packed["images_per_s"],
        "images/s",
        **details,
        loss_per_trial=packed["loss_per_trial"],
    )
    bench(f"packed/model3/k{k}/separate_images_per_s", separate["images_per_s"], "images/s", **details)
    bench(f"packed/model3/k{k}/packed_over_separate", packed["images_per_s"] / separate["images_per_s"], "x", **details)


def measure_host_syncs(bench: Bench) -> None:
    """Synchronizing CUDA calls per training step: (syncs over 6 steps - over 2) / 4; 0 is the goal."""
    if bench.device.type != "cuda":
        bench("host_syncs/model3/per_step", None, "syncs", note="CUDA only (tests/test_host_syncs.py: the CPU count)")
        return
    batch_size = bench.sizes.batch_sizes[0]
    config = train_config(bench, "model3", batch_size=batch_size)
    state, network = packing.fresh_state(config, bench.data, bench.device)
    autocast = packing.bf16_autocast(bench.device, config.amp)
    counts = []
    for steps in (2, 6):
        train = device_split(bench.data.train, steps * batch_size, bench.device)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                train_one_epoch(network, train, nn.CrossEntropyLoss(), state, autocast)
            finally:
                torch.cuda.set_sync_debug_mode("default")
        counts.append(sum("synchroniz" in str(w.message) for w in caught))
    bench("host_syncs/model3/per_step", (counts[1] - counts[0]) / 4, "syncs", counts_2_and_6_steps=counts)


# ---------------------------------------------------------------- full.yaml's wall time


def asha_trial_epochs(n: int, grace: int, factor: int, max_epochs: int) -> float:
    """Epochs trained by n trials under ASHA when each rung passes on 1/factor of the trials that reach it
    (its aim; asynchronous promotion passes somewhat more early on, so this is a floor)."""
    rungs = [grace]
    while rungs[-1] * factor < max_epochs:
        rungs.append(rungs[-1] * factor)
    total, reaching, done = 0.0, float(n), 0
    for rung in [*rungs, max_epochs]:
        total += reaching * (rung - done)
        done, reaching = rung, reaching / factor
    return total


def estimate(bench: Bench) -> None:
    """full.yaml's GPU minutes: (search epochs + re-run epochs) x the mean epoch's GPU seconds / the speed-up of
    1/gpu trials sharing the GPU, + each trial's start-up spread over those trials. An epoch is a training
    epoch at fit's defaults (bf16, channels_last, eager: full.yaml does not compile) plus its validation and
    checkpoint; models and batch sizes are taken uniformly from full.yaml's choices (TPE's random start-up;
    its later picks lean to the better, whichever those are), width 1. Ray's own overhead is not in it."""
    figures, fy = bench.figures, FULL_YAML
    search = asha_trial_epochs(fy["num_samples"], fy["grace_period"], fy["reduction_factor"], fy["max_epochs"])
    reruns = fy["top_k"] * fy["seeds"] * fy["max_epochs"]
    epoch_s = [epoch_seconds(figures, model, b, bench.sizes) for model in fy["models"] for b in fy["batch_sizes"]]
    mean_epoch = sum(epoch_s) / len(epoch_s)
    sharing = round(1 / fy["gpu"])
    solo, shared = (
        figures.get("concurrent/model3/k1/images_per_s"),
        figures.get(f"concurrent/model3/k{sharing}/images_per_s"),
    )
    speedup = shared / solo if solo and shared else 1.0
    start = figures.get("fixed/model3/start_to_first_step_s") or 0.0
    trials = fy["num_samples"] + fy["top_k"] * fy["seeds"]
    seconds = (search + reruns) * mean_epoch / speedup + trials * start / sharing
    bench(
        "estimate/full_yaml/gpu_minutes",
        seconds / 60,
        "min",
        search_epochs=round(search),
        rerun_epochs=reruns,
        mean_epoch_s=round(mean_epoch, 4),
        sharing_speedup=round(speedup, 3),
        start_s=round(start, 2),
        stand_ins={m: list(v) for m, v in STAND_INS.items()},
        definition=estimate.__doc__.split("\n")[0],
    )


def epoch_seconds(figures: dict, model: str, batch_size: int, sizes: Sizes) -> float:
    """A trial epoch's GPU seconds: training at the nearest timed batch size (per step, so x measured/asked
    batch: small batches are launch-bound) + validation + a checkpoint."""
    timed, factor = STAND_INS.get(model, (model, 1))
    nearest = min(sizes.batch_sizes, key=lambda b: abs(b - batch_size))
    train = figures.get(f"train/{Setup(timed, nearest).name}/epoch_s")
    if train is None:  # not measured in this run (budget, failure): the model3 figure is the floor
        train = figures.get(f"train/{Setup('model3', nearest).name}/epoch_s") or 0.0
    fixed = (figures.get(f"fixed/{timed}/eval_epoch_s") or 0.0) + (
        figures.get(f"fixed/{timed}/checkpoint_save_s") or 0.0
    )
    return factor * (train * nearest / batch_size + fixed)


def summarize(bench: Bench) -> None:
    """The figures the targets are about: the best aggregate model3 rate, the fastest model3 epoch."""
    aggregate = ("concurrent/model3/", "concurrent_mps/model3/", "packed/model3/")
    rates = [v for f, v in bench.figures.items() if v and f.startswith(aggregate) and f.endswith("images_per_s")]
    if rates:
        definition = "best aggregate model3 training rate: processes side by side (fit or its loop) or packed"
        bench("summary/model3_aggregate_images_per_s", max(rates), "images/s", definition=definition)
    epochs = [
        v
        for f, v in bench.figures.items()
        if v and f.startswith("train/model3/") and f.endswith("/epoch_s") and "seed_dataloader" not in f
    ]
    if epochs:
        bench("summary/model3_fer2013_epoch_s", min(epochs), "s", definition="fastest model3 training epoch timed")


# ---------------------------------------------------------------- the run


def plan(sizes: Sizes) -> list[tuple]:
    """(name, fn, *args) in the order measured: what the targets and the estimate need first."""
    steps: list[tuple] = [(f"train/{s.name}", measure_training, s) for s in eager_setups("model3", sizes)]
    steps += [("host_syncs", measure_host_syncs), ("fixed/model3", measure_fixed_costs, "model3")]
    steps += [(f"concurrent/model3/k{k}", concurrent_trials, k) for k in sizes.concurrent_ks]
    steps.append(("train/model3/seed_dataloader", measure_seed_loop))
    for model in MODELS[1:]:
        steps += [(f"train/{s.name}", measure_training, s) for s in eager_setups(model, sizes)]
        steps.append((f"fixed/{model}", measure_fixed_costs, model))
    default, reduce_overhead = [[s for s in compiled_setups("model3", sizes) if s.compile == m] for m in COMPILE_MODES]
    steps += [(f"train/{s.name}", measure_training, s) for s in default]
    steps += [(f"packed/model3/k{k}", measure_packed, k) for k in sizes.packed_ks]
    steps += [(f"train/{s.name}", measure_training, s) for s in reduce_overhead]
    steps.append(("mps", measure_mps))
    for model in sizes.compiled_models[1:]:
        steps += [(f"train/{s.name}", measure_training, s) for s in compiled_setups(model, sizes)]
    return steps


def run_context(args: argparse.Namespace, device: torch.device) -> dict:
    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu: {cpu_model()}",
        "torch_version": torch.__version__,
        "cuda_version": torch.version.cuda,
        "cudnn_version": torch.backends.cudnn.version() if device.type == "cuda" else None,
        "command": "python -m bench.gpu " + " ".join(sys.argv[1:]),
        "seeds": {"data": DATA_SEED, "train": TRAIN_SEED, "packed_trials": "0..K-1"},
        "sizes": args.sizes.name,
    }


def fer2013_sized(sizes: Sizes) -> FerDataset:
    """Synthetic faces in FER2013's numbers: 35,887 drawn gives its 28,709 / 3,589 / 3,589 split."""
    n = 35887 if sizes is GPU else 4 * (sizes.train_images + sizes.validation_images)
    data = load_dataset("synthetic", n=n, seed=DATA_SEED)
    train = packing.first(data.train, sizes.train_images)
    validation = packing.first(data.validation, sizes.validation_images)
    return FerDataset(train, validation, None, data.classes, data.source)


def run(args: argparse.Namespace) -> Bench:
    began = time.monotonic()
    if args.sizes.threads:
        torch.set_num_threads(args.sizes.threads)
    device = torch.device("cpu" if args.smoke or not torch.cuda.is_available() else "cuda")
    record = Recorder("gpu", args.sizes.name, args.out, commit=args.commit)
    data = fer2013_sized(args.sizes)
    with tempfile.TemporaryDirectory() as folder:
        faces = packing.save_faces(data, Path(folder))
        bench = Bench(record, args.sizes, device, data, faces, run_context(args, device), began + args.budget_s)
        for name, fn, *step_args in plan(args.sizes):
            bench.measure(name, fn, *step_args)
    estimate(bench)
    summarize(bench)
    bench(
        "budget/skipped",
        len(bench.skipped),
        "measurements",
        skipped=bench.skipped,
        budget_s=args.budget_s,
        elapsed_s=round(time.monotonic() - began, 1),
    )
    write_readme(args.out)
    print_table(bench)
    return bench


def print_table(bench: Bench) -> None:
    """Every figure but the per-setup training ones, of which the batch-64 epochs; all are in gpu.json."""
    shown = [f for f in bench.figures if not f.startswith("train/") or f.endswith("b64/epoch_s")]
    width = max(map(len, shown))
    print(f"\n{'figure':<{width}}  {'value':>12}  {'unit':<12}target (H100/H200)")
    for figure in shown:
        value = bench.figures[figure]
        text = "-" if value is None else f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"
        print(f"{figure:<{width}}  {text:>12}  {bench.units[figure]:<12}{TARGETS.get(figure, '')}")


# What the GPU box lacks of fer_tune.core's imports (its image has torch and numpy, not pydantic):
# `--device-call` downloads these wheels, at the versions installed here, into WHEELS for the call to carry.
WHEELS = "build/gpu-wheels"  # build/ is git-ignored
WHEEL_PACKAGES = ("pydantic", "pydantic_core", "annotated_types", "typing_inspection", "typing_extensions")
DEVICE_TIMEOUT_S = 600  # a device call's limit: BUDGET_S leaves the figure in flight and the closing lines time


def device_call(commit: str, budget_s: float = BUDGET_S) -> dict:
    """The device tool's arguments for one call that measures every figure and brings gpu.json back."""
    install = (
        f"python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site {WHEELS}/*.whl"
    )
    bench = f"python3 -m bench.gpu --budget-s {budget_s:g} --out $OUT --commit {commit}"
    return {
        "command": f"{install} && export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 && {bench}",
        "carry": [WHEELS],
        "timeout_s": DEVICE_TIMEOUT_S,
    }


def fetch_wheels() -> None:
    """WHEEL_PACKAGES, at the versions installed here, as wheels for the GPU box's Python 3.12 (x86-64 Linux)."""
    from importlib.metadata import version

    pins = [f"{name}=={version(name)}" for name in WHEEL_PACKAGES]
    platforms = ["--platform", "manylinux_2_17_x86_64", "--platform", "manylinux2014_x86_64"]
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:", "--python-version",
         "3.12", "--implementation", "cp", *platforms, "--dest", WHEELS, *pins],
        check=True,
    )  # fmt: skip


def print_device_call(budget_s: float) -> None:
    fetch_wheels()
    call = device_call(git_commit(), budget_s)
    print("One device call (the run tool) measures every figure; the tree travels, the wheels with it:")
    print(json.dumps(call, indent=2))
    print("Then, here: keep the figures and refresh results/bench/README.md:")
    print("  cat <files_at>/gpu.json >> results/bench/gpu.json")
    print("  .venv/bin/python -c 'from bench.common import write_readme; write_readme()'")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu", description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="the same code paths on the CPU at tiny sizes")
    parser.add_argument("--budget-s", type=float, default=BUDGET_S, help="start no measurement after this")
    parser.add_argument("--out", type=Path, help="results folder (default results/bench): writes gpu.json there")
    parser.add_argument("--commit", help="the commit measured (a copied tree has no git)")
    parser.add_argument("--device-call", action="store_true", help="fetch its wheels, print the device call")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # JSON: one trial process of concurrent_trials
    args = parser.parse_args(argv)
    args.sizes = SMOKE if args.smoke else GPU
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker:
        fit_worker(json.loads(args.worker))
        return
    if args.device_call:
        print_device_call(args.budget_s)
        return
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl+C: what was measured is already in gpu.json
        run(args)


if __name__ == "__main__":
    sys.exit(main())
