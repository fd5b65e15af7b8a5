"""A team's tracking: concurrent promotion on SQLite and PostgreSQL, sweeps against `mlflow server` on PostgreSQL."""

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow_helpers import Outage, driver_env, free_port, serving, subprocess_env
from services import postgres_database

from fer_tune.tracking.promotion import CHALLENGER, CHAMPION, LOCK_SUFFIX, beats

HERE = Path(__file__).parent
ROUNDS = 9
# Per round, the accuracies of version 1 and version 2: ties, and either one better.
ACCURACIES = [(0.5, 0.5), (0.6, 0.5), (0.5, 0.6)]


def test_beats_is_strict_and_a_tie_goes_to_the_earlier_version():
    assert beats(0.5, "3", None)
    assert beats(0.6, "3", ("2", 0.5)) and not beats(0.4, "3", ("2", 0.5))
    assert beats(0.5, "1", ("2", 0.5)) and not beats(0.5, "3", ("2", 0.5))


def race(uri: str, folder: Path) -> None:
    """Two promoter processes, each round started at the same instant, on ROUNDS fresh registered models."""
    client = MlflowClient(uri, registry_uri=uri)
    experiment = client.create_experiment("race", artifact_location=(folder / "artifacts").as_uri())
    run = client.create_run(experiment).info.run_id
    for r in range(ROUNDS):
        client.create_registered_model(f"race-{r}")
        for version, accuracy in zip(("1", "2"), ACCURACIES[r % len(ACCURACIES)]):
            created = client.create_model_version(f"race-{r}", source=f"runs:/{run}/model", run_id=run)
            assert str(created.version) == version
            client.set_model_version_tag(f"race-{r}", version, "accuracy", str(accuracy))
    go = folder / "go"
    promoters = [
        subprocess.Popen(
            [sys.executable, str(HERE / "promote_race.py"), uri, version, str(go), str(ROUNDS), "0.5"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=subprocess_env(),
        )  # fmt: skip
        for version in ("1", "2")
    ]
    for p in promoters:  # both imported: start them together
        assert p.stdout.readline().strip() == "ready", p.communicate()[1][-2000:]
    go.write_text(str(time.time() + 1))
    outputs = [p.communicate(timeout=120) for p in promoters]
    for p, (out, err) in zip(promoters, outputs):
        assert p.returncode == 0, err[-2000:]
        assert len(out.splitlines()) == ROUNDS, out
    for r in range(ROUNDS):
        one, two = ACCURACIES[r % len(ACCURACIES)]
        winner, loser = ("2", "1") if two > one else ("1", "2")  # a tie: version 1 was registered first
        model = client.get_registered_model(f"race-{r}")
        aliases = {alias: str(version) for alias, version in model.aliases.items()}
        assert aliases == {CHAMPION: winner, CHALLENGER: loser}, (r, one, two, aliases)
    assert not [m.name for m in client.search_registered_models() if m.name.endswith(LOCK_SUFFIX)]


@pytest.mark.integration
@pytest.mark.slow(seconds=30)
def test_two_promoters_racing_on_sqlite(tmp_path):
    race(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path)


@pytest.mark.integration
@pytest.mark.slow(seconds=30)
def test_two_promoters_racing_on_postgresql(tmp_path):
    with postgres_database() as uri:
        race(uri, tmp_path)


def postgres_server(store: str, folder: Path, port: int) -> list[str]:
    """README "Team setup"'s `mlflow server`: a PostgreSQL store, artifacts proxied by the server."""
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", store]
    command += ["--artifacts-destination", str(folder / "artifacts"), "--serve-artifacts"]
    return command + ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]


START_S = 600  # for `mlflow server` to create its tables and answer: minutes on a loaded 2-core machine


