"""The prediction web page and its JSON API, served from a registered model: what `fer-tune serve` runs.

    import uvicorn
    from fer_tune.serving.web import create_app

    app = create_app("models:/fer-emotion@champion")      # or a `fer-tune models download` folder
    uvicorn.run(app, port=8000)                           # the page on http://127.0.0.1:8000

    curl -F file=@photo.jpg http://127.0.0.1:8000/api/predict   # faces, boxes, probabilities by emotion
    curl -F file=@frame.jpg -F track=242,58,98,98 http://127.0.0.1:8000/api/predict  # a video frame: look there first
    curl http://127.0.0.1:8000/api/model                         # name, version, aliases, test accuracy, ...

Routes: `/` the page (static/: plain HTML, CSS and JS, nothing from a CDN), `POST /api/predict`,
`GET /api/model`, and the OpenAPI schema at /openapi.json. There is no /docs: FastAPI's Swagger UI
and ReDoc pages load their scripts from a CDN (blank offline, and a request off the machine), no
installed package ships them, and the schema is what a client needs. Every face is boxed and
classified; where none is found the largest centred square of the picture is. Every error is JSON
{"error": "<one line>"}: 400 an empty or unreadable upload, 413 a file over the byte limit or an
image over the pixel limit (decompression bombs), 415 a request that is not multipart/form-data or a
part that is not an image, 422 no `file` field or a `track` that is not boxes.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import numpy as np
from fastapi import FastAPI, File, Form, HTTPException, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException

from fer_tune.errors import FerTuneError
from fer_tune.serving.images import MAX_PIXELS, ImageTooLargeError, centre_square, crop_face, decode_image, find_faces
from fer_tune.serving.images import Box as Rect  # a face box as a tuple; Box here is the API's
from fer_tune.serving.model import LoadedModel, RegistryEntry, load_registered, trained_on

STATIC = Path(__file__).parent / "static"
MAX_UPLOAD_BYTES = 10 * 2**20  # 10 MB: a phone photo is 2-8 MB as JPEG
MULTIPART_OVERHEAD = 64 * 2**10  # room for the form's boundaries and part headers around the file
DRAIN_LIMIT = 256 * 2**20  # read (and drop) at most this much of a refused body, so the client hears the answer
MAX_FACES = 20  # faces classified per picture, largest first: bounds the work a crowd photo asks for
PREDICT = "/api/predict"
TRACK_BOX = re.compile(r"\s*(\d{1,9})\s*,\s*(\d{1,9})\s*,\s*(\d{1,9})\s*,\s*(\d{1,9})\s*")  # x,y,width,height
TRACK_HELP = (
    "a video frame's faces in the frame before, as the answer gave them: 'x,y,width,height' per face, "
    "';' between faces. Each is looked for around its box first (a few ms instead of tens); when one is "
    "not found there the whole picture is searched. Leave it out now and then to find faces that came into view."
)
# The page loads only its own files; images and the webcam come as blob: URLs.
PAGE_POLICY = (
    "default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:; style-src 'self'; script-src 'self'"
)
log = logging.getLogger("fer_tune.serving")


class Box(BaseModel):
    """A rectangle in pixels of the uploaded picture (after its EXIF rotation)."""

    x: int
    y: int
    width: int
    height: int


class Face(BaseModel):
    box: Box
    emotion: str = Field(description="the most probable emotion")
    confidence: float = Field(description="its probability")
    probabilities: dict[str, float] = Field(description="every class, in the model's order; they sum to 1")


class Prediction(BaseModel):
    width: int = Field(description="of the picture, in pixels")
    height: int
    face_detected: bool = Field(description="false: no face found, the largest centred square was classified")
    faces: list[Face] = Field(description="largest first; one entry, the centred square, where no face was found")
    note: str | None = None


class ModelInfo(BaseModel):
    uri: str = Field(description="as given to `fer-tune serve --model`")
    name: str | None = Field(description="registered model name (None for an unregistered model)")
    version: str | None
    aliases: list[str]
    test_accuracy: float | None = Field(description="on `eval_split`, with the model's flip test-time augmentation")
    test_macro_f1: float | None
    eval_split: str | None = Field(description="test, or validation where the data had no test split")
    classes: list[str]
    architecture: str | None
    sweep: str | None
    trial_id: str | None
    checkpoint_epoch: int | None
    data_source: str | None
    trained_on: str = Field(description="what the model was trained on, in words: the page shows it beside predictions")
    tta: str | None  # the test-time augmentation the model averages over: none, flip or tencrop
    latency_ms: float | None = Field(None, description="one face, batch 1, CPU, 1 thread, as its sweep measured it")


class ErrorBody(BaseModel):
    error: str = Field(description="what was wrong, in one line")


ERRORS = {status: {"model": ErrorBody} for status in (400, 413, 415, 422)}


def create_app(
    model_uri: str,
    tracking_uri: str | None = None,
    max_upload_bytes: int = MAX_UPLOAD_BYTES,
    max_pixels: int = MAX_PIXELS,
) -> FastAPI:
    """The app serving `model_uri`, loaded now: a bad URI or store fails here, before any server starts."""
    model, entry = load_registered(model_uri, tracking_uri)
    info = model_info(model_uri, entry, model)
    app = FastAPI(
        docs_url=None,  # Swagger UI and ReDoc load from a CDN: blank offline; /openapi.json is the schema
        redoc_url=None,
        title="fer-tune",
        summary=f"Facial-emotion recognition with {info.name or model_uri}",
        version=info.version or "unregistered",
    )
    _add_error_handlers(app)
    app.add_middleware(UploadGuard, max_upload_bytes=max_upload_bytes)
    predict_lock = threading.Lock()  # one picture at a time: torch uses every core per call, OpenCV's cascade is shared

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Content-Security-Policy": PAGE_POLICY})

    @app.get("/api/model", response_model=ModelInfo, summary="The served model")
    def describe() -> ModelInfo:
        """The served model: registry entry, test metrics, classes and where it came from."""
        return info

    @app.post(PREDICT, response_model=Prediction, responses=ERRORS, summary="Emotions of the faces in a picture")
    def predict(
        file: Annotated[UploadFile, File(description="an image: JPEG, PNG, WebP, GIF, BMP, TIFF...")],
        track: Annotated[str | None, Form(description=TRACK_HELP)] = None,
    ):
        """Find every face in the picture and the probability of each emotion for it."""
        near = parse_track(track)  # before reading the image: a bad hint costs no decoding
        gray = _read_upload(file, max_upload_bytes, max_pixels)
        with predict_lock:
            return analyse(model, gray, near)

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def one_thread_per_picture() -> None:
    """Run torch and OpenCV on one thread each (process-wide): a picture's few faces are too small to share out.

    Measured on the 2-core machine while other work shared it: model3 on 2 crops took 33 ms on one
    thread and 215 ms on two (20 crops: 352 vs 618 ms), the Haar cascade on 640x480 185 vs 425 ms; on a quiet
    CPU two threads were no faster (21 ms either way). A page's user runs a browser beside it.
    """
    import cv2
    import torch

    torch.set_num_threads(1)
    cv2.setNumThreads(1)


def model_info(uri: str, entry: RegistryEntry, model: LoadedModel) -> ModelInfo:
    """/api/model's answer, from the registry entry and the MLmodel metadata (tracking/champion.py writes it)."""
    meta = model.metadata
    metrics, data = meta.get("metrics", {}), meta.get("data", {})
    return ModelInfo(
        uri=uri,
        name=entry.name,
        version=entry.version,
        aliases=entry.aliases,
        test_accuracy=metrics.get("accuracy"),
        test_macro_f1=metrics.get("macro_f1"),
        eval_split=meta.get("eval_split"),
        classes=model.classes,
        architecture=meta.get("train_config", {}).get("model"),
        sweep=meta.get("sweep"),
        trial_id=meta.get("trial_id"),
        checkpoint_epoch=meta.get("checkpoint_epoch"),
        data_source=data.get("source"),
        trained_on=trained_on(data.get("source")),
        tta=meta.get("tta"),
        latency_ms=meta.get("cost", {}).get("latency_ms"),
    )


