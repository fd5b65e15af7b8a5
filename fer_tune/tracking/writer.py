"""MLflow writes that survive an outage of the tracking store.

    writer = TrackingWriter(runs, Path("results/quick-20261122-101500/mlflow-pending.jsonl"))
    writer.write({"kind": "metrics", "trial": "3f2a_00001", "step": 3, "time": ..., "values": {...}})
    writer.flush()        # -> records still pending (0 when the store took them all)

Every write is a plain record. `write` applies it at once (MLflow's client retries a request a
few times with backoff); if the store cannot take it, the record goes to the pending file, and
so does every later record until a flush, tried again at most every RETRY_AFTER_S (doubling up
to RETRY_MAX_S), succeeds: records reach the store in the order they were made. What is still
pending at the end is written by `fer-tune results sync NAME` or by `--resume`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from mlflow.entities import Metric
from mlflow.exceptions import MlflowException

from fer_tune.tracking.runs import SweepRuns

STORE_ERRORS = (MlflowException, OSError)  # requests' errors are OSErrors too
RETRY_AFTER_S = 5.0
RETRY_MAX_S = 60.0


class TrackingWriter:
    def __init__(self, runs: SweepRuns, pending_file: str | Path):
        self.runs = runs
        self.pending_file = str(pending_file)
        self._retry_at = 0.0
        self._retry_after = RETRY_AFTER_S

    def __getstate__(self) -> dict:  # pickled with the experiment: an outage's clock does not survive
        return {"runs": self.runs, "pending_file": self.pending_file}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["runs"], state["pending_file"])

    @property
    def pending(self) -> int:
        path = Path(self.pending_file)
        return sum(1 for line in path.read_text().splitlines() if line.strip()) if path.is_file() else 0

    def write(self, record: dict[str, Any]) -> None:
        if self.pending and (time.monotonic() < self._retry_at or self.flush()):
            self._keep(record)  # the store is down, or records older than this one are not written yet
            return
        try:
            apply(self.runs, record)
        except STORE_ERRORS:
            self._outage()
            self._keep(record)

    def flush(self) -> int:
        """Write the pending records in order; returns how many are still pending."""
        path = Path(self.pending_file)
        if not path.is_file():
            return 0
        records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        for index, record in enumerate(records):
            try:
                apply(self.runs, record)
            except STORE_ERRORS:
                self._outage()
                self._rewrite(records[index:])
                return len(records) - index
        path.unlink()
        self._retry_after = RETRY_AFTER_S
        return 0

    def _keep(self, record: dict) -> None:
        path = Path(self.pending_file)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as file:
            file.write(json.dumps(record) + "\n")

    def _rewrite(self, records: list[dict]) -> None:
        temporary = Path(f"{self.pending_file}.tmp")
        temporary.write_text("".join(json.dumps(r) + "\n" for r in records))
        temporary.replace(self.pending_file)

    def _outage(self) -> None:
        self._retry_at = time.monotonic() + self._retry_after
        self._retry_after = min(RETRY_MAX_S, self._retry_after * 2)
        self.runs.forget()  # ids cached before the outage stay valid, but a half-made run may not


def apply(runs: SweepRuns, record: dict[str, Any]) -> None:
    """Carry out one record against the store (idempotent: a replay finds its runs again by tag)."""
    kind = record["kind"]
    if kind == "sweep_open":
        runs.reopen(runs.parent())
    elif kind == "trial_open":
        runs.reopen(_trial_run(runs, record))
    elif kind == "metrics":
        metrics = [Metric(key, value, record["time"], record["step"]) for key, value in record["values"].items()]
        runs.client.log_batch(_trial_run(runs, record), metrics=metrics)
    elif kind == "trial_end":
        run_id = _trial_run(runs, record)
        if record.get("error_text"):
            runs.client.log_text(run_id, record["error_text"], "error.txt")
        runs.end(run_id, record["status"], **record.get("tags", {}))
    elif kind == "sweep_end":
        runs.end(runs.parent(), record["status"], **record.get("tags", {}))
    else:
        raise ValueError(f"unknown tracking record {kind!r}")


def _trial_run(runs: SweepRuns, record: dict[str, Any]) -> str:
    """The run of the record's trial (a search trial, or a `select:` re-run with its `run_tags`), made if need be."""
    return runs.child(
        record["name"],
        record.get("role", "trial"),  # records kept before re-runs existed have no role: trials
        key=record["trial"],
        params=lambda: record.get("params", {}),
        tags=record.get("run_tags"),
    )
