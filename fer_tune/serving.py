"""From image files to emotions with a registered model: load, find the face, predict.

    from fer_tune.serving import load_image, load_model

    model = load_model("models:/fer-emotion@champion")        # or a `models download` folder
    face, note = load_image("photo.jpg", detect_faces=True)   # uint8 [48, 48]; note if no face
    model.predict(face[None])                                 # [1, 7] probabilities, model.classes order

One input convention everywhere (the pyfunc model, `mlflow models serve`, the TorchScript
file): float32 images [N, 1, 48, 48] holding grayscale pixel values 0..255, as read from
the file; the model scales and normalizes them itself. The TorchScript file also takes
uint8 and [N, 48, 48]. The output is [N, num_classes] class probabilities in the order of
the model's `classes` (MLmodel metadata and the model card): the PyTorch flavor's pyfunc
returns a bare array for tensor inputs, so the class names cannot be its column names.
"""

from __future__ import annotations

import functools
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fer_tune.constants import IMAGE_SIZE
from fer_tune.errors import FerTuneError

HAAR_CASCADE = "haarcascade_frontalface_default.xml"  # ships with opencv-python(-headless) 4.x
TORCHSCRIPT_FILE = "model.torchscript.pt"
MLMODEL_FOLDER = "model"  # inside a `fer-tune models download` folder
CARD_FILE = "MODEL_CARD.md"


class Predictor(nn.Module):
    """Pixel values 0..255 (uint8 or float, [N, 48, 48] or [N, 1, 48, 48]) -> probabilities [N, C].

    With `flip_tta`, each face's probabilities are averaged with its mirror image's: faces are
    left-right symmetric and training flips them too, so the average is a free, steadier vote.
    """

    def __init__(self, model: nn.Module, flip_tta: bool):
        super().__init__()
        self.model = model  # training.Normalized: takes [0, 1] images, normalizes inside
        self.flip_tta = flip_tta

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() == 3:
            images = images.unsqueeze(1)
        images = images.float() / 255.0
        probabilities = self.model(images).softmax(1)
        if self.flip_tta:
            probabilities = (probabilities + self.model(images.flip(-1)).softmax(1)) / 2
        return probabilities


def load_image(path: str | Path, detect_faces: bool = False) -> tuple[np.ndarray, str | None]:
    """A 48x48 uint8 grayscale face from an image file of any size and mode, and a note if no face was found.

    Without a face box the largest centred square is used, so the face keeps its proportions.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise FerTuneError(f"{path}: no such image file")
    try:
        with Image.open(path) as image:
            gray = np.asarray(ImageOps.exif_transpose(image).convert("L"))
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise FerTuneError(f"{path}: not a readable image ({str(err).splitlines()[0]})") from None
    note = None
    box = find_face(gray) if detect_faces else None
    if detect_faces and box is None:
        note = "no face detected, using the whole image"
    if box is None:
        side = min(gray.shape)
        top, left = (gray.shape[0] - side) // 2, (gray.shape[1] - side) // 2
        box = (left, top, side, side)
    x, y, w, h = box
    face = Image.fromarray(np.ascontiguousarray(gray[y : y + h, x : x + w]))
    return np.asarray(face.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.LANCZOS)), note


def find_face(gray: np.ndarray) -> tuple[int, int, int, int] | None:
    """The largest frontal face (x, y, width, height) found by OpenCV's bundled Haar cascade, or None."""
    faces = _cascade().detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(24, 24))
    if len(faces) == 0:
        return None
    return tuple(int(v) for v in max(faces, key=lambda f: f[2] * f[3]))


@functools.cache
def _cascade():
    import cv2

    return cv2.CascadeClassifier(cv2.data.haarcascades + HAAR_CASCADE)


@dataclass
class LoadedModel:
    """A fer-tune MLflow model loaded for prediction, with its class names and metadata."""

    pyfunc: Any  # mlflow.pyfunc.PyFuncModel
    classes: list[str]
    metadata: dict

    def predict(self, images: np.ndarray) -> np.ndarray:
        """uint8 or float pixel values [N, 48, 48] or [N, 1, 48, 48] -> probabilities [N, C]."""
        batch = np.asarray(images, dtype=np.float32).reshape(-1, 1, IMAGE_SIZE, IMAGE_SIZE)
        return np.asarray(self.pyfunc.predict(batch))