def parse_track(text: str | None) -> list[Rect]:
    """The boxes of a `track` field ([] for none or blank); anything else is a 422 naming the field."""
    if text is None or not text.strip():
        return []
    parts = text.split(";")
    matches = [TRACK_BOX.fullmatch(part) for part in parts[: MAX_FACES + 1]]
    if len(parts) > MAX_FACES or None in matches:
        shown = text if len(text) <= 40 else f"{text[:40]}..."
        expected = f"up to {MAX_FACES} boxes 'x,y,width,height' (whole pixels) separated by ';'"
        raise HTTPException(422, f"track: expected {expected}, not {shown!r}")
    boxes = [tuple(int(v) for v in match.groups()) for match in matches]
    if any(w == 0 or h == 0 for _, _, w, h in boxes):
        raise HTTPException(422, "track: a box's width and height are at least 1 pixel")
    return boxes


def analyse(model: LoadedModel, gray: np.ndarray, near: Sequence[Rect] = ()) -> Prediction:
    """Every face in `gray` (or its centred square where there is none), classified in one batch.

    `near`: the faces' boxes in the frame before, for a video (`find_faces` looks there first).
    """
    boxes = find_faces(gray, near)[:MAX_FACES]
    detected = bool(boxes)
    boxes = boxes or [centre_square(gray)]
    probabilities = model.predict(np.stack([crop_face(gray, box) for box in boxes]))
    classes = model.classes or [str(i) for i in range(probabilities.shape[1])]
    faces = []
    for (x, y, w, h), row in zip(boxes, probabilities.astype(float)):
        top = int(row.argmax())
        faces.append(
            Face(
                box=Box(x=x, y=y, width=w, height=h),
                emotion=classes[top],
                confidence=row[top],
                probabilities=dict(zip(classes, row)),
            )
        )
    note = None if detected else "no face found: the whole picture (its centred square) was classified"
    return Prediction(width=gray.shape[1], height=gray.shape[0], face_detected=detected, faces=faces, note=note)


