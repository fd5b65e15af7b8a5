"""A sweep's data as an MLflow dataset input: what the runs table's Dataset column shows.

    log_dataset(client, [parent_id, *child_ids], data)   # name, source, digest, split counts

The digest is the data's fingerprint (FerDataset.fingerprint: the same 16 hex digits as the
runs' `fer_tune.data_fingerprint` tag and the registered model's `data_fingerprint`), the profile
holds the image count of each split and class, and the source says where the data came from: a file
or folder (`local`, its absolute path), or fer-tune's synthetic generator (`code`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities import Dataset, DatasetInput, InputTag
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

from fer_tune.data import FerDataset

CONTEXT = "training"  # the runs table shows it beside the name: what the run did with the data
MAX_NAME = 500  # MLflow's datasets.name column


def dataset_entity(data: FerDataset) -> Dataset:
    """The MLflow dataset for `data`: named by its source, digest = its fingerprint, profile = its split counts."""
    source = data.source
    path = Path(source)
    if path.exists():
        name, kind, where = path.name, "local", str(path.resolve())
    else:  # "synthetic(n=4000, seed=0)", or a source that names no file (a test's in-memory data)
        name, kind, where = source, "code", source
    counts = data.counts()
    profile = {"splits": {split: sum(by_class.values()) for split, by_class in counts.items()}, "classes": counts}
    return Dataset(
        name=name[:MAX_NAME],
        digest=data.fingerprint(),
        source_type=kind,
        source=json.dumps({"uri": where}),
        profile=json.dumps(profile),
    )


def log_dataset(client: MlflowClient, run_ids: Iterable[str], data: FerDataset) -> None:
    """Log `data` as the training dataset input of each run (MLflow keeps one copy of the dataset)."""
    entity = dataset_entity(data)
    for run_id in run_ids:
        client.log_inputs(run_id, [DatasetInput(entity, [InputTag(MLFLOW_DATASET_CONTEXT, CONTEXT)])])
