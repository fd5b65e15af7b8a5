"""Bad input and unusable resources fail in seconds, in one line, before any expensive work.

Each case runs the real command (`fer-tune run`, `results`, `models ...`) and checks the message,
the exit status, and that nothing was created or changed.
"""

import subprocess
import sys
import time

import pytest
from mlflow_helpers import free_port

from fer_tune.cli.main import main
from fer_tune.errors import FerTuneError
from fer_tune.search.plan import prepare_cluster
from fer_tune.search.sweep_file import load_space

SPACE = "name: pre\npruner: {name: none}\nbudget: {num_samples: 1, max_epochs: 1}\nspace:\n  model: basic\n"


@pytest.fixture
def space_file(workdir):
    (workdir / "pre.yaml").write_text(SPACE)
    return workdir / "pre.yaml"


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("fer-tune: error: ") and err.count("\n") == 1, err
    return err


def test_a_gpu_request_on_a_cluster_without_one_fails_before_any_trial(ray_local, space_file):
    space = load_space(space_file)
    gpu = space.model_copy(update={"resources": space.resources.model_copy(update={"gpu": 0.25})})
    expected = (
        r"resources: each trial asks for 1 CPU and 0\.25 GPUs, but local Ray cannot run one: "
        r"its largest node has 2 CPUs and no GPU; use --gpus-per-trial 0"
    )
    with pytest.raises(FerTuneError, match=expected):
        prepare_cluster(gpu, None)
    many = space.model_copy(update={"resources": space.resources.model_copy(update={"cpu": 8})})
    with pytest.raises(FerTuneError, match=r"asks for 8 CPUs .* has 2 CPUs .*use --cpus-per-trial 2"):
        prepare_cluster(many, None)
    (space_file.parent / "cuda.yaml").write_text(SPACE + "  device: cuda\n")
    with pytest.raises(FerTuneError, match=r"space\.device: 'cuda' needs a GPU, but each trial asks for none"):
        prepare_cluster(load_space(space_file.parent / "cuda.yaml"), None)


def test_gpus_per_trial_overrides_the_file(ray_local, space_file, capsys):
    (space_file.parent / "gpu.yaml").write_text(SPACE + "resources: {cpu: 1, gpu: 0.25}\n")
    assert main(["run", "gpu.yaml", "--name", "g1", "--no-track"]) == 1
    assert "--gpus-per-trial 0" in one_line_error(capsys)
    assert main(["run", "gpu.yaml", "--name", "g1", "--no-track", "--gpus-per-trial", "-1"]) == 1
    assert "--gpus-per-trial -1: expected a finite number from 0 to 64" in one_line_error(capsys)


@pytest.mark.slow(seconds=20)
def test_an_address_where_no_cluster_listens_fails_in_seconds(space_file):
    port = free_port()
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "fer_tune.cli", "run", "pre.yaml", "--no-track", "--address", f"127.0.0.1:{port}"],
        cwd=space_file.parent, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 1 and time.monotonic() - started < 60
    assert result.stderr.startswith(f"fer-tune: error: --address 127.0.0.1:{port}: no Ray cluster answers there")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_an_unreachable_tracking_server_fails_before_ray_or_data(space_file, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://user:secret@127.0.0.1:{free_port()}")
    started = time.monotonic()
    assert main(["run", "pre.yaml"]) == 1
    err = one_line_error(capsys)
    assert time.monotonic() - started < 30
    assert "no answer within 5 s (connection refused)" in err
    # credentials never shown: the password went to MLflow through the environment (tracking/store.py)
    assert "MLflow store http://127.0.0.1:" in err and "secret" not in err
    assert not (space_file.parent / "results" / "ray" / "pre").exists()


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        (
            "sqlite:////proc/fer-tune/mlflow.db",
            r"MLflow store sqlite:////proc/fer-tune/mlflow\.db: cannot create /proc",
        ),
        (
            "postgresql://u:pw@127.0.0.1/db",
            # no driver: which package to install; with one (the postgres extra): why no connection
            r"MLflow store postgresql://\*\*\*@127\.0\.0\.1/db: (its database driver "
            r"is not installed \(no module \w+\); pip install|cannot connect \(.+\))",
        ),  # fmt: skip
    ],
)
def test_an_unusable_store_is_caught_first(space_file, monkeypatch, capsys, uri, message):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    assert main(["run", "pre.yaml"]) == 1
    assert __import__("re").search(message, one_line_error(capsys))


