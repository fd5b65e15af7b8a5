"""The benchmarks in their smallest modes: each runs and writes its JSON lines and the table.

These check the machinery, never a timing."""

import json

import pytest

from bench import common, pipeline, sweep, trial
from bench import models as bench_models


def figures(out, bench: str) -> dict[str, dict]:
    lines = [json.loads(text) for text in (out / f"{bench}.json").read_text().splitlines()]
    for line in lines:
        assert {"bench", "figure", "value", "unit", "mode", "machine", "timestamp"} <= line.keys()
        assert line["bench"] == bench and line["mode"] == "short"
        assert line["machine"]["cores"] >= 1 and line["machine"]["cpu"]
    return {line["figure"]: line for line in lines}


def test_pipeline_writes_batched_per_image_and_ratio(tmp_path):
    pipeline.main(
        [
            "--out",
            str(tmp_path),
            "--images",
            "192",
            "--batch-sizes",
            "64",
            "--strategies",
            "trans4",
            "--workers",
            "0",
            "--layouts",
            "pil",
            "--rounds",
            "1",
        ]
    )
    found = figures(tmp_path, "pipeline")
    assert found["trans4/b64/batched"]["value"] > 0 and found["trans4/b64/per_image"]["value"] > 0
    batched, per_image, ratio = (found[f"trans4/b64/{kind}"] for kind in ("batched", "per_image", "ratio"))
    assert ratio["value"] == pytest.approx(batched["value"] / per_image["value"], rel=1e-3)
    assert ratio["target"] == ">= 10"
    table = (tmp_path / "README.md").read_text()
    assert "trans4/b64/ratio" in table and "bench.pipeline" in table


def test_seed_transform_matches_the_reference_output_type():
    from PIL import Image

    image = Image.new("L", (48, 48), 128)
    for layout in pipeline.LAYOUTS:
        out = pipeline.seed_transform("trans7", layout)(image)
        assert out.shape == (1, 48, 48) and out.dtype.is_floating_point and 0 <= out.min() <= out.max() <= 1


@pytest.mark.slow(seconds=30)
def test_trial_writes_fit_and_seed_figures(tmp_path):
    trial.main(
        [
            "--out",
            str(tmp_path),
            "--models",
            "basic",
            "--batches",
            "1",
            "--batch-size",
            "8",
            "--seed-workers",
            "0",
            "--cpu-only",
        ]
    )
    found = figures(tmp_path, "trial")
    for loop in ("fit", "seed"):
        assert found[f"basic/cpu/{loop}_images_per_s"]["value"] > 0
        assert found[f"basic/cpu/{loop}_peak_memory"]["unit"] == "MB"
    assert found["basic/cpu/speedup"]["value"] > 0


def test_models_writes_size_and_speed_of_a_transfer_model(tmp_path):
    bench_models.main(["--out", str(tmp_path), "--models", "efficientnet_b0", "--batches", "1"])
    found = figures(tmp_path, "models")
    assert found["efficientnet_b0/params"]["value"] > 1e6
    assert 0 < found["efficientnet_b0/gmacs_48px"]["value"] < found["efficientnet_b0/gmacs_224px"]["value"]
    for size in (48, 224):
        assert found[f"efficientnet_b0/cpu/train_images_per_s_{size}px"]["value"] > 0


def test_sweep_cli_help_and_not_measured_gpu_figure(tmp_path):
    sweep.main(["--out", str(tmp_path), "--skip-quick", "--skip-efficiency"])
    found = figures(tmp_path, "sweep")
    assert 0 < found["cli_help"]["value"] < 30
    assert found["full_yaml_gpu_hours"]["unit"] == "GPU-hours"


def test_not_measured_figures_have_a_null_value_and_a_reason(tmp_path):
    record = common.Recorder("trial", "short", tmp_path)
    line = record.not_measured("model3/cuda/concurrent_images_per_s", "images/s", ">= 50000")
    assert line["value"] is None and "not measured here" in line["note"]
    assert "not measured here" in (common.write_readme(tmp_path)).read_text()


def test_every_figure_names_the_commit_it_measured(tmp_path):
    """A figure is reproducible from the tree: HEAD (with '+dirty' for uncommitted changes), or the one given."""
    import subprocess

    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=common.ROOT).stdout.strip()
    assert common.Recorder("trial", "short", tmp_path)("x", 1.0, "s")["commit"].startswith(head)
    assert common.Recorder("gpu", "smoke", tmp_path, commit="abc123")("x", 1.0, "s")["commit"] == "abc123"


def test_meets_reads_the_target():
    assert common.meets(12.0, ">= 10") and not common.meets(9.9, ">= 10")
    assert common.meets(0.4, "< 1") and common.meets(15, "<= 15") and common.meets(None, "< 1") is None


def test_union_counts_overlapping_training_once():
    assert sweep.union_seconds([(0, 2), (1, 3), (5, 6)]) == 4
    assert sweep.union_seconds([]) == 0


def test_asha_budget_and_efficiency_spaces():
    assert sweep.asha_epochs_per_trial(1, 2, 4) == pytest.approx(2.0)  # 1 + (2 - 1) / 2 + (4 - 2) / 4
    assert sweep.asha_epochs_per_trial(1, 3, 4) == pytest.approx(1 + 2 / 3 + 1 / 9)
    assert sweep.asha_epochs_per_trial(5, 3, 150) == pytest.approx(15.19, abs=0.01)
    grid, asha, setup = sweep.efficiency_spaces(full=False)
    assert setup["grid_points"] == 12 and grid.search.algorithm == "grid"
    assert asha.search.algorithm == "optuna" and asha.pruner.name == "asha"
    assert {p.kind for p in asha.space} <= {"fixed", "choice"}
    assert asha.budget.num_samples * sweep.asha_epochs_per_trial(1, 3, 6) <= setup["epoch_budget"]
    assert ("width", (sweep.SHORT_WIDTH,)) in [(p.name, p.values) for p in grid.space]
    full_grid, _, full_setup = sweep.efficiency_spaces(full=True)
    assert full_setup["grid_points"] == 120 and full_grid.budget.max_epochs == 150


@pytest.mark.integration
@pytest.mark.slow(seconds=40)
def test_quick_sweep_splits_wall_time(tmp_path, ray_local, workdir, monkeypatch):
    monkeypatch.setattr(
        sweep,
        "BENCH_MLFLOW",
        {**sweep.BENCH_MLFLOW, "tracking_uri": f"sqlite:///{workdir / 'mlflow.db'}"},
    )
    record = common.Recorder("sweep", "short", tmp_path)
    quick = sweep.load_space(sweep.QUICK)
    tiny = quick.model_copy(
        update={
            "data": quick.data.model_copy(update={"n": 100}),
            "budget": quick.budget.model_copy(update={"num_samples": 1, "max_epochs": 1}),
        }
    )
    lines = {line["figure"]: line for line in sweep.run_quick(record, tiny, verbose=0)}
    wall, training = lines["quick/wall"]["value"], lines["quick/training"]["value"]
    assert 0 < training < wall
    assert lines["quick/orchestration_share"]["value"] == pytest.approx(100 * (wall - training) / wall, abs=0.01)
    assert lines["quick/wall"]["trials"] == 1
