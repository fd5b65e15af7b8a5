"""bench/gpu.py runs where only torch and numpy are (a GPU box), and the packing prototype stays right.

The smoke run goes through every code path of the GPU benchmark on the CPU, in a subprocess (and its
worker subprocesses) where importing ray, mlflow, optuna, pandas or matplotlib fails and is logged:
a sitecustomize on PYTHONPATH puts an import blocker first on sys.meta_path of every Python started.
"""

import copy
import json
import math
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

from bench import gpu, packing

ROOT = Path(__file__).resolve().parents[1]
ABSENT_ON_A_GPU_BOX = ("ray", "mlflow", "optuna", "pandas", "matplotlib")
BLOCKER = textwrap.dedent(
    f"""
    import builtins, os, sys

    BLOCKED = {ABSENT_ON_A_GPU_BOX!r}

    # None in sys.modules: an import fails with ModuleNotFoundError and importlib.util.find_spec answers None,
    # as where the package is not installed (torch._dynamo asks find_spec about dozens of packages).
    for name in BLOCKED:
        sys.modules[name] = None

    _import = builtins.__import__

    def logged_import(name, globals=None, locals=None, fromlist=(), level=0):
        # Every import statement of a blocked package is logged, even where the importer catches the error.
        if level == 0 and name.split(".")[0] in BLOCKED:
            with open(os.environ["BLOCKED_IMPORTS_LOG"], "a") as log:
                log.write(name + "\\n")
        return _import(name, globals, locals, fromlist, level)

    builtins.__import__ = logged_import
    """
)
PER_SETUP = ("images_per_s", "epoch_s")
SMOKE_FIGURES = [
    *[f"train/model3/{p}/eager/b4/{f}" for p in ("fp32", "fp32+cl", "bf16", "bf16+cl") for f in PER_SETUP],
    *[f"train/model3/bf16+cl/eager/b{b}/{f}" for b in (8, 16) for f in PER_SETUP],
    *[f"train/model3/bf16+cl/{mode}/b{b}/{f}" for mode in gpu.COMPILE_MODES for b in (4, 16) for f in PER_SETUP],
    *[f"fixed/model3/compile_{mode}_b{b}_s" for mode in gpu.COMPILE_MODES for b in (4, 16)],
    *[f"train/model3/fp32/seed_dataloader/b4/{f}" for f in PER_SETUP],
    *[f"train/{model}/fp32/eager/b4/{f}" for model in ("vgg", "resnet18") for f in PER_SETUP],
    *[f"fixed/{model}/{f}" for model in gpu.MODELS for f in ("eval_epoch_s", "checkpoint_save_s")],
    "fixed/model3/start_to_first_step_s",
    *[f"concurrent/model3/k{k}/{f}" for k in (1, 2) for f in ("images_per_s", "memory_per_trial_mb")],
    *[f"packed/model3/k2/{f}" for f in ("images_per_s", "separate_images_per_s", "packed_over_separate")],
    "estimate/full_yaml/gpu_minutes",
    "summary/model3_aggregate_images_per_s",
    "summary/model3_fer2013_epoch_s",
]
CUDA_ONLY = ("host_syncs/model3/per_step", "mps/started")  # null on the CPU, with a note saying why
ON_EVERY_LINE = ("device", "torch_version", "cuda_version", "cudnn_version", "commit", "command", "seeds", "machine")


def without_gpu_box_packages(tmp_path: Path) -> dict:
    """An environment whose Pythons cannot import ABSENT_ON_A_GPU_BOX, logging every try."""
    (tmp_path / "blocker").mkdir()
    (tmp_path / "blocker" / "sitecustomize.py").write_text(BLOCKER)
    log = tmp_path / "blocked_imports.log"
    log.touch()
    return dict(os.environ, PYTHONPATH=str(tmp_path / "blocker"), BLOCKED_IMPORTS_LOG=str(log))


def test_the_blocker_blocks(tmp_path):
    env = without_gpu_box_packages(tmp_path)
    for package in ABSENT_ON_A_GPU_BOX:
        tried = subprocess.run([sys.executable, "-c", f"import {package}"], env=env, capture_output=True, text=True)
        assert tried.returncode != 0 and "ModuleNotFoundError" in tried.stderr
    probe = "import importlib.util; assert importlib.util.find_spec('pandas') is None"
    assert subprocess.run([sys.executable, "-c", probe], env=env).returncode == 0  # absent, as on a GPU box
    assert (tmp_path / "blocked_imports.log").read_text().split() == list(ABSENT_ON_A_GPU_BOX)


