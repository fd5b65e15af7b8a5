"""Searchers: what proposes the next trial's configuration.

optuna (TPE over the define-by-run space, the default), nsga2 (Optuna's NSGA-II over the same
space), random (Optuna's random sampler over it) and grid (every combination, through Ray's
BasicVariantGenerator). With several objectives (`objectives:`) Optuna's study has one direction
per objective and is told every objective of a trial when it ends: TPE is then Optuna's
multi-objective TPE (MOTPE), and NSGA-II is the genetic algorithm made for fronts.
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

    samplers = {"optuna": optuna.samplers.TPESampler, "nsga2": optuna.samplers.NSGAIISampler}
    sampler = samplers.get(algorithm, optuna.samplers.RandomSampler)(seed=space.search.seed)
    if space.multi_objective:  # Ray's OptunaSearch takes lists: one study direction per objective
        metric, mode = [o.metric for o in space.objectives], [o.mode for o in space.objectives]
        return OptunaSearch(space=define_by_run(space), metric=metric, mode=mode, sampler=sampler)
    return OptunaSearch(space=define_by_run(space), metric=space.metric, mode=space.mode, sampler=sampler)
