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
    budgets = {"a": 60.0, "b": 30.0, "c": None, "d": None}
    lines = budget.summary(budgets, {"a": 70.0, "b": 10.0, "c": 20.0, "d": 1.0})
    assert lines[0].startswith("time budget: slow tests 80 s of their 90 s; all tests 101 s")
    assert lines[1:] == ["  over budget: a took 70 s of its 60 s", "  unmarked but slow: c took 20 s (over 15 s)"]


def test_every_test_gets_a_hard_limit_from_its_budget():
    items = [FakeItem("a", slow(seconds=100)), FakeItem("b", slow(seconds=20)), FakeItem("c")]
    assert [budget.time_limit(item) for item in items] == [800, budget.UNMARKED_LIMIT_S, budget.UNMARKED_LIMIT_S]


def test_a_test_past_its_limit_is_stopped_and_fails(tmp_path):
    """pytest-timeout really acts on the limit `bind` gives (here lowered to 2 s for an unmarked test)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    (tmp_path / "test_hang.py").write_text(
        "import time\nimport budget\n\nbudget.UNMARKED_LIMIT_S = 2\n\n\ndef test_hangs():\n    time.sleep(120)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "conftest", "-p", "no:cacheprovider", "test_hang.py"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert (
        done.returncode == 1 and "Timeout (>2.0s) from pytest-timeout" in done.stdout and "1 failed" in done.stdout
    ), done.stdout[-2000:]


def test_the_summary_reaches_xdists_controller_with_each_tests_budget(tmp_path):
    """Under `make test`'s workers the controller collects no items: each budget travels in its test's report."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    (tmp_path / "test_two.py").write_text(
        "import time\nimport pytest\n\n\n@pytest.mark.slow(seconds=1)\ndef test_over():\n    time.sleep(1.5)\n\n\n"
        "def test_quick():\n    pass\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "conftest", "-p", "no:cacheprovider", "-n", "2", "test_two.py"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:]
    assert "time budget: slow tests 2 s of their 1 s" in done.stdout, done.stdout[-2000:]
    assert "over budget: test_two.py::test_over took 2 s of its 1 s" in done.stdout


def test_the_heaviest_files_come_first_and_keep_their_tests_order():
    items = [FakeItem("a.py::t1"), FakeItem("b.py::t1", slow(seconds=60)), FakeItem("a.py::t2"),
             FakeItem("c.py::t1", slow(seconds=20)), FakeItem("b.py::t2"), FakeItem("d.py::t1")]  # fmt: skip
    budget.heaviest_files_first(items)
    assert [item.nodeid for item in items] == ["b.py::t1", "b.py::t2", "c.py::t1", "a.py::t1", "a.py::t2", "d.py::t1"]
