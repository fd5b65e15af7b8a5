"""The one error type users see.

A `FerTuneError` carries a complete, one-line message (file, row or key, what was
expected); the CLI prints it without a traceback and exits non-zero. Anything
else that escapes is a bug and keeps its traceback.
"""


class FerTuneError(Exception):
    """Bad input or configuration, explained in one line."""
