"""The statistics of a sweep report: intervals and paired tests, each a scipy call or a named method.

    wilson(412, 500)                        # (lo, hi): 95% Wilson score interval of a proportion
    mcnemar(champion_ok, runner_up_ok)      # McNemar's exact test on the discordant test images
    paired_bootstrap(champion_ok, runner_up_ok)   # the accuracy difference with a percentile interval
    class_recall(labels, predicted, 7)      # recall per class, each with its Wilson interval
    marginal(trials, "lr", "score")         # mean and t-interval of a score per value (or bin) of a parameter

On FER2013's 3,589 test images one standard error of accuracy is about 0.7 points: these numbers
say whether a gap between two configurations is larger than that noise.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

LEVEL = 0.95  # every interval of the report
BOOTSTRAP_DRAWS = 2000  # resamples of the test images (the interval's ends move by ~0.1 point between seeds)
BINS = 4  # a continuous parameter's marginal table: quantile bins
ALPHA = 1 - LEVEL  # the paired tests' significance level


def wilson(successes: int, n: int, level: float = LEVEL) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (scipy's BinomTestResult.proportion_ci)."""
    if n == 0:
        return (math.nan, math.nan)
    ci = stats.binomtest(int(successes), int(n)).proportion_ci(confidence_level=level, method="wilson")
    return (float(ci.low), float(ci.high))


def mcnemar(a_correct: np.ndarray, b_correct: np.ndarray) -> dict:
    """McNemar's exact test: of the images exactly one model gets right, is the split 50/50?

    `a_correct`, `b_correct`: booleans per test image (the same images, in the same order). The
    p-value is the two-sided exact binomial test on the discordant pairs, as statsmodels'
    `mcnemar(table, exact=True)` computes it.
    """
    a_correct, b_correct = np.asarray(a_correct, bool), np.asarray(b_correct, bool)
    only_a = int((a_correct & ~b_correct).sum())
    only_b = int((~a_correct & b_correct).sum())
    discordant = only_a + only_b
    p = 1.0 if discordant == 0 else float(stats.binomtest(only_a, discordant, 0.5).pvalue)
    return {"only_a": only_a, "only_b": only_b, "p_value": min(p, 1.0)}


def paired_bootstrap(
    a_correct: np.ndarray, b_correct: np.ndarray, draws: int = BOOTSTRAP_DRAWS, seed: int = 0, level: float = LEVEL
) -> dict:
    """Accuracy of a minus accuracy of b, with a percentile interval from resampling the images in pairs."""
    a, b = np.asarray(a_correct, float), np.asarray(b_correct, float)
    rng = np.random.default_rng(seed)
    index = rng.integers(0, len(a), size=(draws, len(a)))
    differences = a[index].mean(1) - b[index].mean(1)
    tail = (1 - level) / 2
    low, high = np.quantile(differences, [tail, 1 - tail])
    return {"difference": float(a.mean() - b.mean()), "low": float(low), "high": float(high)}


def bootstrap_interval(statistic, labels: np.ndarray, predicted: np.ndarray, draws: int = BOOTSTRAP_DRAWS,
                       seed: int = 0, level: float = LEVEL) -> tuple[float, float]:  # fmt: skip
    """Percentile interval of `statistic(labels, predicted)` over resampled test images (macro-F1)."""
    rng = np.random.default_rng(seed)
    values = [statistic(labels[i], predicted[i]) for i in rng.integers(0, len(labels), size=(draws, len(labels)))]
    tail = (1 - level) / 2
    low, high = np.quantile(values, [tail, 1 - tail])
    return (float(low), float(high))


def macro_f1(labels: np.ndarray, predicted: np.ndarray, num_classes: int | None = None) -> float:
    """Unweighted mean F1 over the classes present in `labels` (fer_tune.core.metrics' rule)."""
    num_classes = num_classes or int(max(labels.max(), predicted.max())) + 1
    confusion = np.bincount(labels * num_classes + predicted, minlength=num_classes**2).reshape(num_classes, -1)
    hits = np.diag(confusion).astype(float)
    precision = hits / np.maximum(confusion.sum(0), 1)
    recall = hits / np.maximum(confusion.sum(1), 1)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    present = confusion.sum(1) > 0
    return float(f1[present].mean()) if present.any() else 0.0


def class_recall(labels: np.ndarray, predicted: np.ndarray, num_classes: int) -> list[dict]:
    """Recall per class (true class in rows) with its Wilson interval over that class's test images."""
    rows = []
    for c in range(num_classes):
        mine = labels == c
        n, hits = int(mine.sum()), int((predicted[mine] == c).sum())
        low, high = wilson(hits, n)
        rows.append({"n": n, "recall": hits / n if n else math.nan, "low": low, "high": high})
    return rows


def mean_interval(values, level: float = LEVEL) -> tuple[float, float, float]:
    """Mean and Student-t interval of the mean (nan ends for fewer than 2 values)."""
    values = np.asarray(pd.Series(values).dropna(), float)
    if len(values) == 0:
        return (math.nan, math.nan, math.nan)
    mean = float(values.mean())
    if len(values) < 2:
        return (mean, math.nan, math.nan)
    half = stats.t.ppf((1 + level) / 2, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values))
    return (mean, mean - float(half), mean + float(half))


def levels(values: pd.Series, bins: int = BINS) -> pd.Series:
    """The groups of a marginal table: each value of a categorical (or few-valued) parameter, quantile bins
    of a continuous one (named by the smallest and largest value inside); inactive (conditional) values are "—"."""
    present = values.dropna()
    numeric = pd.api.types.is_numeric_dtype(present) and not pd.api.types.is_bool_dtype(present)
    if numeric and present.nunique() > bins + 2:
        codes = pd.qcut(present, bins, labels=False, duplicates="drop")
        spans = present.groupby(codes).agg(["min", "max"])  # a bin is named by the values it holds
        labels = codes.map(lambda c: f"{spans.loc[c, 'min']:.3g}–{spans.loc[c, 'max']:.3g}")
    else:
        labels = present.map(lambda v: f"{v:g}" if isinstance(v, float) else str(v))
    return labels.reindex(values.index).fillna("—")


def marginal(trials: pd.DataFrame, param: str, score: str, best: str | None = None, mode: str = "max") -> pd.DataFrame:
    """One row per value (or bin) of `param`: trials, mean `score` with its t-interval, and the best `best`
    (the highest, or with mode "min" the lowest)."""
    groups = levels(trials[param])
    rows = []
    for label, frame in trials.groupby(groups, sort=False):
        mean, low, high = mean_interval(frame[score])
        row = {"value": label, "trials": int(frame[score].notna().sum()), "mean": mean, "low": low, "high": high}
        if best is not None:
            column = frame[best].dropna()
            row["best"] = float(column.max() if mode == "max" else column.min()) if len(column) else math.nan
        rows.append(row)
    order = _order(trials[param], groups)
    return pd.DataFrame(rows).set_index("value").loc[[g for g in order if g in set(groups)]].reset_index()


def _order(values: pd.Series, groups: pd.Series) -> list[str]:
    """Groups in the order of their smallest value (numbers ascending), "—" last."""
    frame = pd.DataFrame({"v": values, "g": groups}).dropna()
    try:
        firsts = frame.groupby("g")["v"].min().sort_values()
    except TypeError:
        firsts = frame.groupby("g")["v"].min().astype(str).sort_values()
    return [*firsts.index, "—"]
