"""`fer-tune models export`: a registered model as an ONNX file, checked against torch; int8 with --int8.

    fer-tune models export models:/fer-emotion@champion --format onnx --int8 --out deploy/fer.onnx

    export_model(ExportRequest("models:/fer-emotion@champion", "onnx", Path("deploy/fer.onnx"), int8=True))

Writes deploy/fer.onnx (and deploy/fer.int8.onnx): the registered graph (pixel values 0..255 in,
class probabilities out, TTA included) with a dynamic batch axis and its preprocessing in the ONNX
metadata. Each file is checked before it is renamed into place: onnx.checker, then onnxruntime against
torch (fp32) or against fp32 (int8) on the model's evaluation split (fer_tune.serving.export_images).
A models:/ URI's version records both in MLflow (fer_tune.tracking.exports).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fer_tune.constants import IMAGE_SIZE, PIXEL_MAX
from fer_tune.errors import FerTuneError
from fer_tune.search.report.stats import mcnemar
from fer_tune.serving.export_images import ExportFaces, export_faces
from fer_tune.serving.model import MODEL_URI, RegistryEntry, fetch_model, registry_entry
from fer_tune.serving.onnx_model import (
    BATCH_AXIS,
    INPUT_NAME,
    OUTPUT_NAME,
    check_export_packages,
    quantize_int8,
    run_onnx,
    run_torch,
    set_metadata,
    write_onnx,
)
from fer_tune.tracking.store import check_store
from fer_tune.tracking.store import tracking_uri as resolve_tracking_uri

FORMATS = ("onnx",)  # --format: what `fer-tune models export` writes
MAX_PROBABILITY_DIFF = 1e-3  # fp32 ONNX vs torch: a larger difference in any class probability refuses the file
INT8 = "int8"  # the int8 file is --out's name with this before the suffix: fer.onnx -> fer.int8.onnx


@dataclass(frozen=True)
class ExportRequest:
    uri: str  # models:/NAME@ALIAS, models:/NAME/VERSION, or a `fer-tune models download` folder
    format: str
    out: Path
    int8: bool = False
    force: bool = False  # replace existing files at --out (and its int8 twin)
    tracking_uri: str | None = None

    @property
    def int8_out(self) -> Path:
        return self.out.with_name(f"{self.out.stem}.{INT8}{self.out.suffix}")

    def targets(self) -> list[Path]:
        return [self.out, self.int8_out] if self.int8 else [self.out]


@dataclass(frozen=True)
class Source:
    """The model to export: its URI pinned to a version (an alias is resolved once), or its folder."""

    uri: str  # as given
    pinned: str
    store: str | None  # the MLflow store of a models:/ URI; None for a folder
    entry: RegistryEntry  # name and version where the model is registered (a folder's card tells)


@dataclass
class Comparison:
    """Two runs over the same faces: `ours` (the export) against `reference` (torch, or the fp32 file)."""

    max_abs_diff: float  # the largest difference in any class probability of any face
    agreement: float  # the fraction of faces whose predicted class is the same
    accuracy: float | None  # ours; None where no face is of one of the model's classes
    reference_accuracy: float | None
    paired: dict = field(default_factory=dict)  # McNemar's exact test of ours against the reference (int8)


@dataclass
class Exported:
    """One file written and checked: what the check measured, its tag's text, and the lines to print."""

    comparison: Comparison
    note: str
    lines: list[str]


def export_model(request: ExportRequest, say: Callable[[str], None] = print) -> dict[str, Comparison]:
    """Export, check, rename into place and record; says what it did. The comparisons, by format (onnx, onnx_int8)."""
    check_request(request)
    source = resolve_source(request)
    say(f"exporting {source.pinned} to {request.format}{' and int8' if request.int8 else ''}, then checking ...")
    module, metadata = load_registered_module(source)
    faces = export_faces(metadata)
    exported: dict[str, Exported] = {}
    with staged(request.targets()) as staging:
        exported["onnx"] = export_fp32(module, staging[0], request, source, metadata, faces)
        if request.int8:
            exported["onnx_int8"] = export_int8(staging[0], staging[1], request, faces)
    for each in exported.values():  # said once the files are in place: a failure above leaves none
        for line in each.lines:
            say(line)
    if source.store is not None:
        say(record(source, request, {name: each.note for name, each in exported.items()}))
    return {name: each.comparison for name, each in exported.items()}


