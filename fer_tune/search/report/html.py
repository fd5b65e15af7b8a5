"""report.html: one self-contained page (inline PNGs and style; no script, font or image fetched from anywhere),
so it renders offline, as a mail attachment and in MLflow's artifact viewer."""

from __future__ import annotations

import base64
from html import escape
from pathlib import Path

import pandas as pd

from fer_tune.search.outcome import COMPLETED
from fer_tune.search.report import figures
from fer_tune.search.reruns import mean_sd
from fer_tune.search.result_files import read_curves_csv
from fer_tune.search.results import read_trials_csv

STYLE = """
body { font-family: system-ui, -apple-system, Segoe UI, Roboto, sans-serif; max-width: 980px; margin: 2em auto;
       padding: 0 1em; color: #1d1d1f; line-height: 1.45; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; margin: .6em 0 1.2em; font-size: .92em; }
th, td { border: 1px solid #ddd; padding: .25em .6em; text-align: right; }
th { background: #f4f4f6; } td.l, th.l { text-align: left; }
.verdict { font-size: 1.1em; background: #f4f8ff; border-left: 4px solid #4a7bd0; padding: .5em .8em; }
img { max-width: 100%; } .muted { color: #666; }
"""


def render(report: dict, folder: Path) -> str:
    """The whole page, from report.json's data and the sweep's own tables and plots in `folder`."""
    parts = [
        f"<h1>Sweep {escape(report['sweep'])}</h1>",
        f"<p class=muted>{escape(report['space_path'])} · data {escape(str(report['data']['source']))} · "
        f"metric {escape(report['metric'])} ({escape(report['mode'])}) · images: "
        + ", ".join(f"{escape(str(k))} {escape(str(v))}" for k, v in report["data"]["images"].items())
        + "</p>",
        _left_out(report),
        _seed_table(report),
        _answer(report),
        _reruns(report),
        _how_sure(report),
        _mattered(report),
        _cost(report),
        _curves(report, folder),
    ]
    body = "\n".join(p for p in parts if p)
    return (
        "<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
        f"<title>fer-tune report: {escape(report['sweep'])}</title><style>{STYLE}</style></head>\n"
        f"<body>\n{body}\n</body></html>\n"
    )


def _img(data: bytes, alt: str) -> str:
    return f'<img alt="{escape(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'


def _pct(value) -> str:
    return "n/a" if value is None or pd.isna(value) else f"{100 * value:.1f}%"


def _interval(pair) -> str:
    low, high = pair
    return "" if low is None or pd.isna(low) else f"[{_pct(low)}, {_pct(high)}]"


def _table(rows: list[dict], columns: list[str], left: int = 1) -> str:
    head = "".join(f"<th{' class=l' if i < left else ''}>{escape(c)}</th>" for i, c in enumerate(columns))
    body = "".join(
        "<tr>" + "".join(f"<td{' class=l' if i < left else ''}>{escape(str(row[i]))}</td>" for i in range(len(columns)))
        + "</tr>"
        for row in rows
    )  # fmt: skip
    return f"<table><tr>{head}</tr>{body}</table>"


