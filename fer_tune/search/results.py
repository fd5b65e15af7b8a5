"""A sweep's tables and plots, built with pandas and matplotlib: results/<name>/.

- trials.csv: one row per trial: every parameter of the space, final and best
  metric, the epoch of the best, epochs run, status (fer_tune.search.outcome:
  completed, stopped early or failed), wall time, the error line of a failure, and the
  model's cost (params, macs, latency_ms: fer_tune.core.cost).
- curves.csv: every reported epoch of every trial (the long table the plots use).
- leaderboard.md: the top trials.
- curves.png (validation accuracy per epoch: ASHA's pruning shows as short
  lines), by_parameter.png (the metric against each parameter), parallel.png
  (parallel coordinates of the top trials).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import ValidationError

from fer_tune.constants import RESULTS_DIR
from fer_tune.core.config import format_validation_error, trial_point
from fer_tune.core.cost import COST_METRICS
from fer_tune.errors import FerTuneError
from fer_tune.search.direction import best_first, best_label
from fer_tune.search.outcome import CHANCE_METRIC, STOPPED, ChanceRule, Outcome, planned_epochs, trial_outcome
from fer_tune.search.pareto import FRONT_COLUMN, write_front
from fer_tune.search.sweep_file import SpaceFile
from fer_tune.uris import redact

CURVE_COLUMNS = (
    "epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "val_macro_f1", "lr", "epoch_seconds",
)  # fmt: skip


@dataclass
class TrialRecord:
    """What a finished (or stopped, or failed) trial left behind, independent of Ray's types."""

    trial_id: str
    params: dict[str, Any]  # the space's parameters as this trial took them
    curve: pd.DataFrame  # one row per epoch, CURVE_COLUMNS
    metric: str
    mode: str
    planned_epochs: int  # the epochs this trial was given (its own `epochs`, else max_epochs)
    error: str | None = None
    wall_seconds: float = 0.0
    path: str | None = None  # Ray's trial folder
    rule: ChanceRule | None = None  # the sweep's dead-trial rule: a trial stopped at chance says so
    ended_at: float | None = None  # Unix time of its last report (orders the trials for the report's cost curve)
    cost: dict[str, float] = field(default_factory=dict)  # params, macs, latency_ms (fer_tune.core.cost)

    @classmethod
    def from_result(cls, result, space: SpaceFile, rule: ChanceRule | None = None) -> TrialRecord:
        """From a ray.tune.Result."""
        point = trial_point(result.config or {})
        frame = result.metrics_dataframe
        if frame is None or frame.empty or "epoch" not in frame:
            curve = pd.DataFrame(columns=list(CURVE_COLUMNS))
        else:
            curve = frame[[c for c in CURVE_COLUMNS if c in frame]].drop_duplicates("epoch", keep="last")
        metrics = result.metrics or {}
        return cls(
            trial_id=str(metrics.get("trial_id") or Path(result.path).name),
            params={p.name: point.get(p.name) for p in space.space},
            curve=curve.reset_index(drop=True),
            metric=space.metric,
            mode=space.mode,
            planned_epochs=planned_epochs(result.config, space.budget.max_epochs),
            error=str(result.error) if result.error else None,
            wall_seconds=float(metrics.get("time_total_s") or 0.0),
            path=result.path,
            rule=rule,
            ended_at=metrics.get("timestamp"),
            cost={k: metrics[k] for k in COST_METRICS if metrics.get(k) is not None},
        )

    @property
    def epochs(self) -> int:
        return int(self.curve["epoch"].max()) if len(self.curve) else 0

    @property
    def best_row(self) -> pd.Series | None:
        if not len(self.curve):
            return None
        values = self.curve[self.metric].dropna()
        if values.empty:
            return None
        return self.curve.loc[best_label(values, self.mode)]

    @property
    def best_metric(self) -> float | None:
        row = self.best_row
        return None if row is None else float(row[self.metric])

    @property
    def outcome(self) -> Outcome:
        last = self.curve[CHANCE_METRIC].iloc[-1] if len(self.curve) and CHANCE_METRIC in self.curve else None
        return trial_outcome(self.epochs, self.planned_epochs, self.error, last, self.rule)

    def row(self) -> dict[str, Any]:
        best, outcome = self.best_row, self.outcome
        return {
            "trial_id": self.trial_id,
            **self.params,
            f"final_{self.metric}": float(self.curve[self.metric].iloc[-1]) if len(self.curve) else None,
            f"best_{self.metric}": self.best_metric,
            "best_epoch": int(best["epoch"]) if best is not None else None,
            "epochs_run": self.epochs,  # not "epochs": a space may search that parameter
            "stopped_early": outcome.status == STOPPED,
            "status": outcome.status,
            "wall_seconds": round(self.wall_seconds, 2),
            "error": outcome.reason if outcome.status != STOPPED else None,
            "stop_reason": outcome.reason if outcome.status == STOPPED else None,
            "ended_at": self.ended_at,
            **{k: self.cost.get(k) for k in COST_METRICS},
        }


