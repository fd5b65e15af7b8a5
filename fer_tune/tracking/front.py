"""A multi-objective sweep's front in the model registry: `register_front(sweep, runs, registration)`.

Runs after `promote_best` (fer_tune.tracking.champion), which registers the front member the
`champion:` rule picks and decides its alias exactly as for a single objective. Every other front
member is scored on the test split, logged in a child run named front-<trial> and registered as
a version of the same model without an alias. Every front version is tagged with its objectives
(`objective.<metric>`) and `front_sweep`, so `fer-tune models list` can show them. The parent run
gets pareto.csv and pareto.png with the rest of the results folder (Tracker.finish).
"""

from __future__ import annotations

import dataclasses

from mlflow.exceptions import MlflowException

from fer_tune.core.classifier import Predictor, build_model
from fer_tune.core.config import make_train_config
from fer_tune.core.metrics import evaluate
from fer_tune.search.pareto import front_members, trial_values
from fer_tune.search.sweep import Sweep
from fer_tune.tracking.champion import Registration, _metadata, log_model
from fer_tune.tracking.runs import SweepRuns

OBJECTIVE_TAG = "objective."  # objective.val_accuracy, objective.latency_ms, ... on each front version
FRONT_TAG = "front_sweep"  # the sweep whose front a version belongs to


def register_front(sweep: Sweep, runs: SweepRuns, registration: Registration | None) -> list[str]:
    """Register every front member not registered yet; returns the versions of the whole front."""
    space, name = sweep.space, sweep.space.mlflow.register_as
    done = _registered(runs, name, sweep.name)
    if registration is not None and sweep.best is not None:
        done.setdefault(sweep.best.trial_id, registration.version)
    versions = []
    for record in front_members(sweep.records, space):
        version = done.get(record.trial_id) or _register(sweep, runs, record)
        values = trial_values(record)
        tags = {f"{OBJECTIVE_TAG}{o.metric}": f"{values.get(o.metric)!r}" for o in space.objective_list}
        for key, value in {**tags, FRONT_TAG: sweep.name, "front_trial_id": record.trial_id}.items():
            runs.client.set_model_version_tag(name, version, key, value)
        versions.append(version)
    return versions


def _registered(runs: SweepRuns, name: str, sweep: str) -> dict[str, str]:
    """trial id -> version for this sweep's front versions already in the registry (a re-run of this step)."""
    try:
        found = runs.client.search_model_versions(f"name = '{name}' and tags.{FRONT_TAG} = '{sweep}'")
    except MlflowException:  # no such registered model yet
        return {}
    return {v.tags["front_trial_id"]: str(v.version) for v in found if "front_trial_id" in v.tags}


def _register(sweep: Sweep, runs: SweepRuns, record) -> str:
    data, name = sweep.data, sweep.space.mlflow.register_as
    state = sweep.state_of(record)
    config = make_train_config(state["config"], where=f"trial {record.trial_id} checkpoint")
    model = build_model(config, data.num_classes, data.mean, data.std)
    model.load_state_dict(state["model"])
    split_name, split = ("test", data.test) if data.test is not None else ("validation", data.validation)
    scores = evaluate(model, split, data.num_classes, tta=config.tta)
    meta = _metadata(dataclasses.replace(sweep, best=record), state, config, scores, split_name)
    run_id = runs.child(f"front-{record.trial_id}", f"front-{record.trial_id}", params=lambda: config.model_dump())
    runs.client.log_metric(run_id, "test_accuracy", scores["accuracy"])
    runs.client.log_metric(run_id, "test_macro_f1", scores["macro_f1"])
    version = log_model(runs, run_id, Predictor(model, config.tta).eval(), split, meta, name)
    tags = {
        "test_accuracy": f"{scores['accuracy']:.6f}",
        "data_fingerprint": data.fingerprint(),
        "eval_split": split_name,
        "tta": config.tta,
        "trial_id": record.trial_id,
        "classes": ",".join(data.classes),
    }
    for key, value in tags.items():
        runs.client.set_model_version_tag(name, version, key, value)
    return version
