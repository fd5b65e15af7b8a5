"""Loading a registered model (any registry URI) or a downloaded folder for prediction.

    from fer_tune.serving.images import load_image
    from fer_tune.serving.model import load_model

    model = load_model("models:/fer-emotion@champion")        # or a `models download` folder
    face, note = load_image("photo.jpg", detect_faces=True)   # uint8 [48, 48]; note if no face
    model.predict(face[None])                                 # [1, 7] probabilities, model.classes order
    model, entry = load_registered("models:/fer-emotion@champion")  # entry: name, version, aliases

One input convention everywhere (the pyfunc model, `mlflow models serve`, the TorchScript
file): float32 images [N, 1, 48, 48] holding grayscale pixel values 0..255, as read from
the file; the model scales and normalizes them itself. The TorchScript file also takes
uint8 and [N, 48, 48]. The output is [N, num_classes] class probabilities in the order of
the model's `classes` (MLmodel metadata and the model card): the PyTorch flavor's pyfunc
returns a bare array for tensor inputs, so the class names cannot be its column names.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fer_tune.constants import IMAGE_SIZE
from fer_tune.errors import FerTuneError
from fer_tune.tracking.card import CARD_FILE, MLMODEL_FOLDER
from fer_tune.tracking.store import check_store, download_model
from fer_tune.tracking.store import tracking_uri as resolve_tracking_uri
from fer_tune.uris import redact

MODEL_URI = re.compile(r"models:/(?P<name>[^/@]+)(?:/(?P<version>\d+)|@(?P<alias>[\w-]+))")
# The first line of a `models download` folder's card (tracking/card.py, model_card): "# NAME version N — aliases: A, B"
CARD_TITLE = re.compile(r"# (?P<name>.+) version (?P<version>\d+)(?: — aliases: (?P<aliases>.+))?")


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


SYNTHETIC_SOURCE = "synthetic"  # fer_tune.data.synthetic names its datasets "synthetic(n=..., seed=...)"


def trained_on(source: str | None) -> str:
    """What a model was trained on, in words a user reads beside its predictions (the page, `models list`).

    A model of drawn faces says so plainly: it reads real photographs badly (the smiling astronaut
    as neutral), and nothing else on the page would tell.
    """
    if not source:
        return "trained on unrecorded data"
    if source.startswith(SYNTHETIC_SOURCE):
        return "trained on synthetic faces — not for real photographs"
    return f"trained on {Path(source).name or source}"


@dataclass
class RegistryEntry:
    """Where a model sits in the registry: name, version and aliases (None and [] where it is not registered)."""

    name: str | None = None
    version: str | None = None
    aliases: list[str] = field(default_factory=list)


def load_registered(uri: str, tracking_uri: str | None = None) -> tuple[LoadedModel, RegistryEntry]:
    """The model at `uri` and its registry entry, which agree: an alias is resolved once, to a version.

    The store of a registry URI is checked first: it fails in seconds, in one line, and is never created.
    """
    if ":/" in uri and not Path(uri).exists():
        tracking_uri = tracking_uri or resolve_tracking_uri()
        check_store(tracking_uri, write=False)
    entry = registry_entry(uri, tracking_uri)
    pinned = f"models:/{entry.name}/{entry.version}" if MODEL_URI.fullmatch(uri) else uri
    return load_model(pinned, tracking_uri), entry


def registry_entry(uri: str, tracking_uri: str | None = None) -> RegistryEntry:
    """The registry entry of `uri`: asked of the registry for models:/ URIs, read from the card of a
    `fer-tune models download` folder (as it was when downloaded); empty for anything else."""
    match = MODEL_URI.fullmatch(uri)
    if match is not None:
        return _ask_registry(match["name"], match["version"], match["alias"], tracking_uri or resolve_tracking_uri())
    card = Path(uri) / CARD_FILE
    title = CARD_TITLE.fullmatch(card.read_text().partition("\n")[0]) if card.is_file() else None
    if title is None:
        return RegistryEntry()
    aliases = title["aliases"].split(", ") if title["aliases"] else []
    return RegistryEntry(title["name"], title["version"], aliases)


def _ask_registry(name: str, version: str | None, alias: str | None, store: str) -> RegistryEntry:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=store, registry_uri=store)
    try:
        entry = client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, version)
    except (MlflowException, OSError) as err:
        reason = redact((getattr(err, "message", None) or str(err)).strip().splitlines()[0])
        raise FerTuneError(f"models:/{name}: cannot read it from the registry at {redact(store)} ({reason})") from None
    return RegistryEntry(name, str(entry.version), sorted(entry.aliases))
