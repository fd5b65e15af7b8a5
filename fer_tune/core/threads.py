"""How many CPU threads torch computes with: decided here, for every path that trains or predicts.

torch starts with one intra-op thread per core of the machine, whatever the process was given. On a
shared 2-core machine (load about 3.5) one epoch of quick.yaml's default point took 44 s on 2
threads and 7.7 s on 1: threads that outnumber the CPUs a process may use wait on each other. So a
process uses the CPUs it was given, never more:

    use_threads(share=space.resources.cpu)      # `fer-tune train`, a trial: the CPUs the space gives a trial
    use_threads(override=args.threads)          # a --threads flag wins (still at least 1)
    use_threads()                               # predict: every CPU this process may run on

"May run on" is the process's CPU affinity (taskset, a container's cpuset), not the machine's core count.
`fer-tune serve` and the latency measurement pin one thread each, for the reasons measured where they do.
"""

from __future__ import annotations

import os

import torch


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity where the OS has one, else the machine's count)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def thread_count(share: float | None = None, override: int | None = None) -> int:
    """`override` if given; else `share` (a trial's resources.cpu, rounded down, at least 1) capped by
    usable_cpus(); else usable_cpus()."""
    if override is not None:
        return max(1, int(override))
    available = usable_cpus()
    return available if share is None else max(1, min(int(share), available))


def use_threads(share: float | None = None, override: int | None = None) -> int:
    """Set torch's intra-op threads by thread_count; returns the number set."""
    threads = thread_count(share, override)
    torch.set_num_threads(threads)
    return threads
