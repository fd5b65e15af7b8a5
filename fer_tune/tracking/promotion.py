"""Race-free champion promotion: `promote(client, name, version, accuracy, rival)`.

Two sweeps that finish together under one registered model name both used to read "no
champion yet" and the later writer took the alias. MLflow's registry offers no compare-and-set
on aliases, so the read-compare-write runs under a lock held in the registry itself: a registered
model named `<name>.promotion-lock`. Creating a registered model is atomic in every store MLflow
has (a unique key in SQLite, PostgreSQL and MySQL; `mlflow server` passes its store's
RESOURCE_ALREADY_EXISTS through), so exactly one promoter creates it; the others wait and retry.
This works the same against a SQLite file, a database URI and a tracking server, where a
PostgreSQL advisory lock or a file lock would each cover one of them.

The lock is a lease. Its tags name its owner (a random token per acquisition, and host:pid for
people) and a renewal counter that a thread of the holder bumps every LEASE_S / 3 while it works.
A waiter breaks the lock only after it has watched the same (owner, renewal) for a whole lease
(the holder's `lease_s` tag), on its own monotonic clock: no clocks are compared across machines,
and a live holder, however slow, is never broken. Breaking is atomic between waiters: the waiter
that creates the registered model `<lock>.break-<owner>` (again a unique create) re-reads the
owner, deletes the lock only if it is still that owner's, says so on the console, and deletes its
marker; a marker left by a breaker that died is itself given up after a lease (the next generation,
`<lock>.break-<owner>.1`, ...). Release and renewal check the owner before they touch the lock, and
the holder checks it once more, renewing, just before it writes aliases: a holder that lost its
lock (its lease ran out while the store was unreachable or the process stalled) writes nothing and
raises a one-line PromotionError. What no registry-only lock can exclude is a holder stalled longer
than a lease between that last check and its next request; the window is one request long.

A waiter's patience (WAIT_S, at least two leases) counts from the moment the current owner took
the lock, so a queue of promoters moves on; it runs out only on one live holder that keeps renewing
for that long, or a store that keeps failing. `fer-tune models unlock NAME` removes a lock by hand.

Timings are read at import, so tests and subprocesses can scale them: FER_TUNE_LOCK_LEASE_S
(default 60) and FER_TUNE_LOCK_WAIT_S (default 900).

The rule (`beats`): a strictly higher accuracy takes `champion`; on an exact tie the version
registered first (the lower number) keeps it, whichever promoter got the lock first. The loser of
the comparison, new or dethroned, becomes `challenger`.
"""

from __future__ import annotations

import itertools
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from fer_tune.errors import FerTuneError
from fer_tune.uris import redact

CHAMPION, CHALLENGER = "champion", "challenger"
LOCK_SUFFIX = ".promotion-lock"
BREAK_INFIX = ".break-"  # <name>.promotion-lock.break-<owner>[.<generation>]: the breaker of that owner's lease
LEASE_S = float(os.environ.get("FER_TUNE_LOCK_LEASE_S", "60"))  # a holder renews every LEASE_S / 3
WAIT_S = float(os.environ.get("FER_TUNE_LOCK_WAIT_S", "900"))  # patience with one holder (a holder may re-score)
POLL_S = 0.2  # between tries, with jitter
ABSENT = ("RESOURCE_DOES_NOT_EXIST",)

Rival = tuple[str, float] | None  # (version, accuracy on this data) of the current champion


class PromotionError(FerTuneError):
    """A promotion that could not be decided safely (lock lost or not obtained, champion unreadable)."""


def beats(accuracy: float, version: str, rival: Rival) -> bool:
    """Whether `version` with `accuracy` takes `champion` from `rival` (a tie goes to the earlier version)."""
    if rival is None:
        return True
    return accuracy > rival[1] or (accuracy == rival[1] and int(version) < int(rival[0]))


def is_lock_model(name: str) -> bool:
    """Whether a registered model is a promotion lock or a lock breaker's marker (not a model anyone trained)."""
    return name.endswith(LOCK_SUFFIX) or LOCK_SUFFIX + BREAK_INFIX in name


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
    with registry_lock(client, name) as lease:
        current = rival()
        if current is not None and current[0] == version:  # a replay of this promotion
            return CHAMPION, None
        wins = beats(accuracy, version, current)
        if current is not None and review is not None:
            wins = review(current) and wins  # review first: it runs (and records) either way
        lease.confirm(f"setting the aliases of version {version}")
        if wins:
            client.set_registered_model_alias(name, CHAMPION, version)
            if current is not None:
                client.set_registered_model_alias(name, CHALLENGER, current[0])
            return CHAMPION, current
        client.set_registered_model_alias(name, CHALLENGER, version)
        return CHALLENGER, current


