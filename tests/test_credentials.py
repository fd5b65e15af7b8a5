"""Credentials in a tracking URI (http://user:password@host) reach no file and no MLflow record.

Error messages mask them (tests/test_preflight.py); here a whole tracked sweep runs against an
`mlflow server` named with a password in the space file, and every file fer-tune writes for the
sweep and every param, tag and text artifact of every run and model version is searched for it.
"""

import json

import pytest
from mlflow import MlflowClient
from mlflow_helpers import free_port, serving, subprocess_env
from test_mlflow_stores import mlflow_server

from fer_tune.cli.sweep import run_space
from fer_tune.search.sweep_file import load_space

pytestmark = pytest.mark.integration

SECRET = "pa55-Wr0d-7f3c"  # the password; "fer" the user name


def leaks(text: str) -> bool:
    return SECRET in text


def text_artifacts(client: MlflowClient, run_id: str, folder: str | None = None) -> list[str]:
    """The paths of a run's text artifacts (tables, JSON, markdown, YAML), in every folder."""
    paths = []
    for artifact in client.list_artifacts(run_id, folder):
        if artifact.is_dir:
            paths += text_artifacts(client, run_id, artifact.path)
        elif artifact.path.endswith((".json", ".jsonl", ".md", ".csv", ".yaml", ".txt")):
            paths.append(artifact.path)
    return paths


@pytest.mark.slow(seconds=60)
def test_a_password_in_the_tracking_uri_reaches_no_file_and_no_mlflow_record(
    ray_local, workdir, blob_csv, monkeypatch, capsys
):
    port = free_port()
    uri = f"http://fer:{SECRET}@127.0.0.1:{port}"
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # the space's own URI is the one used
    for handed_over in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):  # restored after the test
        monkeypatch.setenv(handed_over, "")
        monkeypatch.delenv(handed_over)
    (workdir / "secret.yaml").write_text(
        "name: secret\ntrainable: curve\nsearch: {algorithm: grid}\npruner: {name: none}\n"
        "budget: {num_samples: 1, max_epochs: 1, max_concurrent: 1}\n"
        f"mlflow: {{tracking_uri: '{uri}', experiment: fer-secret, register_as: fer-secret}}\n"
        "space:\n  model: basic\n  batch_size: 16\n  augmentation: none\n"
    )
    env = subprocess_env(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    with serving(mlflow_server(workdir, port), "/health", port, cwd=workdir, env=env) as base:
        sweep, tracking = run_space(load_space("secret.yaml"), data_source=str(blob_csv), storage=workdir / "ray")
        assert tracking.registration.alias == "champion"  # the whole sweep was tracked, to the registry

        console = capsys.readouterr()
        assert not leaks(console.out + console.err)  # MLflow's "View run ... at: URI" lines included
        folder = workdir / "results" / sweep.name
        assert {"sweep.json", "tracking.json", "trials.csv"} <= {path.name for path in folder.iterdir()}
        # Every file the sweep left, Ray's own pickles (tuner.pkl, the searcher's state) and MLflow's included
        every = [path for path in workdir.rglob("*") if path.is_file() and path.name != "secret.yaml"]
        assert any(path.name == "tuner.pkl" for path in every), "Ray's experiment was not where expected"
        assert [str(path) for path in every if SECRET.encode() in path.read_bytes()] == []
        assert "fer:***@127.0.0.1" in (folder / "sweep.json").read_text()  # the space file's URI is kept, masked

        client = MlflowClient(base)  # the same server, without credentials
        (workdir / "download").mkdir()
        experiment = client.get_experiment_by_name("fer-secret")
        runs = client.search_runs([experiment.experiment_id])
        assert {"champion", "sweep", "trial"} <= {run.data.tags["fer_tune.role"] for run in runs}
        for run in runs:
            assert not leaks(json.dumps(run.data.params)), run.data.params
            assert not leaks(json.dumps(run.data.tags)), run.data.tags
            for path in text_artifacts(client, run.info.run_id):
                local = client.download_artifacts(run.info.run_id, path, str(workdir / "download"))
                assert not leaks(open(local).read()), path
        version = client.get_model_version("fer-secret", tracking.registration.version)
        assert not leaks(json.dumps(version.tags)) and not leaks(version.source or "")


@pytest.mark.parametrize(
    "uri, kept, env",
    [
        ("http://fer:p%40ss/w#?@x@127.0.0.1:5000/p", "http://127.0.0.1:5000/p",
         {"MLFLOW_TRACKING_USERNAME": "fer", "MLFLOW_TRACKING_PASSWORD": "p@ss/w#?@x"}),
        ("postgresql+psycopg://fer:pw@db:5432/x?sslmode=require", "postgresql+psycopg://fer@db:5432/x?sslmode=require",
         {"PGPASSWORD": "pw"}),
        ("https://TOKEN@host/p", "https://TOKEN@host/p", {}),  # a bare token stays (MLflow's basic auth needs both)
        ("sqlite:///a@b.db", "sqlite:///a@b.db", {}),
    ],
)  # fmt: skip
def test_a_uris_password_goes_to_the_environment_not_into_the_uri(monkeypatch, uri, kept, env):
    """What keeps the URI (Ray's pickles, callbacks, MLflow's lines) then keeps no password."""
    from fer_tune.tracking.store import tracking_uri

    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "PGPASSWORD"):
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    assert tracking_uri() == kept
    import os

    assert {k: os.environ[k] for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "PGPASSWORD")
            if k in os.environ} == env  # fmt: skip
    assert os.environ["MLFLOW_TRACKING_URI"] == kept  # what Ray's workers and servers inherit
