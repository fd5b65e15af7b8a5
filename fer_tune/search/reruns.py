"""Re-runs: the search's best trials trained again with fresh seeds, and the champion chosen by mean.

A trial's score is one draw of its seed's luck, and the search's best trial is the luckiest draw
among many (the winner's curse). A space file with `select: {top_k: K, seeds: S}` has the K best
completed trials each trained S more times, from scratch and for their full epochs, with seeds
they never had (the trial's own seed + 1, ..., + S), under no pruner and no searcher; the champion
is the configuration with the best mean over its re-runs.

    top = top_trials(records, space)                       # the K best completed trials
    configs = rerun_configs([(r.trial_id, point), ...], S)  # their re-runs' configs (searchers.FixedConfigs)
    table = rerun_table(rerun_grid, space, order)          # one row per re-run: results/<sweep>/reruns.csv
    summary = summarize(table, trials, space.metric)       # mean, sd, n per configuration
    champion_of(summary, space.mode)                       # the trial id of the best mean

The Tune run itself is fer_tune.search.sweep's (`_rerun`): the sweep's own callbacks, so each
re-run is tracked as a child of the sweep's run, marked by the `rerun` key of its config.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from fer_tune.core.config import GRID_KEY, make_train_config
from fer_tune.search.direction import best_first, best_of
from fer_tune.search.outcome import COMPLETED, ChanceRule
from fer_tune.search.results import TrialRecord
from fer_tune.search.sweep_file import SpaceFile

# A re-run's trial config holds its point under GRID_KEY (fer_tune.core.config.trial_point opens it)
# and, beside it, this key: {"of": the re-trained trial's id, "seed": the fresh seed}.
RERUN_KEY = "rerun"
RERUN_FOLDER = "reruns"  # Ray's experiment of the re-runs, inside the sweep's own: <storage>/<sweep>/reruns
RERUNS_FILE, SUMMARY_FILE = "reruns.csv", "reruns_summary.csv"  # in results/<sweep>/
RERUN_COLUMNS = ("best_epoch", "epochs_run", "status", "wall_seconds", "error")  # of trials.csv, kept per re-run


def rerun_of(trial_config: dict[str, Any] | None) -> dict[str, Any] | None:
    """A re-run's marker ({"of": trial id, "seed": seed}) in its trial config; None for a search trial."""
    return (trial_config or {}).get(RERUN_KEY)


def top_trials(records: list[TrialRecord], space: SpaceFile) -> list[TrialRecord]:
    """The `select.top_k` best trials that ran all their epochs, best first (the first of equals first).

    A trial the pruner stopped is left out: its score is of fewer epochs than its configuration asks for.
    """
    completed = [r for r in records if r.outcome.status == COMPLETED and r.best_metric is not None]
    ranked = sorted(completed, key=lambda r: r.best_metric, reverse=not best_first(space.mode))  # stable on ties
    return ranked[: space.select.top_k]


def fresh_seeds(seed: int, count: int) -> list[int]:
    """The seeds a trial trained with `seed` is re-trained with: seed + 1, ..., seed + count (never its own)."""
    return [seed + k for k in range(1, count + 1)]


def rerun_configs(points: list[tuple[str, dict[str, Any]]], seeds: int) -> list[dict[str, Any]]:
    """The trial configs of the re-runs of each (trial id, point), in that order and by seed."""
    configs = []
    for trial_id, point in points:
        for seed in fresh_seeds(make_train_config(point, where=f"trial {trial_id}").seed, seeds):
            configs.append({GRID_KEY: {**point, "seed": seed}, RERUN_KEY: {"of": trial_id, "seed": seed}})
    return configs


