"""Build a sweep's report from results/<sweep>/ alone: `write_report(folder)` -> report.json, report.html.

    from fer_tune.search.report.build import write_report
    write_report(Path("results/quick-20260101-120000"))

Reads trials.csv, curves.csv, sweep.json and, when the sweep wrote them, predictions.csv/.json
(fer_tune.search.report.predictions) and reruns.csv (fer_tune.search.reruns). No MLflow, no Ray, no
data: a report rebuilt from the same folder is byte-identical (seeded bootstrap and forest, PNGs
without timestamps). Sections: the answer, the re-runs (with `select:`), how sure, what mattered, what it cost.

Every file is read by its checked reader (fer_tune.search.result_files, fer_tune.search.results): a damaged
trials.csv, curves.csv or sweep.json is one line for the whole report; damaged predictions or re-runs leave
their sections out, and report.json's `left_out` (and the page, and the command's line) says which and why.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from fer_tune.errors import FerTuneError
from fer_tune.search.report import stats
from fer_tune.search.report.importance import importances, rung_scores, top_pair, why_unranked
from fer_tune.search.report.seed_table import applies, seed_table
from fer_tune.search.reruns import RERUNS_FILE, champion_of, summarize
from fer_tune.search.result_files import (
    check_sweep_for_report,
    check_trials_for_report,
    read_curves_csv,
    read_predictions,
    read_reruns_csv,
)
from fer_tune.search.results import read_sweep_json, read_trials_csv

REPORT_JSON, REPORT_HTML = "report.json", "report.html"
NEEDED = ("trials.csv", "curves.csv", "sweep.json")
PREDICTIONS_SECTIONS = "the per-image scores and How sure"  # the sections predictions.csv/.json feed
RERUNS_SECTION = "the re-runs"


def write_report(folder: Path) -> dict:
    """Build the report of the sweep in `folder` and write report.json and report.html there; the report."""
    from fer_tune.search.report.html import render

    report = build_report(folder)
    (folder / REPORT_JSON).write_text(json.dumps(_clean(report), indent=2, allow_nan=False) + "\n")
    (folder / REPORT_HTML).write_text(render(report, folder))
    return report


def build_report(folder: Path) -> dict:
    """Every figure of the report as plain data (what report.json holds)."""
    missing = [name for name in NEEDED if not (folder / name).is_file()]
    if missing:
        raise FerTuneError(f"{folder}: {', '.join(missing)} not found; not a finished fer-tune results folder")
    meta = check_sweep_for_report(read_sweep_json(folder / "sweep.json"), folder / "sweep.json")
    space, data = meta["space"], meta["data"]
    metric, mode = space["metric"], space["mode"]
    trials = check_trials_for_report(read_trials_csv(folder / "trials.csv", metric), folder / "trials.csv", metric)
    curves = read_curves_csv(folder / "curves.csv", metric)
    searched = [p["name"] for p in space["space"] if p["kind"] != "fixed"]
    left_out: list[dict] = []
    predictions = _optional(PREDICTIONS_SECTIONS, left_out, lambda: _predictions(folder, trials, data))
    selection = _optional(RERUNS_SECTION, left_out, lambda: reruns(folder, trials, space, metric)) or {}
    return {
        "sweep": folder.name,
        "space_path": space["path"],
        "metric": metric,
        "mode": mode,
        "data": {"source": data["source"], "classes": data["classes"], "images": _split_sizes(data)},
        "answer": {
            **answer(trials, curves, predictions, data, metric, selection.get("champion")),
            **rule_unmet(meta.get("run") or {}, metric),
        },
        "reruns": selection,
        "how_sure": how_sure(predictions),
        "what_mattered": what_mattered(trials, curves, searched, metric, mode),
        "cost": cost(trials, curves, space, metric, mode),
        "seed_table": seed_table(trials, metric, mode) if applies(trials) else [],
        "left_out": left_out,
    }


def rule_unmet(run: dict, metric: str) -> dict:
    """{"rule_unmet": why} where the space's `champion:` rule admitted no trial (sweep.json's run.champion_rule):
    the answer is then the best trial by the metric, shown for reference; no model took the champion alias."""
    rule = run.get("champion_rule")
    if not isinstance(rule, dict) or rule.get("met_by") is not None:
        return {}
    return {"rule_unmet": f"no trial meets the champion rule ({rule.get('rule')}); shown: the best by {metric}"}


def _optional(section: str, left_out: list[dict], build):
    """What `build` makes of an optional file; None, with the section and the reason added to `left_out`,
    where that file is damaged (its reader's one line)."""
    try:
        return build()
    except FerTuneError as err:
        left_out.append({"section": section, "reason": str(err)})
        return None


def _split_sizes(data: dict) -> dict[str, int]:
    return {split: int(sum(counts.values())) for split, counts in data["splits"].items()}


def _predictions(folder: Path, trials: pd.DataFrame, data: dict) -> dict | None:
    """predictions.csv/.json (None where the sweep saved none), of this sweep's classes and trials."""
    predictions = read_predictions(folder)
    if predictions is None:
        return None
    meta, where = predictions["meta"], folder / "predictions.json"
    if meta["classes"] != data["classes"]:
        raise FerTuneError(f"{where}: classes {meta['classes']} are not sweep.json's {data['classes']}")
    _known_trial(trials, meta["champion"], f"{where}: champion")
    return predictions


def reruns(folder: Path, trials: pd.DataFrame, space: dict, metric: str) -> dict:
    """`select:`'s re-runs: per re-trained configuration its search score, mean ± sd over fresh seeds and each
    run; the champion (the best mean, fer_tune.search.reruns.champion_of); their cost. {} without re-runs."""
    if not (folder / RERUNS_FILE).is_file():
        return {}
    if not isinstance(space.get("select"), dict) or not {"top_k", "seeds"} <= set(space["select"]):
        raise FerTuneError(f"{folder / RERUNS_FILE}: the sweep's space (sweep.json) has no select:; a stray file?")
    table = read_reruns_csv(folder / RERUNS_FILE, metric)
    for label, trial_id in table["trial_id"].items():
        _known_trial(trials, trial_id, f"{folder / RERUNS_FILE}: line {label + 2}, column trial_id")
    score = f"best_{metric}"
    summary = summarize(table, trials, metric)
    champion = champion_of(summary, space["mode"])
    runs = {t: rows[["seed", score, "status"]].rename(columns={score: "score"}).to_dict("records")
            for t, rows in table.groupby("trial_id", sort=False)}  # fmt: skip
    configurations = [
        {"trial_id": row["trial_id"], "search_score": row[f"search_{score}"], "mean": row["mean"], "sd": row["sd"],
         "n": int(row["n"]), "seeds": int(row["seeds"]), "champion": row["trial_id"] == champion,
         "runs": runs[row["trial_id"]]}
        for row in summary.to_dict("records")
    ]  # fmt: skip
    return {
        "top_k": space["select"]["top_k"],
        "seeds": space["select"]["seeds"],
        "champion": champion,
        "configurations": configurations,
        "runs": len(table),
        "epochs": int(table["epochs_run"].sum()),
        "trainer_seconds": round(float(table["wall_seconds"].fillna(0.0).sum()), 2),
    }


def _known_trial(trials: pd.DataFrame, trial_id, where: str) -> None:
    if not (trials["trial_id"] == trial_id).any():
        raise FerTuneError(f"{where}: trial {trial_id} is not in trials.csv; expected one of its trial ids")


def answer(
    trials: pd.DataFrame,
    curves: pd.DataFrame,
    predictions: dict | None,
    data: dict,
    metric: str,
    chosen: str | None = None,
) -> dict:
    """The chosen configuration, its validation and test scores with intervals, recall per class, confusion.

    The champion is the one the sweep scored (predictions.json), else `chosen` (the re-runs' best mean),
    else the best trial."""
    champion_id = predictions["meta"]["champion"] if predictions else chosen or trials["trial_id"].iloc[0]
    row = trials[trials["trial_id"] == champion_id].iloc[0]
    params = {c: _plain(row[c]) for c in _params(trials) if pd.notna(row[c])}
    out = {"trial_id": champion_id, "params": params, f"best_{metric}": _plain(row[f"best_{metric}"])}
    if predictions is None:
        return out
    frame, classes = predictions["frame"], data["classes"]
    for split in ("validation", "test"):
        rows = frame[frame["split"] == split]
        if len(rows):
            out[split] = scores(rows["label"].to_numpy(), rows["champion"].to_numpy(), classes)
    out["eval_split"] = predictions["meta"]["eval_split"]
    return out


def scores(labels: np.ndarray, predicted: np.ndarray, classes: list[str]) -> dict:
    """Accuracy (Wilson interval) and macro-F1 (bootstrap interval) over these images; recall per class; confusion."""
    k = len(classes)
    hits = int((labels == predicted).sum())
    f1_low, f1_high = stats.bootstrap_interval(lambda y, p: stats.macro_f1(y, p, k), labels, predicted)
    recall = stats.class_recall(labels, predicted, k)
    confusion = np.bincount(labels * k + predicted, minlength=k * k).reshape(k, k)
    return {
        "n": len(labels),
        "accuracy": hits / len(labels),
        "accuracy_interval": list(stats.wilson(hits, len(labels))),
        "macro_f1": stats.macro_f1(labels, predicted, k),
        "macro_f1_interval": [f1_low, f1_high],
        "recall": [{"class": c, **r} for c, r in zip(classes, recall)],
        "confusion": confusion.tolist(),
    }


def how_sure(predictions: dict | None) -> dict:
    """The champion against the runner-up (and the registry's previous champion) on the same images."""
    if predictions is None:
        return {}
    meta, frame = predictions["meta"], predictions["frame"]
    rows = frame[frame["split"] == meta["eval_split"]]
    truth = rows["label"].to_numpy()
    champion = rows["champion"].to_numpy() == truth
    out = {"split": meta["eval_split"], "n": int(len(rows))}
    for rival in ("runner_up", "previous_champion"):
        if rival in rows and rows[rival].notna().all():
            other = rows[rival].to_numpy() == truth
            test, boot = stats.mcnemar(champion, other), stats.paired_bootstrap(champion, other)
            out[rival] = {
                "id": meta.get(rival),
                "accuracy": float(other.mean()),
                "champion_accuracy": float(champion.mean()),
                **boot,
                **test,
                "verdict": verdict(rival.replace("_", "-").replace("previous-champion", "previous champion"),
                                   boot["difference"], test["p_value"], len(rows), meta["eval_split"]),
            }  # fmt: skip
    return out


def verdict(rival: str, difference: float, p_value: float, n: int, split: str) -> str:
    """The paired comparison in words."""
    gap = f"{100 * difference:+.1f} points, McNemar p = {p_value:.3g}"
    if p_value >= stats.ALPHA:
        return f"not distinguishable from the {rival} at this {split} size ({n} images; {gap})"
    better = "better" if difference > 0 else "worse"
    return f"{better} than the {rival} on these {n} {split} images ({gap}, below {stats.ALPHA:g})"


def what_mattered(trials: pd.DataFrame, curves: pd.DataFrame, searched: list[str], metric: str, mode: str) -> dict:
    """fANOVA importance at a common rung, the marginal table of each parameter, the top pair's interaction."""
    rung, score = rung_scores(trials, curves, metric, mode)
    frame = trials.assign(score=score)
    found = importances(frame, searched, mode)
    varying = [p for p in searched if p in frame and frame[p].astype(object).nunique(dropna=False) > 1]
    bounded = metric != "val_loss"  # accuracy and macro-F1 lie in [0, 1]: so do their intervals
    marginals = {
        p: _clip(stats.marginal(frame, p, "score", best=f"best_{metric}", mode=mode), bounded).to_dict("records")
        for p in varying
    }
    out = {"rung": rung, "trials_scored": int(score.notna().sum()), "importance": found, "marginals": marginals}
    if not found:
        out["unranked"] = why_unranked(score, varying) or "the importance evaluator found nothing to rank"
    pair = top_pair(found)
    if pair is not None:
        a, b = pair
        cells = frame.assign(**{f"_{a}": stats.levels(frame[a]), f"_{b}": stats.levels(frame[b])})
        table = cells.groupby([f"_{a}", f"_{b}"])["score"].agg(["count", "mean"]).reset_index()
        out["interaction"] = {"params": [a, b], "cells": table.set_axis([a, b, "trials", "mean"], axis=1)
                              .to_dict("records")}  # fmt: skip
    return out


def _clip(table: pd.DataFrame, bounded: bool) -> pd.DataFrame:
    return table.assign(low=table["low"].clip(lower=0), high=table["high"].clip(upper=1)) if bounded else table


def planned(trials: pd.DataFrame, space: dict) -> pd.Series:
    """The epochs each trial was given: its own `epochs` where the space sets it, else max_epochs."""
    max_epochs = space["budget"]["max_epochs"]
    if "epochs" in trials:
        return trials["epochs"].fillna(max_epochs).astype(int)
    return pd.Series(max_epochs, index=trials.index)


def cost(trials: pd.DataFrame, curves: pd.DataFrame, space: dict, metric: str, mode: str) -> dict:
    """Trainer-seconds and epochs per trial and in total, the epochs the pruner saved, best-so-far by compute."""
    given = planned(trials, space)
    seconds = _trainer_seconds(trials, curves)
    order = trials.assign(trainer_seconds=seconds, given_epochs=given)
    order = order.sort_values(["ended_at", "trial_id"] if "ended_at" in order else "trial_id")  # in finishing order
    best = order[f"best_{metric}"]
    so_far = best.cummax() if mode == "max" else best.cummin()
    gpu = float(space["resources"]["gpu"])
    per_trial = [
        {"trial_id": r.trial_id, "status": r.status, "epochs": int(r.epochs_run), "planned": int(r.given_epochs),
         "seconds": round(float(r.trainer_seconds), 2)}
        for r in order.itertuples()
    ]  # fmt: skip
    total = float(seconds.sum())
    return {
        "trials": per_trial,
        "trainer_seconds": round(total, 2),
        "epochs": int(trials["epochs_run"].sum()),
        "epochs_if_all_ran": int(given.sum()),
        "epochs_saved": int((given - trials["epochs_run"]).clip(lower=0).sum()),
        "gpu_per_trial": gpu,
        "gpu_seconds": round(total * gpu, 2),
        "cpu_per_trial": float(space["resources"]["cpu"]),
        "best_so_far": [
            {"trial_id": t, "cumulative_seconds": round(float(c), 2), "best": _plain(b)}
            for t, c, b in zip(order["trial_id"], order["trainer_seconds"].cumsum(), so_far)
        ],
    }


def _trainer_seconds(trials: pd.DataFrame, curves: pd.DataFrame) -> pd.Series:
    """Seconds each trial trained: the sum of its epochs' times, else its wall time."""
    if len(curves) and "epoch_seconds" in curves:
        summed = curves.groupby("trial_id")["epoch_seconds"].sum()
        return trials["trial_id"].map(summed).fillna(trials["wall_seconds"]).set_axis(trials.index)
    return trials["wall_seconds"].fillna(0.0)


def _params(trials: pd.DataFrame) -> list[str]:
    fixed = {"trial_id", "best_epoch", "epochs_run", "stopped_early", "status", "wall_seconds", "error", "score",
             "ended_at"}  # fmt: skip
    return [c for c in trials.columns if c not in fixed and not c.startswith(("final_", "best_"))]


def _plain(value):
    """numpy and pandas scalars as JSON numbers; NaN as null."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _clean(value):
    """The report as strict JSON: NaN as null, numpy scalars as numbers."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return _plain(value)
