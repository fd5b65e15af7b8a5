"""Which searched parameters mattered: Optuna's fANOVA on the sweep's trials, scored at a common rung.

    rung, scores = rung_scores(trials, curves, "val_accuracy", "max")
    importances(trials.assign(score=scores), ["lr", "model"], "max")   # {"lr": 0.81, "model": 0.12}

ASHA stops poor trials early, so a trial's best metric mixes "configuration was poor" with "was
given fewer epochs". Every trial that ran is compared instead at the rung all of them reached (the
fewest epochs any scored trial ran: ASHA's grace period at the least): its best metric up to that
epoch. fANOVA (Hutter et al. 2014, `optuna.importance.FanovaImportanceEvaluator`, a random forest
over the trials) splits the variance of that score among the parameters; seeded, so a rebuilt
report gives the same numbers. A conditional parameter enters as a categorical whose inactive trials
take the value "—" (fANOVA, like Optuna, otherwise only ranks parameters every trial has).
"""

from __future__ import annotations

import math

import pandas as pd

MIN_TRIALS = 3  # fewer scored trials: no importance is computed
FOREST_SEED = 0


def rung_scores(trials: pd.DataFrame, curves: pd.DataFrame, metric: str, mode: str) -> tuple[int, pd.Series]:
    """(rung, score per trial_id): the best `metric` of each trial up to the epoch every scored trial reached."""
    scored = curves.dropna(subset=[metric]) if len(curves) else curves
    if not len(scored):
        return 0, pd.Series(dtype=float)
    rung = int(scored.groupby("trial_id")["epoch"].max().min())
    early = scored[scored["epoch"] <= rung].groupby("trial_id")[metric]
    scores = early.max() if mode == "max" else early.min()
    return rung, scores.reindex(trials["trial_id"]).set_axis(trials.index)


def importances(trials: pd.DataFrame, params: list[str], mode: str, score: str = "score") -> dict[str, float]:
    """Each parameter's share of the variance of `score` (sums to 1; empty below MIN_TRIALS scored trials)."""
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution
    from optuna.importance import FanovaImportanceEvaluator, get_param_importances

    frame = trials.dropna(subset=[score])
    varying = [p for p in params if p in frame and frame[p].map(_label).nunique() > 1]
    if why_unranked(frame[score], varying):
        return {}
    columns, distributions = {}, {}
    for param in varying:
        values = frame[param]
        if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values) and values.notna().all():
            low, high = float(values.min()), float(values.max())
            columns[param] = values.astype(float)
            distributions[param] = FloatDistribution(low, high, log=low > 0 and high / low >= 50)
        else:
            labels = values.map(_label)
            columns[param] = labels
            distributions[param] = CategoricalDistribution(sorted(labels.unique()))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize" if mode == "max" else "minimize")
    for index in frame.index:
        study.add_trial(
            optuna.trial.create_trial(
                params={p: columns[p][index] for p in varying},
                distributions=distributions,
                value=float(frame.loc[index, score]),
            )
        )
    found = get_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=FOREST_SEED))
    return {param: round(float(found.get(param, 0.0)), 6) for param in sorted(found, key=found.get, reverse=True)}


def why_unranked(scores: pd.Series, varying: list[str]) -> str | None:
    """Why no importance can be computed from these scores, or None when it can.

    fANOVA splits the scores' variance among the parameters: with every score equal there is none to
    split (Optuna's evaluator raises), and "no parameter mattered here" is the honest answer.
    """
    scores = scores.dropna()
    if len(scores) < MIN_TRIALS:
        return f"fewer than {MIN_TRIALS} scored trials"
    if not varying:
        return "no searched parameter took more than one value"
    if scores.nunique() == 1:
        return f"every trial scored the same ({scores.iloc[0]:.4g}): no parameter made a difference here"
    return None


def _label(value) -> str:
    """A parameter's value as a category; "—" where a conditional parameter was inactive."""
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


def top_pair(found: dict[str, float]) -> tuple[str, str] | None:
    """The two most important parameters (their interaction table is shown), or None."""
    ranked = list(found)
    return (ranked[0], ranked[1]) if len(ranked) >= 2 else None