def _answer(report: dict) -> str:
    answer, metric = report["answer"], report["metric"]
    params = _table([(k, v) for k, v in answer["params"].items()], ["parameter", "value"])
    by_mean = (report.get("reruns") or {}).get("champion") == answer["trial_id"]
    chosen = " (the best mean over fresh seeds: see Re-runs)" if by_mean else ""
    lead = f"Deploy trial <b>{escape(answer['trial_id'])}</b>{chosen}:"
    if "rule_unmet" in answer:  # no champion: the best by the metric, for reference only
        lead = (f"<b>No trial meets the champion rule</b>: {escape(answer['rule_unmet'])}, trial "
                f"<b>{escape(answer['trial_id'])}</b>, for reference; no model took the champion alias.")  # fmt: skip
    out = [f"<h2>The answer</h2><p>{lead}</p>{params}"]
    rows = []
    for split in ("validation", "test"):
        if split in answer:
            s = answer[split]
            rows.append((split, s["n"], _pct(s["accuracy"]), _interval(s["accuracy_interval"]),
                         _pct(s["macro_f1"]), _interval(s["macro_f1_interval"])))  # fmt: skip
    if not rows:
        value = answer.get(f"best_{metric}")
        return out[0] + f"<p>best {escape(metric)}: {value}; no per-image predictions were saved for this sweep.</p>"
    out.append(_table(rows, ["split", "images", "accuracy", "95% interval", "macro-F1", "95% interval"]))
    out.append("<p class=muted>Accuracy intervals: Wilson score over the images; macro-F1: percentile bootstrap "
               "over the images (2,000 resamples).</p>")  # fmt: skip
    shown = answer.get("test") or answer.get("validation")
    recall = [(r["class"], r["n"], _pct(r["recall"]), _interval((r["low"], r["high"]))) for r in shown["recall"]]
    out.append(f"<h3>Recall per class ({escape(answer['eval_split'])})</h3>")
    out.append(_table(recall, ["class", "images", "recall", "95% interval (Wilson)"]))
    out.append(_img(figures.confusion(shown["confusion"], report["data"]["classes"]), "confusion matrix"))
    return "\n".join(out)


def _reruns(report: dict) -> str:
    """`select:`'s re-runs: each re-trained configuration's mean ± sd over fresh seeds, and every run."""
    reruns, metric = report.get("reruns"), report["metric"]
    if not reruns:
        return ""
    rows = [
        (c["trial_id"] + (" (champion)" if c["champion"] else ""), _f(c["search_score"]), mean_sd(c["mean"], c["sd"]),
         f"{c['n']} / {c['seeds']}", ", ".join(f"{_f(r['score'])} (seed {r['seed']})" if r["status"] == COMPLETED
                                              else f"{r['status']} (seed {r['seed']})" for r in c["runs"]))
        for c in reruns["configurations"]
    ]  # fmt: skip
    return "\n".join([
        "<h2>Re-runs with fresh seeds</h2>",
        f"<p>The best {len(reruns['configurations'])} trials that ran all their epochs, each trained again with "
        f"{reruns['seeds']} fresh seeds for its full epochs: {reruns['runs']} runs, {reruns['epochs']} epochs, "
        f"{reruns['trainer_seconds']:.0f} trainer-seconds. The champion is the configuration with the best mean "
        f"{escape(metric)} over its re-runs; the search's own score, the one each trial was picked for, is left out "
        "of the mean (it is biased upward: the winner's curse).</p>",
        _table(rows, ["trial", f"search best {metric}", "mean ± sd (re-runs)", "completed / seeds",
                      f"best {metric} of each re-run"]),
    ])  # fmt: skip


def _left_out(report: dict) -> str:
    """The sections a damaged optional file (predictions, re-runs) left out, and why: first, so no reader misses it."""
    notes = [f"<p class=verdict>Left out: {escape(n['section'])}: {escape(n['reason'])}</p>"
             for n in report.get("left_out", [])]  # fmt: skip
    return "\n".join(notes)


def _seed_table(report: dict) -> str:
    """Tandon 2020's table shape, first, where the sweep searched its axes (fer_tune.search.report.seed_table)."""
    table = report.get("seed_table")
    if not table:
        return ""
    columns = [c for c in table[0] if c not in ("trials", "best", "mean")]
    rows = [[r[c] for c in columns] + [r["trials"], _pct(r["best"]), _pct(r["mean"])] for r in table]
    return (f"<h2>Tandon 2020's table: best and mean {escape(report['metric'])} per cell</h2>"
            + _table(rows, [*columns, "trials", "best", "mean"], left=len(columns)))  # fmt: skip


def _how_sure(report: dict) -> str:
    sure = report["how_sure"]
    if not sure:
        return ""
    out = ["<h2>How sure</h2>"]
    rows = []
    for rival in ("runner_up", "previous_champion"):
        if rival in sure:
            c = sure[rival]
            name = rival.replace("_", " ")
            out.append(f"<p class=verdict>The champion is {escape(c['verdict'])}.</p>")
            rows.append((f"{name} ({c['id']})", _pct(c["champion_accuracy"]), _pct(c["accuracy"]),
                         f"{100 * c['difference']:+.2f}", f"[{100 * c['low']:+.2f}, {100 * c['high']:+.2f}]",
                         f"{c['only_a']} / {c['only_b']}", f"{c['p_value']:.3g}"))  # fmt: skip
    if not rows:
        return ""
    out.append(_table(rows, ["rival", "champion", "rival", "difference (points)", "95% interval (paired bootstrap)",
                             "only champion right / only rival right", "McNemar exact p"]))  # fmt: skip
    out.append(f"<p class=muted>Paired on the same {sure['n']} {escape(sure['split'])} images.</p>")
    return "\n".join(out)


