"""Sweep tables and plots from plain trial records (no Ray needed)."""

import pandas as pd

from fer_tune.search.results import TrialRecord, leaderboard_markdown, write_results
from fer_tune.search.sweep_file import load_space


def record(trial_id, params, accuracies, max_epochs=4):
    curve = pd.DataFrame({"epoch": range(1, len(accuracies) + 1), "val_accuracy": accuracies})
    return TrialRecord(trial_id, params, curve, "val_accuracy", "max", max_epochs, wall_seconds=1.5)


def test_tables_and_plots_with_boolean_and_conditional_parameters(tmp_path):
    space_file = tmp_path / "s.yaml"
    space_file.write_text(
        "space:\n  model: {choice: [resnet18, basic]}\n  pretrained: {choice: [false, true], when: {model: resnet18}}\n"
        "  lr: {loguniform: [1.0e-4, 1.0e-2]}\n"
    )
    space = load_space(space_file)
    records = [
        record("a", {"model": "resnet18", "pretrained": True, "lr": 1e-3}, [0.3, 0.5, 0.6, 0.7]),
        record("b", {"model": "resnet18", "pretrained": False, "lr": 3e-3}, [0.2, 0.3]),
        record("c", {"model": "basic", "pretrained": None, "lr": 1e-4}, [0.4, 0.45, 0.5, 0.55]),
    ]
    trials = write_results(tmp_path / "out", records, space, {"source": "unit"})
    assert list(trials["trial_id"]) == ["a", "c", "b"]  # best first
    assert list(trials["status"]) == ["completed", "completed", "stopped early"]
    assert list(trials["best_epoch"]) == [4, 4, 2]
    for name in ("trials.csv", "curves.csv", "leaderboard.md", "curves.png", "by_parameter.png", "parallel.png"):
        assert (tmp_path / "out" / name).stat().st_size > 0
    rows = leaderboard_markdown(trials, "val_accuracy", "max", top=2).splitlines()[2:]
    cells = [[cell.strip() for cell in row.split("|")[1:-1]] for row in rows]
    # rank, trial, metric, epochs, status, then the varying parameters model, pretrained, lr
    assert cells == [
        ["1", "a", "0.7000", "4", "completed", "resnet18", "True", "0.001"],
        ["2", "c", "0.5500", "4", "completed", "basic", "", "0.0001"],
    ]
