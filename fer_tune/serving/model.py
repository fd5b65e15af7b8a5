"""Loading a registered model (any registry URI) or a downloaded folder for prediction.

    from fer_tune.serving.images import load_image
    from fer_tune.serving.model import load_model

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

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fer_tune.constants import IMAGE_SIZE
from fer_tune.errors import FerTuneError
from fer_tune.tracking.card import MLMODEL_FOLDER
from fer_tune.tracking.store import download_model
from fer_tune.tracking.store import tracking_uri as resolve_tracking_uri


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
    return download_model(uri, tracking_uri or resolve_tracking_uri(), dst)
