"""The faces an exported model is checked and calibrated on: its own data where that is at hand, else synthetic faces.

    faces = export_faces(metadata)        # the registered model's MLmodel metadata
    faces.evaluation, faces.labels        # uint8 [N, 48, 48]; indexes of the model's classes (-1: a class it lacks)
    faces.calibration                     # uint8 [M, 48, 48]: train images for int8 calibration
    faces.described                       # "70 test images of blobs.csv", or why synthetic faces stand in

"At hand" means the data source the model card records loads here and has the recorded fingerprint:
the same images, so the ONNX file's accuracy is comparable with the registered one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fer_tune.constants import EMOTIONS
from fer_tune.data.dataset import FerDataset
from fer_tune.errors import FerTuneError

CALIBRATION_IMAGES = 300  # int8 calibration: a few hundred train images fix the activation ranges (MinMax)
SYNTHETIC_FACES = 2000  # the stand-in when the model's data is not at hand: 80% train (calibration), 20% checked
SYNTHETIC_SEED = 0
SAMPLE_SEED = 0  # which train images calibrate: a fixed sample, so an export is repeatable
SYNTHETIC_SOURCE = re.compile(r"synthetic\(n=(?P<n>\d+), seed=(?P<seed>\d+)\)")  # FerDataset.source of generated faces


@dataclass(frozen=True)
class ExportFaces:
    evaluation: np.ndarray  # uint8 [N, 48, 48]
    labels: np.ndarray  # int64 [N]: an index into the model's classes, -1 where the model lacks the face's class
    calibration: np.ndarray  # uint8 [M, 48, 48]
    described: str  # which images `evaluation` holds
    calibration_described: str  # which images `calibration` holds


def export_faces(metadata: dict) -> ExportFaces:
    """The model's evaluation split and a sample of its train split, or synthetic faces where those are not here."""
    classes = list(metadata.get("classes") or [])
    recorded = metadata.get("data") or {}
    data, reason = model_data(recorded.get("source"), recorded.get("fingerprint"))
    if data is None:
        return synthetic_faces(classes, reason)
    split_name = metadata.get("eval_split", "test")
    split = data.test if split_name == "test" and data.test is not None else data.validation
    named = Path(data.source).name
    picked = np.random.default_rng(SAMPLE_SEED).permutation(len(data.train))[:CALIBRATION_IMAGES]
    return ExportFaces(
        evaluation=split.images.numpy(),
        labels=_relabel(split.labels.numpy(), data.classes, classes),
        calibration=data.train.images.numpy()[np.sort(picked)],
        described=f"{len(split)} {split_name} images of {named}",
        calibration_described=f"{len(picked)} train images of {named}",
    )


def model_data(source: str | None, fingerprint: str | None) -> tuple[FerDataset | None, str]:
    """The dataset `source` names if it loads here with `fingerprint`; else None and why not."""
    from fer_tune.data import load_dataset

    if not source:
        return None, "the model records no data source"
    generated = SYNTHETIC_SOURCE.fullmatch(source)
    if generated is None and not Path(source).expanduser().exists():
        return None, f"its data {source} is not here"
    try:
        if generated is not None:
            data = load_dataset("synthetic", n=int(generated["n"]), seed=int(generated["seed"]))
        else:
            data = load_dataset(source)
    except FerTuneError as err:
        return None, f"its data {source} does not load ({err})"
    if fingerprint and data.fingerprint() != fingerprint:
        return None, f"its data {source} has changed since (fingerprint {data.fingerprint()}, recorded {fingerprint})"
    return data, ""


def synthetic_faces(classes: list[str], reason: str) -> ExportFaces:
    """Drawn faces (fer_tune.data.synthetic): their train part calibrates, the rest is checked."""
    from fer_tune.data.synthetic import generate_faces

    images, labels, usage = generate_faces(SYNTHETIC_FACES, SYNTHETIC_SEED)
    train = usage == "Training"
    calibration = images[train][:CALIBRATION_IMAGES]
    return ExportFaces(
        evaluation=images[~train],
        labels=_relabel(labels[~train], EMOTIONS, classes),
        calibration=calibration,
        described=f"{int((~train).sum())} synthetic faces ({reason})",
        calibration_described=f"{len(calibration)} synthetic faces",
    )


def _relabel(labels: np.ndarray, names, classes: list[str]) -> np.ndarray:
    """Labels indexing `names` -> indexes of the model's `classes` (by name), -1 where the model has no such class."""
    index = np.array([classes.index(name) if name in classes else -1 for name in names], dtype=np.int64)
    return index[labels]
