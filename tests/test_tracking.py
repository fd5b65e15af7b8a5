"""A real sweep tracked in a real MLflow store (SQLite default), and its registered model in use.

One small sweep (module fixture) is shared: the suite's one tracked sweep that trains real CNNs and whose
registered champion is then downloaded, predicts and is served. 3 trials of up to 3 epochs under ASHA on
the blob data (see SPACE): lr 3e-3 learns the blobs, lr 1e-5 is stopped at the first rung, lr 1e8 diverges.
The sweeps the promotion tests add run curve trials (trainables/curve.py): their checkpoint is an untrained
model, which cannot beat the trained champion.
"""

import dataclasses
import json
import shutil
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from mlflow import MlflowClient
from mlflow_helpers import free_port, serving, subprocess_env
from PIL import Image

from fer_tune.cli.main import main
from fer_tune.cli.sweep import run_space
from fer_tune.constants import EMOTIONS
from fer_tune.core.config import TrainConfig
from fer_tune.search.sweep_file import load_space

pytestmark = pytest.mark.integration

MODEL = "fer-test"
# One trial of each outcome, in this order (max_concurrent 1 makes ASHA's decision deterministic):
# lr 3e-3 completes its 3 epochs; lr 1e-5 is stopped at the first rung, below the first trial;
# lr 1e8 diverges in its first epoch and fails.
SPACE = f"""name: tracked
search: {{algorithm: grid}}
pruner: {{name: asha, grace_period: 1, reduction_factor: 2}}
budget: {{num_samples: 1, max_epochs: 3, max_concurrent: 1}}
mlflow: {{experiment: fer-tracked, register_as: {MODEL}}}
space:
  model: basic
  batch_size: 16
  augmentation: none
  dropout: 0.0
  lr: {{grid: [3.0e-3, 1.0e-5, 1.0e8]}}
"""


@dataclass
class Tracked:
    folder: Path
    sweep: object  # fer_tune.search.sweep.Sweep
    registration: object  # fer_tune.tracking.champion.Registration
    uri: str
    client: MlflowClient

    def runs(self, role: str):
        experiment = self.client.get_experiment_by_name("fer-tracked")
        return self.client.search_runs([experiment.experiment_id], f"tags.`fer_tune.role` = '{role}'")


@pytest.fixture(scope="module")
def tracked(tmp_path_factory, blob_csv):
    from fer_tune.search.cluster import connect_ray

    folder = tmp_path_factory.mktemp("tracked")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)  # the default store is results/mlflow.db in the working directory
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        patch.setenv("FER_TUNE_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
        connect_ray("local")  # as the CLI starts it: on loopback only; joins a running one
        (folder / "tracked.yaml").write_text(SPACE)
        space = load_space("tracked.yaml")
        sweep, tracking = run_space(space, data_source=str(blob_csv), storage=folder / "ray", verbose=0)
        registration = tracking.registration
        uri = f"sqlite:///{folder / 'results' / 'mlflow.db'}"
        yield Tracked(folder, sweep, registration, uri, MlflowClient(uri))


@pytest.mark.slow(seconds=40)
def test_one_parent_run_and_a_nested_child_per_trial(tracked):
    sweep, client = tracked.sweep, tracked.client
    experiment = client.get_experiment_by_name("fer-tracked")
    assert experiment.artifact_location == (tracked.folder / "results" / "mlartifacts" / "fer-tracked").as_uri()
    [parent] = tracked.runs("sweep")
    assert parent.info.status == "FINISHED" and parent.info.run_name == sweep.name
    assert parent.data.tags["fer_tune.sweep"] == sweep.name
    assert parent.data.tags["fer_tune.space_path"] == "tracked.yaml"
    assert parent.data.tags["fer_tune.data_fingerprint"] == sweep.data.fingerprint()
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"sweep.json", "leaderboard.md", "trials.csv", "curves.png", "data_summary.json", "space"} <= artifacts
    assert [a.path for a in client.list_artifacts(parent.info.run_id, "space")] == ["space/tracked.yaml"]

    children = {run.data.tags["ray.trial_id"]: run for run in tracked.runs("trial")}
    trials = sweep.trials.set_index("trial_id")
    assert set(children) == set(trials.index)
    curves = pd.read_csv(sweep.out_dir / "curves.csv")
    expected_status = {"completed": "FINISHED", "stopped early": "KILLED", "failed": "FAILED"}
    for trial_id, run in children.items():
        row = trials.loc[trial_id]
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.info.status == expected_status[row["status"]], trial_id
        assert set(run.data.params) == set(TrainConfig.model_fields)  # the full resolved config
        assert float(run.data.params["lr"]) == row["lr"] and run.data.params["model"] == "basic"
        curve = curves[curves["trial_id"] == trial_id]
        history = client.get_metric_history(run.info.run_id, "val_accuracy")
        assert [m.step for m in history] == list(curve["epoch"]) == list(range(1, row["epochs_run"] + 1))
        assert [m.value for m in history] == pytest.approx(list(curve["val_accuracy"]))
        if row["status"] == "stopped early":
            assert run.data.tags["fer_tune.stopped_at_epoch"] == str(row["epochs_run"])
        if row["status"] == "failed":
            assert run.data.tags["fer_tune.error"].startswith("Diverged: diverged at epoch 1 (train_loss nan")
            assert run.data.tags["fer_tune.error"].count("\n") == 0
    statuses = {r.info.status for r in children.values()}
    assert statuses == {"FINISHED", "KILLED", "FAILED"}, sweep.trials.to_string()


