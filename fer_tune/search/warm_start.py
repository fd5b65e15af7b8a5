"""Warm starts: earlier sweeps' trials seed a new sweep (`fer-tune run SPACE --warm-start SWEEP|auto`).

    earlier = [read_results("quick-20261201-101500")]       # results/<sweep>/; tracking reads MLflow
    warm = map_trials(space, earlier, top_k=space.warm_start.top_k)
    warm.summary()  # "warm start from quick-...: 7 of 10 earlier trials used (2 with lr outside ...)"

Each earlier trial is mapped into the current space, in file order so conditions are judged as
the sampler judges them: a parameter the space no longer has is dropped; a value outside a
changed range or choice list skips the trial (counted); a conditional parameter whose
condition no longer holds is left out; a parameter new to the space is left for the sampler.
What comes out seeds the searcher (completed trials as Optuna observations, stopped ones as
pruned, the best K proposed again first: fer_tune.search.searchers) and the pruner's rungs
(each trial's curve at the rungs' epochs: fer_tune.search.pruners).

Layering: this module reads results folders only; the CLI reads tracked sweeps from MLflow
(fer_tune.tracking.earlier) into the same `EarlierSweep` and passes them in.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fer_tune.constants import RESULTS_DIR
from fer_tune.errors import FerTuneError
from fer_tune.search.result_files import read_curves_csv
from fer_tune.search.results import read_sweep_json, read_trials_csv
from fer_tune.search.sweep_file import SpaceFile
from fer_tune.search.syntax import Param

AUTO = "auto"


@dataclass(frozen=True)
class EarlierTrial:
    trial_id: str
    params: dict[str, Any]  # as recorded (CSV or MLflow strings); None where inactive
    curve: dict[int, float]  # epoch -> the metric
    completed: bool  # ran all its epochs (else stopped early; failed trials have no curve)


@dataclass(frozen=True)
class EarlierSweep:
    name: str
    space_name: str
    fingerprint: str | None  # the data's; None where the sweep did not record it
    param_names: tuple[str, ...]  # the parameters its space had
    trials: tuple[EarlierTrial, ...]
    source: str  # "results/<name>/" or "MLflow <store>"


@dataclass(frozen=True)
class Seed:
    """One earlier trial mapped into the current space."""

    key: str  # sweep/trial_id
    params: dict[str, Any]  # active parameters of the current space, values of its types
    score: float  # its best metric
    curve: dict[int, float]
    completed: bool


@dataclass
class WarmStart:
    sources: tuple[str, ...]
    seeds: tuple[Seed, ...]
    considered: int  # earlier trials read
    skipped: Counter = field(default_factory=Counter)  # reason -> trials
    dropped: tuple[str, ...] = ()  # earlier parameters the space no longer has
    top_k: int = 3
    any_data: bool = False  # some source was on other data (--any-data)

    def summary(self) -> str:
        used = f"warm start from {', '.join(self.sources)}: {len(self.seeds)} of {self.considered} earlier trials used"
        details = [f"{count} {reason}" for reason, count in sorted(self.skipped.items())]
        if self.dropped:
            details.append(f"parameters no longer in the space dropped: {', '.join(self.dropped)}")
        if self.any_data:
            details.append("on other data (--any-data)")
        return used + (f" ({'; '.join(details)})" if details else "")

    def best(self, mode: str) -> list[Seed]:
        """The best `top_k` distinct configurations, best first (proposed again before any new one)."""
        ranked = sorted(self.seeds, key=lambda s: s.score, reverse=mode == "max")
        chosen: list[Seed] = []
        for seed in ranked:
            if len(chosen) >= self.top_k:
                break
            if all(seed.params != c.params for c in chosen):
                chosen.append(seed)
        return chosen

    def curves(self) -> dict[str, dict[int, float]]:
        return {seed.key: seed.curve for seed in self.seeds}

    def record(self, mode: str) -> dict[str, Any]:
        """What sweep.json and the parent MLflow run keep of it."""
        return {
            "sources": list(self.sources),
            "used": len(self.seeds),
            "considered": self.considered,
            "proposed_first": [seed.key for seed in self.best(mode)],
            "any_data": self.any_data,
        }


# ---------------------------------------------------------------------------------- reading results/


def read_results(name: str, metric: str, results_dir: Path = RESULTS_DIR) -> EarlierSweep:
    """An earlier sweep from results/<name>/: sweep.json (space, data), trials.csv, curves.csv (each through
    its checked reader: a damaged file is one line)."""
    import pandas as pd

    folder = results_dir / name
    meta_file, trials_file = folder / "sweep.json", folder / "trials.csv"
    if not meta_file.is_file() or not trials_file.is_file():
        known = ", ".join(sorted(p.parent.name for p in results_dir.glob("*/sweep.json"))) or "none"
        raise FerTuneError(f"--warm-start {name}: no finished sweep of that name in {results_dir}/; known: {known}")
    meta = read_sweep_json(meta_file)  # one line for a folder a crash or a full disk left half-written
    names = tuple(p["name"] for p in meta["space"].get("space", []))
    trials = read_trials_csv(trials_file, meta["space"]["metric"])
    curves_file = folder / "curves.csv"
    curves = read_curves_csv(curves_file) if curves_file.is_file() else pd.DataFrame()
    by_trial = dict(tuple(curves.groupby("trial_id"))) if "trial_id" in curves else {}
    earlier = []
    for row in trials.to_dict("records"):
        curve = by_trial.get(row["trial_id"])
        points = {} if curve is None or metric not in curve else dict(zip(curve["epoch"], curve[metric]))
        earlier.append(
            EarlierTrial(
                trial_id=str(row["trial_id"]),
                params={n: _missing_none(row.get(n)) for n in names},
                curve={int(e): float(v) for e, v in points.items() if _finite(v)},
                completed=row.get("status") == "completed",
            )
        )
    return EarlierSweep(name, meta["space"]["name"], fingerprint_of(meta), names, tuple(earlier), f"{folder}/")


def fingerprint_of(meta: dict) -> str | None:
    """The data fingerprint a sweep.json records (run.data_fingerprint; older ones: their one source's)."""
    recorded = (meta.get("run") or {}).get("data_fingerprint")
    sources = (meta.get("data") or {}).get("sources") or []
    return recorded or (sources[0].get("fingerprint") if len(sources) == 1 else None)


def auto_sweeps(space_name: str, fingerprint: str, results_dir: Path = RESULTS_DIR, exclude: str = "") -> list[str]:
    """Earlier finished sweeps of the same space name on the same data, oldest first."""
    found = []
    for meta_file in sorted(results_dir.glob("*/sweep.json"), key=lambda p: p.stat().st_mtime):
        try:
            meta = read_sweep_json(meta_file)
        except FerTuneError:  # half-written by a crash: not a finished sweep to learn from
            continue
        name = meta_file.parent.name
        if name != exclude and meta["space"].get("name") == space_name and fingerprint_of(meta) == fingerprint:
            found.append(name)
    return found


def parse_sources(text: str) -> list[str]:
    """--warm-start's value: `auto` or comma-separated sweep names."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise FerTuneError(f"--warm-start {text!r}: expected a sweep name, several separated by commas, or auto")
    if AUTO in names and len(names) > 1:
        raise FerTuneError(f"--warm-start {text}: auto finds the sweeps itself; give auto alone or names alone")
    return names


def check_data(sweeps: list[EarlierSweep], fingerprint: str, any_data: bool) -> bool:
    """Whether any source was on other data; without --any-data that is a one-line error."""
    other = [s for s in sweeps if s.fingerprint != fingerprint]
    if other and not any_data:
        first = other[0]
        raise FerTuneError(
            f"--warm-start {first.name}: it ran on other data (fingerprint {first.fingerprint or 'unrecorded'}, "
            f"this sweep's is {fingerprint}); add --any-data to warm-start from it anyway"
        )
    return bool(other)


# ---------------------------------------------------------------------------------- mapping


def map_trials(space: SpaceFile, sweeps: list[EarlierSweep], any_data: bool = False) -> WarmStart:
    """Every earlier trial mapped into `space` (see the module docstring), with what was skipped and why."""
    current = {p.name for p in space.space}
    dropped = sorted({n for s in sweeps for n in s.param_names if n not in current and n != "epochs"})
    searched = sorted(p.name for p in space.space if p.kind != "fixed")
    if searched and not set(searched) & {n for s in sweeps for n in s.param_names}:
        earlier = ", ".join(sorted({n for s in sweeps for n in s.param_names} - {"epochs"})) or "none"
        raise FerTuneError(
            f"--warm-start {', '.join(s.name for s in sweeps)}: shares no searched parameter with {space.path} "
            f"(it searched {earlier}; this space searches {', '.join(searched)}): nothing to start from"
        )
    seeds, skipped, considered = [], Counter(), 0
    for sweep in sweeps:
        for trial in sweep.trials:
            considered += 1
            score = _best(trial.curve, space.mode)
            if score is None:
                skipped["without a score"] += 1
                continue
            params, outside = map_point(space, trial.params)
            if outside is not None:
                skipped[f"with {outside} outside the space"] += 1
                continue
            key = f"{sweep.name}/{trial.trial_id}"
            seeds.append(Seed(key, params, score, trial.curve, trial.completed))
    names = tuple(s.name for s in sweeps)
    return WarmStart(names, tuple(seeds), considered, skipped, tuple(dropped), space.warm_start.top_k, any_data)


def check_fit(space: SpaceFile, sweeps: list[EarlierSweep]) -> None:
    """Named earlier sweeps none of whose trials fits `space` (map_trials would seed nothing): one line, so a
    warm start asked for by name never quietly starts cold."""
    warm = map_trials(space, sweeps)
    if warm.considered and not warm.seeds:
        why = ", ".join(f"{count} {reason}" for reason, count in warm.skipped.most_common())
        raise FerTuneError(
            f"--warm-start {', '.join(warm.sources)}: none of its {warm.considered} trials fits {space.path} "
            f"({why}): nothing to start from"
        )


def map_point(space: SpaceFile, recorded: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """(the point in the current space, None) or ({}, the first parameter whose value it no longer allows)."""
    point: dict[str, Any] = {"epochs": space.budget.max_epochs}
    params: dict[str, Any] = {}
    for param in space.space:
        if not param.is_active(point):
            continue
        raw = _missing_none(recorded.get(param.name))
        if raw is None:
            if param.kind == "fixed":  # new to the space and fixed: the value every trial gets
                point[param.name] = param.values[0]
            continue  # new to the space (or inactive before): the sampler chooses it
        value = coerce(raw, param)
        if value is None:
            return {}, param.name
        point[param.name] = value
        if param.kind != "fixed":
            params[param.name] = value
    return params, None


def coerce(raw: Any, param: Param) -> Any:
    """`raw` (a CSV cell, an MLflow string) as the parameter's own value, or None if the space excludes it."""
    if param.kind in ("choice", "grid", "fixed"):
        for value in param.values:
            if _same(raw, value):
                return value
        return None
    try:
        number = float(raw)
    except (TypeError, ValueError):
        return None
    low, high = float(param.values[0]), float(param.values[-1])
    tolerance = 1e-9 * max(abs(low), abs(high), 1.0)
    if not low - tolerance <= number <= high + tolerance:
        return None
    if param.kind == "randint":
        return int(round(number)) if abs(number - round(number)) < 1e-9 else None
    return min(max(number, low), high)


def _same(raw: Any, value: Any) -> bool:
    if isinstance(value, bool) or isinstance(raw, bool):
        return str(raw).lower() == str(value).lower()
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return math.isclose(float(raw), float(value), rel_tol=1e-9, abs_tol=1e-12)
        except (TypeError, ValueError):
            return False
    return str(raw) == str(value)


def _best(curve: dict[int, float], mode: str) -> float | None:
    values = [v for v in curve.values() if _finite(v)]
    return (max if mode == "max" else min)(values) if values else None


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _missing_none(value: Any) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value in ("", "None", "nan"):
        return None
    return value
