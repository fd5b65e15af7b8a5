"""The suite's time budget: `make test` on an idle 2-core machine, CI's size.

A test that takes more than SLOW_S there is marked with its own budget, in seconds:

    @pytest.mark.slow(seconds=60)
    def test_a_sweep_...

The budgets are declarations, checked at collection: together they may not pass SLOW_CEILING_S.
They also bind: every test runs under a hard time limit (pytest-timeout) derived from its budget,
HANG_FACTOR times it (UNMARKED_LIMIT_S for an unmarked test). That limit is a hang guard, not a
speed assertion: it is far above the budget, so a loaded machine does not trip it, and a test that
hangs fails with its stacks instead of stalling the run until CI's own limit.

The brief's target for the whole suite is SUITE_TARGET_S; the ceiling of the slow tests' budgets
leaves the rest of it to the unmarked tests, and only comes down: a new slow test has to fit under
it, or another has to get faster first. After a run, the
terminal summary compares each slow test's real time (setup, call and teardown: a module's shared
sweep counts for its first test) with its budget, and names unmarked tests that took more than
SLOW_S. Those lines inform; they fail nothing, since a busy machine is slower. `make test-fast`
leaves the slow tests out.
"""

from __future__ import annotations

import pytest

SUITE_TARGET_S = 15 * 60  # the brief's: the whole suite in 15 minutes on 2 cores
# the slow tests' budgets summed: each is its time under make test's two workers x 1.5 (2026-12-07, 3715 before);
# lower it, never raise it
SLOW_CEILING_S = 2950
SLOW_S = 15  # an unmarked test should take less than this
HANG_FACTOR = 8  # a slow test is stopped at this many times its budget (CI has run 3x slower than a quiet machine)
UNMARKED_LIMIT_S = 300  # an unmarked test (under SLOW_S when idle) is stopped after this


def budget_of(item: pytest.Item) -> float | None:
    """The seconds a `slow` test is budgeted (None for an unmarked test); a bad marker is a usage error."""
    marker = item.get_closest_marker("slow")
    if marker is None:
        return None
    seconds = marker.kwargs.get("seconds")
    if marker.args or set(marker.kwargs) != {"seconds"} or not isinstance(seconds, int | float) or seconds <= 0:
        raise pytest.UsageError(f"{item.nodeid}: expected @pytest.mark.slow(seconds=N) with N > 0")
    return float(seconds)


def time_limit(item: pytest.Item) -> float:
    """The hard limit a test runs under (pytest-timeout): HANG_FACTOR x its budget, else UNMARKED_LIMIT_S."""
    budget = budget_of(item)
    return UNMARKED_LIMIT_S if budget is None else max(UNMARKED_LIMIT_S, HANG_FACTOR * budget)


def bind(items: list[pytest.Item]) -> None:
    """Give every test its time_limit as a pytest-timeout marker (a test's own `timeout` marker stays)."""
    for item in items:
        if item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(time_limit(item)))


def check_budgets(items: list[pytest.Item]) -> float:
    """The collected slow tests' budgets summed; over SLOW_CEILING_S is a usage error naming the largest."""
    budgets = {item.nodeid: seconds for item in items if (seconds := budget_of(item)) is not None}
    total = sum(budgets.values())
    if total > SLOW_CEILING_S:
        largest = sorted(budgets.items(), key=lambda pair: -pair[1])[:3]
        raise pytest.UsageError(
            f"the slow tests' budgets sum to {total:.0f} s, over the {SLOW_CEILING_S} s they may take "
            f"(tests/budget.py); the largest: " + ", ".join(f"{name} {s:.0f} s" for name, s in largest)
        )
    return total


def summary(budgets: dict[str, float | None], took: dict[str, float]) -> list[str]:
    """The terminal summary's lines: slow tests against their budgets (test id -> seconds, None for an unmarked
    test), and unmarked tests over SLOW_S. Times are each test's own: with xdist's workers they overlap."""
    lines, slow_total, slow_budget = [], 0.0, 0.0
    for nodeid, seconds in took.items():
        budget = budgets.get(nodeid)
        if budget is None:
            if seconds > SLOW_S:
                lines.append(f"  unmarked but slow: {nodeid} took {seconds:.0f} s (over {SLOW_S} s)")
            continue
        slow_total, slow_budget = slow_total + seconds, slow_budget + budget
        if seconds > budget:
            lines.append(f"  over budget: {nodeid} took {seconds:.0f} s of its {budget:.0f} s")
    everything = sum(took.values())
    head = (
        f"time budget: slow tests {slow_total:.0f} s of their {slow_budget:.0f} s; "
        f"all tests {everything:.0f} s; the suite's target is {SUITE_TARGET_S} s (tests/budget.py)"
    )
    return [head, *lines]


def heaviest_files_first(items: list[pytest.Item]) -> None:
    """Order the test files by their declared budgets, largest first (a file's tests keep their order).

    `make test`'s workers take a file at a time in this order: the longest files start first and the short
    ones fill in around them, instead of the run ending on one worker with test_team.py alone (the order
    alphabetical files arrive in). Unmarked tests count a second each.
    """
    weight: dict[str, float] = {}
    first: dict[str, int] = {}
    for index, item in enumerate(items):
        file = item.nodeid.split("::")[0]
        weight[file] = weight.get(file, 0.0) + (budget_of(item) or 1.0)
        first.setdefault(file, index)
    items.sort(key=lambda item: (-weight[item.nodeid.split("::")[0]], first[item.nodeid.split("::")[0]]))
