"""The registry side of the CLI: `fer-tune ui`, `fer-tune models list|download|export`, `fer-tune predict`.

    fer-tune ui                                            # the MLflow UI on http://127.0.0.1:5000, with links
                                                           # to the latest sweep's runs and its model
    fer-tune models list                                   # versions, aliases, test accuracy, exports
    fer-tune models download models:/fer-emotion@champion --to deploy/
    fer-tune models export models:/fer-emotion@champion --format onnx --int8 --out deploy/fer.onnx
    fer-tune models unlock fer-emotion                     # remove a promotion lock no sweep holds any more
    fer-tune predict --model models:/fer-emotion@champion face.jpg --detect-faces

Each command reads the store at --tracking-uri, else MLFLOW_TRACKING_URI, else
sqlite:///results/mlflow.db (where `fer-tune run` tracks by default). Like every command
module, this one imports only the standard library at the top so `fer-tune --help` stays instant.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

from fer_tune.cli.paths import given, given_path
from fer_tune.cli.serve import listening_socket, port_number, url_host
from fer_tune.cli.train import add_threads_flag, checked_threads
from fer_tune.errors import FerTuneError
from fer_tune.uris import redact

DEFAULT_MODEL = "models:/fer-emotion@champion"


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Add the ui, models and predict sub-commands to the `fer-tune` parser."""
    ui = commands.add_parser("ui", help="start the MLflow UI on the tracking store")
    ui.add_argument("--port", type=port_number, default=5000, help="port, 1 to 65535 (default 5000)")
    ui.add_argument(
        "--host", type=given, default="127.0.0.1", help="interface to bind (default 127.0.0.1: this machine)"
    )
    _store_option(ui)
    ui.set_defaults(handler=cmd_ui)

    models = commands.add_parser("models", help="registered models: list, download, export, unlock")
    models = models.add_subparsers(metavar="ACTION")
    listing = models.add_parser("list", help="registered models: versions, aliases, test accuracy")
    listing.add_argument("name", nargs="?", default=None, help="only this registered model")
    _store_option(listing)
    listing.set_defaults(handler=cmd_models_list)
    unlock = models.add_parser("unlock", help="remove a promotion lock left by a killed sweep (NAME.promotion-lock)")
    unlock.add_argument("name", type=given, help="the registered model whose promotion lock to remove")
    _store_option(unlock)
    unlock.set_defaults(handler=cmd_models_unlock)
    download = models.add_parser("download", help="write a model, its TorchScript file and a model card to a folder")
    download.add_argument("uri", type=given, help="models:/NAME@ALIAS or models:/NAME/VERSION")
    download.add_argument("--to", type=given_path, required=True, metavar="DIR", help="folder to write (new or empty)")
    download.add_argument("--force", action="store_true", help="replace what a non-empty --to folder holds")
    _store_option(download)
    download.set_defaults(handler=cmd_models_download)
    export = models.add_parser("export", help="write a model as an ONNX file (and int8), checked against torch")
    export.add_argument("uri", type=given, help="models:/NAME@ALIAS, models:/NAME/VERSION or a downloaded folder")
    export.add_argument("--format", type=given, required=True, help="file format: onnx (checked by the export)")
    export.add_argument("--out", type=given_path, required=True, metavar="FILE", help="file to write, e.g. fer.onnx")
    export.add_argument("--int8", action="store_true", help="also write FILE's int8 twin (fer.int8.onnx), calibrated")
    export.add_argument("--force", action="store_true", help="replace existing files")
    _store_option(export)
    export.set_defaults(handler=cmd_models_export)

    predict = commands.add_parser("predict", help="print the emotion and class probabilities of each image")
    predict.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="image files of any size and mode")
    predict.add_argument(
        "--model", type=given, default=DEFAULT_MODEL, help=f"model URI or folder (default {DEFAULT_MODEL})"
    )
    predict.add_argument(
        "--detect-faces", action="store_true", help="crop the largest face first (OpenCV Haar cascade)"
    )
    add_threads_flag(predict, "default: every CPU this process may use")
    _store_option(predict)
    predict.set_defaults(handler=cmd_predict)


def _store_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow store (default: MLFLOW_TRACKING_URI, else sqlite:///results/mlflow.db)",
    )