def test_best_checkpoint_is_scored_logged_and_registered_as_champion(tracked):
    sweep, client = tracked.sweep, tracked.client
    registration = tracked.registration
    assert (registration.name, registration.alias) == (MODEL, "champion")
    assert registration.accuracy > 0.3  # the lr 3e-3 trial learned the blobs; chance is 1/7
    version = client.get_model_version_by_alias(MODEL, "champion")
    assert str(version.version) == registration.version
    assert version.tags["promotion"].startswith("champion: first version")
    assert float(version.tags["test_accuracy"]) == pytest.approx(registration.accuracy, abs=1e-6)
    assert version.tags["data_fingerprint"] == sweep.data.fingerprint()
    assert version.tags["eval_split"] == "test" and version.tags["trial_id"] == sweep.best.trial_id

    [parent] = tracked.runs("sweep")
    [champion] = tracked.runs("champion")
    assert champion.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert champion.info.run_id == registration.run_id == version.run_id
    metrics = champion.data.metrics
    assert metrics["test_accuracy"] == pytest.approx(registration.accuracy)
    assert {f"test_{k}_{c}" for k in ("precision", "recall", "f1") for c in EMOTIONS} <= set(metrics)
    assert "test_macro_f1" in metrics and parent.data.metrics["test_accuracy"] == pytest.approx(registration.accuracy)
    figures = {a.path for a in client.list_artifacts(champion.info.run_id, "evaluation")}
    assert figures == {f"evaluation/{n}.png" for n in ("confusion_matrix", "misclassified", "learning_curves")}


def test_pyfunc_champion_predicts_probabilities(tracked, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracked.uri)
    model = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion")
    test = tracked.sweep.data.test
    probabilities = model.predict(test.images.unsqueeze(1).float().numpy())
    assert probabilities.shape == (len(test), len(EMOTIONS))
    assert probabilities.sum(1) == pytest.approx(np.ones(len(test)), abs=1e-5)
    accuracy = (probabilities.argmax(1) == test.labels.numpy()).mean()
    assert accuracy == pytest.approx(tracked.registration.accuracy, abs=1e-6)
    assert model.metadata.metadata["classes"] == list(EMOTIONS)


