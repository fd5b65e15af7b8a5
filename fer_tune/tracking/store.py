"""Where MLflow records go: the tracking URI, the artifact location, the experiment.

Used by the sweep's tracking and by serving (loading a registered model), so it imports
nothing of Ray's. Default store: sqlite:///results/mlflow.db with artifacts in
results/mlartifacts/; MLFLOW_TRACKING_URI or a space's `mlflow.tracking_uri` overrides it.
"""

from __future__ import annotations

import os
import re
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import unquote

from mlflow import MlflowClient

from fer_tune.constants import MLFLOW_ARTIFACTS, MLFLOW_DB, RESULTS_DIR
from fer_tune.errors import FerTuneError
from fer_tune.uris import redact, split_credentials

DEFAULT_DB = RESULTS_DIR / MLFLOW_DB


PROBE_TIMEOUT_S = 5  # a tracking server answers a search in milliseconds; an absent one must not cost minutes
SQL_SCHEMES = ("postgresql", "mysql", "mssql")  # MLflow's SQLAlchemy stores besides SQLite
# Every store MLflow's tracking registry knows (mlflow.tracking._tracking_service.utils), sqlite included.
STORE_SCHEMES = ("sqlite", *SQL_SCHEMES, "http", "https", "file", "databricks", "databricks-uc", "uc")
SQLITE_HEADER = b"SQLite format 3\x00"  # the first 16 bytes of every SQLite database file
# What to `pip install` for the driver module SQLAlchemy could not import (by module name).
DRIVER_PACKAGES = {"psycopg": "'psycopg[binary]'", "psycopg2": "psycopg2-binary", "pymysql": "pymysql",
                   "MySQLdb": "mysqlclient", "pyodbc": "pyodbc"}  # fmt: skip


def tracking_uri(configured: str | None = None) -> str:
    """MLFLOW_TRACKING_URI, else `configured` (the YAML's), else the SQLite file results/mlflow.db.

    Nothing is created here: `check_store` makes a store's folder for the commands that write.
    """
    uri = os.environ.get("MLFLOW_TRACKING_URI") or configured
    if uri:
        return without_credentials(uri)
    return f"sqlite:///{DEFAULT_DB.resolve()}"  # absolute: the store stays put if the cwd changes


def without_credentials(uri: str) -> str:
    """`uri` without its password, which goes to the client library through this process's environment.

    Everything that keeps the URI (Ray's tuner.pkl and searcher state, our Tune callbacks, MLflow's own
    "View run ... at" lines, sweep.json) then keeps none: an http(s) server's user and password become
    MLFLOW_TRACKING_USERNAME/PASSWORD (MLflow's basic auth), a PostgreSQL password PGPASSWORD (libpq's,
    which psycopg reads). Other stores, and a bare token (`https://TOKEN@host`), keep their URI as given.
    """
    bare, user, password = split_credentials(uri)
    if password is None:
        return uri
    scheme = uri.split("://", 1)[0].split("+", 1)[0].lower()
    if scheme in ("http", "https"):
        os.environ["MLFLOW_TRACKING_USERNAME"] = unquote(user or "")
        os.environ["MLFLOW_TRACKING_PASSWORD"] = unquote(password)
    elif scheme == "postgresql":
        os.environ["PGPASSWORD"] = unquote(password)
        bare = bare.replace("://", f"://{user}@", 1) if user else bare
    else:
        return uri
    if os.environ.get("MLFLOW_TRACKING_URI") == uri:  # children (Ray's workers, servers) inherit none either
        os.environ["MLFLOW_TRACKING_URI"] = bare
    return bare


