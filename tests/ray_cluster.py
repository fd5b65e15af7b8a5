"""The test run's one Ray: a local instance on loopback, sized to the machine, started on first use and
stopped when the run ends. In-process tests (the `ray_local` fixture) and subprocess drivers (`env()`)
join it, instead of each starting a Ray of its own (10-20 s each on 2 cores).

It runs in a process of its own (HEAD below), so a test that kills its driver, or shuts down its
own connection to join another cluster, leaves it running for the next. Token authentication is
off for it (RAY_AUTH_MODE=disabled): it listens on loopback only, and every joiner would otherwise
need the token file of the instance. A test that needs a Ray of its own (an outage of everything, a
multi-node cluster) passes RAY_ADDRESS=local or starts ray.cluster_utils.Cluster, as before.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

START_S = 180  # Ray starts in seconds; a loaded 2-core machine can take a minute or two
HEAD = """
import os, signal, sys, time
import ray
from fer_tune.search.cluster import _local_on_loopback

_local_on_loopback()
ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, logging_level="ERROR")
print(ray.get_runtime_context().gcs_address, flush=True)
signal.signal(signal.SIGTERM, lambda *_: (ray.shutdown(), sys.exit(0)))
while True:
    time.sleep(3600)
"""

LOG_DIR = Path(tempfile.gettempdir()) / f"fer-tune-tests-{os.getpid()}"  # the head's log: ray-head.log
# The cluster's workers inherit the head's environment, not a joining driver's: their torch cache (ImageNet
# weights) is this folder, where a test that needs weights in its trials puts stand-ins (test_seed_spaces.py).
TORCH_HOME = LOG_DIR / "torch"
_head: subprocess.Popen | None = None
_address: str | None = None


def address(log_dir: Path = LOG_DIR) -> str:
    """The run's Ray address (HOST:PORT), starting it on first use; its log goes to log_dir/ray-head.log."""
    global _head, _address
    if _address is not None and _head is not None and _head.poll() is None:
        return _address
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / "ray-head.log"
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "TORCH_HOME": str(TORCH_HOME)}
    env.pop("RAY_ADDRESS", None)
    with log.open("w") as err:
        _head = subprocess.Popen(
            [sys.executable, "-c", HEAD], stdout=subprocess.PIPE, stderr=err, env=env, text=True, start_new_session=True
        )
    deadline = time.time() + START_S
    line = ""
    while not line:
        if _head.poll() is not None or time.time() > deadline:
            stop()
            raise RuntimeError(f"the test run's Ray did not start in {START_S} s: {log.read_text()[-2000:]}")
        line = _head.stdout.readline().strip()
    _address = line
    return _address


def env(log_dir: Path = LOG_DIR, **extra: str) -> dict[str, str]:
    """An environment whose fer-tune process joins the run's Ray (RAY_ADDRESS in `extra` overrides it)."""
    return {**os.environ, "RAY_ADDRESS": address(log_dir), "RAY_AUTH_MODE": "disabled", **extra}


def stop() -> None:
    """Leave the run's Ray (this process's connection first: a driver whose cluster dies exits), then stop it."""
    global _head, _address
    if "ray" in sys.modules and sys.modules["ray"].is_initialized():
        sys.modules["ray"].shutdown()
    if _head is not None and _head.poll() is None:
        _head.send_signal(signal.SIGTERM)
        try:
            _head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(_head.pid, signal.SIGKILL)
    _head, _address = None, None
