"""Smoke mode (`fer-tune run SPACE --smoke`) on every seed project's search file.

Unit tests on `smoke()`: on every search_spaces/*.yaml, a smoke run's trials build the models the real
run would, each at the smallest input it accepts and without ten-crop TTA; the real run is untouched.

End to end (Tandon 2020, Tynasello, Pham 2020, Dzubak): each runs in smoke mode, two trials of one
epoch on tiny data written here, with a local ImageNet weights cache written here too."""

import os
import sys
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
import ray_cluster
from interrupt import run_here
from PIL import Image
from test_transfer import write_imagenet

from fer_tune.constants import EMOTIONS
from fer_tune.core.config import make_train_config
from fer_tune.core.models import capabilities
from fer_tune.data import write_fer2013_csv
from fer_tune.search.sampling import define_by_run, grid_points
from fer_tune.search.sweep_file import SpaceFile, load_space, smoke

SPACES = Path(__file__).resolve().parents[1] / "search_spaces"
SEED_SPACES = sorted(SPACES.glob("*.yaml"))
DZUBAK_CLASSES = ("happy", "neutral", "sad", "surprise")
# The extra sources' folder names that search_spaces/pham2020.yaml maps onto FER2013's classes.
JAFFE_CLASSES = ("anger", "disgusted", "fearful", "happy", "neutral", "sad", "surprised")
FACES_CLASSES = ("anger", "disgusted", "fearful", "happy", "neutral", "sad")


# ---- smoke(): what a smoke run's trials are


def configs(space: SpaceFile, draws: int = 80) -> list:
    """The trial configurations the space's searcher gives: every grid point, or `draws` random Optuna points."""
    if space.search.algorithm == "grid":
        points = grid_points(space)
    else:
        sample = define_by_run(space)
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
        points = [sample(study.ask()) for _ in range(draws)]
    return [make_train_config(point, where=space.path) for point in points]


def smallest_input(model: str) -> int:
    return min(capabilities(model).input_sizes)


@pytest.mark.parametrize("path", SEED_SPACES, ids=lambda p: p.stem)
def test_smoke_builds_every_model_at_its_smallest_input_without_ten_crops(path):
    space = load_space(path)
    small = configs(smoke(space))
    for config in small:
        assert config.resolved_input_size == smallest_input(config.model), config
        assert config.tta != "tencrop" and config.image_size == 48, config
    if space.search.algorithm != "grid":  # a sampled space's smoke run builds the models the real run would
        [models] = [p.values for p in space.space if p.name == "model"]
        assert {config.model for config in small} == set(models)


def test_smoke_leaves_the_real_run_as_it_was():
    """Pham 2020's real run still draws 224 px and ten crops; its smoke run neither."""
    space = load_space(SPACES / "pham2020.yaml")
    before = space.model_dump()
    smoke(space)
    assert space.model_dump() == before
    real = configs(space)
    assert {c.resolved_input_size for c in real} == {224, 96} and {c.tta for c in real} == {"tencrop", "flip"}
    assert {(c.resolved_input_size, c.tta) for c in configs(smoke(space))} == {(48, "flip")}


def test_smoke_shrinks_a_default_input_size_and_every_form_of_tencrop(tmp_path):
    """input_size absent: resnet50 would run at its default 224 (so smoke adds it); tta chosen, default or fixed."""
    (tmp_path / "s.yaml").write_text(
        "name: s\nspace:\n  model: {choice: [resnet50, basic]}\n  tta: {choice: [tencrop, none], default: tencrop}\n"
    )
    space = load_space(tmp_path / "s.yaml")
    assert {(c.model, c.resolved_input_size) for c in configs(space)} == {("resnet50", 224), ("basic", 48)}
    small = smoke(space)
    [tta] = [p for p in small.space if p.name == "tta"]
    assert (tta.values, tta.default) == (("flip", "none"), "flip")
    assert {(c.model, c.resolved_input_size) for c in configs(small)} == {("resnet50", 48), ("basic", 48)}
    (tmp_path / "t.yaml").write_text("name: t\nspace:\n  model: rmn\n  tta: tencrop\n")
    fixed = configs(smoke(load_space(tmp_path / "t.yaml")), draws=2)
    assert [(c.resolved_input_size, c.tta) for c in fixed] == [(48, "flip")] * 2