def test_champion_from_other_data_is_rescored_on_ours(tracked):
    """A champion measured on other data is scored again on this data before the comparison."""
    from conftest import blob_split

    from fer_tune.data.dataset import FerDataset
    from fer_tune.tracking.champion import current_champion
    from fer_tune.tracking.runs import SweepRuns

    other = FerDataset(
        train=blob_split(70, 11), validation=blob_split(70, 12), test=blob_split(70, 13), classes=EMOTIONS, source="x"
    )
    runs = SweepRuns(tracked.uri, "fer-tracked", "unused", {}, {})
    version, accuracy = current_champion(runs, MODEL, other, "test", other.test)
    champion = tracked.registration.version
    model = mlflow.pyfunc.load_model(tracked.client.get_model_version_download_uri(MODEL, champion))
    expected = model.predict(other.test.images.unsqueeze(1).float().numpy()).argmax(1) == other.test.labels.numpy()
    assert version == champion and accuracy == pytest.approx(expected.mean())


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_models_list_and_download(tracked, tmp_path, capsys):
    assert main(["models", "list"]) == 0
    listed = capsys.readouterr().out
    assert MODEL in listed and "champion" in listed
    assert f"{tracked.registration.accuracy:.6f}" in listed

    folder = tmp_path / "deploy"
    assert main(["models", "download", f"models:/{MODEL}@champion", "--to", str(folder)]) == 0
    assert (folder / "model" / "MLmodel").is_file() and (folder / "model" / "data" / "model.pt2").is_file()
    card = (folder / "MODEL_CARD.md").read_text()
    assert f"# {MODEL} version {tracked.registration.version} — aliases: champion" in card
    assert tracked.sweep.data.fingerprint() in card and "- lr: 0.003" in card and "torch.jit.load" in card
    for name in EMOTIONS:
        assert f"| {name} |" in card

    scripted = torch.jit.load(str(folder / "model.torchscript.pt"))
    pyfunc = mlflow.pyfunc.load_model(str(folder / "model"))
    images = tracked.sweep.data.test.images.unsqueeze(1).float()
    with torch.no_grad():
        from_script = scripted(images)
    from_pyfunc = pyfunc.predict(images.numpy())
    assert (from_script.argmax(1).numpy() == from_pyfunc.argmax(1)).all()
    assert from_script.numpy() == pytest.approx(from_pyfunc, abs=1e-5)
    assert scripted(tracked.sweep.data.test.images[:3]).shape == (3, 7)  # uint8 [N, 48, 48] too


def test_download_refuses_a_non_empty_folder_and_force_replaces_the_model(tracked, tmp_path, capsys):
    folder = tmp_path / "deploy"
    (folder / "model").mkdir(parents=True)
    (folder / "model" / "stale.txt").write_text("an earlier download's file")
    (folder / "notes.txt").write_text("the user's own file")
    uri = f"models:/{MODEL}@champion"
    assert main(["models", "download", uri, "--to", str(folder)]) == 1
    error = capsys.readouterr().err
    assert (
        error
        == f"fer-tune: error: --to {folder}: folder is not empty; choose an empty one, or pass --force to replace it\n"
    )
    assert sorted(p.name for p in folder.rglob("*")) == ["model", "notes.txt", "stale.txt"]  # nothing written

    assert main(["models", "download", uri, "--to", str(folder), "--force"]) == 0
    assert (folder / "model" / "MLmodel").is_file() and not (folder / "model" / "stale.txt").exists()
    assert (folder / "model.torchscript.pt").is_file() and (folder / "MODEL_CARD.md").is_file()
    assert (folder / "notes.txt").read_text() == "the user's own file"  # --force replaces the model, not the rest


