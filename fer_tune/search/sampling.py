"""Turn a validated space into what a searcher consumes.

- `define_by_run(space)`: the Optuna define-by-run function. Parameters are
  suggested in file order and a conditional one only when its condition holds,
  so TPE sees the conditional structure (T_0 exists only for cos_warm trials)
  instead of a flat space full of ignored values.
- `grid_points(space)`: every combination of the choice/grid axes, skipping
  parameters whose condition does not hold (no duplicate trials that differ
  only in an ignored value).

Both produce flat dicts of `TrainConfig` fields.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fer_tune.errors import FerTuneError
from fer_tune.search.sweep_file import SpaceFile
from fer_tune.search.syntax import Param, quantize

if TYPE_CHECKING:
    import optuna


class define_by_run:
    """The Optuna search space: suggests each active parameter and returns the whole point.

    A class rather than a closure: Ray pickles the searcher, this function
    included, into every experiment checkpoint (that is what --resume reads).
    """

    def __init__(self, space: SpaceFile):
        grid_axes = [p.name for p in space.space if p.kind == "grid"]
        if grid_axes:
            raise FerTuneError(
                f"{space.path}: space.{grid_axes[0]}: grid axes need search.algorithm: grid "
                f"(use choice to let {space.search.algorithm} sample it)"
            )
        self.space = space

    def __call__(self, trial: optuna.Trial) -> dict[str, Any]:
        # Ray builds the config as {**values captured from trial.suggest_*, **what we return}: returning
        # the whole point carries the fixed values and our quantized floats (0.3, not 0.30000000000000004).
        point: dict[str, Any] = {"epochs": self.space.budget.max_epochs}
        for param in self.space.space:
            if param.is_active(point):
                point[param.name] = param.values[0] if param.kind == "fixed" else suggest(trial, param)
        return point


def suggest(trial: optuna.Trial, param: Param) -> Any:
    low, high = param.values[0], param.values[-1]
    if param.kind == "choice":
        return trial.suggest_categorical(param.name, list(param.values))
    if param.kind == "randint":
        return trial.suggest_int(param.name, low, high, step=int(param.q or 1))
    if param.kind == "loguniform":
        # Optuna refuses step together with log, so a quantized loguniform is rounded after sampling.
        value = trial.suggest_float(param.name, low, high, log=True)
    else:
        value = trial.suggest_float(param.name, low, high, step=param.q)
    return quantize(value, param.q) if param.q else value


def distribution(param: Param) -> optuna.distributions.BaseDistribution:
    """The Optuna distribution `suggest` draws `param` from (what an earlier trial is recorded against)."""
    from optuna import distributions

    low, high = param.values[0], param.values[-1]
    if param.kind == "choice":
        return distributions.CategoricalDistribution(list(param.values))
    if param.kind == "randint":
        return distributions.IntDistribution(low, high, step=int(param.q or 1))
    if param.kind == "loguniform":
        return distributions.FloatDistribution(low, high, log=True)
    return distributions.FloatDistribution(low, high, step=param.q)


def grid_points(space: SpaceFile) -> list[dict[str, Any]]:
    """The cartesian product of every active choice/grid axis and fixed value, in file order."""
    points: list[dict[str, Any]] = [{"epochs": space.budget.max_epochs}]
    for param in space.space:
        if param.kind in ("uniform", "loguniform", "randint"):
            raise FerTuneError(
                f"{space.path}: space.{param.name}: a {param.kind} range cannot be enumerated by "
                "search.algorithm: grid; use choice/grid values, or the optuna or random searcher"
            )
        expanded = []
        for point in points:
            if param.is_active(point):
                expanded.extend({**point, param.name: value} for value in param.values)
            else:
                expanded.append(point)
        points = expanded
    return points
