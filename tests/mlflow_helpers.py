"""Helpers for the MLflow tests: servers on free loopback ports.

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
from contextlib import contextmanager
from pathlib import Path

import pytest

BIN = str(Path(sys.executable).parent)  # mlflow's serving starts `uvicorn` from PATH


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def subprocess_env(**extra: str) -> dict:
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", **extra}


@contextmanager
def serving(command: list[str], ready_path: str, port: int, cwd=None, env=None, timeout: float = 150):
    """Run `command` (a server on `port`) until the block ends; yields its base URL once `ready_path` answers 200."""
    log = open(Path(cwd or ".") / f"server-{port}.log", "w+")
    process = subprocess.Popen(
        command, cwd=cwd, env=env or subprocess_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
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
