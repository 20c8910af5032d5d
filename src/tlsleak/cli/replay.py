"""``tlsleak replay``: re-run a stored finding's reproducer.

Exit 1 when the same finding (same signature) still appears, 0 when it is
gone: a fix can be tested against the folder ``check --out`` or ``fuzz`` wrote.
With ``--fail-on KINDS``, a finding of another kind that still appears is
reported and exits 0.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tlsleak.check.findings import load_finding
from tlsleak.check.oracle import format_delta
from tlsleak.check.worker import IsolatedOracle
from tlsleak.cli._common import (
    EXIT_CLEAN,
    Commands,
    UsageError,
    add_fail_on,
    add_replays,
    add_timeout,
    started,
    verdict_exit,
)
from tlsleak.reports.text import SITES_SHOWN

__all__ = ["add_parser", "run"]


def add_parser(commands: Commands) -> None:
    """Add ``replay`` to the sub-commands ``commands``."""
    replay = commands.add_parser(
        "replay",
        help="re-run a stored finding's reproducer",
        description="Run the reproducer of FINDING_DIR (written by 'check --out') on the "
        "finding's target. Exit 1 when the same finding still appears, 0 when it is gone.",
    )
    replay.set_defaults(run=run)
    replay.add_argument("folder", type=Path, metavar="FINDING_DIR")
    add_replays(replay)
    add_timeout(replay, "seconds before the run")
    add_fail_on(replay)


def run(args: argparse.Namespace) -> int:
    recorded, case = load_finding(args.folder)
    oracle = started(IsolatedOracle(recorded.target, replays=args.replays, timeout=args.timeout))
    try:
        if recorded.fail_at is not None and not oracle.can_fail_allocations:
            raise UsageError(
                f"{args.folder}: an allocation-failure finding, but no ledger of target "
                f"{oracle.target_name} can make allocations fail"
            )
        verdict = oracle.check(case, fail_at=recorded.fail_at)
    finally:
        oracle.close()
    where = f", allocation {recorded.fail_at} failing" if recorded.fail_at is not None else ""
    print(f"{args.folder}: {recorded.kind} on {recorded.target}{where}")
    print(f"outcome: {verdict.outcome.describe()}")
    for finding in verdict.findings:
        what = format_delta(finding.delta) if finding.delta else finding.summary()
        print(f"  {finding.kind} at {finding.step or '-'}: {what}")
        for site in finding.sites[:SITES_SHOWN]:
            print(f"    {site}")
    if any(f.reproduces(recorded) for f in verdict.findings):
        print("still there: the same finding appears again")
        return verdict_exit([recorded.kind], args.fail_on)
    print("gone: the reproducer no longer gives this finding")
    return EXIT_CLEAN