@pytest.mark.integration
@pytest.mark.slow(seconds=100)
def test_a_sweep_on_a_postgresql_server_restarted_mid_sweep(ray_local, workdir, blob_csv, monkeypatch, capsys):
    """A tracked sweep (curve trials) against `mlflow server` on PostgreSQL with served artifacts. The server
    stops after the first logged epoch and comes back while the sweep still runs (mlflow_helpers.Outage): the writer's
    retry delivers the pending records with the sweep's next record, before the sweep ends. Then the champion
    is downloaded, predicts and is served from it."""
    from PIL import Image

    from fer_tune.cli.main import main
    from fer_tune.cli.sweep import run_space
    from fer_tune.search.sweep_file import load_space

    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    (workdir / "team.yaml").write_text(
        "name: team\ntrainable: curve\nsearch: {algorithm: grid}\npruner: {name: none}\n"
        "mlflow: {register_as: fer-team}\nbudget: {num_samples: 1, max_epochs: 2, max_concurrent: 1}\n"
        "resources: {cpu: 1}\nspace:\n  model: basic\n  batch_size: 16\n  augmentation: none\n"
        "  lr: {grid: [3.0e-3, 2.0e-3, 1.0e-3, 5.0e-4]}\n"
    )
    env = subprocess_env(MLFLOW_TRACKING_URI=uri)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    pending = workdir / "results" / "t1" / "mlflow-pending.jsonl"
    with postgres_database() as store:
        outage = Outage(postgres_server(store, workdir, port), port, workdir, env, restart=True, timeout=START_S)
        outage.patch(monkeypatch)
        outage.start()
        try:
            _, tracking = run_space(load_space("team.yaml"), data_source=str(blob_csv), name="t1",
                                    storage=workdir / "ray")  # fmt: skip
            assert outage.phase == "back", outage.log
            kept = [i for i, (_, before, after) in enumerate(outage.log) if after and not before]
            delivered = [i for i, (_, before, after) in enumerate(outage.log) if before and not after]
            assert kept and delivered and kept[0] < delivered[0], outage.log  # kept on disk, then delivered
            kind = outage.log[delivered[0]][0]
            assert kind in ("metrics", "trial_end", "trial_open"), outage.log  # by a trial's record: mid-sweep
            assert any(k == "trial_open" for k, _, _ in outage.log[delivered[0] + 1 :]), outage.log  # trials to go
            assert not pending.exists() and tracking.pending == 0, tracking.message

            client = MlflowClient(uri)
            runs = team_runs(uri)
            trials = pd.read_csv(workdir / "results" / "t1" / "trials.csv")
            [parent] = [r for r in runs if r.data.tags["fer_tune.role"] == "sweep"]
            children = [r for r in runs if r.data.tags["fer_tune.role"] == "trial"]
            assert sorted(r.data.tags["ray.trial_id"] for r in children) == sorted(trials["trial_id"])
            assert len(children) == 4 and parent.info.status == "FINISHED"
            for run in children:
                assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id and run.info.status == "FINISHED"
                assert [m.step for m in client.get_metric_history(run.info.run_id, "val_accuracy")] == [1, 2]
            champion = client.get_model_version_by_alias("fer-team", "champion")
            assert champion.tags["sweep"] == "t1" and str(champion.version) == tracking.registration.version

            deploy = workdir / "deploy"
            assert main(["models", "download", "models:/fer-team@champion", "--to", str(deploy)]) == 0
            assert list(deploy.rglob("MLmodel"))
            Image.fromarray(np.full((60, 60), 128, np.uint8)).save(workdir / "face.png")
            capsys.readouterr()
            assert main(["predict", "--model", "models:/fer-team@champion", str(workdir / "face.png")]) == 0
            assert capsys.readouterr().out.startswith(f"{workdir / 'face.png'}: ")
            cli_env = {**env, "PYTHONPATH": str(HERE.parent)}
            serve_port = free_port()
            serve = [sys.executable, "-m", "fer_tune.cli", "serve", "--model", "models:/fer-team@champion"]
            with serving(
                serve + ["--port", str(serve_port)], "/api/model", serve_port, cwd=workdir, env=cli_env
            ) as web:
                with urllib.request.urlopen(f"{web}/api/model", timeout=30) as response:
                    info = json.load(response)
            assert (info["name"], str(info["version"])) == ("fer-team", str(champion.version))
        finally:
            outage.stop()
    assert list((workdir / "artifacts").rglob("model.pt2"))  # artifacts went through the server's proxy