@contextmanager
def registry_lock(client: MlflowClient, name: str, wait_s: float | None = None) -> Iterator[Lease]:
    """Hold `<name>.promotion-lock` for a block, renewing its lease meanwhile; yields the Lease."""
    lease = Lease(client, name)
    lease.acquire(WAIT_S if wait_s is None else wait_s)
    try:
        yield lease
    finally:
        lease.release()


@dataclass(frozen=True)
class Held:
    """The lock as a reader sees it."""

    owner: str
    renewal: str
    lease_s: float
    holder: str

    @property
    def seen(self) -> tuple[str, str]:
        return self.owner, self.renewal


class Lease:
    """One acquisition of `<name>.promotion-lock`: acquire, renew (a daemon thread), confirm, release."""

    def __init__(self, client: MlflowClient, name: str):
        self.client, self.name, self.lock = client, name, name + LOCK_SUFFIX
        self.owner = uuid.uuid4().hex
        self.holder = f"{socket.gethostname()}:{os.getpid()}"
        self.length = LEASE_S
        self.lost: str | None = None  # why this lease is no longer ours, once found out
        self._reported = False  # whether a PromotionError said so already
        self._renewals = 0
        self._mutex = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- the lock's record
    def _tags(self) -> dict[str, str]:
        return {
            "owner": self.owner,
            "holder": self.holder,
            "lease_s": f"{self.length:g}",
            "renewal": f"{self._renewals} {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}",
        }

    def read(self) -> Held | None:
        """The lock as it is now; None where there is none (a store error propagates)."""
        return read_lock(self.client, self.lock)

    # ---- waiting for it
    def acquire(self, wait_s: float) -> None:
        seen: tuple[str, str] | None = None  # the (owner, renewal) last seen, and since when
        seen_since = owner_since = time.monotonic()
        markers: dict[str, float] = {}  # breakers' markers seen, and since when
        patience, trouble = max(wait_s, 2 * self.length), None
        held = None
        while True:
            try:
                self.client.create_registered_model(self.lock, tags=self._tags(), description="fer-tune promotion lock")
                break
            except MlflowException as err:
                if err.error_code != "RESOURCE_ALREADY_EXISTS":
                    trouble = err  # a busy or unreachable store: try again
            now = time.monotonic()
            try:
                held = self.read()
            except (MlflowException, OSError) as err:
                trouble = err
            else:
                if held is not None:
                    trouble = None
                    if seen is None or held.owner != seen[0]:
                        owner_since = now  # a new holder: patience starts again
                        patience = max(wait_s, 2 * held.lease_s)
                    if held.seen != seen:
                        seen, seen_since = held.seen, now
                    elif now - seen_since > held.lease_s:
                        self._break(held, now - seen_since, markers)
            if now - owner_since > patience:
                raise PromotionError(self._gave_up(held, trouble, now - owner_since))
            time.sleep(POLL_S * (0.5 + random.random()))
        self._thread = threading.Thread(target=self._keep_renewing, name=f"lease {self.lock}", daemon=True)
        self._thread.start()

    def _gave_up(self, held: Held | None, trouble: Exception | None, waited: float) -> str:
        if trouble is not None:
            reason = (getattr(trouble, "message", None) or str(trouble)).strip().splitlines()[0]
            return redact(
                f"registered model {self.name}: could not take promotion lock {self.lock} in {waited:.0f} s: {reason}"
            )
        holder = held.holder if held else "?"
        return (
            f"registered model {self.name}: promotion lock {self.lock} still held by {holder}, which keeps renewing "
            f"it, after {waited:.0f} s; `fer-tune models unlock {self.name}` removes it if no sweep is promoting"
        )

    def _break(self, held: Held, quiet_s: float, markers: dict[str, float]) -> None:
        """Break an expired lease, unless another waiter is breaking it: only a marker's creator deletes the lock."""
        base = f"{self.lock}{BREAK_INFIX}{held.owner}"
        for generation in itertools.count():
            marker = base if generation == 0 else f"{base}.{generation}"
            try:
                self.client.create_registered_model(marker, tags={"breaker": self.holder}, description="lock breaker")
                break
            except MlflowException as err:
                if err.error_code != "RESOURCE_ALREADY_EXISTS":
                    return  # the store is busy: look again later
            first = markers.setdefault(marker, time.monotonic())
            if time.monotonic() - first <= held.lease_s:
                return  # another waiter is breaking it (a marker lives for milliseconds): wait
            # that breaker died with its marker in place: the next generation may break the lease
        try:
            now = self.read()
            if now is not None and now.owner == held.owner:
                self.client.delete_registered_model(self.lock)
                print(
                    f"[fer-tune] registered model {self.name}: broke promotion lock {self.lock} of {held.holder}: "
                    f"no renewal of its {held.lease_s:g} s lease for {quiet_s:.0f} s (its promoter died or stalled)",
                    flush=True,
                )
        except (MlflowException, OSError):
            pass  # the store hiccuped: the lease is still expired, the next look tries again
        finally:
            for stale in [base] + [f"{base}.{g}" for g in range(1, generation + 1)]:
                try:
                    self.client.delete_registered_model(stale)
                except (MlflowException, OSError):
                    pass  # gone already, or left for the next breaker (or `models unlock`)

    # ---- holding it
    def _renew(self) -> None:
        """Bump the renewal counter if the lock is still ours; else note it lost (a store error propagates)."""
        with self._mutex:
            if self.lost:
                return
            held = self.read()
            if held is None or held.owner != self.owner:
                other = f"now held by {held.holder}" if held else "it no longer exists"
                self.lost = f"its lease ran out and another promoter broke it; {other}"
                return
            self._renewals += 1
            self.client.set_registered_model_tag(self.lock, "renewal", self._tags()["renewal"])

    def _keep_renewing(self) -> None:
        while not self._stop.wait(self.length / 3):
            try:
                self._renew()
            except (MlflowException, OSError):
                continue  # the store hiccuped: the next tick tries again, well within the lease
            if self.lost:
                return

    def confirm(self, doing: str) -> None:
        """Renew now and raise PromotionError if the lock is no longer ours: call before each decisive write."""
        self._renew()
        if self.lost:
            self._reported = True
            raise PromotionError(
                f"registered model {self.name}: lost promotion lock {self.lock} before {doing} ({self.lost}); "
                f"aliases left as they were"
            )

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        try:
            with self._mutex:
                held = self.read()
                if held is not None and held.owner == self.owner:
                    self.client.delete_registered_model(self.lock)
                    return
        except (MlflowException, OSError):
            return  # left in place: waiters break it one lease from now
        if not self._reported:
            print(f"[fer-tune] warning: registered model {self.name}: promotion lock {self.lock} was no longer this "
                  f"promoter's at release; left as it is", flush=True)  # fmt: skip


