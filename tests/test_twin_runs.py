"""Two `fer-tune run --name twin` started together (issue 26, part 6): both checked the name before either wrote
anything, so the name is also claimed (a lock held for the run's life, fer_tune.search.plan.claim_name) and the
second refuses in one line, before Ray, instead of writing its trials into the first one's folders."""

import fcntl

import pytest
from conftest import forbid_ray

from fer_tune.cli.main import main
from fer_tune.search import plan

SPACE = "name: twin\ntrainable: curve\nspace:\n  model: basic\n  lr: 0.001\n"


@pytest.fixture
def space(workdir):
    (workdir / "twin.yaml").write_text(SPACE)
    return "twin.yaml"


def test_a_sweep_whose_name_another_run_holds_is_refused(workdir, space, capsys, monkeypatch):
    monkeypatch.setattr(plan, "_claimed", {})
    (workdir / "results" / plan.CLAIMS_DIR).mkdir(parents=True)
    with open(workdir / "results" / plan.CLAIMS_DIR / "twin.lock", "a") as other_run:
        fcntl.flock(other_run, fcntl.LOCK_EX | fcntl.LOCK_NB)  # what the first run holds while it runs
        assert main(["run", space, "--name", "twin", "--no-track"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--name twin: another fer-tune is running the sweep of that name" in err, err
    assert not (workdir / "results" / "twin").exists() and not (workdir / "results" / "ray").exists()


def test_a_twin_that_finished_while_this_run_claimed_the_name_is_seen(workdir, space, capsys, monkeypatch):
    """The name is checked again once claimed: a twin that ended between the first check and the claim left
    its folder, and this run refuses the name as taken."""
    monkeypatch.setattr(plan, "_claimed", {})
    claim = plan.claim_name

    def claim_as_the_twin_ends(name: str) -> None:
        (workdir / "results" / name).mkdir(parents=True)  # the twin's results, written as it ended
        claim(name)

    monkeypatch.setattr(plan, "claim_name", claim_as_the_twin_ends)
    assert main(["run", space, "--name", "twin", "--no-track"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--name twin: a sweep of that name exists already" in err, err


def test_the_claim_is_released_with_the_process(workdir, tmp_path):
    """A lock, not a file's existence: once its holder is gone (a killed run included) the name is free again."""
    import subprocess
    import sys

    holder = "from fer_tune.search.plan import claim_name; claim_name('twin')"
    subprocess.run([sys.executable, "-c", holder], cwd=workdir, check=True, timeout=120)
    lock = workdir / "results" / plan.CLAIMS_DIR / "twin.lock"
    assert lock.is_file()
    with open(lock, "a") as again:
        fcntl.flock(again, fcntl.LOCK_EX | fcntl.LOCK_NB)  # would raise BlockingIOError if still held


@pytest.mark.integration
@pytest.mark.slow(seconds=60)
def test_a_name_the_store_records_already_is_refused_before_ray(ray_local, workdir, blob_csv, capsys, monkeypatch):
    """results/NAME deleted, NAME run again: the MLflow store still records sweep NAME (its run, its registered
    version), where the new sweep would be filed and its promotion taken for a replay. Refused in one line
    before Ray; the store keeps what it had. Resuming is not refused."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (workdir / "first.yaml").write_text(SPACE + "budget: {num_samples: 1, max_epochs: 1}\n")
    argv = ["run", "first.yaml", "--name", "kept", "--data", str(blob_csv)]
    assert main(argv) == 0
    import shutil

    from mlflow import MlflowClient

    shutil.rmtree(workdir / "results" / "kept")
    shutil.rmtree(workdir / "results" / "ray" / "kept")
    capsys.readouterr()

    forbid_ray(monkeypatch)
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert (
        "--name kept: the MLflow store sqlite:///" in err and "/results/mlflow.db records a sweep of that name " in err
    )
    assert "already (run " in err and " of experiment twin), which this one would be filed under" in err
    client = MlflowClient("sqlite:///results/mlflow.db")
    [experiment] = [e.experiment_id for e in client.search_experiments() if e.name == "twin"]
    assert len(client.search_runs([experiment], "tags.`fer_tune.role` = 'sweep'")) == 1
    assert [str(v.version) for v in client.search_model_versions("name = 'fer-emotion'")] == ["1"]
    assert not (workdir / "results" / "kept").exists() and not (workdir / "results" / "ray" / "kept").exists()
