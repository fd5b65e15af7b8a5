"""Latency of one 640x480 picture through `fer-tune serve`: POST /api/predict, the whole round trip, on CPU.

    .venv/bin/python -m bench.serve                      # trains and registers a small model3 first (~1 min)
    .venv/bin/python -m bench.serve --model models:/fer-emotion@champion --tracking-uri sqlite:///results/mlflow.db

Figure predict_640x480/median_ms: the median wall time of `--requests` (20) POSTs of one picture
after `--warmup` (5), timed by the client over one keep-alive loopback connection: multipart upload,
decoding, the Haar cascade, cropping, the model (with its flip test-time augmentation) and the JSON
answer. The picture is what the page's webcam sends: a real portrait (skimage.data.astronaut, one
face) scaled to 480x480 and centred on a grey 640x480 frame, JPEG quality 85. The server is
`fer-tune serve` in its own process (one torch and one OpenCV thread), as a user runs it. Figures
predict_640x480/{decode,detect,model}_ms time the server's steps alone, in the bench's process
once the server has stopped: decoding the JPEG, the face search, and cropping plus the model.

Without --model the bench registers its own model in a temporary store: one trial of `--arch`
(default model3, full width: the seed's architecture, the largest CPU cost among its nets)
trained for one epoch on 700 synthetic faces. Accuracy is not the point; the network's size is.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import requests

from bench.common import Recorder, write_readme

FRAME = (640, 480)  # width, height: a webcam frame (app.js sends at most 640 wide)
JPEG_QUALITY = 85  # what app.js's canvas.toBlob uses
REQUESTS, WARMUP = 20, 5
START_TIMEOUT = 180  # seconds for the server to load the model and answer
BENCH_SPACE = """name: bench-serve
data: {{source: synthetic, n: 700, seed: 0}}
search: {{algorithm: random, seed: 0}}
pruner: {{name: none}}
budget: {{num_samples: 1, max_epochs: 1, max_concurrent: 1}}
mlflow: {{experiment: bench-serve, register_as: bench-serve}}
space: {{model: {arch}, batch_size: 32, augmentation: none}}
"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.serve", description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a model URI or folder to serve (default: register a small one first)")
    parser.add_argument("--tracking-uri", help="the MLflow store of --model")
    parser.add_argument("--arch", default="model3", help="architecture of the model registered without --model")
    parser.add_argument("--requests", type=int, default=REQUESTS, help=f"timed requests (default {REQUESTS})")
    parser.add_argument("--warmup", type=int, default=WARMUP, help=f"untimed requests first (default {WARMUP})")
    parser.add_argument("--full", action="store_true", help="accepted for bench.run_all; the same bench")
    parser.add_argument("--out", type=Path, help="results folder (default results/bench)")
    args = parser.parse_args(argv)
    record = Recorder("serve", "full" if args.full else "short", args.out)
    with tempfile.TemporaryDirectory() as folder:
        model, store, arch = args.model, args.tracking_uri, None
        if model is None:
            arch = args.arch
            model, store = register_model(Path(folder), arch)
        times, faces = time_requests(model, store, Path(folder), args.requests, args.warmup)
        steps = time_steps(model, store, args.requests)  # after the server has stopped: nothing else running
    details = {
        "picture": f"astronaut 480x480 on a grey {FRAME[0]}x{FRAME[1]} frame, JPEG q{JPEG_QUALITY}",
        "faces_found": faces,
        "model": model if arch is None else f"{arch} (width 1, 1 epoch on synthetic faces)",
        "requests": len(times),
    }
    spread = {"p90_ms": round(float(np.percentile(times, 90)), 2), "min_ms": round(min(times), 2)}
    record("predict_640x480/median_ms", statistics.median(times), "ms", warmup=args.warmup, **spread, **details)
    for step, step_times in steps.items():
        record(f"predict_640x480/{step}_ms", statistics.median(step_times), "ms", where="in-process", **details)
    write_readme(args.out)


