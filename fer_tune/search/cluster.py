"""Ray for a sweep: start or join it in bounded time, and check a trial's request fits before any trial starts.

    connect_ray(address)                 # local Ray on loopback, or the cluster at address (or RAY_ADDRESS)
    check_resources(space.resources)     # one line naming the request, what the cluster has and the fix

Without these a sweep can hang: Ray retries an address where no cluster listens forever, and
a trial asking for a GPU the cluster lacks stays PENDING forever.
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlparse

import ray

from fer_tune.errors import FerTuneError

CONNECT_TIMEOUT_S = 5.0  # a cluster's GCS answers a TCP connect in milliseconds; 5 s covers a slow network
# Ray binds its servers to the node's reachable IP unless it believes it runs single-machine; this
# flag (Ray's own, for macOS/Windows) makes a local Ray resolve its node IP to loopback, so nothing
# outside this machine can reach it. Read by ray._private.services.get_node_ip_address.
LOOPBACK_FLAG = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def connect_ray(address: str | None) -> str:
    """Join the cluster at `address` (or RAY_ADDRESS), else start local Ray sized to this machine.

    Returns a description of the cluster for messages ("local Ray" or the address).
    """
    address = address or os.environ.get("RAY_ADDRESS")
    remote = bool(address) and address != "local"
    if ray.is_initialized():
        return address if remote else "local Ray"
    if not remote:  # "local" starts a new instance even where a `ray start` cluster runs on this machine
        _local_on_loopback()
        try:
            ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False)
        except Exception as err:  # Ray raises a bare Exception when its raylet does not register in 30 s
            reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise FerTuneError(f"local Ray did not start: {reason}") from None
        return "local Ray"
    if address != "auto":
        _check_listening(address)
    try:
        ray.init(address=address)  # fer-tune must be installed on every node (see README)
    except (ConnectionError, RuntimeError, ValueError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise FerTuneError(f"--address {address}: cannot join this Ray cluster ({reason})") from None
    return address


def _local_on_loopback() -> None:
    os.environ[LOOPBACK_FLAG] = "0"  # inherited by the raylet and workers Ray starts
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False  # read at call time by get_node_ip_address


def _check_listening(address: str) -> None:
    """Fail in seconds, naming the address, where no server listens (ray.init would retry forever)."""
    parsed = urlparse(address if "://" in address else f"ray-gcs://{address}")
    if not parsed.hostname or not parsed.port:
        raise FerTuneError(f"--address {address}: expected HOST:PORT (a Ray head's GCS) or ray://HOST:PORT")
    try:
        with socket.create_connection((parsed.hostname, parsed.port), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as err:
        reason = "timed out" if isinstance(err, socket.timeout) else (err.strerror or str(err))
        raise FerTuneError(
            f"--address {address}: no Ray cluster answers there ({reason} within {CONNECT_TIMEOUT_S:g} s); "
            f"start one with `ray start --head --port {parsed.port}`, or leave --address out to run on local Ray"
        ) from None


def check_resources(cpu: float, gpu: float, cluster: str) -> None:
    """Every trial asks for `cpu` CPUs and `gpu` GPUs on one node: fail now if no node can give them."""
    nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
    cpus = max((n.get("CPU", 0.0) for n in nodes), default=0.0)
    gpus = max((n.get("GPU", 0.0) for n in nodes), default=0.0)
    fits = any(n.get("CPU", 0.0) >= cpu and n.get("GPU", 0.0) >= gpu for n in nodes)
    if fits:
        return
    has = f"its largest node has {cpus:g} CPUs and " + (f"{gpus:g} GPUs" if gpus else "no GPU")
    asks = f"each trial asks for {cpu:g} CPU{'s' if cpu != 1 else ''} and {gpu:g} GPU{'s' if gpu != 1 else ''}"
    if gpu > gpus:
        fix = "--gpus-per-trial 0 (or resources.gpu: 0) to train on CPUs" if not gpus else f"--gpus-per-trial {gpus:g}"
    else:
        fix = f"--cpus-per-trial {cpus:g} (or lower resources.cpu)"
    raise FerTuneError(f"resources: {asks}, but {cluster} cannot run one: {has}; use {fix}")
