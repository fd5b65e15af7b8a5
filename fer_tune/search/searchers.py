"""Searchers: what proposes the next trial's configuration.

optuna (over the define-by-run space, the default: TPE, or NSGA-II with `search.sampler: nsga2`),
random (Optuna's random sampler over the same space) and grid (every combination, through Ray's
BasicVariantGenerator). With several objectives (`objectives:`) Optuna's study has one direction
per objective and is told every objective of a trial when it ends: TPE is then Optuna's
multi-objective TPE (MOTPE), and NSGA-II the genetic algorithm made for fronts.
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

    samplers = {"tpe": optuna.samplers.TPESampler, "nsga2": optuna.samplers.NSGAIISampler}
    sampler_class = samplers[space.search.sampler] if algorithm == "optuna" else optuna.samplers.RandomSampler
    sampler = sampler_class(seed=space.search.seed)
    if space.multi_objective:  # Ray's OptunaSearch takes lists: one study direction per objective
        metric, mode = [o.metric for o in space.objectives], [o.mode for o in space.objectives]
        return OptunaSearch(space=define_by_run(space), metric=metric, mode=mode, sampler=sampler)
    return OptunaSearch(space=define_by_run(space), metric=space.metric, mode=space.mode, sampler=sampler)