def rerun_table(result_grid, space: SpaceFile, order: list[str], rule: ChanceRule | None = None) -> pd.DataFrame:
    """One row per re-run: the trial it re-trained, its seed, its Ray trial id, best metric, epochs, outcome.

    Rows in `order` (the re-trained trials' ids, best first), then by seed.
    """
    score = f"best_{space.metric}"
    rows = []
    for result in result_grid:
        marker, row = rerun_of(result.config), TrialRecord.from_result(result, space, rule).row()
        rows.append({"trial_id": marker["of"], "seed": marker["seed"], "rerun_id": row["trial_id"],
                     score: row[score], **{c: row[c] for c in RERUN_COLUMNS}})  # fmt: skip
    columns = ["trial_id", "seed", "rerun_id", score, *RERUN_COLUMNS]
    table = pd.DataFrame(rows, columns=columns)
    rank = table["trial_id"].map({trial_id: i for i, trial_id in enumerate(order)})
    return table.assign(_rank=rank).sort_values(["_rank", "seed"]).drop(columns="_rank").reset_index(drop=True)


def summarize(reruns: pd.DataFrame, trials: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Per re-trained configuration, in the re-runs' order: its search score, and the mean, sample standard
    deviation and count of its completed re-runs' best metric.

    The mean is over the re-runs alone, not the original trial: that trial's score is the one it was
    picked for, so it is biased upward (the winner's curse), and most for the luckiest configuration;
    fresh seeds were picked by nothing. A failed re-run counts in no mean (`n` says how many did).
    """
    score = f"best_{metric}"
    done = reruns[reruns["status"] == COMPLETED].groupby("trial_id")[score]
    means, sds, counts = done.mean(), done.std(ddof=1), done.count()
    searched = trials.set_index("trial_id")[score]
    rows = [
        {"trial_id": t, f"search_{score}": searched.get(t), "mean": means.get(t), "sd": sds.get(t),
         "n": int(counts.get(t, 0)), "seeds": int((reruns["trial_id"] == t).sum())}
        for t in dict.fromkeys(reruns["trial_id"])
    ]  # fmt: skip
    return pd.DataFrame(rows, columns=["trial_id", f"search_{score}", "mean", "sd", "n", "seeds"])


def champion_of(summary: pd.DataFrame, mode: str) -> str | None:
    """The re-trained configuration with the best mean (the first of equals: the better search score);
    None when no re-run completed."""
    scored = [row for row in summary.to_dict("records") if row["n"] > 0]
    return best_of(scored, key=lambda row: row["mean"], mode=mode)["trial_id"] if scored else None


def write_reruns(out_dir: Path, reruns: pd.DataFrame, trials: pd.DataFrame, space: SpaceFile) -> pd.DataFrame:
    """Write reruns.csv and reruns_summary.csv (the summary, the champion marked) into `out_dir`; the summary."""
    summary = summarize(reruns, trials, space.metric)
    summary["champion"] = summary["trial_id"] == champion_of(summary, space.mode)
    reruns.to_csv(out_dir / RERUNS_FILE, index=False)
    summary.to_csv(out_dir / SUMMARY_FILE, index=False)
    return summary


def selection_markdown(summary: pd.DataFrame, metric: str) -> str:
    """The re-trained configurations as a markdown table: search score, mean ± sd over fresh seeds, n."""
    shown = pd.DataFrame({
        "trial_id": summary["trial_id"],
        f"search best_{metric}": summary[f"search_best_{metric}"].map(_number),
        "mean ± sd over re-runs": [mean_sd(m, s) for m, s in zip(summary["mean"], summary["sd"])],
        "n": [f"{n}/{k}" for n, k in zip(summary["n"], summary["seeds"])],
        "champion": summary["champion"].map(lambda on: "champion" if on else ""),
    })  # fmt: skip
    return shown.to_markdown(index=False, disable_numparse=True)


def mean_sd(mean: Any, sd: Any) -> str:
    """`0.6123 ± 0.0150`; the sd is left out where one run cannot give it, and "n/a" where none completed."""
    if mean is None or pd.isna(mean):
        return "n/a"
    return f"{mean:.4f}" if sd is None or pd.isna(sd) else f"{mean:.4f} ± {sd:.4f}"


def _number(value: Any) -> str:
    return "n/a" if value is None or pd.isna(value) else f"{value:.4f}"
