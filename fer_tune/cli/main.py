"""The `fer-tune` command: parse arguments, dispatch to a command module.

Only argparse is imported at module level (here and in the command modules): torch, ray
and mlflow are imported inside the commands, so `fer-tune --help` answers at once.
"""

from __future__ import annotations

import argparse
import errno
import sys

from fer_tune.cli import data, models, report, serve, sweep, train
from fer_tune.errors import FerTuneError
from fer_tune.uris import redact


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "handler"):
        parser.print_help()
        return 2
    try:
        return args.handler(args) or 0
    except FerTuneError as err:
        # One line, without credentials, whatever a library put into the message.
        print(f"fer-tune: error: {' '.join(redact(str(err)).split(chr(10)))}", file=sys.stderr)
        return 1
    except OSError as err:
        if err.errno not in FILE_ERRORS or err.filename is None:
            raise
        # A folder it may not write (read-only, another user's, a full disk, a directory where a file goes):
        # the path and the reason, whichever step met it; what the command wrote before stays as it was.
        print(f"fer-tune: error: {redact(str(err.filename))}: {err.strerror}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("fer-tune: interrupted", file=sys.stderr)
        return 130


FILE_ERRORS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EISDIR, errno.ENOTDIR}


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (argparse prints the whole usage first), exit status 2."""

    def error(self, message: str):
        command = self.prog.removeprefix("fer-tune").strip()
        self.exit(2, f"fer-tune: error: {command + ': ' if command else ''}{message}; see {self.prog} --help\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="fer-tune", description="Hyperparameter search for facial-emotion-recognition CNNs.")
    commands = parser.add_subparsers(metavar="COMMAND")
    data.add_commands(commands)  # data synth|inspect|clean
    train.add_commands(commands)  # train
    sweep.add_commands(commands)  # run, results [sync]
    models.add_commands(commands)  # ui, models list|download, predict
    serve.add_commands(commands)  # serve: the web page and JSON API
    report.add_commands(commands)  # report: report.html and report.json of a sweep
    return parser


if __name__ == "__main__":
    sys.exit(main())
