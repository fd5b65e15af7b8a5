"""Paths a command will write, checked before any expensive work: one line naming the flag and the path."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from fer_tune.errors import FerTuneError


def given(text: str) -> str:
    """argparse type of a flag's text (a path, URI, address or name): not empty. An empty value would
    quietly mean the default (`--address ''` ran on local Ray), so it is refused in one line."""
    if not text.strip():
        raise argparse.ArgumentTypeError(f"{text!r}: an empty value; give one or leave the flag out")
    return text


def given_path(text: str) -> Path:
    """argparse type of a path flag: not empty (Path('') is the working folder)."""
    return Path(given(text))


def writable_folder(folder: Path, what: str) -> Path:
    """`folder` is (or is now made) a folder this process may write in."""
    if folder.exists() and not folder.is_dir():
        raise FerTuneError(f"{what} {folder}: is a file, expected a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise FerTuneError(f"{what} {folder}: cannot create it ({err.strerror or err})") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise FerTuneError(f"{what} {folder}: not writable")
    return folder


def writable_file(path: Path, flag: str) -> Path:
    """`path` can be written as a file: not a folder, its folder writable (made if need be)."""
    if path.is_dir():
        raise FerTuneError(f"{flag} {path}: is a folder, expected a file")
    if path.exists() and not os.access(path, os.W_OK):
        raise FerTuneError(f"{flag} {path}: not writable")
    writable_folder(path.parent, f"{flag} {path}: its folder")
    return path