def sqlite_path(uri: str) -> Path | None:
    """The database file of a sqlite:/// URI (relative, or absolute after a 4th slash), else None."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri.removeprefix("sqlite:///").split("?")[0])


def check_store(uri: str, *, write: bool) -> None:
    """Fail in seconds, in one line, where the store `uri` cannot be used; with `write`, create its folder.

    A read-only command (predict, models list) never creates a store: a missing SQLite file is an error.
    """
    shown = redact(uri)
    database = sqlite_path(uri)
    if database is not None:
        _check_sqlite(database, shown, write)
        return
    scheme = uri.split("://", 1)[0].split("+", 1)[0] if "://" in uri else "file"
    if scheme not in STORE_SCHEMES:
        raise FerTuneError(
            f"MLflow store {shown}: unknown scheme {scheme}://; expected one of {', '.join(STORE_SCHEMES)} "
            "(e.g. sqlite:///results/mlflow.db, http://HOST:5000, postgresql://USER@HOST/DB)"
        )
    if scheme in SQL_SCHEMES:
        _check_sql_driver(uri, shown)
    if scheme in ("http", "https"):
        _check_server(uri, shown)
    elif scheme == "file" and write:
        _check_writable_folder(Path(uri.removeprefix("file://")), f"MLflow store {shown}")


def _check_sqlite(database: Path, shown: str, write: bool) -> None:
    if not write:
        if not database.is_file():
            raise FerTuneError(
                f"MLflow store {shown}: no such database; run a sweep first (fer-tune run SPACE.yaml) "
                "or pass --tracking-uri / MLFLOW_TRACKING_URI"
            )
        _check_sqlite_header(database, shown)
        return
    _check_writable_folder(database.parent, f"MLflow store {shown}")
    if database.exists() and not (database.is_file() and os.access(database, os.W_OK)):
        raise FerTuneError(f"MLflow store {shown}: {database} is not a writable file")
    _check_sqlite_header(database, shown)


def _check_sqlite_header(database: Path, shown: str) -> None:
    """A file that is there but is not SQLite (a text file, a CSV) would fail deep inside SQLAlchemy."""
    if not database.is_file() or database.stat().st_size == 0:  # SQLite makes an empty file a database
        return
    with open(database, "rb") as f:
        header = f.read(len(SQLITE_HEADER))
    if header != SQLITE_HEADER:
        raise FerTuneError(
            f"MLflow store {shown}: {database} is not an SQLite database; expected a .db file made by MLflow"
        )


def _check_writable_folder(folder: Path, what: str) -> None:
    """`folder` exists (created if need be) and this process may write in it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise FerTuneError(f"{what}: {folder} is a file, expected a folder") from None
    except OSError as err:
        raise FerTuneError(f"{what}: cannot create {folder} ({err.strerror or err})") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise FerTuneError(f"{what}: {folder} is not writable")


def _check_sql_driver(uri: str, shown: str) -> None:
    import sqlalchemy

    try:
        engine = sqlalchemy.create_engine(uri, **_connect_timeout(uri))  # imports the driver, connects on use
    except ModuleNotFoundError as err:
        package = DRIVER_PACKAGES.get(err.name or "", err.name)
        raise FerTuneError(
            f"MLflow store {shown}: its database driver is not installed (no module {err.name}); pip install {package}"
        ) from None
    try:  # one connection now: a wrong password or a database that is down fails here, not after Ray started
        with engine.connect():
            pass
    except sqlalchemy.exc.SQLAlchemyError as err:
        reason = str(getattr(err, "orig", None) or err).strip().splitlines()
        raise FerTuneError(redact(f"MLflow store {shown}: cannot connect ({reason[-1] if reason else err})")) from None
    finally:
        engine.dispose()


def _connect_timeout(uri: str) -> dict:
    """The drivers' own connect timeout (libpq and MySQL take `connect_timeout` in seconds)."""
    if uri.startswith(("postgresql", "mysql")):
        return {"connect_args": {"connect_timeout": int(PROBE_TIMEOUT_S)}}
    return {}


def _check_server(uri: str, shown: str) -> None:
    """One request with no retries and a short timeout: MLflow's defaults retry for minutes."""
    from mlflow.exceptions import MlflowException

    with _http_settings(max_retries=0, timeout=PROBE_TIMEOUT_S):
        try:
            MlflowClient(uri).search_experiments(max_results=1)
        except (MlflowException, OSError) as err:
            if _server_failed(err):
                raise FerTuneError(
                    f"MLflow store {shown}: the server answers but its backend store fails ({_store_reason(err)}); "
                    "start the database behind `mlflow server --backend-store-uri`, or run with --no-track"
                ) from None
            raise FerTuneError(
                f"MLflow store {shown}: no answer within {PROBE_TIMEOUT_S} s ({_reason(err)}); start the server, "
                "fix MLFLOW_TRACKING_URI, or run with --no-track"
            ) from None


