"""``tlsleak report``: a campaign's or a check's output folder as one HTML page.

The work is :mod:`tlsleak.reports.html`; this module adds the sub-command,
checks FILE before any work and writes it like every report of the command
(:func:`~tlsleak.cli._common.write_output`: atomically, or into a stream
such as ``/dev/stdout``), and turns errors (pygal missing, OUT not an output
folder, FILE not writable, garbage in ``stats.jsonl``) into one line and exit
status 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tlsleak.cli._common import (
    EXIT_CLEAN,
    Commands,
    UsageError,
    check_output_path,
    is_stream,
    write_output,
)
from tlsleak.reports.html import ReportError, build, prepare

__all__ = ["add_parser", "run"]


def add_parser(commands: Commands) -> None:
    """Add ``report`` to the sub-commands ``commands``."""
    report = commands.add_parser(
        "report",
        help="write a campaign's output folder as one self-contained HTML page",
        description="Write OUT (the --out of 'tlsleak fuzz', or of 'tlsleak check') as one HTML "
        "page that needs nothing else to open: plots of executions/s, corpus size, coverage and "
        "findings over time from stats.jsonl, and a table of the findings with their replay "
        "commands. Needs pygal: pip install 'tlsleak[report]'.",
    )
    report.set_defaults(run=run)
    report.add_argument("out", type=Path, metavar="OUT")
    report.add_argument(
        "--html",
        type=Path,
        required=True,
        metavar="FILE",
        help="the page to write (replaced whole, atomically, if it exists; /dev/stdout writes "
        "it there)",
    )


def run(args: argparse.Namespace) -> int:
    try:
        folder = prepare(args.out)
        # FILE is checked before stats.jsonl is read: days of lines take seconds.
        check_output_path("--html", args.html)
        page, said = build(folder)
    except ReportError as exc:
        raise UsageError(str(exc)) from None
    # A file: written whole, atomically; a stream (/dev/stdout, a pipe): written to.
    write_output("--html", args.html, page.encode("utf-8"))
    print(f"{args.html}: {said}", file=sys.stderr if is_stream(args.html) else sys.stdout)
    return EXIT_CLEAN
