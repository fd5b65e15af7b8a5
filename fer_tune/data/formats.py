"""What kind of data source a path is, decided here only: a FER2013 CSV file or an image folder.

`load_dataset` picks its reader by it, and `clean_dataset` writes its output in the same kind.
"""

from __future__ import annotations

from pathlib import Path

from fer_tune.errors import FerTuneError

CSV, FOLDER = "csv", "folder"


def source_kind(path: Path, label: str, expected: str) -> str:
    """CSV for a .csv file, FOLDER for a folder; otherwise a one-line error: `label`, what is wrong, `expected`."""
    if path.is_file() and path.suffix.lower() == ".csv":
        return CSV
    if path.is_dir():
        return FOLDER
    what = "is not a .csv file or a folder" if path.exists() else "not found"
    raise FerTuneError(f"{label} {what}: {expected}")