def load_model(uri: str, tracking_uri: str | None = None) -> LoadedModel:
    """Load `uri` (models:/NAME@ALIAS, models:/NAME/VERSION, runs:/..., or a local folder)."""
    import mlflow.pyfunc

    with tempfile.TemporaryDirectory() as folder:
        local = fetch_model(uri, tracking_uri, folder)
        pyfunc = mlflow.pyfunc.load_model(local)  # reads everything into memory: the folder can go
    metadata = pyfunc.metadata.metadata or {}
    return LoadedModel(pyfunc, list(metadata.get("classes", [])), metadata)


def fetch_model(uri: str, tracking_uri: str | None, dst: str | Path) -> str:
    """A local folder holding the MLflow model `uri`: the folder itself, or a download into `dst`."""
    local = Path(uri)
    if local.exists():
        for folder in (local, local / MLMODEL_FOLDER):  # an MLflow model, or a `models download` folder
            if (folder / "MLmodel").is_file():
                return str(folder)
        raise FerTuneError(f"{uri}: not an MLflow model folder (no MLmodel file)")
    if ":/" not in uri:
        raise FerTuneError(f"{uri}: no such folder, and not a model URI (models:/NAME@ALIAS, models:/NAME/VERSION)")
    from mlflow.artifacts import download_artifacts
    from mlflow.exceptions import MlflowException

    from fer_tune.tracking import fluent_tracking
    from fer_tune.tracking import tracking_uri as resolve

    store = tracking_uri or resolve()
    try:
        # A registered version's source is a logged model (models:/m-...), which MLflow resolves
        # through the global tracking URI whatever is passed here: so set that too.
        with fluent_tracking(store):
            path = download_artifacts(artifact_uri=uri, dst_path=str(dst), tracking_uri=store, registry_uri=store)
    except (MlflowException, OSError, ValueError) as err:
        reason = (getattr(err, "message", None) or str(err)).strip().splitlines()[0]
        raise FerTuneError(f"{uri}: cannot load this model from {store} ({reason})") from None
    if not (Path(path) / "MLmodel").is_file():
        raise FerTuneError(f"{uri}: not an MLflow model (no MLmodel file)")
    return path


def model_card(meta: dict, name: str | None = None, version: str | None = None, aliases=()) -> str:
    """A short markdown card from a fer-tune model's MLmodel metadata (and its registry entry)."""
    title = f"{name} version {version}" if version else (name or "fer-tune emotion model")
    shown_aliases = f" — aliases: {', '.join(aliases)}" if aliases else ""
    metrics, data = meta.get("metrics", {}), meta.get("data", {})
    split = meta.get("eval_split", "test")
    lines = [
        f"# {title}{shown_aliases}",
        "",
        f"Facial-emotion classifier from fer-tune sweep `{meta.get('sweep')}`, trial `{meta.get('trial_id')}` "
        f"(checkpoint of epoch {meta.get('checkpoint_epoch')}).",
        "",
        f"- Input: {meta.get('input')}",
        f"- Output: {meta.get('output')}",
        f"- Classes: {', '.join(f'{i} {c}' for i, c in enumerate(meta.get('classes', [])))}",
        f"- Horizontal-flip test-time augmentation: {'on' if meta.get('flip_tta') else 'off'}",
        "",
        f"## Metrics on the {split} split",
        "",
        f"accuracy {metrics.get('accuracy', float('nan')):.4f}, macro-F1 {metrics.get('macro_f1', float('nan')):.4f}",
        "",
        "| class | precision | recall | F1 |",
        "|---|---|---|---|",
        *(
            f"| {c} | {s['precision']:.3f} | {s['recall']:.3f} | {s['f1']:.3f} |"
            for c in meta.get("classes", [])
            if (s := metrics.get("per_class", {}).get(c))
        ),
        "",
        "## Data",
        "",
        f"{data.get('source')} — fingerprint `{data.get('fingerprint')}`",
        "",
        "## Training configuration",
        "",
        *(f"- {key}: {value}" for key, value in meta.get("train_config", {}).items()),
        "",
        "## How to load",
        "",
        "```python",
        "import mlflow, numpy as np, torch",
        f"model = mlflow.pyfunc.load_model({f'models:/{name}/{version}' if version else MLMODEL_FOLDER!r})",
        "probabilities = model.predict(np.zeros((2, 1, 48, 48), np.float32))  # pixel values 0..255",
        f"scripted = torch.jit.load({TORCHSCRIPT_FILE!r})  # same input, same probabilities",
        "```",
        "",
        f"Command line: `fer-tune predict --model {MLMODEL_FOLDER} face.jpg [--detect-faces]`; serving: "
        f"`mlflow models serve -m {MLMODEL_FOLDER} --env-manager local` then POST "
        '`{"inputs": [[[[0.0, ...48 values], ...48 rows]]]}` to /invocations.',
        "",
    ]
    return "\n".join(lines)