def _server_failed(err: Exception) -> bool:
    """Whether the server answered, with a 5xx: MLflow's store behind it (its database) failed."""
    from mlflow.exceptions import RestException

    text = getattr(err, "message", None) or str(err)
    answered = ("error responses", "failed with error code 5")  # a 5xx without a JSON body, retried or not
    return isinstance(err, RestException) or any(marker in text for marker in answered)


def _store_reason(err: Exception) -> str:
    """The database's complaint, from the server's error: `(psycopg.OperationalError) connection failed: ...`."""
    text = (getattr(err, "message", None) or str(err)).strip()
    text = re.sub(r"^[A-Z_]+: ", "", text)  # the REST error code
    return redact(" ".join(text.split()))[:160]


def _reason(err: Exception) -> str:
    text = getattr(err, "message", None) or str(err)
    for known in ("Connection refused", "timed out", "Name or service not known", "401", "403", "404"):
        if known in text:
            return known.lower()
    return redact(text.strip().splitlines()[0])[:120]


@contextmanager
def _http_settings(**values: int):
    """MLflow's HTTP client settings (MLFLOW_HTTP_REQUEST_<NAME>), for a block; read by it per request."""
    names = {key: f"MLFLOW_HTTP_REQUEST_{key.upper()}" for key in values}
    saved = {name: os.environ.get(name) for name in names.values()}
    os.environ.update({names[key]: str(value) for key, value in values.items()})
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def artifacts_dir(uri: str) -> Path | None:
    """mlartifacts/ beside a SQLite database (results/mlartifacts/ for the default store), else None."""
    if not uri.startswith("sqlite:///"):
        return None  # a server or another database keeps artifacts where it is configured to
    database = Path(uri.removeprefix("sqlite:///").split("?")[0])  # relative, or absolute after a 4th slash
    return database.resolve().parent / MLFLOW_ARTIFACTS


def artifact_root(uri: str, experiment: str) -> str | None:
    """Where a new experiment's artifacts go: artifacts_dir/<experiment>/, or the store's choice."""
    folder = artifacts_dir(uri)
    return (folder / re.sub(r"[^\w.-]+", "_", experiment)).as_uri() if folder else None


def experiment_id(client: MlflowClient, name: str, uri: str) -> str:
    """The experiment `name`, created (with its artifact root) or restored from the trash as needed."""
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        # The kind tag keeps MLflow 3's UI from treating the experiment as a GenAI one.
        tags = {"mlflow.experimentKind": "custom_model_development"}
        return client.create_experiment(name, artifact_location=artifact_root(uri, name), tags=tags)
    if experiment.lifecycle_stage == "deleted":
        client.restore_experiment(experiment.experiment_id)
    return experiment.experiment_id


@contextmanager
def fluent_tracking(uri: str):
    """Point MLflow's fluent API (mlflow.pytorch.log_model, model loading) at `uri` for a block.

    MLflow's set_tracking_uri also writes MLFLOW_TRACKING_URI into the environment and its
    reset deletes it, so the caller's value is put back by hand.
    """
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    saved = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # tqdm bars per model download
    try:
        with _use_tracking_uri(uri):
            yield
    finally:
        if saved is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = saved


def download_model(uri: str, store: str, dst: str | Path) -> str:
    """Download the MLflow model at `uri` (models:/NAME@ALIAS, models:/NAME/VERSION, runs:/...) into `dst`."""
    from mlflow.artifacts import download_artifacts
    from mlflow.exceptions import MlflowException

    try:
        # A registered version's source is a logged model (models:/m-...), which MLflow resolves
        # through the global tracking URI whatever is passed here: so set that too.
        with fluent_tracking(store):
            path = download_artifacts(artifact_uri=uri, dst_path=str(dst), tracking_uri=store, registry_uri=store)
    except (MlflowException, OSError, ValueError) as err:
        reason = (getattr(err, "message", None) or str(err)).strip().splitlines()[0]
        raise FerTuneError(redact(f"{uri}: cannot load this model from {store} ({reason})")) from None
    if not (Path(path) / "MLmodel").is_file():
        raise FerTuneError(f"{uri}: not an MLflow model (no MLmodel file)")
    return path
