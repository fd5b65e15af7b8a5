"""What `fer-tune run` prints: its own lines only (no Ray, MLflow or Optuna line, no traceback), a
failed trial's real reason, and every library line again with --verbose."""

import logging
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from fer_tune.cli.quiet import OneLine, is_noise
from fer_tune.search.console import PREFIX, error_text

# One trial of each outcome, in this order (max_concurrent 1 makes ASHA's decision deterministic):
# lr 3e-3 completes its 3 epochs; lr 1e-5 is stopped at a rung (1 or 2), below the first trial;
# lr 1e8 diverges in its first epoch and fails. The curve trainable reports those outcomes
# (fer_tune.core.curves: seed 0's divergence at lr 1e8 comes at epoch 1); what is printed comes
# from the driver, Ray, Optuna and MLflow, which all run as in a real sweep.
SPACE = """name: console
trainable: curve
search: {algorithm: grid}
pruner: {name: asha, grace_period: 1, reduction_factor: 2}
budget: {num_samples: 1, max_epochs: 3, max_concurrent: 1}
mlflow: {experiment: fer-console, register_as: fer-console}
space:
  model: basic
  batch_size: 16
  augmentation: none
  dropout: 0.0
  lr: {grid: [3.0e-3, 1.0e-5, 1.0e8]}
"""
# After the sweep, cmd_run prints its summary: the leaderboard (a Markdown table) and these lines.
SUMMARY = (
    "sweep console-", "|", "trials: ", "  failed x", "records: ", "best trial ", "best configuration: ",
    "registered models:/fer-console/1 as fer-console@champion", "browse the sweep with `fer-tune ui`",
)  # fmt: skip


def _record(name: str, level: int, message: str) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, message, None, None)


def test_a_library_warning_is_one_fer_tune_line(capsys):
    handler = OneLine()
    handler.handle(_record("ray.tune.tune", logging.WARNING, "Tune detects GPUs, but no trials use them.\nmore"))
    handler.handle(_record("mlflow.store.db.utils", logging.INFO, "Creating initial MLflow database tables..."))
    handler.handle(_record("ray.tune.execution.tune_controller", logging.ERROR, "Trial task failed for trial x"))
    err = capsys.readouterr().err.splitlines()
    assert err == [f"{PREFIX} ray warning: Tune detects GPUs, but no trials use them."]


def test_token_auth_on_a_local_ray_is_noise_but_not_on_a_cluster():
    logger = "ray._private.authentication.authentication_token_setup"
    assert is_noise(logger, "Token authentication is enabled for this Ray cluster. Set RAY_AUTH_MODE=disabled")
    assert not is_noise(logger, "Token authentication is disabled for this Ray cluster. Anyone with network access")
    assert not is_noise("mlflow", "Token authentication is enabled for this Ray cluster")
    slow = "The `process_trial_result` operation took 0.567 s, which may be a performance bottleneck."
    assert is_noise("ray.tune.utils.util", slow)


QUIETED = """
import logging, warnings
import mlflow, optuna
from mlflow.utils.logging_utils import enable_logging, eprint
from fer_tune.cli.quiet import quiet_libraries

quiet_libraries()
enable_logging()  # as MLflow's own context managers do on exit
eprint("Successfully registered model 'fer-emotion'.")  # MLflow's direct print on registering a model
optuna.create_study()  # Optuna's INFO "A new study created in memory"
mlflow.MlflowClient("sqlite:///{db}").search_experiments()  # MLflow's INFO "Creating initial MLflow database tables"
logging.getLogger("ray.tune.tune").warning("Tune detects GPUs, but no trials are using GPUs.\\nmore")
warnings.warn("a library's warning")
print("done")
"""


@pytest.mark.slow(seconds=20)
def test_the_libraries_real_lines_are_quieted(tmp_path):
    """Real Optuna and MLflow calls in a fresh process after quiet_libraries: only fer-tune lines remain."""
    script = QUIETED.format(db=tmp_path / "mlflow.db")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert result.returncode == 0 and result.stdout == "done\n", result.stderr
    lines = result.stderr.splitlines()
    assert lines[0] == f"{PREFIX} ray warning: Tune detects GPUs, but no trials are using GPUs."
    assert lines[1].startswith(f"{PREFIX} python warning: ") and lines[1].endswith("UserWarning: a library's warning")
    assert len(lines) == 2, result.stderr


def test_error_text_reads_the_drivers_copy_before_storage_has_one(tmp_path):
    local = tmp_path / "error.txt"
    local.write_text("Failure # 1\nTraceback ...\nfer_tune.core.training.Diverged: diverged at epoch 1\n")
    trial = SimpleNamespace(error_file=str(local), get_error=lambda: None)
    assert error_text(trial).endswith("Diverged: diverged at epoch 1\n")
    assert error_text(SimpleNamespace(error_file=None, get_error=lambda: None)) == "unknown error"


@pytest.mark.integration
@pytest.mark.slow(seconds=110)
def test_a_sweep_prints_only_fer_tune_lines(tmp_path, blob_csv):
    """A tracked sweep with a completed, a stopped and a diverged trial, run as `fer-tune run`."""
    space = tmp_path / "console.yaml"
    space.write_text(SPACE)
    command = [sys.executable, "-m", "fer_tune.cli", "run", str(space), "--data", str(blob_csv)]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "TUNE_", "MLFLOW_"))}
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=900, env=env)
    output = result.stdout + result.stderr
    (tmp_path / "console.txt").write_text(output)  # for a look after the test
    assert result.returncode == 0, output
    assert "Traceback" not in output and "SystemExit" not in output, output
    lines = [line for line in output.splitlines() if line.strip()]
    summary = next(i for i, line in enumerate(lines) if line.startswith("sweep console-"))
    own = lines[:summary]
    assert all(line.startswith(PREFIX) for line in own), "\n".join(x for x in own if not x.startswith(PREFIX))
    leftover = [line for line in lines[summary:] if not line.startswith((*SUMMARY, PREFIX))]
    assert leftover == [], leftover
    trial_lines = [line for line in own if " trial " in line or line.startswith(f"{PREFIX} trial ")]
    diverged = [line for line in trial_lines if "lr=1e+08" in line]
    assert len(diverged) == 1 and "failed after 0 epochs: Diverged: diverged at epoch 1" in diverged[0], trial_lines
    error_file = Path(diverged[0].rsplit("; ", 1)[1].rstrip(")"))
    assert error_file.is_file() and "Diverged" in error_file.read_text()
    stopped = [line for line in trial_lines if "lr=1e-05" in line]
    assert len(stopped) == 1 and "stopped early at epoch" in stopped[0] and " of 3:" in stopped[0], trial_lines
    csv = (tmp_path / "results").glob("console-*/trials.csv")
    assert "Diverged: diverged at epoch 1" in next(csv).read_text()  # the same words as the console line