def trials_frame(records: list[TrialRecord], metric: str, mode: str) -> pd.DataFrame:
    frame = pd.DataFrame([r.row() for r in records])
    return frame.sort_values(f"best_{metric}", ascending=best_first(mode), na_position="last").reset_index(drop=True)


def write_results(
    out_dir: Path, records: list[TrialRecord], space: SpaceFile, data_summary: dict, run: dict | None = None
) -> pd.DataFrame:
    """Write every table and plot of a sweep into `out_dir`; returns the trials table."""
    out_dir.mkdir(parents=True, exist_ok=True)
    trials = trials_frame(records, space.metric, space.mode)
    if space.multi_objective:  # pareto.csv, pareto.png and the front marked in trials.csv and the leaderboard
        front = write_front(out_dir, records, space)
        trials[FRONT_COLUMN] = trials["trial_id"].isin(set(front.loc[front[FRONT_COLUMN], "trial_id"]))
    trials.to_csv(out_dir / "trials.csv", index=False)
    curves = pd.concat(
        [r.curve.assign(trial_id=r.trial_id) for r in records if len(r.curve)] or [pd.DataFrame()],
        ignore_index=True,
    )
    curves.to_csv(out_dir / "curves.csv", index=False)
    header = f"# Sweep `{out_dir.name}` — {space.path}\n\nData: {data_summary['source']}\n\n"
    (out_dir / "leaderboard.md").write_text(header + leaderboard_markdown(trials, space.metric, space.mode) + "\n")
    (out_dir / "sweep.json").write_text(
        redact(json.dumps({"space": space.model_dump(mode="json"), "data": data_summary, "run": run or {}}, indent=2))
    )
    from fer_tune.search.plots import plot_by_parameter, plot_curves, plot_parallel

    plot_curves(curves, space.metric, out_dir / "curves.png")
    plot_by_parameter(
        trials, [p.name for p in space.space if p.kind != "fixed"], space.metric, out_dir / "by_parameter.png"
    )
    plot_parallel(trials, [p.name for p in space.space if p.kind != "fixed"], space.metric, out_dir / "parallel.png")
    return trials


def leaderboard_markdown(trials: pd.DataFrame, metric: str, mode: str, top: int = 10) -> str:
    """The top trials as a markdown table: rank, metric, epochs, status and every varying parameter."""
    best = f"best_{metric}"
    varying = [c for c in _param_columns(trials) if trials[c].nunique(dropna=True) > 1]
    marks = [FRONT_COLUMN] if FRONT_COLUMN in trials else []  # a multi-objective sweep's front members
    shown = trials.head(top)[["trial_id", best, "epochs_run", "status", *marks, *varying]].copy()
    if marks:
        shown[FRONT_COLUMN] = shown[FRONT_COLUMN].map(lambda on: "front" if on else "")
    shown.insert(0, "rank", range(1, len(shown) + 1))
    shown[best] = shown[best].map(lambda v: f"{v:.4f}" if pd.notna(v) else "n/a")
    for column in varying:  # 4 significant digits; blank where a conditional parameter was inactive
        shown[column] = shown[column].map(
            lambda v: "" if pd.isna(v) else f"{v:.4g}" if isinstance(v, float) else str(v)
        )
    return shown.to_markdown(index=False, disable_numparse=True)  # keep our formatting as it is


