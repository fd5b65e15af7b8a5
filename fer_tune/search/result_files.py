"""The sweep's own files, read as carefully as the user's: one checked reader per file of results/<name>/.

    curves = read_curves_csv(folder / "curves.csv", metric)       # every reported epoch of every trial
    predictions = read_predictions(folder)                        # predictions.csv + .json; None if not saved
    reruns = read_reruns_csv(folder / "reruns.csv", metric)       # `select:`'s re-runs, one row per run
    check_sweep_for_report(meta, folder / "sweep.json")          # what the report reads of sweep.json and
    check_trials_for_report(trials, folder / "trials.csv", metric)  # trials.csv (read by fer_tune.search.results)

A crash or a full disk can leave a file empty or cut mid-row, a copy can put another file in its
place, and a hand edit can leave anything. Each reader checks the encoding (UTF-8 text, no NUL
bytes), that a CSV ends with the line break pandas ends every file with, that it parses, that
its required columns are there, that numbers are numbers (finite, integers, within their range
where they must be) and that the rows the report needs exist; it answers anything else with one
FerTuneError naming the file, the line or column, and what was expected.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import pandas as pd

from fer_tune.errors import FerTuneError
from fer_tune.search.outcome import COMPLETED, OUTCOMES
from fer_tune.search.results import CURVE_COLUMNS, INCOMPLETE

PREDICTIONS_FILE, PREDICTIONS_META = "predictions.csv", "predictions.json"  # written by report.predictions
PREDICTION_COLUMNS = ("split", "index", "label", "champion")
RIVALS = ("runner_up", "previous_champion")  # optional prediction columns; empty where a rival was not scored
LACKED = -1  # the previous champion's prediction of a class this sweep lacks (fer_tune.tracking.paired)
EVAL_SPLITS = ("validation", "test")

# ------------------------------------------------------------------------------------------ the files


def read_curves_csv(path: Path, metric: str | None = None) -> pd.DataFrame:
    """results/<name>/curves.csv: trial_id, epoch (integers >= 1) and numeric metric columns; `metric`, where
    given, must be one of them. A sweep whose trials reported nothing writes an empty table (one line break)."""
    text = _text(path)
    if not text.strip() and text:  # pandas' empty table: a lone line break
        return pd.DataFrame(columns=["trial_id", "epoch"])
    required = ("trial_id", "epoch", *([metric] if metric else []))
    curves = _csv(path, text, required)
    _present(curves, path, "trial_id")
    curves["epoch"] = _integers(curves, path, "epoch", low=1)
    for column in (c for c in CURVE_COLUMNS if c in curves and c != "epoch"):
        curves[column] = _numbers(curves, path, column)
    if "epoch_seconds" in curves:
        _at_least(curves, path, "epoch_seconds", 0.0)
    return curves


def read_predictions(folder: Path) -> dict | None:
    """results/<name>/predictions.csv and predictions.json, the pair save_predictions writes: {"meta", "frame"};
    None where the sweep saved no predictions. Labels and predictions are class indices of the json's classes,
    and the evaluation split it names has rows."""
    if not (folder / PREDICTIONS_FILE).is_file():
        return None
    meta = _predictions_meta(folder / PREDICTIONS_META)
    path, classes = folder / PREDICTIONS_FILE, len(meta["classes"])
    frame = _csv(path, _text(path), PREDICTION_COLUMNS)
    _one_of(frame, path, "split", EVAL_SPLITS)
    frame["index"] = _integers(frame, path, "index", low=0)
    for column in ("label", "champion"):
        frame[column] = _integers(frame, path, column, low=0, high=classes - 1, what=_class_index(classes))
    for rival in (r for r in RIVALS if r in frame):
        low = LACKED if rival == "previous_champion" else 0
        frame[rival] = _integers(frame, path, rival, low, classes - 1, missing=True, what=_class_index(classes, low))
    if not (frame["split"] == meta["eval_split"]).any():
        raise FerTuneError(
            f"{path}: no rows of split {meta['eval_split']} (the evaluation split {PREDICTIONS_META} names); "
            f"expected one row per {meta['eval_split']} image; {INCOMPLETE}"
        )
    return {"meta": meta, "frame": frame}


def read_reruns_csv(path: Path, metric: str) -> pd.DataFrame:
    """results/<name>/reruns.csv: one row per re-run with its trial, seed, best metric (finite where the re-run
    completed), epochs, outcome and seconds; at least one row."""
    score = f"best_{metric}"
    reruns = _csv(path, _text(path), ("trial_id", "seed", score, "epochs_run", "status", "wall_seconds"))
    if reruns.empty:
        raise FerTuneError(f"{path}: no rows; expected one per re-run (a sweep without re-runs writes no {path.name})")
    _present(reruns, path, "trial_id")
    reruns["seed"] = _integers(reruns, path, "seed", low=0)
    reruns["epochs_run"] = _integers(reruns, path, "epochs_run", low=0)
    _one_of(reruns, path, "status", OUTCOMES)
    reruns[score] = _numbers(reruns, path, score)
    _finite(reruns[reruns["status"] == COMPLETED], path, score, f"a finite {score} (the re-run completed)")
    reruns["wall_seconds"] = _numbers(reruns, path, "wall_seconds")
    _at_least(reruns, path, "wall_seconds", 0.0)
    return reruns


def check_sweep_for_report(meta: dict, path: Path) -> dict:
    """sweep.json as read_sweep_json read it, with the keys the report reads: the data's source, classes and
    split sizes, and the space's parameters, budget and resources."""
    data, space = meta.get("data"), meta["space"]
    if not isinstance(data, dict) or not {"source", "classes", "splits"} <= set(data):
        raise FerTuneError(f"{path}: no data with source, classes and splits; {INCOMPLETE}")
    if not _strings(data["classes"]):
        raise FerTuneError(f"{path}: data.classes is {_short(data['classes'])}; expected a list of class names")
    if not isinstance(data["splits"], dict) or not all(_counts(c) for c in data["splits"].values()):
        raise FerTuneError(f"{path}: data.splits is {_short(data['splits'])}; expected image counts per class")
    _key(space, path, "space.space", list, lambda p: all(isinstance(q, dict) and {"name", "kind"} <= set(q) for q in p))
    _key(space, path, "space.budget", dict, lambda b: _whole(b.get("max_epochs"), low=1))
    _key(space, path, "space.resources", dict, lambda r: all(_number(r.get(k)) for k in ("gpu", "cpu")))
    return meta


