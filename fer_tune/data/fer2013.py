"""Read and write FER2013 CSV files, all three public variants, in a few seconds.

    >>> data = read_fer2013_csv("fer2013.csv")   # 35,887 rows, ~300 MB: ~3 s of CPU
    >>> data.summary()["splits"]["train"]["happy"]
    7215

Variants (torchvision.datasets.FER2013 reads the same three):
  fer2013.csv         `emotion,pixels,Usage`
  icml_face_data.csv  `emotion, Usage, pixels` (column names carry leading spaces)
  Kaggle train.csv    `emotion,pixels`: no Usage, so validation is carved from it and
                      there is no test split; Kaggle's test.csv has no labels at all.
Usage `Training`/`PublicTest`/`PrivateTest` -> train/validation/test. Any bad row is a
FerTuneError naming the file, the line (header = line 1), the column and what was expected.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fer_tune.constants import EMOTIONS, IMAGE_SIZE, NUM_PIXELS, USAGE_TO_SPLIT
from fer_tune.data.dataset import FerDataset, Split, stratified_holdout
from fer_tune.errors import FerTuneError

FORMAT_VERSION = 1  # bump when parsing changes, so cached parses are rebuilt
CHUNK_ROWS = 2048  # rows parsed per numpy call: few calls, little memory held at once
_PIXEL_TEXT = [str(v) for v in range(256)]  # writer's lookup table: no per-pixel str()
# How rows are read: a BOM is skipped, newline="" keeps each line's own ending for verbatim copies.
CSV_TEXT = {"encoding": "utf-8-sig", "errors": "replace", "newline": ""}


@dataclass(frozen=True)
class Fer2013Rows:
    """A FER2013 CSV's rows as stored, before any split is carved."""

    images: np.ndarray  # uint8 [N, 48, 48]
    labels: np.ndarray  # int64 [N], EMOTIONS order
    splits: np.ndarray | None  # each row's split name (train, validation, test); None: no Usage column
    lines: np.ndarray  # each row's line number in the file (header = line 1), as error messages count


# A file named .csv may be something else altogether; its first bytes say what (file(1)'s magic numbers).
MAGIC = {
    b"\x1f\x8b": "a gzip file (gunzip it first)", b"PK\x03\x04": "a zip archive (unzip it first)",
    b"BZh": "a bzip2 file (bunzip2 it first)", b"\xfd7zXZ\x00": "an xz file (unxz it first)",
    b"(\xb5/\xfd": "a zstd file (unzstd it first)", b"\x89PNG": "a PNG image", b"\xff\xd8\xff": "a JPEG image",
    b"%PDF": "a PDF document", b"SQLite format 3": "an SQLite database",
}  # fmt: skip
SNIFF_BYTES = 4096


def check_is_text(path: Path) -> None:
    """Refuse, in one line saying what it is, a .csv that is compressed, an image or other binary."""
    with open(path, "rb") as f:
        head = f.read(SNIFF_BYTES)
    kind = next((what for magic, what in MAGIC.items() if head.startswith(magic)), None)
    if kind is None and (b"\x00" in head or _not_utf8(head)):
        kind = "binary data, not text"
    if kind:
        raise FerTuneError(f"{path}: is {kind}; expected a FER2013 CSV (text: header 'emotion,pixels,Usage')")


def _not_utf8(head: bytes) -> bool:
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as err:
        return err.start < len(head) - 3  # a multi-byte character cut by the 4 kB window is still text
    return False


def check_fer2013_csv(path: str | Path) -> None:
    """The cheap part of parsing, in milliseconds: text, the header, the first row (before Ray starts)."""
    path = Path(path)
    check_is_text(path)
    with open(path, **CSV_TEXT) as f:
        columns = _read_header(path, f.readline())
        for chunk in _row_chunks(path, _first_lines(f, 3), len(columns)):
            lines = [line for line, _ in chunk]
            for line, fields in chunk:
                _label(path, line, fields[columns["emotion"]])
                if "usage" in columns:
                    _usage(path, line, fields[columns["usage"]])
            _parse_pixels(path, [fields[columns["pixels"]] for _, fields in chunk], lines)


def _first_lines(f, count: int):
    for _ in range(count):
        line = f.readline()
        if not line:
            return
        yield line


