"""A finished trial's configuration found again from its record alone, to train it once more.

    found = find_trial("quick-20261121-101500/3f2a9c1e")   # SWEEP/TRIAL_ID, as trials.csv and MLflow name it
    found.config, found.space, found.data_source, found.where

Where to look, in order: `results/<sweep>/` (sweep.json for the space and the data, then Ray's
own record of the trial, `<storage>/<sweep>/*_<trial_id>/params.json`, else its trials.csv row),
then the MLflow store (the trial's nested run holds its full resolved TrainConfig as params; the
sweep's parent run holds sweep.json). Training is seeded (fer_tune.core.training), so on a CPU
`fer-tune train --trial` reproduces the trial's metrics.
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fer_tune.constants import RAY_DIR, RESULTS_DIR
from fer_tune.core.config import TrainConfig, make_train_config, trial_point
from fer_tune.errors import FerTuneError
from fer_tune.names import check_name, check_sweep_name
from fer_tune.search.results import read_sweep_json, read_trials_csv, saved_space
from fer_tune.search.sweep_file import SpaceFile


@dataclass(frozen=True)
class FoundTrial:
    config: TrainConfig
    space: SpaceFile  # the sweep's space, as sweep.json recorded it
    data_source: str | None  # the sweep's --data, if it had one
    where: str  # where the configuration was read, for the console


def find_trial(ref: str, tracking_uri: str | None = None) -> FoundTrial:
    sweep, sep, trial_id = ref.partition("/")
    if not (sep and sweep and trial_id) or "/" in trial_id:
        raise FerTuneError(f"--trial {ref}: expected SWEEP/TRIAL_ID (a sweep's name and a trial_id of its trials.csv)")
    # Both parts are names: the sweep's is a folder under results/, and either reaches MLflow's filter string.
    check_sweep_name(sweep, "--trial SWEEP")
    check_name(trial_id, "--trial TRIAL_ID")
    if (RESULTS_DIR / sweep / "sweep.json").is_file():
        return _from_results(ref, sweep, trial_id)
    return _from_mlflow(ref, sweep, trial_id, tracking_uri)


def _from_results(ref: str, sweep: str, trial_id: str) -> FoundTrial:

    folder = RESULTS_DIR / sweep
    meta = read_sweep_json(folder / "sweep.json")
    space = saved_space(meta["space"], folder / "sweep.json")
    run = meta.get("run") or {}
    trials = read_trials_csv(folder / "trials.csv", space.metric).astype({"trial_id": str})
    rows = trials[trials["trial_id"] == trial_id]
    if rows.empty:
        known = ", ".join(trials["trial_id"].head(5))
        raise FerTuneError(f"--trial {ref}: no trial {trial_id} in {folder / 'trials.csv'} (it has {known}, ...)")
    storage = run.get("storage") or str(RESULTS_DIR / RAY_DIR)
    records = sorted(Path(storage).glob(f"{sweep}/*_{trial_id}/params.json")) if "://" not in storage else []
    if records:
        point, where = json.loads(records[0].read_text()), str(records[0])
    else:  # Ray's folder is gone (or remote): the row holds every parameter of the space
        row = rows.iloc[0]
        point = {p.name: _plain(row[p.name]) for p in space.space if p.name in row and not _missing(row[p.name])}
        where = f"{folder / 'trials.csv'}"
    point = {"epochs": space.budget.max_epochs, **trial_point(point)}  # as the sweep gave it (sampling adds it)
    return FoundTrial(make_train_config(point, where=where), space, run.get("data_source"), where)


def _from_mlflow(ref: str, sweep: str, trial_id: str, tracking_uri: str | None) -> FoundTrial:
    from mlflow import MlflowClient

    from fer_tune.tracking.runs import ROLE_TAG, SWEEP_TAG, TRIAL_TAG
    from fer_tune.tracking.store import check_store
    from fer_tune.tracking.store import tracking_uri as resolve_uri

    uri = resolve_uri(tracking_uri)
    try:
        check_store(uri, write=False)
    except FerTuneError as err:
        raise FerTuneError(f"--trial {ref}: no results/{sweep}/ here, and {err}") from None
    client = MlflowClient(uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    query = f"tags.`{SWEEP_TAG}` = '{sweep}' and tags.`{TRIAL_TAG}` = '{trial_id}' and tags.`{ROLE_TAG}` = 'trial'"
    runs = client.search_runs(experiments, query, max_results=1) if experiments else []
    if not runs:
        raise FerTuneError(
            f"--trial {ref}: no such trial in results/{sweep}/ nor in the MLflow store {_shown(uri)}; "
            "expected SWEEP/TRIAL_ID as `fer-tune results SWEEP` lists them"
        )
    trial = runs[0]
    parent = client.get_run(trial.data.tags["mlflow.parentRunId"])
    with tempfile.TemporaryDirectory() as folder:
        meta = json.loads(Path(client.download_artifacts(parent.info.run_id, "sweep.json", folder)).read_text())
    point = {key: _param(value) for key, value in trial.data.params.items()}
    where = f"MLflow run {trial.info.run_id}"
    space = saved_space(meta.get("space"), f"MLflow run {parent.info.run_id}'s sweep.json")
    return FoundTrial(make_train_config(point, where=where), space, (meta.get("run") or {}).get("data_source"), where)


def _param(text: str) -> Any:
    """An MLflow param (always a string) back to the value logged: YAML typing, and Python's None."""
    import yaml

    return None if text == "None" else yaml.safe_load(text)


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value  # numpy scalars from pandas


def _missing(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)  # a conditional parameter the trial did not take


def _shown(uri: str) -> str:
    from fer_tune.uris import redact

    return redact(uri)
