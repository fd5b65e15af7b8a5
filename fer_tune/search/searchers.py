"""Searchers: what proposes the next trial's configuration.

optuna (TPE over the define-by-run space, the default), random (Optuna's random sampler over
the same space) and grid (every combination, through Ray's BasicVariantGenerator).
"""

from __future__ import annotations

from fer_tune.search.sampling import define_by_run
from fer_tune.search.sweep_file import SpaceFile


def build_searcher(space: SpaceFile):
    algorithm = space.search.algorithm
    if algorithm == "grid":
        from ray.tune.search import BasicVariantGenerator

        return BasicVariantGenerator(max_concurrent=space.budget.max_concurrent or 0)
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    sampler = (
        optuna.samplers.TPESampler(seed=space.search.seed)
        if algorithm == "optuna"
        else optuna.samplers.RandomSampler(seed=space.search.seed)
    )
    return OptunaSearch(space=define_by_run(space), metric=space.metric, mode=space.mode, sampler=sampler)
