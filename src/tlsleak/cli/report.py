"""``tlsleak report``: a campaign's or a check's output folder as one HTML page.

The work is :func:`tlsleak.reports.html.write_report`; this module adds the
sub-command and turns its errors (pygal missing, OUT not an output folder,
FILE not writable, garbage in ``stats.jsonl``) into one line and exit
status 2.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tlsleak.cli._common import EXIT_CLEAN, Commands, UsageError
from tlsleak.reports.html import ReportError, write_report

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
        help="the page to write (replaced whole, atomically, if it exists)",
    )


def run(args: argparse.Namespace) -> int:
    try:
        said = write_report(args.out, args.html)
    except ReportError as exc:
        raise UsageError(str(exc)) from None
    print(said)
    return EXIT_CLEAN
