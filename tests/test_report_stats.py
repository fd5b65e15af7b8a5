"""The report's statistics against references (scipy, closed forms, textbook values) and their coverage
on simulated data: a 95% interval must hold the truth about 95% of the time."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from fer_tune.search.report.stats import (
    class_recall,
    macro_f1,
    marginal,
    mcnemar,
    mean_interval,
    paired_bootstrap,
    wilson,
)


def pairs(only_a: int, only_b: int, both: int = 50, neither: int = 20):
    """Correctness vectors of two models with the given 2x2 table."""
    a = [1] * both + [1] * only_a + [0] * only_b + [0] * neither
    b = [1] * both + [0] * only_a + [1] * only_b + [0] * neither
    return np.array(a, bool), np.array(b, bool)


def statsmodels_exact_mcnemar(only_a: int, only_b: int) -> float:
    """statsmodels.stats.contingency_tables.mcnemar(table, exact=True).pvalue, as that library computes it."""
    n = only_a + only_b
    return min(1.0, 2 * stats.binom.cdf(min(only_a, only_b), n, 0.5))


@pytest.mark.parametrize("only_a, only_b", [(1, 9), (9, 1), (10, 10), (0, 5), (25, 40), (120, 90), (0, 0)])
def test_mcnemar_exact_matches_the_reference(only_a, only_b):
    a, b = pairs(only_a, only_b)
    result = mcnemar(a, b)
    assert (result["only_a"], result["only_b"]) == (only_a, only_b)
    expected = 1.0 if only_a + only_b == 0 else statsmodels_exact_mcnemar(only_a, only_b)
    assert result["p_value"] == pytest.approx(expected, rel=1e-9)


def test_mcnemar_textbook_value():
    # 1 vs 9 discordant pairs: p = 2 * P(X <= 1 | n=10, 1/2) = 2 * 11/1024
    assert mcnemar(*pairs(1, 9))["p_value"] == pytest.approx(22 / 1024)


def test_wilson_matches_the_closed_form():
    k, n, z = 412, 500, stats.norm.ppf(0.975)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    assert wilson(k, n) == pytest.approx((centre - half, centre + half), rel=1e-9)
    assert wilson(0, 10)[0] == 0.0 and wilson(10, 10)[1] == pytest.approx(1.0)


def test_wilson_covers_95_percent_of_simulated_accuracies():
    rng = np.random.default_rng(0)
    truth, n = 0.62, 300
    hits = rng.binomial(n, truth, size=2000)
    covered = np.mean([lo <= truth <= hi for lo, hi in (wilson(k, n) for k in hits)])
    assert 0.935 <= covered <= 0.965


def test_paired_bootstrap_covers_the_true_difference():
    rng = np.random.default_rng(1)
    n, truth = 400, 0.05  # b is right on 60% of images; a is right where b is, and on 12.5% of b's misses too
    covered = []
    for seed in range(150):
        b = rng.random(n) < 0.6
        a = b | (rng.random(n) < truth / 0.4)
        result = paired_bootstrap(a, b, draws=600, seed=seed)
        assert result["difference"] == pytest.approx(a.mean() - b.mean())
        covered.append(result["low"] <= truth <= result["high"])
    assert 0.88 <= np.mean(covered) <= 0.99


def test_paired_bootstrap_is_narrower_than_unpaired_noise():
    # two correlated models: the paired interval of their difference is far tighter than 2 SEs of accuracy
    rng = np.random.default_rng(2)
    b = rng.random(3589) < 0.65
    a = b.copy()
    flip = rng.choice(3589, 60, replace=False)
    a[flip] = ~a[flip]
    result = paired_bootstrap(a, b)
    assert result["high"] - result["low"] < 0.012  # vs about ±0.016 for each accuracy alone


def test_class_recall_and_macro_f1_against_the_counts():
    labels = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
    predicted = np.array([0, 0, 1, 1, 0, 2, 2, 2, 0])
    rows = class_recall(labels, predicted, 4)
    assert [r["recall"] for r in rows[:3]] == pytest.approx([2 / 3, 1 / 2, 3 / 4])
    assert rows[3]["n"] == 0 and math.isnan(rows[3]["recall"])
    assert (rows[0]["low"], rows[0]["high"]) == pytest.approx(wilson(2, 3))
    from sklearn.metrics import f1_score

    assert macro_f1(labels, predicted, 4) == pytest.approx(f1_score(labels, predicted, average="macro"))


def test_mean_interval_matches_scipy_and_covers():
    values = np.array([0.61, 0.64, 0.58, 0.66, 0.63])
    mean, low, high = mean_interval(values)
    reference = stats.t.interval(0.95, len(values) - 1, loc=values.mean(), scale=stats.sem(values))
    assert (low, high) == pytest.approx(reference)
    rng = np.random.default_rng(3)
    covered = [lo <= 0.6 <= hi for _, lo, hi in (mean_interval(rng.normal(0.6, 0.03, 6)) for _ in range(2000))]
    assert 0.935 <= np.mean(covered) <= 0.965


def test_marginal_table_per_value_and_per_bin():
    trials = pd.DataFrame(
        {
            "model": ["a", "b", "a", "b", "a", "b", "a", "b"],
            "lr": [1e-4, 2e-4, 4e-4, 8e-4, 1.6e-3, 3.2e-3, 6.4e-3, 1.28e-2],
            "T_0": [1, None, 2, None, 1, None, 2, None],
            "score": [0.5, 0.6, 0.52, 0.62, 0.54, 0.64, 0.56, 0.66],
        }
    )
    by_model = marginal(trials, "model", "score", best="score")
    assert list(by_model["value"]) == ["a", "b"]
    assert by_model["mean"].tolist() == pytest.approx([0.53, 0.63])
    assert by_model["best"].tolist() == pytest.approx([0.56, 0.66])
    assert by_model["trials"].tolist() == [4, 4]
    by_lr = marginal(trials, "lr", "score")
    assert len(by_lr) == 4 and by_lr["trials"].sum() == 8  # quantile bins, in ascending order
    assert by_lr["value"].iloc[0].startswith("0.0001")
    by_t0 = marginal(trials, "T_0", "score")
    assert list(by_t0["value"]) == ["1", "2", "—"]  # the inactive conditional value last


def test_equal_scores_rank_no_parameter_and_say_why():
    """fANOVA has no variance to split when every trial scored the same (Optuna's evaluator raises):
    no importance, and the reason in words."""
    from fer_tune.search.report.build import what_mattered

    trials = pd.DataFrame({"trial_id": ["a", "b", "c"], "lr": [1e-3, 2e-3, 3e-3], "best_val_accuracy": [0.25] * 3})
    curves = pd.DataFrame({"trial_id": ["a", "b", "c"], "epoch": [1, 1, 1], "val_accuracy": [0.25] * 3})
    mattered = what_mattered(trials, curves, ["lr"], "val_accuracy", "max")
    assert mattered["importance"] == {} and mattered["unranked"].startswith("every trial scored the same (0.25)")
    varied = what_mattered(trials, curves.assign(val_accuracy=[0.2, 0.5, 0.9]), ["lr"], "val_accuracy", "max")
    assert list(varied["importance"]) == ["lr"] and "unranked" not in varied