def team_runs(uri: str):
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("team")
    return client.search_runs([experiment.experiment_id]) if experiment else []


# README "Team setup", run word for word; only these names are replaced by throwaway ones.
README = HERE.parent / "README.md"


def team_setup_commands() -> list[str]:
    """The command lines of README "Team setup"'s shell block (comments and blank lines left out)."""
    section = README.read_text().split("\n## Team setup\n", 1)[1]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    lines = block.replace("\\\n", " ").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


@pytest.mark.integration
@pytest.mark.slow(seconds=150)
def test_readme_team_setup_word_for_word(tmp_path):
    import os
    import shlex
    import shutil
    import uuid

    from services import postgres_or_skip

    if os.geteuid() != 0 or not shutil.which("pg_ctlcluster"):
        pytest.skip("PostgreSQL: README Team setup runs as root with Debian's pg_ctlcluster (.ci/run provides both)")
    postgres_or_skip()
    tag, port = uuid.uuid4().hex[:8], free_port()
    names = {
        "mlflow_user": f"team_user_{tag}", "mlflow_db": f"team_db_{tag}", "change-me": f"pw-{tag}",
        "/srv/mlflow-artifacts": str(tmp_path / "artifacts"), "0.0.0.0": "127.0.0.1", "5000": str(port),
        "mlflow-host": "127.0.0.1",
    }  # fmt: skip
    commands = []
    for line in team_setup_commands():
        for name, value in names.items():
            line = line.replace(name, value)
        commands.append(line)
    [install] = [c for c in commands if c.startswith("pip install")]
    assert (
        install == 'pip install "fer-tune[postgres]"'
        and '\npostgres = ["psycopg' in (HERE.parent / "pyproject.toml").read_text()
    )
    [server] = [i for i, c in enumerate(commands) if c.startswith("mlflow server")]
    database_steps, clients = [c for c in commands[:server] if c != install], commands[server + 1 :]

    (tmp_path / "search_spaces").mkdir()
    # The README's commands run word for word; the space they name is quick.yaml with curve trials instead of
    # CNN training (what this test checks is the server, the store and the registry, not the training).
    quick = (HERE.parent / "search_spaces" / "quick.yaml").read_text()
    assert "\ntrainable:" not in quick
    (tmp_path / "search_spaces" / "quick.yaml").write_text(quick.rstrip("\n") + "\ntrainable: curve\n")
    # `fer-tune run` joins the test run's Ray (tests/ray_cluster.py) rather than starting one of its own
    env = driver_env(PYTHONPATH=str(HERE.parent))
    env.pop("MLFLOW_TRACKING_URI", None)
    try:
        for command in database_steps:
            done = subprocess.run(["bash", "-ec", command], cwd=tmp_path, env=env, capture_output=True, text=True)
            assert done.returncode == 0, (command, done.stdout, done.stderr)
        with serving(shlex.split(commands[server]), "/health", port, cwd=tmp_path, env=env, timeout=START_S):
            done = subprocess.run(["bash", "-ec", "\n".join(clients)], cwd=tmp_path, env=env, capture_output=True,
                                  text=True, timeout=600)  # fmt: skip
            assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
            assert "(models:/fer-emotion@champion)" in done.stdout  # models list
            assert "View run" not in done.stdout + done.stderr  # MLflow's own URL lines: the console is fer-tune's
            experiment = MlflowClient(f"http://127.0.0.1:{port}").get_experiment_by_name("quick")
            assert experiment is not None and experiment.artifact_location.startswith("mlflow-artifacts:/")
        assert list((tmp_path / "artifacts").rglob("MLmodel"))
    finally:
        for sql in (
            f"DROP DATABASE IF EXISTS {names['mlflow_db']} WITH (FORCE)",
            f"DROP USER IF EXISTS {names['mlflow_user']}",
        ):
            subprocess.run(["su", "postgres", "-c", f'psql -qc "{sql}"'], capture_output=True)


