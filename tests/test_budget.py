"""The suite's budget rule (tests/budget.py): declared, checked at collection, never timed."""

import budget
import pytest


class FakeItem:
    def __init__(self, nodeid: str, marker=None):
        self.nodeid, self._marker = nodeid, marker

    def get_closest_marker(self, name):
        return self._marker if name == "slow" else None


def slow(**kwargs):
    return pytest.mark.slow(**kwargs).mark


def test_the_budgets_are_summed_and_over_the_ceiling_is_a_usage_error(monkeypatch):
    monkeypatch.setattr(budget, "SLOW_CEILING_S", 100)
    items = [FakeItem("a", slow(seconds=60)), FakeItem("b", slow(seconds=30)), FakeItem("c")]
    assert budget.check_budgets(items) == 90
    with pytest.raises(pytest.UsageError, match=r"sum to 130 s, over the 100 s .* the largest: a 60 s, d 40 s"):
        budget.check_budgets([*items, FakeItem("d", slow(seconds=40))])


@pytest.mark.parametrize("marker", [slow(), slow(seconds=0), slow(seconds="60"), pytest.mark.slow(60).mark])
def test_a_slow_mark_without_its_seconds_is_a_usage_error(marker):
    with pytest.raises(pytest.UsageError, match=r"x: expected @pytest.mark.slow\(seconds=N\) with N > 0"):
        budget.budget_of(FakeItem("x", marker))


def test_the_summary_names_the_tests_over_their_budget_and_the_slow_unmarked_ones():
    items = [FakeItem("a", slow(seconds=60)), FakeItem("b", slow(seconds=30)), FakeItem("c"), FakeItem("d")]
    lines = budget.summary(items, {"a": 70.0, "b": 10.0, "c": 20.0, "d": 1.0})
    assert lines[0].startswith("time budget: slow tests 80 s of their 90 s; all tests 101 s")
    assert lines[1:] == ["  over budget: a took 70 s of its 60 s", "  unmarked but slow: c took 20 s (over 15 s)"]