def test_predict_images_of_any_size_and_mode(tracked, tmp_path, capsys):
    face = tracked.sweep.data.test.images[0].numpy()
    paths = {
        "big.png": Image.fromarray(face).resize((160, 160)).convert("RGB"),
        "wide.jpg": Image.fromarray(np.hstack([face, face, face])).resize((300, 100)),
        "alpha.png": Image.fromarray(face).resize((64, 64)).convert("RGBA"),
    }
    for name, image in paths.items():
        image.save(tmp_path / name)
    files = [str(tmp_path / name) for name in paths]
    assert main(["predict", "--model", f"models:/{MODEL}@champion", *files]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3
    for line, path in zip(lines, files):
        assert line.startswith(f"{path}: ") and line.split(": ")[1].split(" (")[0] in EMOTIONS
        probabilities = [float(p) for p in line.split("[")[1].rstrip("]").split()[1::2]]
        assert sum(probabilities) == pytest.approx(1, abs=0.01)

    noise = tmp_path / "noise.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (120, 90), dtype=np.uint8)).save(noise)
    assert main(["predict", "--detect-faces", "--model", f"models:/{MODEL}@champion", str(noise)]) == 0
    out = capsys.readouterr().out
    assert f"{noise}: no face detected, using the whole image" in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["predict", "--model", f"models:/{MODEL}@champion", "missing.png"], "missing.png: no such image file"),
        (["predict", "--model", f"models:/{MODEL}@champion", "broken.png"], "broken.png: not a readable image"),
        (["predict", "--model", "models:/no-such@champion", "face.png"], "models:/no-such@champion: cannot load"),
        (["predict", "--model", f"models:/{MODEL}/99", "face.png"], f"models:/{MODEL}/99: cannot load"),
        (["predict", "--model", "nowhere/", "face.png"], "nowhere/: no such folder, and not a model URI"),
        (["models", "download", f"models:/{MODEL}@nobody", "--to", "out"], f"models:/{MODEL}@nobody: cannot load"),
        (["models", "list", "no-such-model"], "no registered model named 'no-such-model'"),
    ],
)
def test_bad_input_is_one_line_error(tracked, argv, message, capsys):
    (tracked.folder / "broken.png").write_text("not an image")
    Image.fromarray(tracked.sweep.data.test.images[0].numpy()).save(tracked.folder / "face.png")
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert captured.err.startswith("fer-tune: error: ") and captured.err.count("\n") == 1, captured.err
    assert message in captured.err and "Traceback" not in captured.err + captured.out


