"""A multi-objective sweep's front: which trials are on it, which one is the champion, pareto.csv and its plot.

    table = front_table(records, space)     # one row per scored trial: objectives, on_front, champion
    champion = pick_champion(records, space)  # the record the `champion:` rule picks, or None

A trial's objective values are those of its best epoch by the primary objective (the checkpoint
that is kept and registered) and its cost (fer_tune.core.cost). The front is the non-dominated set
of the scored trials (fer_tune.search.moasha); the champion is the best front member by the rule's
metric among those meeting its `where` (without a rule: the best by the primary objective).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from fer_tune.core.cost import COST_METRICS
from fer_tune.search.moasha import non_dominated_fronts
from fer_tune.search.objectives import ChampionRule, Objective
from fer_tune.search.sweep_file import SpaceFile

TrialRecord = Any  # fer_tune.search.results.TrialRecord (which imports this module)

FRONT_COLUMN = "on_front"  # trials.csv of a multi-objective sweep: whether the trial is on the front
CHAMPION_COLUMN = "champion"


def trial_values(record: TrialRecord) -> dict[str, float | None]:
    """Every recorded metric of a trial at its best epoch (by the primary objective), and its cost."""
    row = record.best_row
    values = {} if row is None else {k: float(v) for k, v in row.items() if k != "epoch" and pd.notna(v)}
    return {**values, **{k: record.cost.get(k) for k in COST_METRICS}}


def _vector(values: dict, objectives: tuple[Objective, ...]) -> list[float]:
    sign = {"max": 1.0, "min": -1.0}
    return [
        sign[o.mode] * float(values.get(o.metric) if values.get(o.metric) is not None else "nan") for o in objectives
    ]


def scored(records: list[TrialRecord]) -> list[TrialRecord]:
    return [r for r in records if r.best_metric is not None]


def front_members(records: list[TrialRecord], space: SpaceFile) -> list[TrialRecord]:
    """The scored trials no other scored trial dominates."""
    candidates = scored(records)
    if not candidates:
        return []
    vectors = [_vector(trial_values(r), space.objective_list) for r in candidates]
    return [candidates[i] for i in non_dominated_fronts(vectors)[0]]


def champion_rule(space: SpaceFile) -> ChampionRule:
    return space.champion or ChampionRule(metric=space.metric)


def pick_champion(records: list[TrialRecord], space: SpaceFile) -> TrialRecord | None:
    """The front member the `champion:` rule picks (with one objective: any scored trial); None when none
    meets its `where`."""
    rule = champion_rule(space)
    mode = next((o.mode for o in space.objective_list if o.metric == rule.metric), space.mode)
    candidates = front_members(records, space) if space.multi_objective else scored(records)
    admitted = [(r, trial_values(r)) for r in candidates]
    admitted = [(r, v) for r, v in admitted if rule.admits(v) and v.get(rule.metric) is not None]
    if not admitted:
        return None
    pick = max if mode == "max" else min
    return pick(admitted, key=lambda rv: rv[1][rule.metric])[0]


def no_champion_message(space: SpaceFile) -> str:
    rule = champion_rule(space)
    return (
        f"{space.path}: champion.where: no trial on the front meets {rule.describe()}; "
        "no model takes the champion alias (relax the constraint or search longer)"
    )


def front_table(records: list[TrialRecord], space: SpaceFile) -> pd.DataFrame:
    """One row per scored trial: its objective values, whether it is on the front, whether it is the champion."""
    on_front = {r.trial_id for r in front_members(records, space)}
    champion = pick_champion(records, space)
    rows = [
        {
            "trial_id": r.trial_id,
            **{o.metric: trial_values(r).get(o.metric) for o in space.objective_list},
            FRONT_COLUMN: r.trial_id in on_front,
            CHAMPION_COLUMN: champion is not None and r.trial_id == champion.trial_id,
        }
        for r in scored(records)
    ]
    columns = ["trial_id", *(o.metric for o in space.objective_list), FRONT_COLUMN, CHAMPION_COLUMN]
    return pd.DataFrame(rows, columns=columns)


def write_front(out_dir: Path, records: list[TrialRecord], space: SpaceFile) -> pd.DataFrame:
    """pareto.csv (the front members, best primary objective first) and pareto.png; returns the whole table."""
    table = front_table(records, space)
    front = table[table[FRONT_COLUMN]].sort_values(space.metric, ascending=space.mode == "min")
    front.drop(columns=[FRONT_COLUMN]).to_csv(out_dir / "pareto.csv", index=False)
    plot_front(table, space, out_dir / "pareto.png")
    return table


def plot_front(table: pd.DataFrame, space: SpaceFile, out: Path) -> None:
    """The primary objective against the first cost objective (else the second objective): dominated
    trials grey, the front joined by a step line, the champion starred."""
    from fer_tune.search.plots import plt

    others = [o.metric for o in space.objective_list if o.metric != space.metric]
    x = next((m for m in others if m in COST_METRICS), others[0] if others else "latency_ms")
    y = space.metric
    fig, ax = plt.subplots(figsize=(7, 5))
    if x in table and len(table):
        dominated, front = table[~table[FRONT_COLUMN]], table[table[FRONT_COLUMN]].sort_values(x)
        ax.scatter(dominated[x], dominated[y], color="0.7", label="dominated")
        ax.plot(front[x], front[y], marker="o", drawstyle="steps-post", color="tab:blue", label="front")
        star = table[table[CHAMPION_COLUMN]]
        ax.scatter(star[x], star[y], marker="*", s=300, color="tab:red", zorder=3, label="champion")
        if x in COST_METRICS and table[x].min() > 0 and table[x].max() / table[x].min() > 50:
            ax.set_xscale("log")
    rule = champion_rule(space)
    ax.set(xlabel=x, ylabel=y, title=f"Pareto front ({rule.metric}, {rule.describe()})")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