def check_trials_for_report(trials: pd.DataFrame, path: Path, metric: str) -> pd.DataFrame:
    """trials.csv as read_trials_csv read it, with what the report reads: at least one trial, each with its id,
    outcome, best metric (a number or empty), epochs run (an integer >= 0) and seconds."""
    missing = [c for c in ("status", "epochs_run", "wall_seconds") if c not in trials]
    if missing:
        raise FerTuneError(f"{path}: no column {', '.join(missing)}; expected the columns write_results writes")
    if trials.empty:
        raise FerTuneError(f"{path}: no rows; expected one per trial; {INCOMPLETE}")
    _present(trials, path, "trial_id")
    _one_of(trials, path, "status", OUTCOMES)
    trials[f"best_{metric}"] = _numbers(trials, path, f"best_{metric}")
    trials["epochs_run"] = _integers(trials, path, "epochs_run", low=0)
    trials["wall_seconds"] = _numbers(trials, path, "wall_seconds")
    return trials


# ---------------------------------------------------------------------------------------- the checks


def _text(path: Path) -> str:
    """The file as text: readable, UTF-8 and without NUL bytes (a binary file in its place has them)."""
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise FerTuneError(f"{path}: unreadable ({err.strerror or type(err).__name__}); {INCOMPLETE}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise FerTuneError(f"{path}: not UTF-8 text (byte 0x{raw[err.start]:02x} at offset {err.start}); "
                           "expected the CSV fer-tune wrote") from None  # fmt: skip
    if "\x00" in text:
        raise FerTuneError(f"{path}: binary content (a NUL byte at offset {text.index(chr(0))}); expected text")
    return text


def _csv(path: Path, text: str, required: tuple[str, ...]) -> pd.DataFrame:
    """`text` parsed as a CSV with the `required` columns; a file not ending in a line break was cut mid-row."""
    if not text.strip():
        raise FerTuneError(f"{path}: empty; expected a header line and rows; {INCOMPLETE}")
    if not text.endswith("\n"):
        line = text.count("\n") + 1
        raise FerTuneError(f"{path}: line {line} is cut short (no line break at the end of the file); {INCOMPLETE}")
    try:
        frame = pd.read_csv(io.StringIO(text))
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise FerTuneError(f"{path}: unreadable as CSV ({_first_line(err)}); {INCOMPLETE}") from None
    missing = [c for c in required if c not in frame]
    if missing:
        raise FerTuneError(f"{path}: no column {', '.join(missing)}; expected columns {', '.join(required)}")
    return frame


def _line(frame: pd.DataFrame, label) -> int:
    """The file's line of a row (the header is line 1)."""
    return int(label) + 2  # the rows keep read_csv's RangeIndex (a filtered frame too)


