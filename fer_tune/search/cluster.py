"""Ray for a sweep: start or join it in bounded time, and check a trial's request fits before any trial starts.

    connect_ray(address)                 # local Ray on loopback, or the cluster at address (or RAY_ADDRESS)
    check_resources(space.resources)     # one line naming the request, what the cluster has and the fix

Without these a sweep can hang: Ray retries an address where no cluster listens forever, and
a trial asking for a GPU the cluster lacks stays PENDING forever.
"""

from __future__ import annotations

import os
import re
import socket
import threading
import time
from urllib.parse import urlparse

import ray

from fer_tune.errors import FerTuneError
from fer_tune.uris import SECRET_WORDS, redact

HTTP2_DATA, HTTP2_HEADERS, HTTP2_RST_STREAM, HTTP2_SETTINGS, HTTP2_GOAWAY = 0x0, 0x1, 0x3, 0x4, 0x7  # frame types
CONNECT_TIMEOUT_S = 5.0  # a cluster's GCS answers a TCP connect in milliseconds; 5 s covers a slow network
# Ray binds its servers to the node's reachable IP unless it believes it runs single-machine; this
# flag (Ray's own, for macOS/Windows) makes a local Ray resolve its node IP to loopback, so nothing
# outside this machine can reach it. Read by ray._private.services.get_node_ip_address.
LOOPBACK_FLAG = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def connect_ray(address: str | None) -> str:
    """Join the cluster at `address` (or RAY_ADDRESS), else start local Ray sized to this machine.

    Returns a description of the cluster for messages ("local Ray" or the address).
    """
    flag = "--address" if address else "RAY_ADDRESS"
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
        _check_listening(address, flag)
        if _on_loopback(address):  # a cluster on this machine's loopback (a test run's): its nodes resolve there too
            _local_on_loopback()
    try:
        ray.init(address=address, logging_level="ERROR")  # fer-tune must be installed on every node (see README)
    except (ConnectionError, RuntimeError, ValueError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise FerTuneError(f"{flag} {address}: cannot join this Ray cluster ({reason})") from None
    return address


def _local_on_loopback() -> None:
    os.environ[LOOPBACK_FLAG] = "0"  # inherited by the raylet and workers Ray starts
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False  # read at call time by get_node_ip_address


def _on_loopback(address: str) -> bool:
    host = urlparse(address if "://" in address else f"ray-gcs://{address}").hostname or ""
    return host == "localhost" or host.startswith("127.")


def _check_listening(address: str, flag: str = "--address") -> None:
    """Fail in seconds, naming the address, where no Ray server answers (ray.init would retry for long).

    A TCP connect is not enough: a firewall or proxy may accept any connection (and even speak HTTP/2),
    and Ray then retries for 25 s with a screen of C++ warnings. Ray's GCS and Ray Client are gRPC
    servers, and a gRPC server answers any call, even to a method it lacks, with HTTP status 200
    (then grpc-status UNIMPLEMENTED); a proxy that cannot reach a server answers 404, 502 or nothing.
    """
    expected = "expected HOST:PORT (a Ray head's GCS, PORT 1 to 65535), ray://HOST:PORT, auto or local"
    if "://" in address and not address.startswith("ray://"):
        raise FerTuneError(f"{flag} {address}: unknown scheme; {expected}")
    parsed = urlparse(address if "://" in address else f"ray-gcs://{address}")
    try:
        host, port = parsed.hostname, parsed.port
    except ValueError:  # a port that is not a number, or above 65535
        host, port = None, None
    if not host or not port or any(c.isspace() for c in address):
        raise FerTuneError(f"{flag} {address!r}: {expected}")
    deadline = time.monotonic() + CONNECT_TIMEOUT_S
    fix = f"start one with `ray start --head --port {port}`, or leave {flag} out to run on local Ray"
    try:
        target = _resolve(host, port, deadline)  # getaddrinfo has no timeout of its own: a dead DNS blocks for long
        with socket.create_connection(target, timeout=max(0.1, deadline - time.monotonic())) as sock:
            sock.settimeout(max(0.1, deadline - time.monotonic()))
            sock.sendall(_grpc_call(host, port))
            ok = _answers_200(sock)
    except OSError as err:
        reason = "timed out" if isinstance(err, socket.timeout) else (err.strerror or str(err))
        raise FerTuneError(
            f"{flag} {address}: no Ray cluster answers there ({reason} within {CONNECT_TIMEOUT_S:g} s); {fix}"
        ) from None
    if not ok:
        raise FerTuneError(f"{flag} {address}: something listens there, but not a Ray cluster (no gRPC answer); {fix}")


def _resolve(host: str, port: int, deadline: float) -> tuple[str, int]:
    """host's first address, looked up in a thread so the lookup is bounded by `deadline`."""
    found: list = []

    def lookup() -> None:
        try:
            found.append(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][4][:2])
        except OSError as err:
            found.append(err)

    thread = threading.Thread(target=lookup, daemon=True)
    thread.start()
    thread.join(max(0.1, deadline - time.monotonic()))
    if not found:
        raise TimeoutError("name lookup timed out")
    if isinstance(found[0], OSError):
        raise found[0]
    return found[0]


