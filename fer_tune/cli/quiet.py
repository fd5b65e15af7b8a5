"""`fer-tune run` without the libraries' chatter: only fer-tune's own lines, unless --verbose.

    quiet_environment()     # first thing in the command: switches Ray reads when it starts
    quiet_libraries()       # once Ray, Optuna (and MLflow) are imported, before the sweep starts

Left alone, a sweep's console is mostly other libraries' lines: Ray's INFO lines and its
"Configuration for experiment" box, Optuna's "A new study created", MLflow's "Creating initial
MLflow database tables", every worker's stderr (the tracebacks of trials ASHA stopped) and Tune's
40-line traceback per failed trial, which the console already reports in one line
(fer_tune/search/console.py) and keeps whole in the trial's error.txt. Here INFO and DEBUG
records of those libraries are dropped, a warning or error becomes one `[fer-tune] ray warning: ...`
line (its first line, no traceback), and the few records known to repeat what fer-tune says
itself (NOISE) are dropped, as are MLflow's direct prints (eprint). Worker output stays in Ray's log files
(/tmp/ray/session_latest/logs/worker-*.err), and `--verbose` shows everything.
"""

from __future__ import annotations

import logging
import os
import re
import sys

# The loggers whose records reach the console: the libraries, MLflow's database helpers (alembic,
# sqlalchemy, huey), urllib3 (an MLflow server's retries) and Python warnings (logging.captureWarnings).
LIBRARIES = ("ray", "optuna", "mlflow", "alembic", "sqlalchemy", "huey", "urllib3", "py.warnings")
# Switches Ray reads from the environment; set before Ray starts (each is read at ray.init or tuner.fit).
QUIET_ENV = {
    # Workers' stdout and stderr stay in their log files instead of being copied to this console. A
    # stopped trial's worker prints "Exception ignored in: ... SystemExit: 1" as it exits: Ray ends the
    # actor with SIGTERM, and its handler (ray/_private/worker.py, main_loop.sigterm_handler) raises
    # SystemExit inside whatever runs then, often a garbage-collection callback that cannot raise.
    "RAY_LOG_TO_DRIVER": "0",
    # Tune logs every failed trial's whole traceback; the console prints its one line and error.txt's path.
    "TUNE_PRINT_ALL_TRIAL_ERRORS": "0",
    # Tune's new output engine prints its experiment box, results path and TensorBoard hint even at
    # verbose=0; the classic reporter prints nothing at verbose=0.
    "RAY_AIR_NEW_OUTPUT": "0",
    # MLflow writes "View run NAME at: URL" and "View experiment at: URL" to stdout (not through logging)
    # each time a run ends on a tracking server: several lines per trial. fer-tune's summary links the UI.
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
}
# (logger prefix, pattern matched at the start of the message's first line): records that repeat what
# fer-tune's own lines say, describe a default fer-tune chose on purpose, or only say the machine is busy.
NOISE = (
    # a local Ray on loopback with a fresh token is fer-tune's choice; joining a cluster without
    # authentication ("...is disabled for this Ray cluster") is kept: it matters
    ("ray", r"Token authentication is enabled for this Ray cluster"),
    ("ray.tune", r"Trial task failed for trial"),  # the console's "failed after N epochs: <reason>" line
    ("ray.tune", r"Trials did not complete"),  # the summary counts the failed trials and their reasons
    ("ray.tune", r"Experiment has been interrupted"),  # fer-tune prints its own --resume command
    # Tune's timer on its own loop (tune/utils/util.py, warn_if_slow): a loaded machine, not a problem to act on
    ("ray.tune", r".* may be a performance bottleneck"),
)
_NOISE = [(name, re.compile(pattern)) for name, pattern in NOISE]


class OneLine(logging.Handler):
    """Print a library's warning or error as one fer-tune line on stderr; drop the rest."""

    def __init__(self) -> None:
        from fer_tune.search.console import PREFIX  # here: console.py imports Ray

        super().__init__(level=logging.WARNING)
        self.prefix = PREFIX

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno < logging.WARNING:
            return
        try:
            message = record.getMessage().strip()
        except Exception:  # a library's malformed log call must not stop the sweep
            return
        first = message.splitlines()[0].strip() if message else ""
        if not first or is_noise(record.name, first):
            return
        library = "python" if record.name == "py.warnings" else record.name.split(".")[0]
        print(f"{self.prefix} {library} {record.levelname.lower()}: {first}", file=sys.stderr, flush=True)


def is_noise(logger: str, first_line: str) -> bool:
    return any(
        (logger == name or logger.startswith(name + ".")) and pattern.match(first_line) for name, pattern in _NOISE
    )


def quiet_environment() -> None:
    """Set Ray's switches (QUIET_ENV) for this process and the Ray processes it starts; a value the
    user set already is kept."""
    for name, value in QUIET_ENV.items():
        os.environ.setdefault(name, value)


def quiet_libraries(tracked: bool = True) -> None:
    """Route the libraries' loggers through OneLine. They are imported first: Ray, Optuna and MLflow
    each install their own console handler when imported (MLflow replaces what it finds)."""
    import optuna  # noqa: F401
    import ray  # noqa: F401
    from ray._private import ray_constants

    if tracked:
        from mlflow.utils import logging_utils

        # MLflow also prints some events straight to stderr through this stream (eprint: "Successfully
        # registered model 'NAME'.", "Created version '1' of model ..."), which fer-tune's registration
        # line says already. Its writes are dropped here: disable_logging() does not last, as MLflow's own
        # context managers call enable_logging() when they exit.
        logging_utils.MLFLOW_LOGGING_STREAM.write = lambda text: len(text)
    quiet_environment()

    # read by ray.init at call time; the environment variable only at Ray's import
    ray_constants.RAY_LOG_TO_DRIVER = os.environ["RAY_LOG_TO_DRIVER"] not in ("0", "false", "False")
    logging.captureWarnings(True)  # warnings.warn(...) from any library: through py.warnings, one line each
    handler = OneLine()
    for name in LIBRARIES:
        root = logging.getLogger(name)
        root.handlers = [handler]
        root.setLevel(logging.WARNING)
        root.propagate = False
    for name, logger in list(logging.Logger.manager.loggerDict.items()):
        if isinstance(logger, logging.Logger) and name.split(".")[0] in LIBRARIES and name not in LIBRARIES:
            logger.handlers = []  # a library's sub-logger with a handler of its own prints through its root
            logger.propagate = True
            if logger.level and logger.level < logging.WARNING:
                logger.setLevel(logging.NOTSET)  # INFO set on a sub-logger (ray.tune, mlflow.store) inherits WARNING
