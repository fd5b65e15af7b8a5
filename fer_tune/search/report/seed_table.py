"""Tandon 2020's table shape, computed: filter size × padding × augmentation × LR schedule, best and mean per cell.

Shown first in the report of any sweep that searched kernel_size, augmentation and scheduler (the
seed grid, search_spaces/tandon2020.yaml), so a reader can set it beside the seed's tables 2-4.
Each cell's figures are over the trials of that configuration (every other searched parameter
pooled), of each trial's best validation metric.
"""

from __future__ import annotations

import pandas as pd

AXES = ("kernel_size", "augmentation", "scheduler")  # the seed's table axes a sweep must search


def applies(trials: pd.DataFrame) -> bool:
    return all(a in trials and trials[a].nunique() > 1 for a in AXES)


def seed_table(trials: pd.DataFrame, metric: str, mode: str) -> list[dict]:
    """One row per (model,) filter, padding, augmentation and schedule: trials, best and mean of best_<metric>."""
    frame = trials.dropna(subset=[f"best_{metric}"]).copy()
    kernel = frame["kernel_size"].astype(int)
    frame["filter"] = kernel.map(lambda k: f"{k}×{k}")
    padding = frame["padding"] if "padding" in frame else pd.Series(1, index=frame.index)
    frame["padding"] = [(k - 1) // 2 if str(p) == "auto" else int(float(p)) for k, p in zip(kernel, padding)]
    frame["schedule"] = [_schedule(row) for row in frame.to_dict("records")]
    keys = (["model"] if "model" in frame and frame["model"].nunique() > 1 else []) + [
        "filter", "padding", "augmentation", "schedule",
    ]  # fmt: skip
    scores = frame.groupby(keys)[f"best_{metric}"]
    table = pd.DataFrame({"trials": scores.count(), "best": scores.max() if mode == "max" else scores.min(),
                          "mean": scores.mean()}).reset_index()  # fmt: skip
    return table.to_dict("records")


def _schedule(row: dict) -> str:
    """cos_warm(T_0, T_mult) as the seed wrote it; other schedules by name."""
    if row["scheduler"] == "cos_warm" and pd.notna(row.get("T_0")):
        return f"cos_warm({int(row['T_0'])}, {int(row.get('T_mult') or 1)})"
    return str(row["scheduler"])
