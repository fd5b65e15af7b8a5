"""Latency of one 640x480 picture through `fer-tune serve`: POST /api/predict, the whole round trip, on CPU.

    .venv/bin/python -m bench.serve                      # trains and registers two small model3s first (~2 min)
    .venv/bin/python -m bench.serve --model models:/fer-emotion@champion --tracking-uri sqlite:///results/mlflow.db

Figure predict_640x480/median_ms: the median wall time of `--requests` (20) POSTs of one picture
after `--warmup` (5), timed by the client over one keep-alive loopback connection: multipart upload,
decoding, the Haar cascade, cropping, the model (with its flip test-time augmentation) and the JSON
answer. The picture is what the page's webcam sends: a real portrait (skimage.data.astronaut, one
face) scaled to 480x480 and centred on a grey 640x480 frame, JPEG quality 85. The server is
`fer-tune serve` in its own process (one torch and one OpenCV thread), as a user runs it. Figures
predict_640x480/{decode,detect,model}_ms time the server's steps alone, in the bench's process
once the server has stopped: decoding the JPEG, the face search, and cropping plus the model.

Figures webcam_640x480/*: the page's webcam (target 30 frames a second, so <= 33 ms a frame), on
a fast model. `--frames` (90) frames of the same picture sent back to back as app.js sends them:
each with the faces of the answer before as its `track` hint, but every FULL_SEARCH_EVERY-th
(read from app.js: 30) without, so the whole frame is searched. median_ms is the median round trip
of those frames, fps the frames over the wall time of the sequence (the server's side of the
page's rate: the browser also captures, encodes and draws each frame); detect_ms and model_ms
time the tracked face search and the fast model alone, in-process as above. A still picture
is tracked at every hinted frame; a moving face is too while it moves less than
images.TRACK_PAD of its width between frames.

Without --model the bench registers its own models in a temporary store, each one trial of
`--arch` trained for one epoch on 700 synthetic faces (accuracy is not the point; the network's
size is): at full width for predict_640x480 (model3: the seed's architecture, the largest CPU
cost among its nets), and at width FAST_WIDTH for the webcam, the kind of model a front's
`champion: {where: {latency_ms: "<= 5"}}` rule picks. `--webcam-model` serves one of yours instead
(default with --model: the same model).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
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
WEBCAM_FRAMES = 90  # 3 s of webcam at 30 frames/s: three whole-frame searches among them
FAST_WIDTH = 0.125  # the webcam's model: model3 at quick.yaml's width, ~0.6 ms a face (core/cost.py's example)
START_TIMEOUT = 180  # seconds for the server to load the model and answer
BENCH_SPACE = """name: {name}
data: {{source: synthetic, n: 700, seed: 0}}
search: {{algorithm: random, seed: 0}}
pruner: {{name: none}}
budget: {{num_samples: 1, max_epochs: 1, max_concurrent: 1}}
mlflow: {{experiment: bench-serve, register_as: {name}}}
space: {{model: {arch}, width: {width}, batch_size: 32, augmentation: none}}
"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.serve", description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a model URI or folder to serve (default: register a small one first)")
    parser.add_argument("--webcam-model", help="the model the webcam figures serve (default: a narrow one, see above)")
    parser.add_argument("--tracking-uri", help="the MLflow store of --model and --webcam-model")
    parser.add_argument("--arch", default="model3", help="architecture of the models registered without --model")
    parser.add_argument("--requests", type=int, default=REQUESTS, help=f"timed requests (default {REQUESTS})")
    parser.add_argument("--frames", type=int, default=WEBCAM_FRAMES, help=f"timed webcam frames ({WEBCAM_FRAMES})")
    parser.add_argument("--warmup", type=int, default=WARMUP, help=f"untimed requests first (default {WARMUP})")
    parser.add_argument("--full", action="store_true", help="accepted for bench.run_all; the same bench")
    parser.add_argument("--out", type=Path, help="results folder (default results/bench)")
    args = parser.parse_args(argv)
    record = Recorder("serve", "full" if args.full else "short", args.out)
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        model, store, label = args.model, args.tracking_uri, args.model
        if model is None:
            model, store = register_model(folder, "bench-serve", args.arch, 1.0)
            label = f"{args.arch} (width 1, 1 epoch on synthetic faces)"
        fast, fast_store, fast_label = model, store, label
        if args.webcam_model is not None:
            fast, fast_store, fast_label = args.webcam_model, args.tracking_uri, args.webcam_model
        elif args.model is None:
            fast, _ = register_model(folder, "bench-serve-fast", args.arch, FAST_WIDTH)
            fast_label = f"{args.arch} (width {FAST_WIDTH}, 1 epoch on synthetic faces)"
        with serving(model, store, folder) as post:
            times, faces = time_uploads(post, args.requests, args.warmup)
        with serving(fast, fast_store, folder) as post:
            frames, wall, hinted = time_webcam(post, args.frames, args.warmup)
        # after the servers have stopped: nothing else running
        steps = time_steps(model, store, args.requests)
        webcam_steps = time_steps(fast, fast_store, args.requests, track=True)
    details = {
        "picture": f"astronaut 480x480 on a grey {FRAME[0]}x{FRAME[1]} frame, JPEG q{JPEG_QUALITY}",
        "faces_found": faces,
        "model": label,
        "requests": len(times),
    }
    record("predict_640x480/median_ms", statistics.median(times), "ms", warmup=args.warmup, **spread(times), **details)
    for step, step_times in steps.items():
        record(f"predict_640x480/{step}_ms", statistics.median(step_times), "ms", where="in-process", **details)
    webcam = {
        **details,
        "model": fast_label,
        "requests": len(frames),
        "tracked": f"{hinted} of {len(frames)} frames sent the track hint (app.js FULL_SEARCH_EVERY)",
    }
    record("webcam_640x480/median_ms", statistics.median(frames), "ms", "<= 33", **spread(frames), **webcam)
    record("webcam_640x480/fps", len(frames) / wall, "frames/s", ">= 30", **webcam)
    for step in ("detect", "model"):
        step_times = webcam_steps[step]
        record(f"webcam_640x480/{step}_ms", statistics.median(step_times), "ms", where="in-process", **webcam)
    write_readme(args.out)


