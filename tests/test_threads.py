"""torch's CPU threads, decided in one place (fer_tune.core.threads) for every path that trains or predicts:
the CPUs a process was given (its affinity, a trial's resources.cpu), never more; --threads overrides."""

import os

import pytest
import torch

from fer_tune.cli.main import main
from fer_tune.core import threads
from fer_tune.core.threads import thread_count, usable_cpus


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="no CPU affinity on this OS")
def test_usable_cpus_is_the_affinity_not_the_machine(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {3})
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    assert usable_cpus() == 1


def test_a_share_is_capped_by_the_usable_cpus_and_an_override_wins(monkeypatch):
    monkeypatch.setattr(threads, "usable_cpus", lambda: 2)
    assert thread_count() == 2  # predict: every usable CPU
    assert thread_count(share=1) == 1 and thread_count(share=0.5) == 1  # a trial's share, at least one
    assert thread_count(share=8) == 2  # never more threads than CPUs
    assert thread_count(share=8, override=6) == 6 and thread_count(override=0) == 1  # the flag wins


SPACE = """name: threads
data: {source: synthetic, n: 140}
resources: {cpu: 1}
space:
  model: basic
  width: 0.125
  batch_size: 32
  epochs: 1
"""


def test_train_uses_the_spaces_cpu_share_or_the_flag(workdir, capsys, restore_threads):
    (workdir / "t.yaml").write_text(SPACE)
    torch.set_num_threads(2)  # torch's own start: a thread per core
    assert main(["train", "t.yaml"]) == 0
    assert (
        torch.get_num_threads() == 1 and "threads: 1 (resources.cpu 1; --threads to change)" in capsys.readouterr().out
    )
    assert main(["train", "t.yaml", "--threads", "3"]) == 0
    assert torch.get_num_threads() == 3 and "threads: 3 (" in capsys.readouterr().out


@pytest.mark.parametrize("command", [["train", "t.yaml"], ["predict", "x.png"]])
def test_threads_out_of_range_is_one_line_before_any_work(workdir, capsys, command):
    (workdir / "t.yaml").write_text(SPACE)
    assert main([*command, "--threads", "0"]) == 1
    err = capsys.readouterr().err
    assert err == "fer-tune: error: --threads 0: expected an integer from 1 to 1024\n", err
