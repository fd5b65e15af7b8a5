"""Helpers for the MLflow tests: servers on free loopback ports, and a tracking server's outage mid-sweep.

Not a test module (pytest collects test_*.py only); the test modules import it by name.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

BIN = str(Path(sys.executable).parent)  # mlflow's serving starts `uvicorn` from PATH
# Every server a test starts: one uvicorn worker (MLflow's default is 4, each importing the whole server: 15-20 s
# of CPU per start on 2 cores, for requests one test makes one at a time) and no GenAI job runner. A setting of
# the environment, not a flag, so the README's own `mlflow server` command runs word for word.
SERVER_ENV = {"MLFLOW_WORKERS": "1", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def subprocess_env(**extra: str) -> dict:
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", **extra}


def driver_env(**extra: str) -> dict:
    """subprocess_env for a fer-tune driver that joins the test run's Ray (tests/ray_cluster.py), as
    interrupt.cli_env does, instead of starting a Ray of its own."""
    import ray_cluster

    joining = {key: value for key, value in ray_cluster.env().items() if key in ("RAY_ADDRESS", "RAY_AUTH_MODE")}
    return subprocess_env(**{**joining, **extra})


@contextmanager
def serving(command: list[str], ready_path: str, port: int, cwd=None, env=None, timeout: float = 150):
    """Run `command` (a server on `port`) until the block ends; yields its base URL once `ready_path` answers 200."""
    log = open(Path(cwd or ".") / f"server-{port}.log", "w+")
    process = subprocess.Popen(
        command,
        cwd=cwd,
        env={**(env or subprocess_env()), **SERVER_ENV},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + timeout
        while True:
            if process.poll() is not None or time.time() > deadline:
                log.seek(0)
                pytest.fail(f"{command[:4]} never answered {ready_path}:\n{log.read()[-3000:]}")
            try:
                with urllib.request.urlopen(base + ready_path, timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
        yield base
    finally:
        with_group(process, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with_group(process, signal.SIGKILL)
            process.wait(timeout=15)
        log.close()


def with_group(process: subprocess.Popen, sig: int) -> None:
    """Signal the process group this test started (the server and the workers it forked)."""
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        pass


class Outage:
    """Stops a tracking server, and with `restart` starts it again, between two of a sweep driver's MLflow writes.

    The driver runs in this process; `patch(monkeypatch)` wraps TrackingWriter.write. After the first epoch
    the store took, the server stops (the rest of the sweep still to come); with `restart`, after the first
    record then kept on disk it starts again (the same store, the same port) and the writer's retry is let
    come due. Nothing races the sweep: the driver waits while the test acts. `phase`: up, down, back;
    `log`: per write, (record kind, records pending before it, after it); `stopped_at`: the log's index then.
    """

    def __init__(self, server: list[str], port: int, cwd: Path, env: dict, restart: bool, timeout: float = 150):
        self.server, self.port, self.cwd, self.env = server, port, cwd, env
        self.restart, self.timeout = restart, timeout
        self.stack = ExitStack()
        self.phase = "up"
        self.log: list[tuple[str, int, int]] = []
        self.stopped_at: int | None = None

    def start(self) -> None:
        self.stack.enter_context(serving(self.server, "/health", self.port, self.cwd, self.env, self.timeout))

    def stop(self) -> None:
        self.stack.close()

    def patch(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from fer_tune.tracking.writer import TrackingWriter

        write = TrackingWriter.write

        def write_and_act(writer: TrackingWriter, record: dict) -> None:
            before = writer.pending
            write(writer, record)
            self.log.append((record["kind"], before, writer.pending))
            if self.phase == "up" and record["kind"] == "metrics" and not writer.pending:
                self.stop()  # the first epoch is in the store
                self.phase, self.stopped_at = "down", len(self.log) - 1
            elif self.phase == "down" and self.restart and writer.pending:
                self.start()
                while time.monotonic() < writer._retry_at:  # the writer's own back-off (5 s after the failure)
                    time.sleep(0.1)
                self.phase = "back"

        monkeypatch.setattr(TrackingWriter, "write", write_and_act)