def spread(times: list[float]) -> dict:
    return {"p90_ms": round(float(np.percentile(times, 90)), 2), "min_ms": round(min(times), 2)}


def register_model(folder: Path, name: str, arch: str, width: float) -> tuple[str, str]:
    """Run a one-trial tracked sweep in `folder`; the registered model's URI and its store."""
    from fer_tune.cli.sweep import run_space
    from fer_tune.search.sweep_file import load_space

    store = f"sqlite:///{folder / 'mlflow.db'}"
    os.environ["MLFLOW_TRACKING_URI"] = store  # this process only: the sweep tracks into the temporary store
    space = folder / f"{name}.yaml"
    space.write_text(BENCH_SPACE.format(name=name, arch=arch, width=width))
    start = time.perf_counter()
    with contextlib.chdir(folder):  # the sweep's results/<sweep>/ folder goes with the rest, not into the checkout
        _, tracking = run_space(load_space(space), storage=folder / "ray", verbose=0)
    registration = tracking.registration
    print(f"[bench.serve] registered {arch} at width {width} in {time.perf_counter() - start:.0f} s", flush=True)
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


@contextlib.contextmanager
def serving(model: str, store: str | None, folder: Path):
    """`fer-tune serve` on `model` in its own process; yields post(track="") -> the response to one picture."""
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
            session = requests.Session()  # one keep-alive connection, as the page's
            wait_until_up(session, base, server, log)

            def post(track: str = "") -> requests.Response:
                form = {"track": track} if track else None
                files = {"file": ("frame.jpg", image, "image/jpeg")}
                response = session.post(f"{base}/api/predict", files=files, data=form)
                response.raise_for_status()
                return response

            yield post
        finally:
            server.terminate()
            server.wait(timeout=30)


def time_uploads(post, count: int, warmup: int) -> tuple[list[float], int]:
    """Milliseconds of each timed POST /api/predict, and the faces the server found in the picture."""
    for _ in range(warmup):
        post()
    times = []
    for _ in range(count):
        start = time.perf_counter()
        response = post()
        times.append(1000 * (time.perf_counter() - start))
    answer = response.json()
    return times, len(answer["faces"]) if answer["face_detected"] else 0


def time_webcam(post, count: int, warmup: int) -> tuple[list[float], float, int]:
    """Milliseconds of each timed frame sent as the page's webcam sends them, the seconds they took in all,
    and how many carried the track hint."""
    every = page_constant("FULL_SEARCH_EVERY")
    track, times, hinted = "", [], 0
    for frame in range(warmup + count):  # the warm-up frames are the sequence's first: the page's pattern goes on
        if frame == warmup:
            started = time.perf_counter()
        hint = "" if frame % every == 0 else track  # as app.js's sendFrames
        start = time.perf_counter()
        answer = post(hint).json()
        if frame >= warmup:
            times.append(1000 * (time.perf_counter() - start))
            hinted += bool(hint)
        track = track_of(answer)
    return times, time.perf_counter() - started, hinted


def track_of(answer: dict) -> str:
    """The `track` field the page sends after `answer` (app.js's trackOf): its faces' boxes."""
    if not answer["face_detected"]:
        return ""
    return ";".join(",".join(str(face["box"][k]) for k in ("x", "y", "width", "height")) for face in answer["faces"])


def page_constant(name: str) -> int:
    """An integer constant of the page's script (app.js), read from its source: the page decides, the bench follows."""
    from fer_tune.serving.web import STATIC

    match = re.search(rf"^const {name} = (\d+);", (STATIC / "app.js").read_text(), re.MULTILINE)
    if match is None:
        sys.exit(f"[bench.serve] {STATIC / 'app.js'} has no `const {name} = <integer>;`")
    return int(match[1])


def time_steps(model_uri: str, store: str | None, count: int, track: bool = False) -> dict[str, list[float]]:
    """Milliseconds of the server's steps, run in this process: decoding, the face search (around the faces'
    own boxes, as a tracked webcam frame, with `track`), crops + the model."""
    from fer_tune.serving.images import crop_face, decode_image, find_faces
    from fer_tune.serving.model import load_model
    from fer_tune.serving.web import one_thread_per_picture

    one_thread_per_picture()  # as `fer-tune serve` runs
    model, image = load_model(model_uri, store), picture()
    gray = decode_image(image)
    boxes = find_faces(gray)
    near = boxes if track else ()
    steps = {
        "decode": lambda: decode_image(image),
        "detect": lambda: find_faces(gray, near),
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
