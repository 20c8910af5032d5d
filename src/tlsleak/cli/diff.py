"""``tlsleak diff``: run the same cases through several targets and report where they differ.

The arguments are targets, then case files or folders (as ``check`` takes
them): each argument up to the first one that has a slash or names something
on disk (and is not a target's name or ``c:PATH``) is a target.  The comparison itself is
:mod:`tlsleak.check.differential`; the reports are
:mod:`tlsleak.reports.differential`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from tlsleak.cases.files import bundled_corpus, case_files, load_case
from tlsleak.check.differential import Differ, Kind, Row
from tlsleak.check.worker import WorkerError
from tlsleak.cli._common import (
    EXIT_CLEAN,
    EXIT_FINDINGS,
    Commands,
    UsageError,
    add_timeout,
    progress,
)
from tlsleak.cli._python import add_python, runtime_line
from tlsleak.cli.check import _check_report_path, _write_report
from tlsleak.reports import differential as report
from tlsleak.reports.json_report import encode
from tlsleak.targets import TARGETS

__all__ = ["add_parser", "run", "split_arguments"]


def add_parser(commands: Commands) -> None:
    """Add ``diff`` to the sub-commands ``commands``."""
    diff = commands.add_parser(
        "diff",
        help="run cases through several targets and report where acceptance differs",
        description="Run every case through each TARGET (each in a child process, off the "
        "network) and report the cases they disagree on, grouped by defect label and "
        "outcome. Material a target cannot load even when valid makes its cases "
        "'unsupported' there, not a disagreement. Exit 0 unless --fail-on-disagreement.",
    )
    diff.set_defaults(run=run)
    diff.add_argument(
        "arguments",
        nargs="+",
        metavar="TARGET|PATH",
        help="two or more targets (built-in names, package.module:function or c:PATH), "
        "then corpus files or folders (default: the bundled corpus)",
    )
    add_timeout(diff, "a case still running after this long on a target")
    diff.add_argument("--json", type=Path, metavar="FILE", help="also write a JSON report to FILE")
    diff.add_argument(
        "--markdown",
        action="store_true",
        help="print the Markdown of docs/differential.md instead of the text report",
    )
    diff.add_argument(
        "--fail-on-disagreement",
        action="store_true",
        help="exit 1 when the targets disagree on any case",
    )
    diff.add_argument("-q", "--quiet", action="store_true", help="no progress line")
    add_python(diff)


def split_arguments(arguments: list[str]) -> tuple[list[str], list[Path]]:
    """The targets and the paths among ``arguments`` (see the module docstring)."""
    targets: list[str] = []
    for i, spec in enumerate(arguments):
        is_target = spec in TARGETS or spec.startswith("c:")
        # A name with a slash is a path, there or not: no target spec but c:PATH has one.
        if not is_target and (os.sep in spec or os.path.lexists(spec)):
            return targets, [Path(p) for p in arguments[i:]]
        targets.append(spec)
    return targets, []


def run(args: argparse.Namespace) -> int:
    targets, paths = split_arguments(args.arguments)
    if len(targets) < 2:
        raise UsageError(
            f"diff needs at least two targets, not {len(targets)}: tlsleak diff T1 T2 [PATH...]"
        )
    files = case_files(paths or [bundled_corpus()])
    if args.json is not None:
        _check_report_path(args.json)
    show_progress = not args.quiet and sys.stderr.isatty()
    started_at = time.monotonic()
    rows: list[Row] = []
    differ = Differ(targets, timeout=args.timeout, python=args.python)
    try:
        differ.start()
    except WorkerError as exc:
        raise UsageError(str(exc)) from None
    try:
        for i, path in enumerate(files, 1):
            rows.append(differ.compare(load_case(path), path.name))
            if show_progress:
                disagree = sum(r.kind is Kind.DISAGREE for r in rows)
                progress(sys.stderr, f"{i}/{len(files)} cases, {disagree} disagreements")
            if differ.failure is not None:
                break  # a target's worker died and cannot restart: report what was compared
    finally:
        differ.close()
        if show_progress:
            progress(sys.stderr, "")
    elapsed = time.monotonic() - started_at
    if args.markdown:
        command = " ".join(["tlsleak diff", *args.arguments, "--markdown"])
        print(report.markdown_report(differ.targets, rows, command), end="")
    else:
        print(report.text_report(differ.targets, rows, elapsed))
        if line := runtime_line(differ.oracles[0]):
            print(line)  # --python: what every target ran on
    if args.json is not None:
        _write_report(args.json, encode(report.json_report(differ.targets, rows)))
    if differ.failure is not None:
        raise UsageError(f"{differ.failure} ({len(rows)} of {len(files)} cases compared)")
    disagreed = any(row.kind is Kind.DISAGREE for row in rows)
    return EXIT_FINDINGS if args.fail_on_disagreement and disagreed else EXIT_CLEAN