def _mattered(report: dict) -> str:
    mattered, metric = report["what_mattered"], report["metric"]
    out = [
        "<h2>What mattered</h2>",
        f"<p>Every trial compared at epoch {mattered['rung']}, the rung all {mattered['trials_scored']} scored "
        f"trials reached (score: best {escape(metric)} up to that epoch), so trials the pruner stopped count "
        "without bias.</p>",
    ]
    if mattered["importance"]:
        rows = [(p, f"{v:.3f}") for p, v in mattered["importance"].items()]
        out += [_table(rows, ["parameter", "importance (fANOVA)"]), _img(figures.importance(mattered["importance"]),
                                                                          "importance")]  # fmt: skip
    elif mattered.get("unranked"):
        out.append(f"<p>No importance: {escape(mattered['unranked'])}.</p>")
    if mattered["marginals"]:
        out.append("<h3>Marginal effects: mean score per value, with its 95% interval</h3>")
        for param, table in mattered["marginals"].items():
            rows = [(r["value"], r["trials"], _f(r["mean"]), f"[{_f(r['low'])}, {_f(r['high'])}]", _f(r.get("best")))
                    for r in table]  # fmt: skip
            out.append(f"<h4>{escape(param)}</h4>" + _table(rows, ["value", "trials", "mean", "95% interval",
                                                                   f"best {metric}"]))  # fmt: skip
        label = f"{metric} by epoch {mattered['rung']}"
        out.append(_img(figures.marginals(mattered["marginals"], label), "marginal effects"))
    if "interaction" in mattered:
        a, b = mattered["interaction"]["params"]
        out.append(f"<h3>Interaction of the top pair: {escape(a)} × {escape(b)}</h3>")
        out.append(_img(figures.interaction(mattered["interaction"]["cells"], a, b), "interaction"))
    return "\n".join(out)


def _f(value) -> str:
    return "" if value is None or pd.isna(value) else f"{value:.4f}"


def _cost(report: dict) -> str:
    cost = report["cost"]
    rows = [(t["trial_id"], t["status"], f"{t['epochs']} / {t['planned']}", f"{t['seconds']:.1f}")
            for t in cost["trials"]]  # fmt: skip
    gpu = (f" · GPU-seconds {cost['gpu_seconds']:.0f} ({cost['gpu_per_trial']:g} GPU per trial)"
           if cost["gpu_per_trial"] else "")  # fmt: skip
    return "\n".join([
        "<h2>What it cost</h2>",
        f"<p>{len(cost['trials'])} trials, {cost['epochs']} epochs, {cost['trainer_seconds']:.0f} trainer-seconds"
        f"{gpu}. The pruner saved {cost['epochs_saved']} of {cost['epochs_if_all_ran']} epochs against running "
        "every trial to its end.</p>",
        _img(figures.best_so_far(cost["best_so_far"], report["metric"]), "best so far against compute"),
        _table(rows, ["trial", "outcome", "epochs run / given", "trainer-seconds"]),
    ])  # fmt: skip


def _curves(report: dict, folder: Path) -> str:
    out = ["<h2>Learning curves and the top trials</h2>"]
    curves = read_curves_csv(folder / "curves.csv", report["metric"])
    if len(curves):
        trials = read_trials_csv(folder / "trials.csv", report["metric"])
        out.append(_img(figures.curves_by_outcome(curves, trials, report["metric"]), "learning curves by outcome"))
    if (folder / "parallel.png").is_file():
        out.append(_img((folder / "parallel.png").read_bytes(), "parallel coordinates of the top trials"))
    return "\n".join(out)
