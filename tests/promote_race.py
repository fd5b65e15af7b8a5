"""One of two racing promoters (tests/test_team.py): `python promote_race.py URI VERSION GO ROUNDS GAP`.

Prints `ready` once imported, waits for the file GO to hold a start time, then promotes, round r,
VERSION of registered model race-r at START + r * GAP (wall time, as its rival does) with the
accuracy the test put in the version's `accuracy` tag; prints `r alias` per round.
"""

import sys
import time
from pathlib import Path

from mlflow import MlflowClient

from fer_tune.tracking.promotion import CHAMPION, promote

uri, version, go, rounds, gap = sys.argv[1], sys.argv[2], Path(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
client = MlflowClient(uri, registry_uri=uri)


def champion(name: str):
    try:
        current = client.get_model_version_by_alias(name, CHAMPION)
    except Exception:  # no champion yet
        return None
    time.sleep(0.05)  # widen the read-compare-write window a real promoter has (it may re-score the champion)
    return str(current.version), float(current.tags["accuracy"])


print("ready", flush=True)
while not go.is_file() or not go.read_text().strip():
    time.sleep(0.05)
start = float(go.read_text())
for r in range(rounds):
    name = f"race-{r}"
    accuracy = float(client.get_model_version(name, version).tags["accuracy"])
    time.sleep(max(0.0, start + r * gap - time.time()))
    alias, _ = promote(client, name, version, accuracy, lambda: champion(name))  # noqa: B023
    print(r, alias, flush=True)