def _store(args, write: bool = False) -> str:
    """The store these commands read (checked first: a read-only command never creates one)."""
    from fer_tune.tracking.store import check_store, tracking_uri, without_credentials

    uri = without_credentials(args.tracking_uri) if args.tracking_uri else tracking_uri()
    check_store(uri, write=write)
    return uri


def _model_store(args, model: str) -> str | None:
    """The store a model URI is read from (checked); None for a local folder, which needs none."""
    return _store(args) if ":/" in model and not Path(model).exists() else args.tracking_uri


def cmd_ui(args) -> int:
    from fer_tune.tracking.store import artifacts_dir

    uri = _store(args)
    if uri.startswith(("http://", "https://")):
        print(f"{redact(uri)} is an MLflow server already: open it in a browser")
        return 0
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri]
    command += ["--host", args.host, "--port", str(args.port), "--workers", "1"]  # a UI for one person
    folder = artifacts_dir(uri)
    if folder is not None:  # where experiments created in the UI put artifacts; ours carry their own
        command += ["--artifacts-destination", str(folder)]
    # MLflow's server also forks a job runner for GenAI features (LLM judges); it halves the
    # startup time on a small machine to leave it out, and training runs never use it.
    os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    # A busy port or an unknown interface is one line here, not the server's log lines and an exit 0
    listening_socket(args.host, args.port).close()
    base = f"http://{url_host(args.host)}:{args.port}"
    print(f"MLflow UI for {redact(uri)} on {base} (Ctrl+C stops it)", flush=True)
    for line in _ui_links(uri, base):
        print(line, flush=True)
    os.execv(sys.executable, command)  # the server replaces this process: signals reach it directly


def _ui_links(uri: str, base: str) -> list[str]:
    """The latest sweep's runs page and its model's page (MLflow 3's UI opens on its GenAI pages)."""
    from fer_tune.tracking.links import ui_links

    return _ask(uri, lambda: ui_links(_client(uri), base))


def cmd_models_list(args) -> int:
    import pandas as pd

    from fer_tune.serving.model import trained_on
    from fer_tune.tracking.exports import exported_formats
    from fer_tune.tracking.front import FRONT_TAG
    from fer_tune.tracking.promotion import is_lock_model

    uri = _store(args)
    client = _ask(uri, lambda: _client(uri))
    query = f"name = '{args.name}'" if args.name else None
    # a promotion lock (and a lock breaker's marker) is a registered model too, for a moment: not listed
    models = [m for m in _ask(uri, lambda: client.search_registered_models(filter_string=query))
              if not is_lock_model(m.name)]  # fmt: skip
    if args.name and not models:
        known = [m.name for m in _ask(uri, client.search_registered_models) if not is_lock_model(m.name)]
        raise FerTuneError(
            f"no registered model named {args.name!r} in {redact(uri)}; known: {', '.join(known) or 'none'}"
        )
    if not models:
        print(f"no registered models in {redact(uri)}: `fer-tune run SPACE.yaml` registers the best model of a sweep")
        return 0
    for model in models:
        aliases: dict[str, list[str]] = {}
        for alias, version in model.aliases.items():
            aliases.setdefault(str(version), []).append(alias)
        query = f"name = '{model.name}'"
        versions = _ask(uri, lambda: client.search_model_versions(query))  # noqa: B023 (called at once)
        rows = [
            {
                "version": int(v.version),
                "aliases": ",".join(sorted(aliases.get(str(v.version), []))) or "-",
                "test_accuracy": v.tags.get("test_accuracy", "-"),
                "eval_split": v.tags.get("eval_split", "-"),
                "data_fingerprint": v.tags.get("data_fingerprint", "-"),
                "sweep": v.tags.get("sweep") or v.tags.get(FRONT_TAG, "-"),
                "exports": exported_formats(v.tags),  # `fer-tune models export`: onnx, onnx_int8
                "trained_on": trained_on(_data_source(client, v.run_id)).removeprefix("trained on "),
                **_objectives(v.tags),
            }
            for v in versions
        ]
        print(f"{model.name}  (models:/{model.name}@champion)")
        print(pd.DataFrame(rows).sort_values("version").to_string(index=False) if rows else "  (no versions)")
    return 0


def cmd_models_unlock(args) -> int:
    from fer_tune.tracking.promotion import unlock

    uri = _store(args)
    client = _ask(uri, lambda: _client(uri))
    print(_ask(uri, lambda: unlock(client, args.name)))
    return 0


