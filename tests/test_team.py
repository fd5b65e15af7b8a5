"""A team's tracking: concurrent promotion on SQLite and PostgreSQL, sweeps against `mlflow server` on PostgreSQL."""

import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow_helpers import subprocess_env
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
def test_two_promoters_racing_on_sqlite(tmp_path):
    race(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path)


@pytest.mark.integration
def test_two_promoters_racing_on_postgresql(tmp_path):
    with postgres_database() as uri:
        race(uri, tmp_path)