# ---- end to end


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
def torch_home():
    """A torch cache holding stand-ins for the ImageNet weights the seed spaces ask for: the test run's Ray's
    (its workers read that one; tests/ray_cluster.py), which the drivers here join."""
    home = ray_cluster.TORCH_HOME
    saved = os.environ.get("TORCH_HOME")
    os.environ["TORCH_HOME"] = str(home)
    try:
        for name in ("resnet50", "vgg16", "efficientnet_b0", "rmn"):
            write_imagenet(name)
    finally:
        os.environ.pop("TORCH_HOME") if saved is None else os.environ.update(TORCH_HOME=saved)
    return home


def run_smoke(space: str, data: Path, cwd: Path, torch_home: Path, monkeypatch, capsys) -> pd.DataFrame:
    """`fer-tune run SPACE --smoke`, in this process (joined to the test run's Ray, whose workers read the weights
    from `torch_home`): a subprocess would add 10-15 s of imports and joining per space and test nothing more."""
    command = [sys.executable, "-m", "fer_tune.cli", "run", str(SPACES / space), "--smoke", "--no-track"]
    command += ["--data", str(data), "--name", f"smoke-{Path(space).stem}"]
    monkeypatch.setenv("TORCH_HOME", str(torch_home))  # the driver checks the weights where the trials read them
    run_here(command, capsys)
    trials = pd.read_csv(cwd / "results" / f"smoke-{Path(space).stem}" / "trials.csv")
    assert len(trials) == 2 and (trials["status"] == "completed").all(), trials.to_string()
    assert (trials["epochs_run"] == 1).all()
    return trials


@pytest.mark.integration
@pytest.mark.slow(seconds=60)
def test_tynasello_runs_in_smoke_mode(ray_local, workdir, torch_home, monkeypatch, capsys):
    trials = run_smoke("tynasello.yaml", tiny_csv(workdir / "fer.csv"), workdir, torch_home, monkeypatch, capsys)
    assert set(trials["model"]) <= {"resnet50", "custom6"}
    assert (trials["input_size"] == 48).all(), trials.to_string()  # resnet50 at its smallest, not 224 or 96


@pytest.mark.integration
@pytest.mark.slow(seconds=60)
def test_dzubak_runs_in_smoke_mode_on_a_four_class_folder(ray_local, workdir, torch_home, monkeypatch, capsys):
    folder = tiny_folder(workdir / "unique_images", DZUBAK_CLASSES)
    trials = run_smoke("dzubak.yaml", folder, workdir, torch_home, monkeypatch, capsys)
    assert set(trials["model"]) <= {"vgg16", "resnet50", "efficientnet_b0"}
    assert (trials["input_size"] == 48).all(), trials.to_string()
    sweep = (workdir / "results" / "smoke-dzubak" / "sweep.json").read_text()
    assert all(f'"{name}"' in sweep for name in DZUBAK_CLASSES) and '"angry"' not in sweep


@pytest.mark.integration
@pytest.mark.slow(seconds=70)
def test_pham2020_runs_in_smoke_mode_on_merged_sources(ray_local, workdir, torch_home, monkeypatch, capsys):
    tiny_folder(workdir / "data" / "jaffe", JAFFE_CLASSES, splits=("train",), per_class=2)
    tiny_folder(workdir / "data" / "faces", FACES_CLASSES, splits=("train",), per_class=2)
    trials = run_smoke("pham2020.yaml", tiny_csv(workdir / "fer.csv"), workdir, torch_home, monkeypatch, capsys)
    # the RMN at 48 px and flip TTA: the real run's 224 px and ten crops made the smoke run minutes long
    assert (trials["input_size"] == 48).all() and (trials["tta"] == "flip").all(), trials.to_string()
    summary = (workdir / "results" / "smoke-pham2020" / "sweep.json").read_text()
    assert "data/jaffe" in summary and "data/faces" in summary


@pytest.mark.integration
@pytest.mark.slow(seconds=30)
def test_tandon2020_runs_in_smoke_mode_as_a_grid(ray_local, workdir, torch_home, monkeypatch, capsys):
    trials = run_smoke("tandon2020.yaml", tiny_csv(workdir / "fer.csv"), workdir, torch_home, monkeypatch, capsys)
    # A grid stays a grid: its first axis keeps two values, every other axis its first, so the two
    # trials differ in the model only (random sampling would draw augmentation, schedule and filter too).
    assert sorted(trials["model"]) == ["model2", "model3"]
    varying = [c for c in ("augmentation", "scheduler", "kernel_size") if trials[c].nunique() > 1]
    assert varying == [], trials.to_string()
    assert '"algorithm": "grid"' in (workdir / "results" / "smoke-tandon2020" / "sweep.json").read_text()