def _objectives(tags: dict) -> dict:
    """A multi-objective sweep's front versions: their objectives in one column (fer_tune.tracking.front)."""
    from fer_tune.tracking.front import OBJECTIVE_TAG

    values = [(k.removeprefix(OBJECTIVE_TAG), float(v)) for k, v in tags.items() if k.startswith(OBJECTIVE_TAG)]
    return {"objectives": " ".join(f"{k}={v:.4g}" for k, v in sorted(values))} if values else {}


def cmd_models_download(args) -> int:
    from mlflow.models import Model

    from fer_tune.serving.model import MODEL_URI, RegistryEntry, fetch_model, registry_entry
    from fer_tune.tracking.card import CARD_FILE, MLMODEL_FOLDER, TORCHSCRIPT_FILE, model_card

    target = args.to / MLMODEL_FOLDER
    if args.to.exists() and not args.to.is_dir():
        raise FerTuneError(f"--to {args.to}: is a file, expected a folder")
    if args.to.is_dir() and any(args.to.iterdir()) and not args.force:
        raise FerTuneError(f"--to {args.to}: folder is not empty; choose an empty one, or pass --force to replace it")
    store = _model_store(args, args.uri)
    with tempfile.TemporaryDirectory() as folder:
        local = Path(fetch_model(args.uri, store, folder))
        scripted = local / "extra_files" / TORCHSCRIPT_FILE
        if not scripted.is_file():
            raise FerTuneError(f"{args.uri}: not a fer-tune model (no extra_files/{TORCHSCRIPT_FILE})")
        shutil.rmtree(target, ignore_errors=True)
        args.to.mkdir(parents=True, exist_ok=True)
        shutil.copytree(local, target)
    shutil.copy(target / "extra_files" / TORCHSCRIPT_FILE, args.to / TORCHSCRIPT_FILE)
    entry = registry_entry(args.uri, store) if MODEL_URI.fullmatch(args.uri) else RegistryEntry()
    card = model_card(Model.load(str(target)).metadata or {}, entry.name, entry.version, entry.aliases)
    (args.to / CARD_FILE).write_text(card)
    print(f"wrote {args.uri} to {args.to}/: {MLMODEL_FOLDER}/ (MLflow model), {TORCHSCRIPT_FILE}, {CARD_FILE}")
    return 0


def cmd_models_export(args) -> int:
    from fer_tune.serving.export import ExportRequest, export_model

    export_model(ExportRequest(args.uri, args.format, args.out, args.int8, args.force, args.tracking_uri))
    return 0


def cmd_predict(args) -> int:
    import numpy as np

    from fer_tune.core.threads import use_threads
    from fer_tune.serving.images import load_image
    from fer_tune.serving.model import load_model

    use_threads(override=checked_threads(args))
    faces, notes = zip(*(load_image(path, args.detect_faces) for path in args.images))  # bad files fail first
    model = load_model(args.model, _model_store(args, args.model))
    probabilities = model.predict(np.stack(faces))
    classes = model.classes or [str(i) for i in range(probabilities.shape[1])]
    for path, note, row in zip(args.images, notes, probabilities):
        if note:
            print(f"{path}: {note}")
        top = int(row.argmax())
        shown = "  ".join(f"{c} {p:.3f}" for c, p in zip(classes, row))
        print(f"{path}: {classes[top]} ({row[top]:.3f})  [{shown}]")
    return 0


def _data_source(client, run_id: str | None) -> str | None:
    """The data a registered version was trained on: its sweep's `fer_tune.data_source` tag (on the
    parent of the champion run that logged the model)."""
    from mlflow.exceptions import MlflowException

    try:
        run = client.get_run(run_id) if run_id else None
        parent = run and run.data.tags.get("mlflow.parentRunId")
        return client.get_run(parent).data.tags.get("fer_tune.data_source") if parent else None
    except MlflowException:  # the run was deleted: the version stays listed, its data unknown
        return None


def _client(uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _ask(uri: str, request):
    """Run a registry request; a store that cannot answer becomes a one-line FerTuneError."""
    from mlflow.exceptions import MlflowException

    try:
        return request()
    except (MlflowException, OSError) as err:
        reason = (getattr(err, "message", None) or str(err)).strip().splitlines()[0]
        raise FerTuneError(redact(f"MLflow store {uri}: {reason}")) from None
