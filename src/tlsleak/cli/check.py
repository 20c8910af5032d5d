"""``tlsleak check``: run corpus cases through a target and report leaks.

With ``--fail-alloc`` each case also runs once per allocation it makes (or a
sample of them), with that allocation failing: the error branches behind a
failed ``malloc`` are the ones no malformed input reaches.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from tlsleak._fs import write_atomically
from tlsleak.cases.case import InitCase
from tlsleak.cases.files import bundled_corpus, case_files, load_case
from tlsleak.check.findings import FindingStore
from tlsleak.check.oracle import Finding, FindingKind
from tlsleak.check.worker import IsolatedOracle, WorkerError
from tlsleak.cli._common import (
    Commands,
    UsageError,
    add_fail_on,
    add_minimize_budget,
    add_replays,
    add_timeout,
    positive_int,
    progress,
    started,
    verdict_exit,
)
from tlsleak.ledgers import LEDGERS
from tlsleak.reports import json_report, text

__all__ = ["add_parser", "failure_points", "run"]


def add_parser(commands: Commands) -> None:
    """Add ``check`` to the sub-commands ``commands``."""
    check = commands.add_parser(
        "check",
        help="run corpus cases through a target and report leaks",
        description="Run every case through TARGET and check that every live resource "
        "count returns to its baseline. Exit 0 when clean, 1 on findings.",
    )
    check.set_defaults(run=run)
    check.add_argument(
        "target",
        nargs="?",
        default="pyopenssl",
        help="built-in target name or package.module:function (default: pyopenssl)",
    )
    check.add_argument(
        "paths",
        nargs="*",
        type=Path,
        metavar="PATH",
        help="corpus files or folders (default: the bundled corpus)",
    )
    add_replays(check)
    check.add_argument(
        "--ledger",
        action="append",
        dest="ledgers",
        choices=sorted(LEDGERS),
        help="ledger to use (repeatable; default: the ones the target names)",
    )
    check.add_argument(
        "--fail-alloc",
        action="store_true",
        help="also re-run each case once per allocation it makes, with that allocation failing",
    )
    check.add_argument(
        "--fail-budget",
        type=positive_int,
        default=64,
        metavar="N",
        help="with --fail-alloc: at most N failing runs per case, sampled (default 64)",
    )
    add_timeout(check, "a case still running after this long")
    add_fail_on(check)
    check.add_argument("--json", type=Path, metavar="FILE", help="also write a JSON report to FILE")
    check.add_argument("-q", "--quiet", action="store_true", help="no progress line")
    check.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="store each distinct finding, with a minimised reproducer, in DIR/findings",
    )
    add_minimize_budget(
        check,
        default=100,
        help_text="with --out: at most N checks to minimise each new finding (default 100; "
        "0 stores it as found)",
    )


def run(args: argparse.Namespace) -> int:
    files = case_files(args.paths or [bundled_corpus()])
    if args.json is not None and not _folder_of(args.json).is_dir():
        raise UsageError(f"{args.json}: folder {args.json.parent} does not exist")
    store = _finding_store(args.out) if args.out is not None else None
    show_progress = not args.quiet and sys.stderr.isatty()
    started_at = time.monotonic()
    # The target runs in a child process: a crash or hang there is a finding,
    # and the child is started with the heap shim preloaded (see worker.py).
    oracle = started(
        IsolatedOracle(
            args.target,
            ledgers=args.ledgers,
            replays=args.replays,
            timeout=args.timeout,
            log=None if args.out is None else args.out / "worker.log",
        )
    )
    try:
        if args.fail_alloc and not oracle.can_fail_allocations:
            raise UsageError(
                f"--fail-alloc: no ledger of target {oracle.target_name} can make allocations fail"
            )
        statuses, findings = _check_files(args, oracle, files, store, show_progress)
    finally:
        oracle.close()
        if show_progress:
            progress(sys.stderr, "")
    elapsed = time.monotonic() - started_at
    print(text.check_report(oracle.target_name, files, statuses, findings, elapsed))
    for why in oracle.blind.values():
        print(f"not counted: {why}")
    if args.json is not None:
        report = json_report.check_report(
            oracle.target_name,
            ledgers=oracle.ledger_names,
            replays=oracle.replays,
            files=files,
            statuses=statuses,
            findings=findings,
        )
        _write_report(args.json, json_report.encode(report))
    if store is not None and findings:
        stored = len({store.path_for(f) for _path, f in findings})
        print(f"\n{stored} distinct findings stored in {store.folder}")
    if oracle.failure is not None:
        checked = sum(statuses.values())
        raise UsageError(f"{oracle.failure} ({checked} of {len(files)} cases checked)")
    return verdict_exit((f.kind for _path, f in findings), args.fail_on)


def _check_files(
    args: argparse.Namespace,
    oracle: IsolatedOracle,
    files: Sequence[Path],
    store: FindingStore | None,
    show_progress: bool,
) -> tuple[Counter[str], list[tuple[Path, Finding]]]:
    """Outcome counts and findings of every case in ``files`` (stored as found, with ``--out``)."""
    statuses: Counter[str] = Counter()
    findings: list[tuple[Path, Finding]] = []
    for i, path in enumerate(files, 1):
        case = load_case(path)
        verdict = oracle.check(case)
        statuses[str(verdict.outcome.status)] += 1
        found = list(verdict.findings)
        if args.fail_alloc and oracle.failure is None:
            for k in failure_points(case, oracle.count_allocations(case), args.fail_budget):
                if oracle.failure is not None:
                    break  # the worker died and cannot restart: report what was found
                found.extend(oracle.check(case, fail_at=k).findings)
        findings.extend((path, f) for f in found)
        if store is not None:
            for finding in found:
                _store_finding(store, oracle, finding, path, args.minimize_budget)
        if show_progress:
            progress(sys.stderr, f"{i}/{len(files)} cases, {len(findings)} findings")
        if oracle.failure is not None:
            break  # the worker died and cannot restart: report what was found
    return statuses, findings


def failure_points(case: InitCase, count: int, budget: int) -> list[int]:
    """Which allocations to fail: all of them, or ``budget`` sampled ones.

    The sample is seeded by the case, so a re-run fails the same allocations;
    the first and the last allocation are always in it (the constructor that
    starts the path and the one that completes it are where error branches
    are least often tested).
    """
    if count <= budget:
        return list(range(1, count + 1))
    rng = random.Random(hashlib.sha256(case.encode()).digest())
    middle = rng.sample(range(2, count), budget - 2) if budget > 2 else []
    return sorted({1, count, *middle})[:budget]


def _folder_of(path: Path) -> Path:
    return path.parent if str(path.parent) else Path(".")


def _write_report(path: Path, data: bytes) -> None:
    # Checked again: the folder may have gone while the cases ran.
    folder = _folder_of(path)
    if not folder.is_dir():
        raise UsageError(f"{path}: folder {folder} does not exist")
    try:
        write_atomically(path, data)
    except OSError as exc:
        raise UsageError(f"{path}: cannot write report: {exc.strerror}") from None


def _finding_store(out: Path) -> FindingStore:
    """The store under ``out``, proven writable before any case runs."""
    folder = out / "findings"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        # Permission bits don't tell the whole story (read-only mounts, ACLs,
        # root): writing a file is the one reliable test.
        fd, probe = tempfile.mkstemp(prefix=".probe-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise UsageError(f"--out {out}: cannot write there: {exc.strerror or exc}") from None
    return FindingStore(folder)


def _store_finding(
    store: FindingStore, oracle: IsolatedOracle, finding: Finding, path: Path, budget: int
) -> None:
    """Store ``finding``; a new signature is minimised first with the check's own oracle."""
    if store.has(finding):
        store.add(finding, finding.case, path)
        return
    reproducer, reproduced = finding.case, None
    # A timeout finding costs the whole timeout per try: not worth shrinking.
    if (
        budget > 0
        and finding.kind is not FindingKind.TIMEOUT
        and oracle.failure is None  # a worker that cannot restart checks nothing more
    ):
        from tlsleak.check.minimize import minimize, signature_predicate

        predicate = signature_predicate(oracle, finding.signature, fail_at=finding.fail_at)
        try:
            reproducer = minimize(finding.case, predicate, budget=budget)
            reproduced = predicate.finding_for(reproducer)
        except WorkerError:  # a candidate killed the worker for good: store it as found
            reproducer, reproduced = finding.case, None
    store.add(finding, reproducer, path, reproducer_finding=reproduced)