def parse_fer2013_csv(path: str | Path) -> Fer2013Rows:
    """Parse every row of a FER2013 CSV, keeping its line number and Usage."""
    path = Path(path)
    check_is_text(path)
    with open(path, **CSV_TEXT) as f:
        columns = _read_header(path, f.readline())
        labels, usages, images, line_numbers = [], [], [], []
        for chunk in _row_chunks(path, f, len(columns)):
            lines = [line for line, _ in chunk]
            line_numbers.extend(lines)
            labels.extend(_label(path, line, fields[columns["emotion"]]) for line, fields in chunk)
            if "usage" in columns:
                usages.extend(_usage(path, line, fields[columns["usage"]]) for line, fields in chunk)
            images.append(_parse_pixels(path, [fields[columns["pixels"]] for _, fields in chunk], lines))
    if not images:
        raise FerTuneError(f"{path} has a header but no data rows: expected one row per image after it")
    return Fer2013Rows(
        images=np.concatenate(images).reshape(-1, IMAGE_SIZE, IMAGE_SIZE),
        labels=np.array(labels, dtype=np.int64),
        splits=np.array(usages) if "usage" in columns else None,
        lines=np.array(line_numbers, dtype=np.int64),
    )


def copy_fer2013_rows(source: str | Path, target: str | Path, lines: set[int]) -> None:
    """Write `source`'s header and the rows at `lines` (numbered as parse_fer2013_csv does), verbatim:
    the copy keeps the source's variant, columns and row order."""
    with open(source, **CSV_TEXT) as f, open(target, "w", encoding="utf-8", newline="") as out:
        out.write(f.readline())
        out.writelines(line for number, line in enumerate(f, start=2) if number in lines)


def read_fer2013_csv(path: str | Path, *, val_fraction: float = 0.1, seed: int = 0) -> FerDataset:
    """Parse a FER2013 CSV into a FerDataset (uint8 images, labels in EMOTIONS order)."""
    path = Path(path)
    rows = parse_fer2013_csv(path)
    images, labels = rows.images, rows.labels
    if rows.splits is None:  # Kaggle's train.csv: carve validation, no test split
        train_idx, val_idx = stratified_holdout(labels, val_fraction, seed, where=str(path))
        source = (
            f"{path} (no Usage column: validation carved from train with "
            f"val_fraction={val_fraction}, seed={seed}; train.csv has no test split)"
        )
        return FerDataset(_split(images, labels, train_idx), _split(images, labels, val_idx), None, EMOTIONS, source)
    splits = {name: _split(images, labels, np.flatnonzero(rows.splits == name)) for name in USAGE_TO_SPLIT.values()}
    for usage, name in USAGE_TO_SPLIT.items():
        if name != "test" and len(splits[name]) == 0:
            raise FerTuneError(
                f"{path} has no rows with Usage '{usage}', so the {name} split is empty: "
                f"expected Training (train) and PublicTest (validation) rows"
            )
    test = splits["test"] if len(splits["test"]) else None  # no PrivateTest rows: no test split
    return FerDataset(splits["train"], splits["validation"], test, EMOTIONS, str(path))


def write_fer2013_csv(path: str | Path, images, labels, usages: Sequence[str]) -> None:
    """Write uint8 images [N, 48, 48] (numpy or tensor) in the `emotion,pixels,Usage` format."""
    images = np.asarray(images)
    labels = np.asarray(labels)
    if images.dtype != np.uint8 or images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise ValueError(f"images must be uint8 [N, {IMAGE_SIZE}, {IMAGE_SIZE}], got {images.dtype} {images.shape}")
    if labels.shape != images.shape[:1] or len(usages) != len(images):
        raise ValueError(
            f"need one label and one usage per image: {len(images)} images, labels {labels.shape}, {len(usages)} usages"
        )
    unknown = set(usages) - set(USAGE_TO_SPLIT)
    if unknown:
        raise ValueError(f"unknown usages {sorted(unknown)}: expected {list(USAGE_TO_SPLIT)}")
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write("emotion,pixels,Usage\n")
        for image, label, usage in zip(images.reshape(len(images), -1), labels.tolist(), usages):
            pixels = " ".join(map(_PIXEL_TEXT.__getitem__, image.tolist()))
            f.write(f"{label},{pixels},{usage}\n")


def fer2013_cache_key(path: str | Path, val_fraction: float, seed: int) -> str:
    """A cache key for `read_fer2013_csv(path, ...)`: the file's sha256, its path and the
    carve parameters where they matter (files with no Usage column)."""
    path = Path(path)
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):  # hashlib.file_digest is 3.11+; we support 3.10
            digest.update(block)
        f.seek(0)
        header = f.readline().decode("utf-8", errors="replace")
    has_usage = "usage" in [name.strip().strip('"').strip().lower() for name in header.split(",")]
    digest.update(str(path.resolve()).encode())  # the cached `source` names this path
    carve = "" if has_usage else f"-val{val_fraction}-s{seed}"
    return f"fer2013-v{FORMAT_VERSION}-{digest.hexdigest()[:32]}{carve}"