@pytest.mark.slow(seconds=80)  # 59-72 s alone at load 2.5-4 (other work on the 2 cores)
def test_smoke_run_measures_every_figure_without_the_search_stack(tmp_path):
    env = without_gpu_box_packages(tmp_path)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "bench.gpu", "--smoke", "--out", str(out), "--commit", "abc123"]
    started = time.monotonic()
    ran = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert (tmp_path / "blocked_imports.log").read_text() == "", "tried to import what a GPU box lacks"
    lines = [json.loads(text) for text in (out / "gpu.json").read_text().splitlines()]
    figures = {line["figure"]: line for line in lines}
    failed = {f: line.get("note") for f, line in figures.items() if line["value"] is None and f not in CUDA_ONLY}
    assert not failed, failed
    missing = [f for f in SMOKE_FIGURES if f not in figures]
    assert not missing, f"missing figures: {missing}"
    for figure in SMOKE_FIGURES:
        assert math.isfinite(figures[figure]["value"]) and figures[figure]["value"] > 0, figures[figure]
    for figure in CUDA_ONLY:
        assert figures[figure]["value"] is None and figures[figure]["note"]
    assert figures["budget/skipped"]["value"] == 0
    for line in lines:
        assert set(ON_EVERY_LINE) <= line.keys(), line["figure"]
        assert line["bench"] == "gpu" and line["mode"] == "smoke" and line["commit"] == "abc123"
        assert line["device"].startswith("cpu") and line["torch_version"] == torch.__version__
        assert "bench.gpu --smoke" in line["command"] and line["seeds"]["data"] == gpu.DATA_SEED
    assert "estimate/full_yaml/gpu_minutes" in ran.stdout.split("\ntarget")[-1]  # the closing table
    print(f"smoke run: {time.monotonic() - started:.1f} s")


def test_full_yaml_as_bench_gpu_reads_it():
    """bench/gpu.py carries full.yaml's numbers (the GPU box may lack PyYAML): they must be the file's."""
    space = yaml.safe_load((ROOT / "search_spaces" / "full.yaml").read_text())
    read = {
        "num_samples": space["budget"]["num_samples"],
        "max_epochs": space["budget"]["max_epochs"],
        "grace_period": space["pruner"]["grace_period"],
        "reduction_factor": space["pruner"]["reduction_factor"],
        "top_k": space["select"]["top_k"],
        "seeds": space["select"]["seeds"],
        "gpu": space["resources"]["gpu"],
        "models": tuple(space["space"]["model"]["choice"]),
        "batch_sizes": tuple(space["space"]["batch_size"]["choice"]),
    }
    assert space["pruner"]["name"] == "asha"
    assert read == gpu.FULL_YAML
    assert set(gpu.FULL_YAML["models"]) == set(gpu.MODELS) | set(gpu.STAND_INS)


def test_asha_epochs():
    assert gpu.asha_trial_epochs(10, grace=5, factor=3, max_epochs=5) == 50  # no rung before the end
    assert gpu.asha_trial_epochs(9, grace=1, factor=3, max_epochs=3) == 9 * 1 + 3 * 2  # one rung at 1
    # full.yaml: 200 x 5 + 200/3 x 10 + 200/9 x 30 + 200/27 x 90 + 200/81 x 15
    assert gpu.asha_trial_epochs(200, 5, 3, 150) == pytest.approx(3037.0, abs=0.5)


def test_packed_step_gives_each_trial_its_unpacked_losses(tiny_data):
    """K trials packed (stacked weights, vmap, PackedAdam) against K models each with torch.optim.Adam at its
    lr, on the same batches: the same losses at the first step and after two updates."""
    train = tiny_data.train
    models = packing.trial_models(3, 0.125, torch.device("cpu"), tiny_data, dropout=0.0)  # dropout: random per side
    separate = [copy.deepcopy(m) for m in models]
    lrs = [1e-3, 3e-3, 1e-2]
    packed = packing.PackedTrials(models, lrs)
    optimizers = [torch.optim.Adam(m.parameters(), lr=lr) for m, lr in zip(separate, lrs)]
    generator = torch.Generator().manual_seed(0)
    for _ in range(3):
        images, labels = packing.packed_batches(train, 3, 16, generator, packing.create_augmentation("trans4"))
        losses, correct = packed.step(images, labels)
        for k, (model, optimizer) in enumerate(zip(separate, optimizers)):
            logits = model(images[k])
            loss = F.cross_entropy(logits, labels[k])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            assert losses[k].item() == pytest.approx(loss.item(), abs=1e-5)
            assert correct[k].item() == (logits.argmax(1) == labels[k]).sum().item()
    assert len(set(losses.tolist())) == 3  # three trials, three different losses


def test_the_device_call_fits_the_device_tool():
    call = gpu.device_call("abc123")
    assert len(call["command"]) <= 2000 and call["timeout_s"] <= 600 and call["carry"] == [gpu.WHEELS]
    assert f"{gpu.WHEELS}/*.whl" in call["command"] and "python3 -m bench.gpu" in call["command"]
    assert "--out $OUT" in call["command"] and "--commit abc123" in call["command"]
    assert gpu.BUDGET_S + 120 <= call["timeout_s"]  # time for the figure in flight when the budget runs out
