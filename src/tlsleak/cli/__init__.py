"""The ``tlsleak`` command.

Exit status: 0 clean, 1 findings, 2 bad usage or bad input (one line on
stderr, never a traceback), 130 interrupted, 141 output pipe closed.

Each command group is a module here with a function that adds its
sub-command(s) to the parser; each sub-command's parser names the function
that runs it (``set_defaults(run=...)``).  Their shared pieces are in
:mod:`tlsleak.cli._common`; the ``check`` reports are in :mod:`tlsleak.reports`.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from tlsleak._version import __version__
from tlsleak.cases.files import CorpusError
from tlsleak.check.findings import FindingError
from tlsleak.check.worker import WorkerError
from tlsleak.cli import catalogue, check, corpus, diff, export, fuzz, ossfuzz, replay, report
from tlsleak.cli._common import (
    EXIT_BROKEN_PIPE,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    Parser,
    UsageError,
)

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="tlsleak",
        description="Hunt resource leaks in the error paths of TLS initialisation code.",
    )
    parser.add_argument("--version", action="version", version=f"tlsleak {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    commands.required = True
    # In this order in --help.
    catalogue.add_parsers(commands)
    check.add_parser(commands)
    replay.add_parser(commands)
    diff.add_parser(commands)
    export.add_parser(commands)
    fuzz.add_parser(commands)
    corpus.add_parser(commands)
    report.add_parser(commands)
    ossfuzz.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tlsleak`` console script."""
    try:
        argv = list(sys.argv[1:] if argv is None else argv)
        # libFuzzer's flags follow "--" (argparse's own handling of "--" under
        # sub-commands passes it on as an argument).
        split = argv.index("--") if "--" in argv else len(argv)
        argv, passed_on = argv[:split], argv[split + 1 :]
        args = _parser().parse_args(argv)
        if passed_on and args.command != "fuzz":
            raise UsageError("only 'tlsleak fuzz' takes flags after '--' (libFuzzer's)")
        args.libfuzzer = passed_on
        run: Callable[[argparse.Namespace], int] = args.run
        return run(args)
    except (UsageError, CorpusError, FindingError, WorkerError) as exc:
        print(f"tlsleak: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("\ntlsleak: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`tlsleak check | head`): stop quietly, and keep
        # Python from complaining again when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