def check_request(request: ExportRequest) -> None:
    """Bad input in one line, before anything is loaded: the format, the files to write, the packages."""
    if request.format not in FORMATS:
        raise FerTuneError(f"--format {request.format}: unknown; expected one of {', '.join(FORMATS)}")
    for target in request.targets():
        what = "--out" if target == request.out else f"--int8 (writes {target.name} beside --out)"
        if not target.parent.is_dir():
            raise FerTuneError(f"{what} {target}: no folder {target.parent}; create it first")
        if target.is_dir():
            raise FerTuneError(f"{what} {target}: is a folder, expected a file name")
        if target.exists() and not request.force:
            raise FerTuneError(f"{what} {target}: exists; choose another name, or pass --force to replace it")
    check_export_packages()


def resolve_source(request: ExportRequest) -> Source:
    """A folder holding an MLflow model, or a registry URI whose store and version exist (one line if not)."""
    uri = request.uri
    if Path(uri).exists():
        fetch_model(uri, None, "")  # a local folder is only looked at: one line if it holds no MLflow model
        return Source(uri, uri, None, registry_entry(uri))
    if MODEL_URI.fullmatch(uri) is None:
        raise FerTuneError(
            f"{uri}: no such folder, and not a registry URI; expected models:/NAME@ALIAS, models:/NAME/VERSION "
            "or a folder written by `fer-tune models download`"
        )
    store = request.tracking_uri or resolve_tracking_uri()
    check_store(store, write=False)  # an export records into the store: it must exist already
    entry = registry_entry(uri, store)
    return Source(uri, f"models:/{entry.name}/{entry.version}", store, entry)


def load_registered_module(source: Source):
    """The torch module MLflow loads from the registered model (pt2: a torch.export program), and its metadata."""
    import mlflow.pytorch
    from mlflow.models import Model

    with tempfile.TemporaryDirectory() as folder:
        local = fetch_model(source.pinned, source.store, folder)
        metadata = Model.load(local).metadata or {}
        if "classes" not in metadata:
            raise FerTuneError(f"{source.uri}: not a fer-tune model (its MLmodel metadata has no classes)")
        module = mlflow.pytorch.load_model(local)  # read into memory: the folder can go
    return module, metadata


def export_fp32(module, path: Path, request, source: Source, metadata: dict, faces: ExportFaces) -> Exported:
    """Write the ONNX file and check it against torch; refused (FerTuneError) where it differs."""
    props = preprocessing(metadata, source.pinned)
    opset = write_onnx(module, path, props)
    compared = compare(run_onnx(path, faces.evaluation), run_torch(module, faces.evaluation), faces)
    checked = f"on {faces.described}: max |Δp| {compared.max_abs_diff:.2g}, labels agree {compared.agreement:.1%}"
    if not compared.max_abs_diff <= MAX_PROBABILITY_DIFF:
        raise FerTuneError(
            f"{source.uri}: the ONNX model's probabilities differ from torch's {checked} "
            f"(more than {MAX_PROBABILITY_DIFF:g}); nothing written"
        )
    set_metadata(path, {"check": f"onnxruntime vs torch {checked}"})
    lines = [
        f"exported {source.pinned} to {request.out}: ONNX opset {opset}, {_size(path)}, batch axis dynamic",
        f"  input {props['input_name']}: {props['input_dtype']} {props['input_shape']}, {props['input']}",
        f"  scale: {props['scale']}",
        f"  output {props['output_name']}: {props['output']}: {', '.join(json.loads(props['classes']))}",
        f"  checked: onnx.checker passes; onnxruntime vs torch {checked}",
    ]
    return Exported(compared, f"opset {opset}, {_size(path)}; vs torch {checked}", lines)


