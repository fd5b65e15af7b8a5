"""Multi-objective ASHA as a Ray Tune scheduler, with ASHA's persisted state: `MultiObjectiveASHA`.

    scheduler = build_scheduler(space, state_dir="results/ray/moo-20261205-160000")

Ray's ASHA keeps, per rung, one reward per trial and stops a trial below the rung's
(1 - 1/η) quantile. Here the reward is a vector, one entry per objective of the space (negated
where minimized, so every entry is to be maximized), and a rung promotes a trial when it ranks in
the top 1/η by non-dominated sorting with epsilon-net tie-breaking (fer_tune.search.moasha,
after Schmucker et al. 2021's MOASHA in Syne Tune). Everything else, including the state written
after each decision and read back after `Tuner.restore`, is `PersistentASHA`'s: a SIGKILLed and
resumed multi-objective sweep stops the same trials as an uninterrupted one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from ray.tune.schedulers import TrialScheduler
from ray.tune.schedulers.async_hyperband import _Bracket

from fer_tune.search.moasha import promoted
from fer_tune.search.outcome import ChanceRule
from fer_tune.search.pruners import TIME_ATTR, PersistentASHA, build_pruner, state_path
from fer_tune.search.sweep_file import SpaceFile

SIGNS = {"max": 1.0, "min": -1.0}


def build_scheduler(
    space: SpaceFile,
    state_dir: str | Path | None = None,
    rule: ChanceRule | None = None,
    earlier: dict[str, dict[int, float]] | None = None,
):
    """The sweep's trial scheduler: multi-objective ASHA for a multi-objective space pruned by asha,
    else `build_pruner`'s (hyperband and median rank by the primary objective alone). The chance
    rule and a warm start's earlier curves reach single-objective ASHA only."""
    if not (space.multi_objective and space.pruner.name == "asha"):
        return build_pruner(space, state_dir, rule=rule, earlier=earlier)
    max_t = space.budget.max_epochs
    return MultiObjectiveASHA(
        state_path(state_dir or "."),  # a URI stays a URI (s3://...)
        objectives=[(o.metric, o.mode) for o in space.objective_list],
        persist=state_dir is not None,
        time_attr=TIME_ATTR,
        max_t=max_t,
        grace_period=min(space.pruner.grace_period, max_t),
        reduction_factor=space.pruner.reduction_factor,
    )


class _RankingBracket(_Bracket):
    """ASHA's bracket, with a rung's decision made by `moasha.promoted` on reward vectors."""

    def on_result(self, trial, cur_iter: int, cur_rew) -> str:
        action = TrialScheduler.CONTINUE
        for milestone, recorded in self._rungs:
            if cur_iter < milestone or trial.trial_id in recorded:
                continue
            reward = [float(v) for v in np.asarray(cur_rew, dtype=float).ravel()]
            if not promoted(recorded, reward, self.rf):
                action = TrialScheduler.STOP
            recorded[trial.trial_id] = reward
            break
        return action


class MultiObjectiveASHA(PersistentASHA):
    """PersistentASHA whose reward is the vector of the space's objectives (see the module docstring)."""

    def __init__(self, state_file: Path, objectives: list[tuple[str, str]], persist: bool = True, **options):
        super().__init__(state_file, **options)
        self._objectives = list(objectives)
        self._persist = persist
        grace, rf = options["grace_period"], options["reduction_factor"]
        self._brackets = [_RankingBracket(grace, options["max_t"], rf, 0)]

    def set_search_properties(self, metric, mode, **spec) -> bool:
        accepted = super().set_search_properties(metric, mode, **spec)
        self._metric_op = 1.0  # the vector below carries each objective's own sign
        return accepted

    def on_trial_result(self, tune_controller, trial, result):
        return super().on_trial_result(tune_controller, trial, self._with_vector(result))

    def on_trial_complete(self, tune_controller, trial, result):
        super().on_trial_complete(tune_controller, trial, self._with_vector(result))

    def _with_vector(self, result: dict) -> dict:
        """The result with the primary metric replaced by the signed objective vector ASHA passes on."""
        if result is None or any(metric not in result for metric, _ in self._objectives):
            return result
        vector = np.array([SIGNS[mode] * float(result[metric]) for metric, mode in self._objectives])
        return {**result, self._metric: vector}

    def _save(self) -> None:
        if self._persist:
            super()._save()

    def _load(self) -> None:
        if self._persist:
            super()._load()
        else:
            self._loaded = True