@pytest.mark.integration
@pytest.mark.slow(seconds=30)
def test_a_server_whose_database_is_down_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    """The server answers /health, but PostgreSQL refuses it: the pre-flight says so in one line, in seconds."""
    import psycopg
    from services import postgres_admin

    from fer_tune.cli.main import main

    port = free_port()
    with postgres_database() as store:
        with serving(postgres_server(store, tmp_path, port), "/health", port, tmp_path, subprocess_env(), START_S):
            name = store.rsplit("/", 1)[1]
            uri = f"http://127.0.0.1:{port}"
            MlflowClient(uri).search_experiments(max_results=1)  # warm: a busy machine answers a first call slowly
            with psycopg.connect(postgres_admin(), autocommit=True) as connection:  # the database goes away
                connection.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
                connection.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", [name])
            start = time.monotonic()
            assert main(["models", "list", "--tracking-uri", uri]) == 1
            assert time.monotonic() - start < 30
    err = capsys.readouterr().err
    assert err.startswith(f"fer-tune: error: MLflow store {uri}: the server answers but its backend store fails (")
    assert err.count("\n") == 1 and "--backend-store-uri" in err, err


@pytest.mark.integration
@pytest.mark.slow(seconds=100)
def test_two_sweeps_at_once_into_one_server_and_one_model(tmp_path, blob_csv):
    """Two drivers, started together, track into one `mlflow server` on PostgreSQL under one registered model
    name: each trial is recorded once under its own sweep's parent, and the promotion ends with one champion
    (the better, or on a tie the version registered first) and the other version as challenger."""
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    env = driver_env(MLFLOW_TRACKING_URI=uri)  # both drivers join the test run's Ray
    (tmp_path / "pair.yaml").write_text(
        "name: pair\ntrainable: curve\nsearch: {algorithm: grid}\npruner: {name: none}\n"
        "mlflow: {register_as: fer-pair}\n"
        "budget: {num_samples: 1, max_epochs: 1, max_concurrent: 1}\nresources: {cpu: 1}\n"
        "space:\n  model: basic\n  batch_size: 16\n  augmentation: none\n  lr: {grid: [3.0e-3, 1.0e-3]}\n"
    )
    server = postgres_server
    with postgres_database() as store, serving(server(store, tmp_path, port), "/health", port, tmp_path, env, START_S):
        drivers = {
            name: subprocess.Popen(
                [sys.executable, "-m", "fer_tune.cli", "run", "pair.yaml", "--data", str(blob_csv), "--name", name],
                cwd=tmp_path,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )  # fmt: skip
            for name in ("left", "right")
        }
        for name, driver in drivers.items():
            output = driver.communicate(timeout=900)[0]
            assert driver.returncode == 0, (name, output[-3000:])
        client = MlflowClient(uri)
        experiment = client.get_experiment_by_name("pair").experiment_id
        for name in drivers:
            [parent] = client.search_runs(
                [experiment], f"tags.`fer_tune.role` = 'sweep' and tags.`fer_tune.sweep` = '{name}'"
            )
            children = client.search_runs(
                [experiment], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}' and tags.`fer_tune.role` = 'trial'"
            )
            trials = pd.read_csv(tmp_path / "results" / name / "trials.csv")
            assert sorted(r.data.tags["ray.trial_id"] for r in children) == sorted(trials["trial_id"]), name
        versions = {str(v.version): v for v in client.search_model_versions("name = 'fer-pair'")}
        assert len(versions) == 2
        accuracy = {k: client.get_run(v.run_id).data.metrics["test_accuracy"] for k, v in versions.items()}
        champion = max(versions, key=lambda k: (accuracy[k], -int(k)))
        aliases = {alias: str(v) for alias, v in client.get_registered_model("fer-pair").aliases.items()}
        assert aliases == {"champion": champion, "challenger": ({"1", "2"} - {champion}).pop()}, (aliases, accuracy)
