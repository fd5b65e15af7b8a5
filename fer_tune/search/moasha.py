"""Multi-objective ranking for successive halving: non-dominated sorting and MOASHA's promotion rule.

    fronts = non_dominated_fronts([[0.9, -5.0], [0.8, -1.0], [0.7, -6.0]])   # [[0, 1], [2]]
    promoted(rung, new=[0.85, -2.0], reduction_factor=2)

Every vector here is to be *maximized* in each coordinate (a minimized metric enters negated, as
ASHA's reward does). A point dominates another when it is at least as good in every objective and
better in one. Points are ranked front by front (Deb et al. 2002); inside a front, ties are broken
by the epsilon-net rule of Salinas et al. 2021, the default of Syne Tune's MOASHA (Schmucker et al.
2021): start from the point best in the first objective, then repeatedly take the point farthest
(in objectives scaled to [0, 1]) from those already taken, so the top of a rung spreads across the
front instead of crowding one end of it. A rung promotes the top ceil(n / reduction_factor) of its
n trials; the newest trial continues when it is among them. Pure numpy: no Ray, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

Vector = Sequence[float]


def _matrix(points: Sequence[Vector]) -> np.ndarray:
    matrix = np.asarray(points, dtype=float).reshape(len(points), -1)
    return np.where(np.isnan(matrix), -np.inf, matrix)  # a missing score is worst, never best


def dominates(a: Vector, b: Vector) -> bool:
    """Whether `a` is at least as good as `b` everywhere and strictly better somewhere (maximizing)."""
    a, b = _matrix([a])[0], _matrix([b])[0]
    return bool(np.all(a >= b) and np.any(a > b))


def non_dominated_fronts(points: Sequence[Vector]) -> list[list[int]]:
    """Indices of `points` grouped into fronts: the first is the Pareto front, the next the front of
    what remains, and so on. Equal points share a front."""
    matrix = _matrix(points)
    remaining = list(range(len(matrix)))
    fronts = []
    while remaining:
        front = [
            i
            for i in remaining
            if not any(np.all(matrix[j] >= matrix[i]) and np.any(matrix[j] > matrix[i]) for j in remaining)
        ]
        fronts.append(front)
        remaining = [i for i in remaining if i not in front]
    return fronts


def epsilon_net_order(points: Sequence[Vector], members: Sequence[int]) -> list[int]:
    """`members` (indices into `points`, one front) in epsilon-net order: best in the first objective
    first, then each time the one farthest from all taken so far. Ties go to the lower index."""
    if len(members) <= 1:
        return list(members)
    matrix = _matrix(points)
    finite = np.where(np.isfinite(matrix), matrix, np.nan)
    low, high = np.nanmin(finite, axis=0), np.nanmax(finite, axis=0)
    span = np.where(high > low, high - low, 1.0)
    scaled = np.nan_to_num((finite - low) / span, nan=-1.0)  # objectives on [0, 1]; missing far below
    left = sorted(members)
    first = max(left, key=lambda i: (matrix[i][0], -i))
    order, left = [first], [i for i in left if i != first]
    while left:
        distance = {i: min(np.linalg.norm(scaled[i] - scaled[j]) for j in order) for i in left}
        chosen = max(left, key=lambda i: (distance[i], -i))
        order.append(chosen)
        left.remove(chosen)
    return order


def rank_order(points: Sequence[Vector]) -> list[int]:
    """All indices of `points`, best first: front by front, epsilon-net order inside each front."""
    return [i for front in non_dominated_fronts(points) for i in epsilon_net_order(points, front)]


def promoted_count(n: int, reduction_factor: float) -> int:
    """How many of a rung's `n` trials go on: the top 1/reduction_factor, at least one."""
    return max(1, math.ceil(n / reduction_factor))


def promoted(recorded: Mapping[str, Vector], new: Vector, reduction_factor: float) -> bool:
    """Whether a trial reaching a rung with `new` continues, given the vectors `recorded` there
    before it: it does when its rank among all of them, itself included, is in the top 1/η."""
    points = [*recorded.values(), new]
    position = rank_order(points).index(len(points) - 1)
    return position < promoted_count(len(points), reduction_factor)
