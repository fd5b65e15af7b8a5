"""Searchers: what proposes the next trial's configuration.

optuna (over the define-by-run space, the default: TPE, or NSGA-II with `search.sampler: nsga2`),
random (Optuna's random sampler over the same space) and grid (every combination, through Ray's
BasicVariantGenerator). With several objectives (`objectives:`) Optuna's study has one direction
per objective and is told every objective of a trial when it ends: TPE is then Optuna's
multi-objective TPE (MOTPE), and NSGA-II the genetic algorithm made for fronts.

With a warm start (fer_tune.search.warm_start) the Optuna searchers begin with the earlier
trials as observations in their study, not trained again: completed ones as complete, stopped
ones as pruned with their curves; the best K are proposed again first.

`FixedConfigs` proposes a given list of configurations and nothing else: a `select:` space's
re-runs of its best trials with fresh seeds (fer_tune.search.reruns).
"""

from __future__ import annotations

import copy
import pickle
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from fer_tune.search.sampling import define_by_run, distribution
from fer_tune.search.sweep_file import SpaceFile

if TYPE_CHECKING:
    from fer_tune.search.warm_start import WarmStart

EARLIER_ATTR = "fer_tune.earlier"  # on a seeded Optuna trial: the earlier sweep/trial it came from


def build_searcher(space: SpaceFile, warm: WarmStart | None = None):
    algorithm = space.search.algorithm
    if algorithm == "grid":
        from ray.tune.search import BasicVariantGenerator

        return BasicVariantGenerator(max_concurrent=space.budget.max_concurrent or 0)
    if algorithm == "random":
        sampler = optuna.samplers.RandomSampler(seed=space.search.seed)
    elif space.search.sampler == "nsga2":
        sampler = PicklableNSGAIISampler(seed=space.search.seed)
    else:
        startup = space.search.startup_trials or startup_trials(space.budget.num_samples)
        sampler = optuna.samplers.TPESampler(seed=space.search.seed, n_startup_trials=startup)
    if space.multi_objective:  # Ray's OptunaSearch takes lists: one study direction per objective
        metric, mode = [o.metric for o in space.objectives], [o.mode for o in space.objectives]
        return OptunaSearch(space=define_by_run(space), metric=metric, mode=mode, sampler=sampler)
    options = dict(space=define_by_run(space), metric=space.metric, mode=space.mode, sampler=sampler)
    if warm is None or not warm.seeds:
        return OptunaSearch(**options)
    first = [dict(seed.params) for seed in warm.best(space.mode)]  # proposed again before any new point
    return WarmOptunaSearch(observations(space, warm), points_to_evaluate=first, **options)


class PicklableNSGAIISampler(optuna.samplers.NSGAIISampler):
    """Optuna's NSGA-II sampler, picklable: Ray pickles the searcher, sampler included, when the sweep starts
    and into every experiment snapshot (for --resume), and the sampler holds a threading.Lock (its generation
    cache's), which pickle refuses. The lock is left out and a new one made on unpickling (issue 26)."""

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state.pop("_thread_lock", None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._thread_lock = threading.Lock()


# Optuna names a GA sampler's study attributes after its class: keep NSGA-II's own names in the study
PicklableNSGAIISampler._GENERATION_KEY = optuna.samplers.NSGAIISampler._GENERATION_KEY
PicklableNSGAIISampler._PARENT_CACHE_KEY_PREFIX = optuna.samplers.NSGAIISampler._PARENT_CACHE_KEY_PREFIX


def startup_trials(num_samples: int) -> int:
    """TPE's random trials before it models the results: a quarter of the sweep, from 3 to Optuna's 10.

    Optuna's default of 10 is all of a 10-trial sweep (quick.yaml's), which would then be a random
    search under another name; TPE needs a few scored points to split into good and bad ones.
    """
    return max(3, min(10, num_samples // 4))


class WarmOptunaSearch(OptunaSearch):
    """OptunaSearch whose study starts with the earlier trials: added once, when the study is made.
    A restored searcher (--resume) keeps them in its pickled study and is not seeded again."""

    def __init__(self, seeded: list, **options):
        self._seeded = seeded  # read by _setup_study, which OptunaSearch.__init__ calls
        super().__init__(**options)

    def _setup_study(self, mode):
        super()._setup_study(mode)
        for trial in self._seeded:
            self._ot_study.add_trial(trial)
        self._seeded = []


def observations(space: SpaceFile, warm: WarmStart) -> list:
    """The earlier trials as Optuna FrozenTrials against the current space's distributions."""
    import optuna
    from optuna.trial import TrialState

    params = {p.name: p for p in space.space}
    trials = []
    for seed in warm.seeds:
        distributions = {name: distribution(params[name]) for name in seed.params}
        values = {name: _on_grid(value, distributions[name]) for name, value in seed.params.items()}
        curve = {int(epoch): float(value) for epoch, value in sorted(seed.curve.items())}
        trials.append(
            optuna.trial.create_trial(
                state=TrialState.COMPLETE if seed.completed else TrialState.PRUNED,
                value=seed.score if seed.completed else None,
                params=values,
                distributions=distributions,
                intermediate_values=curve,
                user_attrs={EARLIER_ATTR: seed.key},
            )
        )
    return trials


def _on_grid(value, dist):
    """A float moved onto the distribution's step where the space's q changed since."""
    step = getattr(dist, "step", None)
    if step and isinstance(value, float):
        return min(max(dist.low + round((value - dist.low) / step) * step, dist.low), dist.high)
    return value


class FixedConfigs(Searcher):
    """Hands Tune a fixed list of trial configs, in order: nothing is sampled, nothing learnt from results.

    Saved with the experiment (how far it got), so an interrupted run of re-runs resumes where it stopped.
    """

    def __init__(self, configs: list[dict[str, Any]], metric: str | None = None, mode: str | None = None):
        super().__init__(metric=metric, mode=mode)
        self.configs, self.given = list(configs), 0

    def suggest(self, trial_id: str) -> dict[str, Any] | str:
        if self.given >= len(self.configs):
            return Searcher.FINISHED
        self.given += 1
        return copy.deepcopy(self.configs[self.given - 1])

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        pass  # nothing to learn: the list is fixed

    def save(self, checkpoint_path: str) -> None:
        Path(checkpoint_path).write_bytes(pickle.dumps((self.configs, self.given)))

    def restore(self, checkpoint_path: str) -> None:
        self.configs, self.given = pickle.loads(Path(checkpoint_path).read_bytes())
