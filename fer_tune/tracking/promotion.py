"""Race-free champion promotion: `promote(client, name, version, accuracy, rival)`.

Two sweeps that finish together under one registered model name both used to read "no
champion yet" and the later writer took the alias. MLflow's registry offers no compare-and-set
on aliases, so the read-compare-write runs under a lock held in the registry itself: a registered
model named `<name>.promotion-lock`. Creating a registered model is atomic in every store MLflow
has (a unique key in SQLite, PostgreSQL and MySQL; `mlflow server` passes its store's
RESOURCE_ALREADY_EXISTS through), so exactly one promoter creates it; the others wait and retry.
This works the same against a SQLite file, a database URI and a tracking server, where a
PostgreSQL advisory lock or a file lock would each cover one of them. The lock records its
holder and is broken after STALE_AFTER_S, so a promoter killed while holding it stalls the next
promotion by minutes, not forever.

The rule (`beats`): a strictly higher accuracy takes `champion`; on an exact tie the version
registered first (the lower number) keeps it, whichever promoter got the lock first. The loser of
the comparison, new or dethroned, becomes `challenger`.
"""

from __future__ import annotations

import os
import random
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from fer_tune.errors import FerTuneError

CHAMPION, CHALLENGER = "champion", "challenger"
LOCK_SUFFIX = ".promotion-lock"
WAIT_S = 600.0  # the longest a promoter waits for the lock (a holder may re-score a champion on new data)
STALE_AFTER_S = 900.0  # a lock older than this belongs to a promoter that died: break it
POLL_S = 0.2  # between tries, with jitter

Rival = tuple[str, float] | None  # (version, accuracy on this data) of the current champion


def beats(accuracy: float, version: str, rival: Rival) -> bool:
    """Whether `version` with `accuracy` takes `champion` from `rival` (a tie goes to the earlier version)."""
    if rival is None:
        return True
    return accuracy > rival[1] or (accuracy == rival[1] and int(version) < int(rival[0]))


def promote(
    client: MlflowClient,
    name: str,
    version: str,
    accuracy: float,
    rival: Callable[[], Rival],
    review: Callable[[tuple[str, float]], bool] | None = None,
) -> tuple[str, Rival]:
    """Under the registry lock: read the champion (`rival()`), compare, and set the aliases; (alias, rival).

    `review(champion)`, where given, is asked whenever a champion exists (it may record a paired test)
    and must also say yes for the new version to take `champion`.
    """
    with registry_lock(client, name):
        current = rival()
        if current is not None and current[0] == version:  # a replay of this promotion
            return CHAMPION, None
        wins = beats(accuracy, version, current)
        if current is not None and review is not None:
            wins = review(current) and wins  # review first: it runs (and records) either way
        if wins:
            client.set_registered_model_alias(name, CHAMPION, version)
            if current is not None:
                client.set_registered_model_alias(name, CHALLENGER, current[0])
            return CHAMPION, current
        client.set_registered_model_alias(name, CHALLENGER, version)
        return CHALLENGER, current


@contextmanager
def registry_lock(client: MlflowClient, name: str, wait_s: float = WAIT_S) -> Iterator[None]:
    """Hold `<name>.promotion-lock` for a block: a registered model only one process can create."""
    lock, holder = name + LOCK_SUFFIX, f"{socket.gethostname()}:{os.getpid()}"
    deadline = time.monotonic() + wait_s
    while True:
        try:
            client.create_registered_model(lock, tags={"holder": holder}, description="fer-tune promotion lock")
            break
        except MlflowException:  # held by another promoter (or a busy SQLite file): wait, unless it is stale
            _break_if_stale(client, lock)
        if time.monotonic() > deadline:
            raise FerTuneError(
                f"registered model {name}: promotion lock {lock} still held after {wait_s:.0f} s; "
                f"delete that registered model if no sweep is promoting"
            )
        time.sleep(POLL_S * (0.5 + random.random()))
    try:
        yield
    finally:
        client.delete_registered_model(lock)


def _break_if_stale(client: MlflowClient, lock: str) -> None:
    try:
        held = client.get_registered_model(lock)
    except MlflowException:
        return  # released meanwhile
    if time.time() - held.creation_timestamp / 1000 > STALE_AFTER_S:
        try:
            client.delete_registered_model(lock)
        except MlflowException:
            pass  # another waiter broke it first
