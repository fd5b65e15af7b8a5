"""The report's figures, as PNG bytes (matplotlib, Agg; no timestamp in the file, so rebuilds are identical)."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

DPI = 90
OUTCOME_COLOURS = {"completed": "tab:blue", "stopped early": "tab:orange", "failed": "tab:red"}


def png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    plt.close(fig)
    return buffer.getvalue()


def confusion(matrix: list[list[int]], classes: list[str]) -> bytes:
    fig, ax = plt.subplots(figsize=(5.5, 4.8))
    draw_confusion(ax, np.array(matrix), classes)
    return png(fig)


def draw_confusion(ax, counts: np.ndarray, classes) -> None:
    """Rows: true class, columns: predicted; colour is the row share, the number the count."""
    shares = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for (row, col), count in np.ndenumerate(counts):
        ax.text(col, row, str(count), ha="center", va="center", color="white" if shares[row, col] > 0.5 else "black")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set(xlabel="predicted", ylabel="true")


def importance(found: dict[str, float]) -> bytes:
    names = list(found)[::-1]
    fig, ax = plt.subplots(figsize=(6, 0.4 * len(names) + 1))
    ax.barh(names, [found[n] for n in names], color="tab:blue")
    ax.set(xlabel="share of the variance of the score (fANOVA)", xlim=(0, 1))
    ax.grid(alpha=0.3, axis="x")
    return png(fig)


def marginals(tables: dict[str, list[dict]], ylabel: str) -> bytes:
    """Mean score and its 95% interval per value (or bin) of each parameter."""
    columns = min(3, len(tables))
    rows = -(-len(tables) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.0 * rows), squeeze=False)
    for ax, (param, table) in zip(axes.flat, tables.items()):
        frame = pd.DataFrame(table)
        x = np.arange(len(frame))
        low = (frame["mean"] - frame["low"]).fillna(0).clip(lower=0)
        high = (frame["high"] - frame["mean"]).fillna(0).clip(lower=0)
        ax.errorbar(x, frame["mean"], yerr=[low, high], fmt="o", capsize=4)
        ax.set_xticks(x, frame["value"], rotation=30, ha="right", fontsize=8)
        ax.set(title=param, ylabel=ylabel)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(tables) :]:
        ax.axis("off")
    return png(fig)


def interaction(cells: list[dict], a: str, b: str) -> bytes:
    frame = pd.DataFrame(cells).pivot(index=a, columns=b, values="mean")
    fig, ax = plt.subplots(figsize=(1.1 * frame.shape[1] + 2.5, 0.6 * frame.shape[0] + 1.5))
    image = ax.imshow(frame.to_numpy(float), cmap="viridis", aspect="auto")
    for (row, col), value in np.ndenumerate(frame.to_numpy(float)):
        if np.isfinite(value):
            ax.text(col, row, f"{value:.3f}", ha="center", va="center", color="white", fontsize=8)
    ax.set_xticks(range(frame.shape[1]), frame.columns, rotation=30, ha="right")
    ax.set_yticks(range(frame.shape[0]), frame.index)
    ax.set(xlabel=b, ylabel=a)
    fig.colorbar(image, ax=ax)
    return png(fig)


def best_so_far(points: list[dict], metric: str) -> bytes:
    frame = pd.DataFrame(points)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.step(frame["cumulative_seconds"], frame["best"], where="post", marker=".")
    ax.set(xlabel="cumulative trainer-seconds", ylabel=f"best {metric} so far")
    ax.grid(alpha=0.3)
    return png(fig)


def curves_by_outcome(curves: pd.DataFrame, trials: pd.DataFrame, metric: str) -> bytes:
    """The metric per epoch of every trial, coloured by how the trial ended."""
    status = dict(zip(trials["trial_id"], trials["status"]))
    fig, ax = plt.subplots(figsize=(7, 4))
    seen = set()
    for trial_id, curve in curves.groupby("trial_id", sort=True):
        outcome = status.get(trial_id, "completed")
        ax.plot(curve["epoch"], curve[metric], marker=".", linewidth=1, alpha=0.8,
                color=OUTCOME_COLOURS.get(outcome, "gray"), label=None if outcome in seen else outcome)  # fmt: skip
        seen.add(outcome)
    ax.set(xlabel="epoch", ylabel=metric)
    ax.grid(alpha=0.3)
    if seen:
        ax.legend()
    return png(fig)
