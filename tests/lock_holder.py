"""One promoter, for tests/test_promotion_lock.py: `python lock_holder.py URI NAME VERSION [--hold FILE] [--go FILE]
[--barrier DIR N]`.

Promotes VERSION of registered model NAME with the accuracy in the version's `accuracy` tag, under
tracking/promotion.py's lease (scaled down by FER_TUNE_LOCK_LEASE_S / FER_TUNE_LOCK_WAIT_S in the
environment). Prints, one line each, in this order:

    ready                      imported; with --go, waits for that file before promoting
    delete-lock                each time this process deletes NAME.promotion-lock (before `in-lock`: it broke a lease)
    in-lock TIME               holding the lock (TIME: wall clock), while reading the champion
    done ALIAS                 promoted; the lock is released

With --hold, it stays in the lock (renewing its lease) until FILE exists: a slow holder, or one the
test SIGKILLs there. With --barrier, an attempt to create a lock breaker's marker waits (30 s at
most) until N processes have come to that point, so N waiters contend for one expired lease at once.
"""

import argparse
import os
import sys
import time
from pathlib import Path

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from fer_tune.tracking.promotion import BREAK_INFIX, CHAMPION, LOCK_SUFFIX, promote

parser = argparse.ArgumentParser()
parser.add_argument("uri")
parser.add_argument("name")
parser.add_argument("version")
parser.add_argument("--hold", type=Path)
parser.add_argument("--go", type=Path)
parser.add_argument("--barrier", nargs=2)
args = parser.parse_args()
client = MlflowClient(args.uri, registry_uri=args.uri)


def wait_for(path: Path, limit_s: float = 600) -> None:
    deadline = time.monotonic() + limit_s
    while not path.exists():
        if time.monotonic() > deadline:
            sys.exit(f"lock_holder: {path} did not appear in {limit_s:.0f} s")
        time.sleep(0.05)


if args.barrier:  # a fault injection of timing only: what the client is asked is unchanged
    folder, count = Path(args.barrier[0]), int(args.barrier[1])
    create = client.create_registered_model

    def create_at_once(name, *rest, **named):
        if BREAK_INFIX in name:
            (folder / str(os.getpid())).touch()
            deadline = time.monotonic() + 30
            while len(list(folder.iterdir())) < count and time.monotonic() < deadline:
                time.sleep(0.01)
        return create(name, *rest, **named)

    client.create_registered_model = create_at_once

delete = client.delete_registered_model


def delete_and_say(name, *rest, **named):
    if name == args.name + LOCK_SUFFIX:
        print("delete-lock", flush=True)
    return delete(name, *rest, **named)


client.delete_registered_model = delete_and_say


def champion():
    print("in-lock", time.time(), flush=True)
    if args.hold:
        wait_for(args.hold)
    try:
        current = client.get_model_version_by_alias(args.name, CHAMPION)
    except MlflowException as err:
        if err.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise
    return str(current.version), float(current.tags["accuracy"])


accuracy = float(client.get_model_version(args.name, args.version).tags["accuracy"])
print("ready", flush=True)
if args.go:
    wait_for(args.go)
alias, _ = promote(client, args.name, args.version, accuracy, champion)
print("done", alias, flush=True)
