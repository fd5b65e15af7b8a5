"""Every seed project's search file (Tandon 2020, Tynasello, Pham 2020, Dzubak) runs end to end in smoke
mode (`fer-tune run SPACE --smoke`): two trials of one epoch on tiny data written here, with a local
ImageNet weights cache written here too."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from test_transfer import write_imagenet

from fer_tune.constants import EMOTIONS
from fer_tune.data import write_fer2013_csv

pytestmark = pytest.mark.integration

SPACES = Path(__file__).resolve().parents[1] / "search_spaces"
DZUBAK_CLASSES = ("happy", "neutral", "sad", "surprise")
# The extra sources' folder names that search_spaces/pham2020.yaml maps onto FER2013's classes.
JAFFE_CLASSES = ("anger", "disgusted", "fearful", "happy", "neutral", "sad", "surprised")
FACES_CLASSES = ("anger", "disgusted", "fearful", "happy", "neutral", "sad")


def faces(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 48, 48), dtype=np.uint8)


def tiny_csv(path: Path) -> Path:
    """4 train, 2 validation and 2 test faces per emotion."""
    per_split = {"Training": 4, "PublicTest": 2, "PrivateTest": 2}
    labels = [c for usage, k in per_split.items() for c in range(len(EMOTIONS)) for _ in range(k)]
    usages = [usage for usage, k in per_split.items() for _ in range(len(EMOTIONS)) for _ in range(k)]
    write_fer2013_csv(path, faces(len(labels), 1), np.array(labels), usages)
    return path


def tiny_folder(root: Path, classes, splits=("train", "validation", "test"), per_class: int = 3) -> Path:
    for s, split in enumerate(splits):
        for c, name in enumerate(classes):
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i, image in enumerate(faces(per_class, 100 * s + c)):
                Image.fromarray(image).save(root / split / name / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def torch_home(tmp_path_factory):
    """A torch cache holding stand-ins for the ImageNet weights the seed spaces ask for."""
    home = tmp_path_factory.mktemp("torch_home")
    saved = os.environ.get("TORCH_HOME")
    os.environ["TORCH_HOME"] = str(home)
    try:
        for name in ("resnet50", "vgg16", "efficientnet_b0", "rmn"):
            write_imagenet(name)
    finally:
        os.environ.pop("TORCH_HOME") if saved is None else os.environ.update(TORCH_HOME=saved)
    return home


def smoke(space: str, data: Path, cwd: Path, torch_home: Path) -> pd.DataFrame:
    command = [sys.executable, "-m", "fer_tune.cli", "run", str(SPACES / space), "--smoke", "--no-track"]
    command += ["--data", str(data), "--name", f"smoke-{Path(space).stem}"]
    env = {**os.environ, "TORCH_HOME": str(torch_home), "RAY_ADDRESS": "local"}
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    trials = pd.read_csv(cwd / "results" / f"smoke-{Path(space).stem}" / "trials.csv")
    assert len(trials) == 2 and (trials["status"] == "completed").all(), trials.to_string()
    assert (trials["epochs_run"] == 1).all()
    return trials


@pytest.mark.slow(seconds=140)
def test_tynasello_runs_in_smoke_mode(workdir, torch_home):
    trials = smoke("tynasello.yaml", tiny_csv(workdir / "fer.csv"), workdir, torch_home)
    assert set(trials["model"]) <= {"resnet50", "custom6"}


@pytest.mark.slow(seconds=70)
def test_dzubak_runs_in_smoke_mode_on_a_four_class_folder(workdir, torch_home):
    folder = tiny_folder(workdir / "unique_images", DZUBAK_CLASSES)
    trials = smoke("dzubak.yaml", folder, workdir, torch_home)
    assert set(trials["model"]) <= {"vgg16", "resnet50", "efficientnet_b0"}
    sweep = (workdir / "results" / "smoke-dzubak" / "sweep.json").read_text()
    assert all(f'"{name}"' in sweep for name in DZUBAK_CLASSES) and '"angry"' not in sweep


@pytest.mark.slow(seconds=300)
def test_pham2020_runs_in_smoke_mode_on_merged_sources(workdir, torch_home):
    tiny_folder(workdir / "data" / "jaffe", JAFFE_CLASSES, splits=("train",), per_class=2)
    tiny_folder(workdir / "data" / "faces", FACES_CLASSES, splits=("train",), per_class=2)
    smoke("pham2020.yaml", tiny_csv(workdir / "fer.csv"), workdir, torch_home)
    summary = (workdir / "results" / "smoke-pham2020" / "sweep.json").read_text()
    assert "data/jaffe" in summary and "data/faces" in summary


@pytest.mark.slow(seconds=50)
def test_tandon2020_runs_in_smoke_mode_as_a_grid(workdir, torch_home):
    trials = smoke("tandon2020.yaml", tiny_csv(workdir / "fer.csv"), workdir, torch_home)
    # A grid stays a grid: its first axis keeps two values, every other axis its first, so the two
    # trials differ in the model only (random sampling would draw augmentation, schedule and filter too).
    assert sorted(trials["model"]) == ["model2", "model3"]
    varying = [c for c in ("augmentation", "scheduler", "kernel_size") if trials[c].nunique() > 1]
    assert varying == [], trials.to_string()
    assert '"algorithm": "grid"' in (workdir / "results" / "smoke-tandon2020" / "sweep.json").read_text()
