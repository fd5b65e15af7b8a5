"""Plots of a sweep (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402


def plot_curves(curves: pd.DataFrame, metric: str, out: Path) -> None:
    """The metric per epoch, one line per trial; trials stopped early by the scheduler end short."""
    fig, ax = plt.subplots(figsize=(8, 5))
    if len(curves):
        for trial_id, curve in curves.groupby("trial_id"):
            ax.plot(curve["epoch"], curve[metric], marker=".", linewidth=1, alpha=0.8, label=str(trial_id))
    ax.set(xlabel="epoch", ylabel=metric, title=f"{metric} per epoch (short lines: stopped early)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def plot_by_parameter(trials: pd.DataFrame, params: list[str], metric: str, out: Path) -> None:
    """The best metric of each trial against each searched parameter."""
    best = f"best_{metric}"
    params = [p for p in params if p in trials and trials[p].notna().any()] or ["epochs_run"]
    columns = min(3, len(params))
    rows = -(-len(params) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.2 * rows), squeeze=False)
    for ax, param in zip(axes.flat, params):
        values = trials[[param, best]].dropna()
        if pd.api.types.is_numeric_dtype(values[param]) and values[param].nunique() > 4:
            ax.scatter(values[param], values[best], alpha=0.8)
            if values[param].min() > 0 and values[param].max() / values[param].min() > 50:
                ax.set_xscale("log")
        else:
            labels = sorted(values[param].astype(str).unique())
            for i, label in enumerate(labels):
                ys = values[best][values[param].astype(str) == label]
                ax.scatter([i] * len(ys), ys, alpha=0.8)
            ax.set_xticks(range(len(labels)), labels, rotation=30)
        ax.set(title=param, ylabel=best)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(params) :]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def plot_parallel(trials: pd.DataFrame, params: list[str], metric: str, out: Path, top: int = 10) -> None:
    """Parallel coordinates of the top trials, each axis scaled to [0, 1]; categories as their rank."""
    best = f"best_{metric}"
    frame = trials.dropna(subset=[best]).head(top)
    columns = [p for p in params if p in frame] + [best]
    scaled = pd.DataFrame(index=frame.index)
    for column in columns:
        values = frame[column]
        if pd.api.types.is_bool_dtype(values):  # numeric to pandas, but numpy refuses bool subtraction
            values = values.astype(float)
        elif not pd.api.types.is_numeric_dtype(values):
            values = values.astype(str).astype("category").cat.codes.astype(float)
        span = values.max() - values.min()
        scaled[column] = (values - values.min()) / span if span else 0.5
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(columns)), 4.5))
    for index, row in scaled.iterrows():
        ax.plot(range(len(columns)), row.values, marker="o", alpha=0.7, label=str(frame.loc[index, "trial_id"]))
    ax.set_xticks(range(len(columns)), columns, rotation=30)
    ax.set(ylabel="scaled value", title=f"top {len(frame)} trials by {metric}")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