def _read_upload(file: UploadFile, max_bytes: int, max_pixels: int) -> np.ndarray:
    """The uploaded image as grayscale pixels; a bad upload becomes an HTTP error with a one-line message."""
    kind = (file.content_type or "application/octet-stream").split(";")[0].strip().lower()
    if not (kind.startswith("image/") or kind == "application/octet-stream"):
        raise HTTPException(415, f"{file.filename or 'the file'} is {kind}, not an image")
    data = file.file.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise HTTPException(413, too_large(max_bytes))
    try:
        return decode_image(data, max_pixels)
    except ImageTooLargeError as err:
        raise HTTPException(413, f"image too large: {err}") from None
    except FerTuneError as err:
        raise HTTPException(400, str(err)) from None


class UploadGuard:
    """ASGI middleware refusing a POST to /api/predict that is not multipart/form-data (415) or whose body is
    over the upload limit (413), as the bytes arrive: the form parser would otherwise spool any size to disk.

    A refused body is read to its end (and dropped) before the answer, up to DRAIN_LIMIT: a client
    still sending when the connection closes sees a reset instead of the 413.
    """

    def __init__(self, app, max_upload_bytes: int):
        self.app, self.max_upload_bytes = app, max_upload_bytes
        self.max_body = max_upload_bytes + MULTIPART_OVERHEAD

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] != PREDICT or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        headers = Headers(scope=scope)
        kind = headers.get("content-type", "").split(";")[0].strip().lower()
        refusal = None
        if kind != "multipart/form-data":
            refusal = error_response(415, f"send the image as multipart/form-data, not {kind or 'no content type'}")
        elif int(headers.get("content-length") or 0) > self.max_body:
            refusal = error_response(413, too_large(self.max_upload_bytes))
        if refusal is not None:
            await _drain(receive)
            return await refusal(scope, receive, send)
        await self.app(scope, self.counted(receive), send)

    def counted(self, receive):
        """`receive` that stops a body without a Content-Length (chunked) once it is over the limit."""
        received = 0

        async def counted_receive():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_body:
                if message.get("more_body"):
                    await _drain(receive)
                raise HTTPException(413, too_large(self.max_upload_bytes))  # FastAPI passes it on from the form parser
            return message

        return counted_receive


async def _drain(receive) -> None:
    """Read the rest of a request body, dropping it, up to DRAIN_LIMIT bytes."""
    received = 0
    while received <= DRAIN_LIMIT:
        message = await receive()
        received += len(message.get("body", b""))
        if message["type"] != "http.request" or not message.get("more_body"):
            return


def _add_error_handlers(app: FastAPI) -> None:
    """Every error the app answers is {"error": "<one line>"}, whoever raised it."""

    async def http_error(request, err: StarletteHTTPException):
        return error_response(err.status_code, str(err.detail), err.headers)

    async def validation_error(request, err: RequestValidationError):
        first = err.errors()[0]
        field = ".".join(str(part) for part in first["loc"][1:]) or "the request"
        hint = "; send the image as the multipart/form-data field 'file'" if request.url.path == PREDICT else ""
        return error_response(422, f"{field}: {first['msg'].lower()}{hint}")

    async def server_error(request, err: Exception):
        log.exception("%s %s failed", request.method, request.url.path)
        return error_response(500, f"internal error ({type(err).__name__}); the server log has the traceback")

    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(Exception, server_error)


def error_response(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": " ".join(message.split())}, status_code=status, headers=headers)


def too_large(max_bytes: int) -> str:
    return f"the file is over the upload limit of {max_bytes / 2**20:g} MB"
