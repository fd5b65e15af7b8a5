"""Read an earlier, tracked sweep back from MLflow for --warm-start (fer_tune.search.warm_start).

    sweep = read_tracked("quick-20261201-101500", "val_accuracy", uri)   # an EarlierSweep, or None

The parent run (tags fer_tune.sweep, fer_tune.role = sweep) holds the data fingerprint as a tag
and sweep.json as an artifact (the space it searched); each trial's child run holds its full
TrainConfig as params and the metric per epoch (step = epoch).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from fer_tune.search.warm_start import EarlierSweep, EarlierTrial
from fer_tune.tracking.runs import ROLE_TAG, SWEEP_TAG, TRIAL_TAG
from fer_tune.uris import redact

FINGERPRINT_TAG = "fer_tune.data_fingerprint"
WARM_START_TAG = "fer_tune.warm_start"  # on a warm-started sweep's parent run: the sweeps it was seeded from
WARM_ANY_DATA_TAG = "fer_tune.warm_start_any_data"


def read_tracked(name: str, metric: str, uri: str) -> EarlierSweep | None:
    """Sweep `name` from the MLflow store at `uri`; None where the store holds no finished parent run of it."""
    client = MlflowClient(tracking_uri=uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    if not experiments:
        return None
    query = f"tags.`{SWEEP_TAG}` = '{name}' and tags.`{ROLE_TAG}` = 'sweep'"
    parents = client.search_runs(experiments, query, max_results=1, order_by=["attributes.start_time ASC"])
    if not parents:
        return None
    parent = parents[0]
    meta = _sweep_json(client, parent.info.run_id)
    if meta is None:  # not finished: its space is not recorded
        return None
    children = client.search_runs(
        [parent.info.experiment_id],
        f"tags.`mlflow.parentRunId` = '{parent.info.run_id}' and tags.`{ROLE_TAG}` = 'trial'",
        max_results=10000,
    )
    names = tuple(p["name"] for p in meta["space"].get("space", []))
    trials = []
    for child in children:
        history = client.get_metric_history(child.info.run_id, metric)
        trials.append(
            EarlierTrial(
                trial_id=child.data.tags.get(TRIAL_TAG, child.info.run_id),
                params={n: child.data.params.get(n) for n in names},
                curve={int(m.step): float(m.value) for m in history},
                completed=child.info.status == "FINISHED",
            )
        )
    return EarlierSweep(
        name,
        meta["space"]["name"],
        parent.data.tags.get(FINGERPRINT_TAG),
        names,
        tuple(trials),
        f"MLflow {redact(uri)}",
    )


def _sweep_json(client: MlflowClient, run_id: str) -> dict | None:
    with tempfile.TemporaryDirectory() as folder:
        try:
            path = client.download_artifacts(run_id, "sweep.json", folder)
        except (MlflowException, OSError):
            return None
        return json.loads(Path(path).read_text())