def _bad(frame: pd.DataFrame, path: Path, column: str, wrong: pd.Series, expected: str) -> None:
    """One line naming the first row where `wrong` holds, its value and what was `expected`."""
    if wrong.any():
        label = wrong[wrong].index[0]
        value = frame.at[label, column]
        value = value.item() if hasattr(value, "item") else value  # numpy's scalars as Python's
        shown = "empty" if pd.isna(value) else repr(value) if isinstance(value, str) else str(value)
        raise FerTuneError(f"{path}: line {_line(frame, label)}, column {column}: {shown}; expected {expected}")


def _present(frame: pd.DataFrame, path: Path, column: str) -> None:
    _bad(frame, path, column, frame[column].isna(), "a value")


def _numbers(frame: pd.DataFrame, path: Path, column: str, expected: str = "a number") -> pd.Series:
    """The column as floats; a value that is no number is an error (an empty cell is NaN, allowed)."""
    values = frame[column]
    numbers = pd.to_numeric(values, errors="coerce")
    _bad(frame, path, column, numbers.isna() & values.notna(), expected)
    return numbers.astype(float)


def _finite(frame: pd.DataFrame, path: Path, column: str, expected: str) -> None:
    """Every value of the (numeric) column finite: an empty cell, NaN or inf is an error."""
    values = frame[column].astype(float)
    _bad(frame, path, column, ~values.map(math.isfinite).astype(bool), expected)


def _at_least(frame: pd.DataFrame, path: Path, column: str, low: float) -> None:
    _bad(frame, path, column, frame[column] < low, f"a number >= {low:g}")


def _integers(
    frame: pd.DataFrame,
    path: Path,
    column: str,
    low: int,
    high: int | None = None,
    missing: bool = False,
    what: str | None = None,
) -> pd.Series:
    """The column as integers within low..high (NaN kept, as floats, where `missing` is allowed)."""
    expected = what or (f"an integer {low}..{high}" if high is not None else f"an integer >= {low}")
    numbers = _numbers(frame, path, column, expected)
    if not missing:
        _bad(frame, path, column, numbers.isna(), expected)
    known = numbers.notna()
    outside = known & ((numbers % 1 != 0) | (numbers < low) | (numbers > (math.inf if high is None else high)))
    _bad(frame, path, column, outside, expected)
    return numbers if missing and not known.all() else numbers.astype("int64")


def _one_of(frame: pd.DataFrame, path: Path, column: str, allowed: tuple[str, ...]) -> None:
    _bad(frame, path, column, ~frame[column].isin(allowed), f"one of {', '.join(allowed)}")


def _class_index(classes: int, low: int = 0) -> str:
    lacked = f", or {LACKED} for a class the sweep lacks" if low == LACKED else ""
    return f"a class index 0..{classes - 1}{lacked} ({PREDICTIONS_META} has {classes} classes)"


def _predictions_meta(path: Path) -> dict:
    """predictions.json: the evaluation split, the classes, and the ids of the models scored."""
    if not path.is_file():
        raise FerTuneError(f"{path}: not found beside {PREDICTIONS_FILE}; {INCOMPLETE}")
    try:
        meta = json.loads(_text(path))
    except json.JSONDecodeError as err:
        raise FerTuneError(f"{path}: not valid JSON ({_first_line(err)}); {INCOMPLETE}") from None
    if not isinstance(meta, dict):
        raise FerTuneError(f"{path}: {_short(meta)}; expected an object with eval_split, classes and champion")
    if meta.get("eval_split") not in EVAL_SPLITS:
        raise FerTuneError(f"{path}: eval_split is {_short(meta.get('eval_split'))}; expected validation or test")
    if not _strings(meta.get("classes")) or len(meta["classes"]) < 2:
        raise FerTuneError(f"{path}: classes is {_short(meta.get('classes'))}; expected a list of 2 or more names")
    for role in ("champion", *RIVALS):
        value = meta.get(role)
        if (role == "champion" or value is not None) and not (isinstance(value, str | int) and str(value)):
            raise FerTuneError(f"{path}: {role} is {_short(value)}; expected a trial id")
    return meta


def _key(parent: dict, path: Path, name: str, kind: type, valid) -> None:
    value = parent.get(name.rsplit(".", 1)[-1])
    if not isinstance(value, kind) or not valid(value):
        raise FerTuneError(f"{path}: {name} is {_short(value)}; not what fer-tune writes; {INCOMPLETE}")


def _strings(value) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, str) for v in value)


def _counts(value) -> bool:
    return isinstance(value, dict) and all(_whole(v, low=0) for v in value.values())


def _number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _whole(value, low: int) -> bool:
    return _number(value) and value == int(value) and value >= low


def _short(value) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _first_line(err: Exception) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:120]
