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

from typing import TYPE_CHECKING, Any, Callable

from fer_tune.config import Param, SpaceFile, quantize
from fer_tune.errors import FerTuneError

if TYPE_CHECKING:
    import optuna


def define_by_run(space: SpaceFile) -> Callable[["optuna.Trial"], dict[str, Any]]:
    """The Optuna search space; returns the fixed values, as Ray's OptunaSearch expects."""
    grid_axes = [p.name for p in space.space if p.kind == "grid"]
    if grid_axes:
        raise FerTuneError(
            f"{space.path}: space.{grid_axes[0]}: grid axes need search.algorithm: grid "
            f"(use choice to let {space.search.algorithm} sample it)"
        )

    def sample(trial: "optuna.Trial") -> dict[str, Any]:
        point: dict[str, Any] = {}
        fixed: dict[str, Any] = {"epochs": space.budget.max_epochs}
        for param in space.space:
            if not param.is_active({**fixed, **point}):
                continue
            if param.kind == "fixed":
                fixed[param.name] = param.values[0]
            else:
                point[param.name] = suggest(trial, param)
        return fixed

    return sample


def suggest(trial: "optuna.Trial", param: Param) -> Any:
    low, high = param.values[0], param.values[-1]
    if param.kind == "choice":
        return trial.suggest_categorical(param.name, list(param.values))
    if param.kind == "randint":
        return trial.suggest_int(param.name, low, high, step=int(param.q or 1))
    if param.kind == "loguniform":
        value = trial.suggest_float(param.name, low, high, log=True)
        # Optuna refuses step together with log; quantize after sampling instead.
        return quantize(value, param.q) if param.q else value
    return trial.suggest_float(param.name, low, high, step=param.q)


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
