"""``tlsleak export``: a stored finding as a standalone reproducer and a report for upstream.

The work is :func:`tlsleak.reports.export.export_finding`; this module adds
the sub-command and turns its errors into one line and exit status 2.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tlsleak.cli._common import EXIT_CLEAN, Commands, UsageError
from tlsleak.reports.export import ExportError, export_finding

__all__ = ["add_parser", "run"]


def add_parser(commands: Commands) -> None:
    """Add ``export`` to the sub-commands ``commands``."""
    export = commands.add_parser(
        "export",
        help="write a stored finding as a standalone reproducer and REPORT.md",
        description="Write what an upstream maintainer can run without tlsleak, from "
        "FINDING_DIR (written by 'check --out' or 'fuzz'): the blobs as files, reproduce.py "
        "(Python targets) or reproduce.c and a Makefile (c: targets), and REPORT.md. The "
        "folder holds the case's private key: it is made 0700, its files 0600.",
    )
    export.set_defaults(run=run)
    export.add_argument("folder", type=Path, metavar="FINDING_DIR")
    export.add_argument(
        "--into",
        type=Path,
        required=True,
        metavar="DIR",
        help="the folder to create (missing or empty)",
    )
    export.add_argument(
        "--force",
        action="store_true",
        help="replace DIR when it holds a previous export and nothing else",
    )


def run(args: argparse.Namespace) -> int:
    try:
        files = export_finding(args.folder, args.into, force=args.force)
    except ExportError as exc:
        raise UsageError(str(exc)) from None
    shown = [name for name in files if not name.startswith(".")]
    print(f"{args.into}: {', '.join(shown)}")
    print(f"read {args.into / 'REPORT.md'} first; the folder is private (0700): keep it so")
    return EXIT_CLEAN