def register_model(folder: Path, arch: str) -> tuple[str, str]:
    """Run a one-trial tracked sweep in `folder`; the registered model's URI and its store."""
    from fer_tune.cli.sweep import run_space
    from fer_tune.search.sweep_file import load_space

    store = f"sqlite:///{folder / 'mlflow.db'}"
    os.environ["MLFLOW_TRACKING_URI"] = store  # this process only: the sweep tracks into the temporary store
    (folder / "space.yaml").write_text(BENCH_SPACE.format(arch=arch))
    start = time.perf_counter()
    _, tracking = run_space(load_space(folder / "space.yaml"), storage=folder / "ray", verbose=0)
    registration = tracking.registration
    print(f"[bench.serve] registered {arch} in {time.perf_counter() - start:.0f} s", flush=True)
    return f"models:/{registration.name}/{registration.version}", store


def picture() -> bytes:
    """The webcam-sized JPEG: a real face in a 640x480 frame."""
    from PIL import Image
    from skimage import data

    frame = Image.new("RGB", FRAME, (128, 128, 128))
    side = FRAME[1]
    portrait = Image.fromarray(data.astronaut()).resize((side, side), Image.Resampling.LANCZOS)
    frame.paste(portrait, ((FRAME[0] - side) // 2, 0))
    buffer = io.BytesIO()
    frame.save(buffer, "JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


def time_requests(model: str, store: str | None, folder: Path, count: int, warmup: int) -> tuple[list[float], int]:
    """Milliseconds of each timed POST /api/predict, and the faces the server found in the picture."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [sys.executable, "-m", "fer_tune.cli", "serve", "--model", model, "--port", str(port)]
    command += ["--tracking-uri", store] if store else []
    base, image = f"http://127.0.0.1:{port}", picture()
    with open(folder / "server.log", "w+") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            session = requests.Session()
            wait_until_up(session, base, server, log)
            post = lambda: session.post(f"{base}/api/predict", files={"file": ("frame.jpg", image, "image/jpeg")})
            for _ in range(warmup):
                post().raise_for_status()
            times = []
            for _ in range(count):
                start = time.perf_counter()
                response = post()
                times.append(1000 * (time.perf_counter() - start))
                response.raise_for_status()
            answer = response.json()
            return times, len(answer["faces"]) if answer["face_detected"] else 0
        finally:
            server.terminate()
            server.wait(timeout=30)


def time_steps(model_uri: str, store: str | None, count: int) -> dict[str, list[float]]:
    """Milliseconds of the server's steps, run in this process: decoding, the face search, crops + the model."""
    from fer_tune.serving.images import crop_face, decode_image, find_faces
    from fer_tune.serving.model import load_model
    from fer_tune.serving.web import one_thread_per_picture

    one_thread_per_picture()  # as `fer-tune serve` runs
    model, image = load_model(model_uri, store), picture()
    gray = decode_image(image)
    boxes = find_faces(gray)
    steps = {
        "decode": lambda: decode_image(image),
        "detect": lambda: find_faces(gray),
        "model": lambda: model.predict(np.stack([crop_face(gray, box) for box in boxes])),
    }
    times = {}
    for name, step in steps.items():
        step()  # warm-up
        times[name] = []
        for _ in range(count):
            start = time.perf_counter()
            step()
            times[name].append(1000 * (time.perf_counter() - start))
    return times


def wait_until_up(session: requests.Session, base: str, server: subprocess.Popen, log) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline and server.poll() is None:
        try:
            if session.get(f"{base}/api/model", timeout=5).ok:
                return
        except requests.RequestException:  # refused, or accepted while the model is still loading
            time.sleep(0.5)
    log.seek(0)
    sys.exit(f"[bench.serve] the server never answered:\n{log.read()[-3000:]}")


if __name__ == "__main__":
    sys.exit(main())
