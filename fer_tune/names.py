"""The one rule for a name that becomes a folder or a record: a sweep, a space file's `name:`,
an MLflow experiment or registered model.

A sweep's name is a folder under results/ and under Ray's storage, so `../x`, `a/b`, a newline
or 300 characters would write outside them or fail deep in the filesystem. A name is a slug:

    check_name("quick-20261205-101500", "--name")       # returns it
    check_name("../escaped", "--name")                  # FerTuneError, one line saying what is allowed
"""

from __future__ import annotations

import os
import re

from fer_tune.constants import RESERVED_NAMES, RESULTS_DIR
from fer_tune.errors import FerTuneError

NAME_MAX = 100  # characters; far under any filesystem's 255 bytes, with room for Ray's suffixes
DATE_SUFFIX = len("-20261205-101500")  # what a default sweep name adds to the space's name
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
ALLOWED = "letters, digits, '.', '_' and '-', starting with a letter or digit"


def check_name(value: object, where: str, longest: int = NAME_MAX) -> str:
    """`value` if it is a safe name (a slug of at most `longest` characters), else one line naming `where`."""
    if not isinstance(value, str):  # a type, not the value: a YAML alias bomb's value is megabytes
        raise FerTuneError(f"{where}: a {type(value).__name__}: expected a name ({ALLOWED})")
    shown = repr(value) if len(value) <= 60 else repr(value[:60]) + f"... ({len(value)} characters)"
    if not value:
        raise FerTuneError(f"{where}: empty; expected a name of {ALLOWED}, at most {longest} characters")
    if len(value) > longest:
        raise FerTuneError(f"{where}: {shown}: too long; expected at most {longest} characters of {ALLOWED}")
    if not _NAME.fullmatch(value):
        raise FerTuneError(f"{where}: {shown}: not a safe name; expected {ALLOWED} (at most {longest} characters)")
    return value


def check_space_name(value: object, where: str) -> str:
    """A space file's `name:`, short enough that SPACE-DATE-TIME, the default sweep name, is itself a name."""
    return check_name(value, where, longest=NAME_MAX - DATE_SUFFIX)


def check_sweep_name(value: object, where: str) -> str:
    """A sweep's name (check_name) whose folder results/<name> is not a link leading out of results/.

    fer-tune writes a sweep's tables and report into results/<name>: a symbolic link there to a
    folder elsewhere (or to nothing) would have it write outside results/, so it is refused, as
    `../x` is. A results/ that is itself a link (to a larger disk) is the user's choice and stays.
    """
    name = check_name(value, where)
    if name in RESERVED_NAMES:
        raise FerTuneError(
            f"{where} {name}: {RESULTS_DIR}/{name} is fer-tune's own ({', '.join(RESERVED_NAMES)} are); "
            "choose another name"
        )
    folder = RESULTS_DIR / name
    if folder.is_symlink():
        target = os.readlink(folder)
        inside = folder.exists() and folder.resolve().is_relative_to(RESULTS_DIR.resolve())
        if not inside:
            where_to = "to nothing" if not folder.exists() else f"outside {RESULTS_DIR}/"
            raise FerTuneError(
                f"{where} {name}: {folder} is a link to {target}, {where_to}; fer-tune writes only under "
                f"{RESULTS_DIR}/: remove the link or choose another name"
            )
    return name