def read_lock(client: MlflowClient, lock: str) -> Held | None:
    """`lock` as it is now; None where there is none (a store error propagates)."""
    try:
        model = client.get_registered_model(lock)
    except MlflowException as err:
        if err.error_code in ABSENT:
            return None
        raise
    tags = model.tags
    try:
        lease_s = float(tags.get("lease_s", LEASE_S))
    except ValueError:
        lease_s = LEASE_S
    owner = tags.get("owner") or f"created{model.creation_timestamp}"  # a lock fer-tune wrote before leases
    return Held(owner, tags.get("renewal", ""), lease_s, tags.get("holder", "?"))


def unlock(client: MlflowClient, name: str) -> str:
    """Remove `name`'s promotion lock and any breaker's marker, whoever holds it; one line saying what was removed."""
    name = name.removesuffix(LOCK_SUFFIX)
    lock = name + LOCK_SUFFIX
    held = read_lock(client, lock)
    found = client.search_registered_models(filter_string=f"name LIKE '{lock}{BREAK_INFIX}%'")
    markers = [m.name for m in found if m.name.startswith(lock + BREAK_INFIX)]
    if held is not None:
        client.delete_registered_model(lock)
    for marker in markers:
        try:
            client.delete_registered_model(marker)
        except MlflowException as err:
            if err.error_code not in ABSENT:
                raise
    extra = f" and {len(markers)} lock breaker marker(s)" if markers else ""
    if held is None:
        return f"registered model {name}: no promotion lock ({lock} does not exist)" + (
            f"; removed {extra.removeprefix(' and ')}" if markers else ""
        )
    renewed = held.renewal.split(" ", 1)[-1] if " " in held.renewal else "never"
    return f"removed {lock}{extra} (held by {held.holder}, last renewed {renewed})"
