"""A registered version's exported files, recorded in MLflow beside it (`fer-tune models export`).

    record_export(store, "fer-emotion", "3", Path("fer.onnx"), "onnx", "max |Δp| 1.5e-08, labels agree 100.0% ...")
    exported_formats(version.tags)      # "onnx, onnx_int8": the `exports` column of `fer-tune models list`

The file goes to the version's run as an artifact under exports/; the version gets the tag
`export_<format>`, whose value is the artifact's path and what the export's check measured.
"""

from __future__ import annotations

from pathlib import Path

from fer_tune.errors import FerTuneError
from fer_tune.uris import redact

EXPORT_TAG = "export_"  # export_onnx, export_onnx_int8: one tag per format a version was exported to
EXPORTS_FOLDER = "exports"  # the artifact folder of the version's run


def record_export(store: str, name: str, version: str, path: Path, format_name: str, figures: str) -> str:
    """Log `path` to the run of `name` version `version` and tag the version; the artifact's path."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=store, registry_uri=store)
    artifact = f"{EXPORTS_FOLDER}/{path.name}"
    try:
        run_id = client.get_model_version(name, version).run_id
        client.log_artifact(run_id, str(path), EXPORTS_FOLDER)
        client.set_model_version_tag(name, version, EXPORT_TAG + format_name, f"{artifact}: {figures}")
    except (MlflowException, OSError) as err:
        reason = (getattr(err, "message", None) or str(err)).strip().splitlines()[0]
        raise FerTuneError(
            redact(f"models:/{name}/{version}: exported to {path}, but could not record it in {store} ({reason})")
        ) from None
    return artifact


def exported_formats(tags: dict[str, str]) -> str:
    """The formats a version's tags say it was exported to, or "-"."""
    formats = sorted(key.removeprefix(EXPORT_TAG) for key in tags if key.startswith(EXPORT_TAG))
    return ",".join(formats) or "-"