def _split(images: np.ndarray, labels: np.ndarray, idx: np.ndarray) -> Split:
    return Split(torch.from_numpy(images[idx]), torch.from_numpy(labels[idx]))


def _read_header(path: Path, header: str) -> dict[str, int]:
    """Map lower-cased column name -> field index; the icml file's ' Usage' becomes 'usage'."""
    if not header.strip():
        raise FerTuneError(f"{path} is empty: expected a header line 'emotion,pixels,Usage' and one row per image")
    names = [name.strip().strip('"').strip() for name in header.rstrip("\r\n").split(",")]
    columns = {name.lower(): i for i, name in enumerate(names)}
    found = ", ".join(repr(name[:30]) for name in names[:10])
    missing = [name for name in ("emotion", "pixels") if name not in columns]
    if missing == ["emotion"]:
        raise FerTuneError(
            f"{path} has no 'emotion' column (columns found: {found}): it holds no labels, "
            f"like Kaggle's test.csv, and is not usable for training"
        )
    if missing:
        raise FerTuneError(
            f"{path} is missing required column(s) {', '.join(map(repr, missing))} "
            f"(columns found: {found}): expected header 'emotion,pixels,Usage'"
        )
    return columns


def _row_chunks(path: Path, f, n_columns: int):
    """Yield lists of (line number, fields), CHUNK_ROWS at a time; blank lines skipped.

    Splitting on commas by hand is 4x faster than the csv module here, and safe: no
    FER2013 field contains a comma, quotes are stripped from each field.
    """
    chunk = []
    for line_number, line in enumerate(f, start=2):
        if not line.strip():
            continue
        fields = [field.strip().strip('"') for field in line.split(",")]
        if len(fields) != n_columns:
            raise FerTuneError(
                f"{path} line {line_number}: found {len(fields)} comma-separated fields, "
                f"expected {n_columns} (one per header column)"
            )
        chunk.append((line_number, fields))
        if len(chunk) == CHUNK_ROWS:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _label(path: Path, line: int, text: str) -> int:
    if text.isascii() and text.isdigit() and int(text) < len(EMOTIONS):
        return int(text)
    raise FerTuneError(
        f"{path} line {line}: column 'emotion' value {text[:20]!r} is not a label: "
        f"expected an integer 0..{len(EMOTIONS) - 1}"
    )


def _usage(path: Path, line: int, text: str) -> str:
    if text in USAGE_TO_SPLIT:
        return USAGE_TO_SPLIT[text]
    raise FerTuneError(
        f"{path} line {line}: column 'Usage' value {text[:20]!r} is unknown: "
        f"expected one of {', '.join(USAGE_TO_SPLIT)}"
    )


def _parse_pixels(path: Path, fields: list[str], lines: list[int]) -> np.ndarray:
    """Parse pixel fields to uint8 [n, 2304] with one numpy call.

    np.loadtxt's C parser checks each value fits uint8 and every row has as many
    values as the first (measured ~1.3x faster than np.fromstring, with no int64
    scratch). Any failure takes the slow per-row scan, which names the bad line.
    """
    try:
        pixels = np.loadtxt(fields, dtype=np.uint8, ndmin=2, comments=None)
        if pixels.shape == (len(fields), NUM_PIXELS):
            return pixels
    except ValueError:
        pass
    for field, line in zip(fields, lines):
        _check_pixel_row(path, line, field)
    raise FerTuneError(
        f"{path} lines {lines[0]}-{lines[-1]}: column 'pixels' could not be parsed: "
        f"expected {NUM_PIXELS} space-separated integers 0..255 per row"
    )


def _check_pixel_row(path: Path, line: int, field: str) -> None:
    """Raise a FerTuneError naming the first problem in one row's pixels, if any."""
    tokens = field.split()
    for number, token in enumerate(tokens, start=1):
        if not (token.isascii() and token.lstrip("+-").isdigit()):  # int() would take '1_0', '٣'
            raise FerTuneError(
                f"{path} line {line}: column 'pixels' value {token[:20]!r} (number {number}) "
                f"is not an integer: expected {NUM_PIXELS} integers 0..255"
            )
        value = int(token)
        if not 0 <= value <= 255:
            raise FerTuneError(f"{path} line {line}: column 'pixels' value {value} (number {number}) is outside 0..255")
    if len(tokens) != NUM_PIXELS:
        raise FerTuneError(
            f"{path} line {line}: column 'pixels' has {len(tokens)} values, "
            f"expected {NUM_PIXELS} ({IMAGE_SIZE}x{IMAGE_SIZE}) integers 0..255"
        )
