"""report.json and report.html from a results folder alone (no Ray, no MLflow): Tandon 2020's table
shape first, every section, strict JSON, an identical rebuild and a page that loads nothing."""

import json
import re
from itertools import product

import numpy as np
import pandas as pd
import pytest

from fer_tune.constants import EMOTIONS
from fer_tune.search.report.build import build_report, write_report
from fer_tune.search.results import TrialRecord, write_results
from fer_tune.search.sweep_file import load_space


@pytest.fixture
def tandon_folder(tmp_path):
    """The seed grid's results folder: 3x3 filters 4 points better; trials of the cos_warm schedule stop early."""
    space = load_space("search_spaces/tandon2020.yaml")
    records = []
    for i, (model, kernel, augmentation, scheduler) in enumerate(
        product(["model2", "model3"], [2, 3], ["trans1", "trans3"], ["plateau", "cos_warm"])
    ):
        params = {"model": model, "kernel_size": kernel, "augmentation": augmentation, "scheduler": scheduler,
                  "T_0": 2 if scheduler == "cos_warm" else None, "T_mult": 10 if scheduler == "cos_warm" else None,
                  "padding": "auto", "lr": 1e-3}  # fmt: skip
        top = 0.55 + 0.04 * (kernel == 3) + 0.01 * (model == "model3") + 0.002 * i
        epochs = 2 if scheduler == "cos_warm" else 4
        accuracy = [top - 0.03 * (4 - epoch) for epoch in range(1, epochs + 1)]  # the same curve, cut short
        curve = pd.DataFrame({"epoch": range(1, epochs + 1), "val_accuracy": accuracy, "epoch_seconds": 10.0})
        records.append(TrialRecord(f"t{i:02d}", params, curve, "val_accuracy", "max", 4, wall_seconds=45.0,
                                   ended_at=1000.0 + i))  # fmt: skip
    splits = {"train": 700, "validation": 140, "test": 140}
    summary = {"source": "unit", "classes": list(EMOTIONS),
               "splits": {s: {c: n // 7 for c in EMOTIONS} for s, n in splits.items()}}  # fmt: skip
    out = tmp_path / "results" / "tandon"
    write_results(out, records, space.model_copy(update={"budget": space.budget.model_copy(update={"max_epochs": 4})}),
                  summary)  # fmt: skip
    rng = np.random.default_rng(0)
    rows = []
    for split, n in (("validation", 140), ("test", 140)):
        labels = np.arange(n) % 7
        champion = np.where(rng.random(n) < 0.7, labels, (labels + 1) % 7)
        runner_up = np.where(rng.random(n) < 0.9, champion, (champion + 2) % 7)
        rows.append(pd.DataFrame({"split": split, "index": range(n), "label": labels, "champion": champion,
                                  "runner_up": runner_up}))  # fmt: skip
    pd.concat(rows).to_csv(out / "predictions.csv", index=False)
    best = sorted(records, key=lambda r: r.best_metric, reverse=True)
    meta = {
        "eval_split": "test",
        "classes": list(EMOTIONS),
        "champion": best[0].trial_id,
        "runner_up": best[1].trial_id,
    }
    (out / "predictions.json").write_text(json.dumps(meta))
    return out


def test_seed_table_first_with_best_and_mean_per_cell(tandon_folder):
    report = write_report(tandon_folder)
    table = pd.DataFrame(report["seed_table"])
    assert list(table.columns) == ["model", "filter", "padding", "augmentation", "schedule", "trials", "best", "mean"]
    assert len(table) == 16 and set(table["filter"]) == {"2×2", "3×3"}
    assert set(zip(table["filter"], table["padding"])) == {("2×2", 0), ("3×3", 1)}  # padding auto, resolved
    assert set(table["schedule"]) == {"plateau", "cos_warm(2, 10)"}
    assert table.groupby("filter")["mean"].mean().diff().iloc[-1] == pytest.approx(0.04, abs=0.01)
    html = (tandon_folder / "report.html").read_text()
    assert html.index("Tandon 2020's table") < html.index("<h2>The answer</h2>")


def test_every_section_and_the_cost(tandon_folder):
    report = build_report(tandon_folder)
    meta = json.loads((tandon_folder / "predictions.json").read_text())
    assert report["answer"]["trial_id"] == meta["champion"] and report["answer"]["test"]["n"] == 140
    assert report["what_mattered"]["rung"] == 2  # the cos_warm trials stopped there
    assert list(report["what_mattered"]["importance"])[0] == "kernel_size"
    cost = report["cost"]
    assert cost["epochs"] == 8 * 4 + 8 * 2 and cost["epochs_saved"] == 8 * 2 and cost["epochs_if_all_ran"] == 64
    assert cost["trainer_seconds"] == pytest.approx(48 * 10.0)
    assert cost["gpu_seconds"] == pytest.approx(48 * 10.0 * 0.25)  # resources.gpu: 0.25 per trial
    assert [p["trial_id"] for p in cost["best_so_far"]] == [f"t{i:02d}" for i in range(16)]  # finishing order
    rival = report["how_sure"]["runner_up"]
    assert rival["only_a"] + rival["only_b"] > 0 and rival["id"] == meta["runner_up"]


def test_rebuild_is_identical_strict_json_and_self_contained(tandon_folder):
    write_report(tandon_folder)
    first = {n: (tandon_folder / n).read_bytes() for n in ("report.json", "report.html")}
    write_report(tandon_folder)
    assert first == {n: (tandon_folder / n).read_bytes() for n in ("report.json", "report.html")}
    json.loads(first["report.json"], parse_constant=lambda c: pytest.fail(f"{c} in report.json"))
    html = first["report.html"].decode()
    links = re.findall(r"""(?:src|href)\s*=\s*["']?([^"'\s>]+)""", html, flags=re.I)
    assert len(links) >= 5 and all(link.startswith("data:image/png;base64,") for link in links)
    assert not re.search(r"<script|<link|@import|url\(|https?://", html, flags=re.I)


def test_a_sweep_without_predictions_still_gets_a_report(tandon_folder):
    (tandon_folder / "predictions.csv").unlink()
    report = write_report(tandon_folder)
    assert report["how_sure"] == {} and "test" not in report["answer"]
    assert "no per-image predictions" in (tandon_folder / "report.html").read_text()


def test_a_champion_rule_no_trial_met_is_not_called_a_deployment(tandon_folder):
    """sweep.json's run.champion_rule, met by no trial: the answer is the best by the metric, said to be that
    and not deployed (page and console line); met by a trial, the answer is the deployment again."""
    from fer_tune.cli.report import headline

    meta_file = tandon_folder / "sweep.json"
    meta = json.loads(meta_file.read_text())
    meta["run"]["champion_rule"] = {"rule": "latency_ms <= 1", "met_by": None}
    meta_file.write_text(json.dumps(meta))
    report = write_report(tandon_folder)
    unmet = "no trial meets the champion rule (latency_ms <= 1); shown: the best by val_accuracy"
    assert report["answer"]["rule_unmet"] == unmet
    page = (tandon_folder / "report.html").read_text()
    assert "No trial meets the champion rule" in page and "Deploy trial" not in page
    assert headline(report).startswith(f"{unmet}, trial {report['answer']['trial_id']} (not deployed): ")

    meta["run"]["champion_rule"]["met_by"] = report["answer"]["trial_id"]
    meta_file.write_text(json.dumps(meta))
    report = write_report(tandon_folder)
    assert "rule_unmet" not in report["answer"] and headline(report).startswith("deploy trial ")
    assert "Deploy trial" in (tandon_folder / "report.html").read_text()