def export_int8(fp32: Path, path: Path, request, faces: ExportFaces) -> Exported:
    """Quantize the checked fp32 file and compare its accuracy with fp32's on the same faces."""
    method = quantize_int8(fp32, path, faces.calibration)
    reference = run_onnx(fp32, faces.evaluation)
    compared = compare(run_onnx(path, faces.evaluation), reference, faces, paired=True)
    how = f"{method}, calibrated on {faces.calibration_described}"
    measured = f"on {faces.described}: {_accuracy_text(compared)}, labels agree {compared.agreement:.1%}"
    set_metadata(path, {"quantization": how, "check": f"int8 vs fp32 {measured}"})
    lines = [f"int8: {request.int8_out}: {how}, {_size(path)}", f"  {measured}"]
    return Exported(compared, f"{how}, {_size(path)}; {measured}", lines)


def compare(ours: np.ndarray, reference: np.ndarray, faces: ExportFaces, paired: bool = False) -> Comparison:
    """How far `ours` is from `reference` (probabilities of the same faces), and their accuracy on the labels."""
    labelled = faces.labels >= 0
    ours_right = ours.argmax(1)[labelled] == faces.labels[labelled]
    reference_right = reference.argmax(1)[labelled] == faces.labels[labelled]
    known = bool(labelled.any())
    return Comparison(
        max_abs_diff=float(np.abs(ours - reference).max()),
        agreement=float((ours.argmax(1) == reference.argmax(1)).mean()),
        accuracy=float(ours_right.mean()) if known else None,
        reference_accuracy=float(reference_right.mean()) if known else None,
        paired=mcnemar(ours_right, reference_right) if paired and known else {},
    )


def _accuracy_text(compared: Comparison) -> str:
    if compared.accuracy is None:
        return "accuracy not measured (no face is of the model's classes)"
    delta = 100 * (compared.accuracy - compared.reference_accuracy)
    test = compared.paired
    return (
        f"accuracy {compared.accuracy:.1%} vs fp32 {compared.reference_accuracy:.1%} ({delta:+.1f} points; "
        f"McNemar: {test['only_a']} right only in int8, {test['only_b']} only in fp32, p = {test['p_value']:.2g})"
    )


def preprocessing(metadata: dict, source: str) -> dict[str, str]:
    """What an app must do before and after the graph, as ONNX metadata_props (string keys and values)."""
    classes = list(metadata["classes"])
    return {
        "input_name": INPUT_NAME,
        "input_shape": f"[{BATCH_AXIS}, 1, {IMAGE_SIZE}, {IMAGE_SIZE}]",
        "input_dtype": "float32",
        "input": f"grayscale faces resized to {IMAGE_SIZE}x{IMAGE_SIZE}, pixel values 0..{PIXEL_MAX} as read",
        "scale": f"1/{PIXEL_MAX} and the train split's normalization, inside the graph: feed 0..{PIXEL_MAX}",
        "output_name": OUTPUT_NAME,
        "output": f"float32 [{BATCH_AXIS}, {len(classes)}], class probabilities in the order of `classes`",
        "classes": json.dumps(classes),
        "tta": str(metadata.get("tta", "none")),
        "source": source,
    }


@contextlib.contextmanager
def staged(targets: list[Path]) -> Iterator[list[Path]]:
    """Temporary files beside `targets`, renamed onto them when the block succeeds and removed when it fails:
    a failed export leaves no half-written file (a rename within a folder is atomic)."""
    # named, not made (mkstemp): the writers create them, with the user's usual permissions
    staging = [target.with_name(f".{target.name}.{os.getpid()}.tmp") for target in targets]
    try:
        yield staging
        for temporary, target in zip(staging, targets):
            os.replace(temporary, target)
    finally:
        for temporary in staging:
            temporary.unlink(missing_ok=True)


def record(source: Source, request: ExportRequest, notes: dict[str, str]) -> str:
    """Log the files to the version's run under exports/ and tag the version with what their checks measured."""
    from fer_tune.tracking.exports import EXPORT_TAG, record_export

    name, version = source.entry.name, source.entry.version
    artifacts = [
        record_export(source.store, name, version, path, format_name, notes[format_name])
        for path, format_name in zip(request.targets(), notes)
    ]
    tags = ", ".join(EXPORT_TAG + format_name for format_name in notes)
    return f"recorded on {source.pinned}: artifacts {', '.join(artifacts)}; tags {tags}"


def _size(path: Path) -> str:
    size = path.stat().st_size
    return f"{size / 1e6:.1f} MB" if size >= 1e6 else f"{size / 1e3:.1f} kB"
