"""Direct links into the MLflow UI for the latest sweep: what `fer-tune ui` prints.

    ui_links(client, "http://127.0.0.1:5000")
    # ["latest sweep quick-20260105-101500: http://127.0.0.1:5000/#/experiments/1/runs?searchFilter=...",
    #  "its model fer-emotion version 3 (champion): http://127.0.0.1:5000/#/models/fer-emotion/versions/3"]

MLflow 3's UI opens on its GenAI welcome page, and an experiment on its Traces overview, which a
training sweep leaves empty; its runs are under "Training runs", the route
/#/experiments/<id>/runs (the UI's own `searchFilter` URL parameter narrows it to one sweep).
"""

from __future__ import annotations

from urllib.parse import quote

from mlflow import MlflowClient
from mlflow.entities import ViewType

from fer_tune.tracking.runs import ROLE_TAG, SWEEP_TAG


def runs_page(base: str, experiment_id: str, sweep: str | None = None) -> str:
    """The experiment's training-runs table, filtered to `sweep`'s runs when given."""
    url = f"{base}/#/experiments/{experiment_id}/runs"
    if sweep:
        url += "?searchFilter=" + quote(f"tags.`{SWEEP_TAG}` = '{sweep}'", safe="")
    return url


def model_page(base: str, name: str, version: str | None = None) -> str:
    return f"{base}/#/models/{quote(name, safe='')}" + (f"/versions/{version}" if version else "")


def ui_links(client: MlflowClient, base: str) -> list[str]:
    """Lines naming the latest sweep's runs page and the model it registered (none in an empty store)."""
    experiments = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ACTIVE_ONLY)]
    if not experiments:
        return []
    latest = client.search_runs(
        experiments, f"tags.`{ROLE_TAG}` = 'sweep'", max_results=1, order_by=["attributes.start_time DESC"]
    )
    if not latest:
        return []
    parent = latest[0]
    sweep = parent.data.tags.get(SWEEP_TAG, parent.info.run_name)
    lines = [f"latest sweep {sweep}: {runs_page(base, parent.info.experiment_id, sweep)}"]
    champion = client.search_runs(
        [parent.info.experiment_id], f"tags.`{SWEEP_TAG}` = '{sweep}' and tags.`{ROLE_TAG}` = 'champion'"
    )
    versions = client.search_model_versions(f"run_id = '{champion[0].info.run_id}'") if champion else []
    for version in versions:
        aliases = f" ({', '.join(version.aliases)})" if version.aliases else ""
        lines.append(
            f"its model {version.name} version {version.version}{aliases}: "
            f"{model_page(base, version.name, version.version)}"
        )
    return lines