def test_unusable_paths_are_one_line_before_any_work(space_file, capsys):
    folder = space_file.parent
    (folder / "results").write_text("not a folder")
    assert main(["run", "pre.yaml", "--no-track"]) == 1
    assert "results folder results: is a file, expected a folder" in one_line_error(capsys)
    (folder / "results").unlink()
    (folder / "afile").write_text("")
    assert main(["run", "pre.yaml", "--no-track", "--storage", "afile/ray"]) == 1
    assert "afile/ray: cannot create it (Not a directory)" in one_line_error(capsys)


def test_a_name_in_use_is_refused_without_resume(space_file, capsys):
    (space_file.parent / "results" / "taken").mkdir(parents=True)
    (space_file.parent / "results" / "taken" / "trials.csv").write_text("kept\n")
    assert main(["run", "pre.yaml", "--no-track", "--name", "taken"]) == 1
    assert "--name taken: a sweep of that name exists already" in one_line_error(capsys)
    assert (space_file.parent / "results" / "taken" / "trials.csv").read_text() == "kept\n"


def test_read_only_commands_never_create_a_store(workdir, monkeypatch, capsys):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert main(["models", "list"]) == 1
    assert "no such database; run a sweep first" in one_line_error(capsys)
    image = workdir / "face.png"
    __import__("PIL.Image").Image.new("L", (48, 48)).save(image)
    assert main(["predict", str(image)]) == 1
    one_line_error(capsys)
    assert not (workdir / "results").exists()


def test_results_rejects_a_bad_top_and_a_folder_without_sweep_json(workdir, capsys):
    (workdir / "results" / "half").mkdir(parents=True)
    (workdir / "results" / "half" / "trials.csv").write_text("trial_id\n")
    for top in ("0", "-1"):
        assert main(["results", "half", "--top", top]) == 1
        assert f"--top {top}: expected a positive number of rows" in one_line_error(capsys)
    assert main(["results", "half"]) == 1
    assert "sweep.json: not found" in one_line_error(capsys)


@pytest.mark.slow(seconds=20)
def test_local_ray_listens_on_loopback_only(workdir):
    code = (
        "from fer_tune.search.cluster import connect_ray\nimport ray\nconnect_ray(None)\n"
        "print(ray.nodes()[0]['NodeManagerAddress'])\nray.shutdown()\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=workdir, capture_output=True, text=True, timeout=180)
    assert result.stdout.strip().splitlines()[-1] == "127.0.0.1", result.stderr[-2000:]


def test_output_paths_of_data_and_train_are_checked_before_the_work(space_file, capsys):
    folder = space_file.parent
    (folder / "afile").write_text("")
    (folder / "adir").mkdir()
    cases = [
        (["data", "synth", "--out", "adir", "--n", "70"], "--out adir: is a folder, expected a file"),
        (["data", "synth", "--out", "afile/x.csv", "--n", "70"], "--out afile/x.csv: its folder afile: is a file"),
        (["data", "inspect", "synthetic", "--out", "afile/faces.png"], "its folder afile: is a file"),
        (["train", "pre.yaml", "--save", "adir"], "--save adir: is a folder, expected a file"),
    ]
    for argv, message in cases:
        assert main(argv) == 1, argv
        assert message in one_line_error(capsys), argv
    assert "final:" not in capsys.readouterr().out  # train stopped before training, not after


def test_missing_imagenet_weights_are_found_once_on_the_driver(workdir, monkeypatch, capsys):
    """A space whose every trial needs weights the cache lacks is refused before any trial; where only
    some do, the driver warns once and those trials fail at once with the same line."""
    from fer_tune.search.sweep import missing_weights

    monkeypatch.setenv("TORCH_HOME", str(workdir / "empty-cache"))
    (workdir / "all.yaml").write_text(SPACE.replace("model: basic", "model: resnet50\n  pretrained: true"))
    with pytest.raises(FerTuneError, match=r"no trial can run: ImageNet weights for resnet50 not found: expected"):
        missing_weights(load_space(workdir / "all.yaml"))
    (workdir / "some.yaml").write_text(
        SPACE.replace("model: basic", "model: {choice: [resnet50, basic]}\n  pretrained: {choice: [true, false]}")
    )
    missing = missing_weights(load_space(workdir / "some.yaml"))
    assert list(missing) == ["resnet50"] and "on a machine with internet run" in missing["resnet50"]
    assert capsys.readouterr().out.count("[fer-tune] warning: ImageNet weights for resnet50") == 1