def _param_columns(trials: pd.DataFrame) -> list[str]:
    fixed_columns = {
        "trial_id", "best_epoch", "epochs_run", "stopped_early", "status", "wall_seconds", "error", "ended_at",
        "stop_reason",
    }  # fmt: skip
    fixed_columns |= {*COST_METRICS, FRONT_COLUMN}
    return [c for c in trials.columns if c not in fixed_columns and not c.startswith(("final_", "best_"))]


@dataclass
class SavedSweep:
    name: str
    trials: pd.DataFrame
    metric: str
    mode: str


def load_sweep(name: str | None = None) -> SavedSweep:
    """A finished sweep's trials table (and its metric and mode) by name, or the latest sweep's."""
    if name is None:
        sweeps = sorted(RESULTS_DIR.glob("*/trials.csv"), key=lambda p: p.stat().st_mtime)
        if not sweeps:
            raise FerTuneError(f"no sweeps in {RESULTS_DIR}/: run `fer-tune run SPACE.yaml` first")
        path = sweeps[-1]
    else:
        path = RESULTS_DIR / name / "trials.csv"
        if not path.is_file():
            known = sorted(p.parent.name for p in RESULTS_DIR.glob("*/trials.csv"))
            raise FerTuneError(f"no sweep named {name!r} in {RESULTS_DIR}/; known: {', '.join(known) or 'none'}")
    space = read_sweep_json(path.parent / "sweep.json")["space"]
    trials = read_trials_csv(path, space["metric"])
    return SavedSweep(path.parent.name, trials, space["metric"], space["mode"])


def read_trials_csv(path: Path, metric: str) -> pd.DataFrame:
    """results/<name>/trials.csv, checked: a crash or a full disk can leave it missing, empty or cut short."""
    if not path.is_file():
        raise FerTuneError(f"{path}: not found; {INCOMPLETE}")
    try:
        trials = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as err:
        raise FerTuneError(f"{path}: unreadable ({_first_line(err)}); {INCOMPLETE}") from None
    if f"best_{metric}" not in trials or "trial_id" not in trials:
        raise FerTuneError(f"{path}: no best_{metric} or trial_id column; {INCOMPLETE}")
    return trials


INCOMPLETE = "the results folder is incomplete (cut short by a crash or a full disk?)"


def read_sweep_json(meta: Path) -> dict:
    """results/<name>/sweep.json, checked: a crash or a full disk can leave it missing, cut short or empty."""
    if not meta.is_file():
        raise FerTuneError(f"{meta}: not found; {meta.parent} is not a complete fer-tune results folder")
    try:
        saved = json.loads(meta.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as err:
        raise FerTuneError(f"{meta}: not valid JSON ({_first_line(err)}); {INCOMPLETE}") from None
    space = saved.get("space") if isinstance(saved, dict) else None
    if not isinstance(space, dict) or not {"metric", "mode", "path"} <= set(space):
        raise FerTuneError(f"{meta}: no space with metric, mode and path; {INCOMPLETE}")
    return saved


def saved_space(saved: dict, meta: Path | str) -> SpaceFile:
    """The space a sweep.json recorded (read_sweep_json's "space"), validated: one written by an older
    fer-tune, or edited since, may no longer be a valid space file."""
    try:
        return SpaceFile.model_validate(saved)
    except ValidationError as err:
        problem = format_validation_error(err, SpaceFile)
        raise FerTuneError(f"{meta}: its space no longer validates ({problem}); run the space file again") from None


def _first_line(err: Exception) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:120]