@pytest.mark.slow(seconds=30)
def test_mlflow_models_serve_answers_a_scoring_request(tracked):
    port = free_port()
    command = [sys.executable, "-m", "mlflow", "models", "serve", "-m", f"models:/{MODEL}@champion"]
    command += ["--env-manager", "local", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    images = tracked.sweep.data.test.images[:5].unsqueeze(1).float().numpy()
    env = subprocess_env(MLFLOW_TRACKING_URI=tracked.uri)
    with serving(command, "/ping", port, cwd=tracked.folder, env=env) as base:
        request = urllib.request.Request(
            base + "/invocations",
            data=json.dumps({"inputs": images.tolist()}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            predictions = np.array(json.loads(response.read())["predictions"])
    assert predictions.shape == (5, len(EMOTIONS))
    assert predictions.sum(1) == pytest.approx(np.ones(5), abs=1e-5)
    local = mlflow.pyfunc.load_model(tracked.client.get_model_version_download_uri(MODEL, tracked.registration.version))
    assert (predictions.argmax(1) == local.predict(images).argmax(1)).all()


@pytest.fixture
def store_copy(tracked, tmp_path, monkeypatch):
    """A copy of the tracked store to add versions to, so no other test depends on this one running last."""
    shutil.copy(tracked.folder / "results" / "mlflow.db", tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return MlflowClient(uri)


@pytest.mark.slow(seconds=30)
def test_worse_sweep_is_registered_as_challenger(tracked, store_copy, blob_csv):
    """A curve trial's checkpoint (an untrained model) cannot beat the champion: it becomes the challenger, and
    says why."""
    worse = SPACE.replace("name: tracked", "name: worse\ntrainable: curve").replace("max_epochs: 3", "max_epochs: 1")
    worse = worse.replace("{grid: [3.0e-3, 1.0e-5, 1.0e8]}", "1.0e-5").replace("algorithm: grid", "algorithm: random")
    (tracked.folder / "worse.yaml").write_text(worse)
    space = load_space(tracked.folder / "worse.yaml")
    _, tracking = run_space(space, data_source=str(blob_csv), storage=tracked.folder / "ray", verbose=0)
    registration, champion = tracking.registration, tracked.registration.version
    assert registration.alias == "challenger" and int(registration.version) > int(champion)
    assert registration.rival == (champion, tracked.registration.accuracy)  # the metric, unrounded
    assert "challenger" in registration.message and "@champion unchanged" in registration.message
    assert str(store_copy.get_model_version_by_alias(MODEL, "champion").version) == champion
    assert str(store_copy.get_model_version_by_alias(MODEL, "challenger").version) == registration.version
    new = store_copy.get_model_version(MODEL, registration.version)
    assert new.tags["data_fingerprint"] == tracked.sweep.data.fingerprint()
    assert new.tags["promotion"].startswith(f"challenger: accuracy {registration.accuracy!r} <")
    assert str(tracked.client.get_model_version_by_alias(MODEL, "champion").version) == champion  # original intact


@pytest.mark.slow(seconds=40)
def test_a_better_sweep_takes_the_champion_alias(tracked, workdir, blob_csv, monkeypatch):
    """In a store whose champion is a curve trial's checkpoint (an untrained model), the tracked sweep's best
    (lr 3e-3, trained) beats it: the new version takes `champion`, the old one keeps its number without the alias."""
    from fer_tune.tracking.champion import promote_best
    from fer_tune.tracking.runs import SweepRuns

    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    weak = SPACE.replace("name: tracked", "name: weak\ntrainable: curve").replace("max_epochs: 3", "max_epochs: 1")
    weak = weak.replace("{grid: [3.0e-3, 1.0e-5, 1.0e8]}", "1.0e-5").replace("algorithm: grid", "algorithm: random")
    (workdir / "weak.yaml").write_text(weak)
    _, tracking = run_space(load_space("weak.yaml"), data_source=str(blob_csv), storage=workdir / "ray", verbose=0)
    old = tracking.registration
    assert old.alias == "champion" and old.rival is None  # the first version in this store

    better = promote_best(tracked.sweep, SweepRuns(uri, "fer-tracked", tracked.sweep.name, {}, {}))
    assert better.accuracy > old.accuracy and better.rival == (old.version, old.accuracy)
    assert better.alias == "champion" and int(better.version) > int(old.version)
    client = MlflowClient(uri)
    assert str(client.get_model_version_by_alias(MODEL, "champion").version) == better.version
    assert "champion" not in client.get_model_version(MODEL, old.version).aliases
    promotion = client.get_model_version(MODEL, better.version).tags["promotion"]
    assert (
        promotion
        == f"champion: accuracy {better.accuracy!r} > champion version {old.version}'s {old.accuracy!r} on this data"
    )


def test_a_tie_does_not_move_the_champion(tracked, store_copy):
    """The same best checkpoint promoted again scores exactly the champion's accuracy: a tie, which
    keeps the champion (compared on the metric, not on the tag rounded to 6 digits)."""
    from fer_tune.tracking.champion import promote_best
    from fer_tune.tracking.runs import SweepRuns

    again = dataclasses.replace(tracked.sweep, name="tie-check")
    runs = SweepRuns(store_copy.tracking_uri, "fer-tracked", "tie-check", {}, {})
    registration = promote_best(again, runs)
    champion = tracked.registration
    assert registration.accuracy == champion.accuracy and registration.rival == (champion.version, champion.accuracy)
    assert registration.alias == "challenger"
    assert str(store_copy.get_model_version_by_alias(MODEL, "champion").version) == champion.version
    assert "a tie keeps the champion" in store_copy.get_model_version(MODEL, registration.version).tags["promotion"]
    assert promote_best(again, runs).version == registration.version  # idempotent: found again by its sweep tag
