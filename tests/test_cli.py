"""The `fer-tune` command: fast help, one-line errors without tracebacks, data and train commands."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fer_tune.cli.main import main
from fer_tune.data import load_dataset

QUICK = str(Path(__file__).parent.parent / "search_spaces" / "quick.yaml")


def fer_tune(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fer_tune.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=300
    )


def test_help_imports_no_heavy_library():
    """`fer-tune --help` must answer at once: torch, ray, mlflow and pandas load inside commands only."""
    probe = (
        "import sys, contextlib, io\n"
        "from fer_tune.cli.main import main\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "    main(['--help'])\n"
        "print(sorted(m for m in ('torch', 'ray', 'mlflow', 'pandas', 'optuna', 'matplotlib') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_help_lists_the_commands():
    result = fer_tune("--help")
    assert result.returncode == 0
    for command in ("data", "train", "run", "results"):
        assert command in result.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "nope.yaml"], r"nope\.yaml: search-space file not found"),
        (["train", QUICK, "--set", "lr"], r"--set lr: expected KEY=VALUE"),
        (
            ["train", QUICK, "--set", "learning_rate=0.1"],
            r"--set learning_rate=0\.1: unknown key 'learning_rate'; expected one of: model,",
        ),
        (["train", QUICK, "--set", "model=alexnet"], r"--set: model: unknown model 'alexnet'; expected one of: basic"),
        (["train", QUICK, "--data", "missing.csv"], r"data source 'missing\.csv' not found"),
        (["data", "inspect", "missing_folder"], r"data source 'missing_folder' not found"),
        (["run", QUICK, "--num-samples", "0"], r"--num-samples 0: expected an integer from 1 to 100000"),
        (["results", "no-such-sweep"], r"no sweep named 'no-such-sweep'"),
    ],
)
def test_bad_input_is_one_line_without_traceback(tmp_path, monkeypatch, capfd, args, message):
    """In this process (an exception other than fer-tune's one line would fail the test); the file
    descriptors are captured, so a library's own write to stderr counts too."""
    monkeypatch.chdir(tmp_path)
    assert main(args) == 1
    stderr = capfd.readouterr().err
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fer-tune: error: "), stderr
    assert re.search(message, lines[0]), lines[0]


def test_a_bad_flag_as_a_user_runs_it_is_one_line(tmp_path):
    """The command as a process, from `python -m fer_tune.cli`: exit status 1, one line, no traceback."""
    result = fer_tune("run", QUICK, "--num-samples", "0", cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        "fer-tune: error: --num-samples 0: expected an integer from 1 to 100000"
    ], result.stderr


def test_synth_then_inspect(tmp_path, capsys):
    out = tmp_path / "faces.csv"
    assert main(["data", "synth", "--out", str(out), "--n", "210", "--seed", "3"]) == 0
    lines = out.read_text().splitlines()
    assert lines[0] == "emotion,pixels,Usage" and len(lines) == 211
    data = load_dataset(str(out))
    assert len(data.train) + len(data.validation) + len(data.test) == 210

    png = tmp_path / "faces_mean.png"
    assert main(["data", "inspect", str(out), "--out", str(png)]) == 0
    printed = capsys.readouterr().out
    assert "happy" in printed and "disgust" in printed and "total" in printed
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_train_prints_final_metrics_and_saves_state(tmp_path, blob_csv, capsys):
    state_file = tmp_path / "state.pt"
    code = main(
        [
            "train",
            QUICK,
            "--data",
            str(blob_csv),
            "--set",
            "model=basic",
            "--set",
            "epochs=2",
            "--set",
            "augmentation=none",
            "--set",
            "batch_size=16",
            "--save",
            str(state_file),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "final: epoch 2" in printed and "val_accuracy" in printed
    state = torch.load(state_file, weights_only=True)  # as users load it: plain types and tensors only
    assert state["epoch"] == 2 and state["config"]["model"] == "basic" and len(state["history"]) == 2


@pytest.mark.parametrize("module", ["fer_tune", "fer_tune.cli"])
def test_python_dash_m_runs_the_command(module):
    result = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.startswith("usage: fer-tune"), result.stderr