def _grpc_call(host: str, port: int) -> bytes:
    """An HTTP/2 connection preface and one gRPC call (health check, empty message), by hand (RFC 9113, 7541)."""

    def frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
        return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload

    def header(name: bytes, value: bytes) -> bytes:  # HPACK literal without indexing, new name, no Huffman
        return b"\x00" + bytes([len(name)]) + name + bytes([len(value)]) + value

    headers = b"".join(header(name, value) for name, value in (
        (b":method", b"POST"), (b":scheme", b"http"), (b":path", b"/grpc.health.v1.Health/Check"),
        (b":authority", f"{host}:{port}".encode()[:100]), (b"content-type", b"application/grpc"), (b"te", b"trailers"),
    ))  # fmt: skip
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(HTTP2_SETTINGS, 0, 0, b"")
    return preface + frame(HTTP2_HEADERS, 0x4, 1, headers) + frame(HTTP2_DATA, 0x1, 1, b"\x00" * 5)


def _answers_200(sock: socket.socket) -> bool:
    """Whether the first response headers on stream 1 carry :status 200 (HPACK static index 8: byte 0x88)."""
    data = b""
    while True:
        while len(data) >= 9 and len(data) >= 9 + int.from_bytes(data[:3], "big"):
            size, kind, stream = int.from_bytes(data[:3], "big"), data[3], int.from_bytes(data[5:9], "big")
            payload, data = data[9 : 9 + size], data[9 + size :]
            if kind == HTTP2_HEADERS and stream == 1:
                return payload[:1] == b"\x88" or payload.startswith(b"\x48\x03200")
            if kind in (HTTP2_RST_STREAM, HTTP2_GOAWAY):
                return False
        chunk = sock.recv(4096)
        if not chunk:
            return False
        data += chunk


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


STORAGE_TIMEOUT_S = 10.0  # resolving an S3 bucket's region is one request; a missing network must not hang


# A query key naming a secret (fer_tune.uris.SECRET_WORDS): access_key, secret_key, session_token, sig, ...
_QUERY_SECRET_KEY = re.compile(rf"[?&;](?P<key>[^=&;#]*(?:{'|'.join(SECRET_WORDS)})[^=&;#]*)=", re.IGNORECASE)


def check_storage(storage: str) -> None:
    """A --storage URI Ray can use: a scheme pyarrow.fs knows (Ray opens storage with
    pyarrow.fs.FileSystem.from_uri) and, within STORAGE_TIMEOUT_S, a bucket or folder that exists.

    Only URIs are checked here (local paths are checked as writable folders by the CLI).
    """
    import pyarrow.fs

    shown = redact(storage)
    secret = _QUERY_SECRET_KEY.search(storage)
    if secret is not None:  # Ray keeps the storage URI in tuner.pkl and in every trial's state
        raise FerTuneError(
            f"--storage {shown}: {secret['key']} in the URI would be saved in Ray's experiment files; "
            "give credentials through the environment (AWS_SECRET_ACCESS_KEY, GOOGLE_APPLICATION_CREDENTIALS, ...)"
        )
    if storage.lower().startswith("file://") and ("?" in storage or "#" in storage):
        raise FerTuneError(f"--storage {shown}: a file:// URI takes no query or fragment; give the folder alone")
    outcome: dict = {}

    def probe() -> None:
        try:
            filesystem, path = pyarrow.fs.FileSystem.from_uri(storage)
            if isinstance(filesystem, pyarrow.fs.S3FileSystem | pyarrow.fs.GcsFileSystem):  # Ray makes folders only
                bucket = path.split("/")[0]
                if filesystem.get_file_info(bucket).type == pyarrow.fs.FileType.NotFound:
                    outcome["missing"] = f"bucket {bucket}"
        except Exception as err:  # noqa: BLE001 - pyarrow raises ArrowInvalid, OSError and others; all mean unusable
            outcome["error"] = err

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(STORAGE_TIMEOUT_S)
    if thread.is_alive():
        raise FerTuneError(
            f"--storage {shown}: no answer within {STORAGE_TIMEOUT_S:g} s; check the network and "
            "credentials, or use a folder all nodes share"
        )
    error = outcome.get("error")
    if error is not None:
        text = redact(" ".join(str(error).split()))[:160]
        if "nrecognized filesystem type" in text or "Unrecognized" in text:
            scheme = storage.split("://", 1)[0]
            raise FerTuneError(
                f"--storage {shown}: unknown scheme {scheme}://; expected a folder, or a URI of a "
                "filesystem pyarrow knows (s3://, gs://, hdfs://, abfs://, file://)"
            )
        raise FerTuneError(f"--storage {shown}: cannot open it ({text})")
    if outcome.get("missing"):
        raise FerTuneError(f"--storage {shown}: {outcome['missing']} does not exist; create it first")
