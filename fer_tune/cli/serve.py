"""`fer-tune serve`: a web page and a JSON API that read the emotion of every face in a picture.

    fer-tune serve                                        # models:/fer-emotion@champion on http://127.0.0.1:8000
    fer-tune serve --model deploy/ --port 8080            # a `fer-tune models download` folder
    curl -F file=@photo.jpg http://127.0.0.1:8000/api/predict

The port is taken and the model loaded before the server starts, so a busy port, a bad --model
or an unreachable store fails in one line. Like every command module, this one imports only the
standard library at the top so `fer-tune --help` stays instant; the app is fer_tune/serving/web.py.
"""

from __future__ import annotations

import argparse
import math
import socket

from fer_tune.cli.paths import given
from fer_tune.errors import FerTuneError

DEFAULT_MODEL = "models:/fer-emotion@champion"
LOOPBACK = ("127.0.0.1", "::1", "localhost")


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Add the serve sub-command to the `fer-tune` parser."""
    serve = commands.add_parser("serve", help="serve a web page and a JSON API that read faces' emotions")
    serve.add_argument(
        "--model", type=given, default=DEFAULT_MODEL, help=f"model URI or folder (default {DEFAULT_MODEL})"
    )
    serve.add_argument(
        "--host", type=given, default="127.0.0.1", help="interface to bind (default 127.0.0.1: this machine)"
    )
    serve.add_argument("--port", type=port_number, default=8000, help="port, 1 to 65535 (default 8000)")
    serve.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow store (default: MLFLOW_TRACKING_URI, else sqlite:///results/mlflow.db)",
    )
    serve.add_argument(
        "--max-upload-mb", type=_positive, default=10.0, metavar="MB", help="largest image file accepted (default 10)"
    )
    serve.set_defaults(handler=cmd_serve)


MAX_UPLOAD_MB = 1024  # a picture of a face is kilobytes; a gigabyte is already a mistake


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (0 < value <= MAX_UPLOAD_MB):  # NaN fails this too
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected a number of megabytes above 0 and at most {MAX_UPLOAD_MB}"
        )
    return value


def port_number(text: str) -> int:
    """A TCP port: Python's socket would take 99999 modulo 65536 (serving on 34463) without a word."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a port from 1 to 65535")
    return value


def cmd_serve(args) -> int:
    import uvicorn

    from fer_tune.serving.web import create_app, one_thread_per_picture

    one_thread_per_picture()
    # ours, so a busy port fails at once in one line rather than in uvicorn's log
    sock = listening_socket(args.host, args.port)
    try:
        app = create_app(args.model, args.tracking_uri, max_upload_bytes=int(args.max_upload_mb * 2**20))
    except BaseException:
        sock.close()
        raise
    url = f"http://{url_host(args.host)}:{sock.getsockname()[1]}"
    # The API's schema, not /docs: Swagger UI loads from a CDN, so fer-tune serves no docs page (serving/web.py)
    print(f"fer-tune: serving {args.model} on {url} (API schema: {url}/openapi.json; Ctrl+C stops it)", flush=True)
    if args.host not in LOOPBACK:
        print(f"fer-tune: {args.host} is reachable from other machines: anyone who can reach it can use the page")
    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=5)
    uvicorn.Server(config).run(sockets=[sock])
    return 0


def listening_socket(host: str, port: int) -> socket.socket:
    """A listening socket on host:port, or a one-line FerTuneError (port in use, no such interface)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except OSError as err:
        raise FerTuneError(f"cannot listen on {host}:{port} ({err.strerror or err})") from None
    # proto IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on such sockets' connections, and without
    # it each answer waits for the client's delayed ACK between headers and body (40 ms a request, measured).
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart may follow a stop at once
        sock.bind(address)
    except OSError as err:
        sock.close()
        raise FerTuneError(f"cannot listen on {host}:{port} ({err.strerror or err}); choose another --port") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def url_host(host: str) -> str:
    """The host as a browser opens it in a URL: IPv6 in brackets, all interfaces as this machine."""
    if host in ("0.0.0.0", "::"):
        return "127.0.0.1"  # all interfaces: this machine's own address opens the page here
    return f"[{host}]" if ":" in host else host
