"""Where MLflow records go: the tracking URI, the artifact location, the experiment.

Used by the sweep's tracking and by serving (loading a registered model), so it imports
nothing of Ray's. Default store: sqlite:///results/mlflow.db with artifacts in
results/mlartifacts/; MLFLOW_TRACKING_URI or a space's `mlflow.tracking_uri` overrides it.
"""

from __future__ import annotations

import os
import re
from contextlib import contextmanager
from pathlib import Path

from mlflow import MlflowClient

from fer_tune.constants import RESULTS_DIR
from fer_tune.errors import FerTuneError

DEFAULT_DB = RESULTS_DIR / "mlflow.db"


def tracking_uri(configured: str | None = None) -> str:
    """MLFLOW_TRACKING_URI, else `configured` (the YAML's), else the SQLite file results/mlflow.db."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or configured
    if uri:
        return uri
    DEFAULT_DB.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{DEFAULT_DB.resolve()}"  # absolute: the store stays put if the cwd changes


def artifacts_dir(uri: str) -> Path | None:
    """mlartifacts/ beside a SQLite database (results/mlartifacts/ for the default store), else None."""
    if not uri.startswith("sqlite:///"):
        return None  # a server or another database keeps artifacts where it is configured to
    database = Path(uri.removeprefix("sqlite:///").split("?")[0])  # relative, or absolute after a 4th slash
    return database.resolve().parent / "mlartifacts"


def artifact_root(uri: str, experiment: str) -> str | None:
    """Where a new experiment's artifacts go: artifacts_dir/<experiment>/, or the store's choice."""
    folder = artifacts_dir(uri)
    return (folder / re.sub(r"[^\w.-]+", "_", experiment)).as_uri() if folder else None


def experiment_id(client: MlflowClient, name: str, uri: str) -> str:
    """The experiment `name`, created (with its artifact root) or restored from the trash as needed."""
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        # The kind tag keeps MLflow 3's UI from treating the experiment as a GenAI one.
        tags = {"mlflow.experimentKind": "custom_model_development"}
        return client.create_experiment(name, artifact_location=artifact_root(uri, name), tags=tags)
    if experiment.lifecycle_stage == "deleted":
        client.restore_experiment(experiment.experiment_id)
    return experiment.experiment_id


@contextmanager
def fluent_tracking(uri: str):
    """Point MLflow's fluent API (mlflow.pytorch.log_model, model loading) at `uri` for a block.

    MLflow's set_tracking_uri also writes MLFLOW_TRACKING_URI into the environment and its
    reset deletes it, so the caller's value is put back by hand.
    """
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    saved = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # tqdm bars per model download
    try:
        with _use_tracking_uri(uri):
            yield
    finally:
        if saved is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = saved


def download_model(uri: str, store: str, dst: str | Path) -> str:
    """Download the MLflow model at `uri` (models:/NAME@ALIAS, models:/NAME/VERSION, runs:/...) into `dst`."""
    from mlflow.artifacts import download_artifacts
    from mlflow.exceptions import MlflowException

    try:
        # A registered version's source is a logged model (models:/m-...), which MLflow resolves
        # through the global tracking URI whatever is passed here: so set that too.
        with fluent_tracking(store):
            path = download_artifacts(artifact_uri=uri, dst_path=str(dst), tracking_uri=store, registry_uri=store)
    except (MlflowException, OSError, ValueError) as err:
        reason = (getattr(err, "message", None) or str(err)).strip().splitlines()[0]
        raise FerTuneError(f"{uri}: cannot load this model from {store} ({reason})") from None
    if not (Path(path) / "MLmodel").is_file():
        raise FerTuneError(f"{uri}: not an MLflow model (no MLmodel file)")
    return path
