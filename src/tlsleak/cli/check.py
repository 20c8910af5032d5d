"""``tlsleak check``: run corpus cases through a target and report leaks.

With ``--fail-alloc`` each case also runs once per allocation it makes (or a
sample of them), with that allocation failing: the error branches behind a
failed ``malloc`` are the ones no malformed input reaches.  Each failing run
comes after a warm-up run of the case, and a stored allocation-failure finding
is confirmed in a fresh process exactly as ``replay`` will run it (see
:mod:`tlsleak.check.failalloc`).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from tlsleak.cases.case import InitCase
from tlsleak.cases.files import bundled_corpus, case_files, load_case
from tlsleak.check.alone import Alone, gives_alone
from tlsleak.check.failalloc import FailingRuns, WarmedOracle, confirm_afresh, failure_points, sweep
from tlsleak.check.findings import FailPoint, FindingStore
from tlsleak.check.oracle import Finding, FindingKind
from tlsleak.check.worker import IsolatedOracle, WorkerError
from tlsleak.cli._common import (
    EXIT_USAGE,
    Commands,
    UsageError,
    add_ci_reports,
    add_fail_on,
    add_minimize_budget,
    add_replays,
    add_timeout,
    check_ci_reports,
    check_output_path,
    positive_int,
    progress,
    started,
    stderr_message,
    verdict_exit,
    write_ci_reports,
    write_output,
)
from tlsleak.cli._python import add_python, runtime_line
from tlsleak.ledgers import LEDGERS
from tlsleak.reports import json_report, text
from tlsleak.targets import TARGETS

__all__ = ["add_parser", "failure_points", "run"]

#: Cases whose warm-up must all count zero allocations before --fail-alloc is
#: refused as failing nothing (one case may be refused before it allocates).
ZERO_PROBES: Final = 8


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
        help="with --fail-alloc: at most N failing runs per case: the last N/4 allocations "
        "and a spread over the rest (default 64)",
    )
    add_timeout(check, "a case still running after this long")
    add_fail_on(check)
    add_python(check)
    check.add_argument("--json", type=Path, metavar="FILE", help="also write a JSON report to FILE")
    add_ci_reports(check)
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
    _refuse_path_as_target(args.target)
    files = case_files(args.paths or [bundled_corpus()])
    if args.json is not None:
        _check_report_path(args.json)
    check_ci_reports(args)
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
            python=args.python,
        )
    )
    try:
        if args.fail_alloc and not oracle.can_fail_allocations:
            raise UsageError(
                f"--fail-alloc: no ledger of target {oracle.target_name} can make allocations fail"
            )
        if args.fail_alloc:
            _require_countable(oracle, files)
        alone = Alone(lambda: _fresh(args))
        statuses, findings = _check_files(args, oracle, files, store, show_progress, alone)
    finally:
        oracle.close()
        if show_progress:
            progress(sys.stderr, "")
    elapsed = time.monotonic() - started_at
    print(
        text.check_report(
            oracle.target_name, files, statuses, findings, elapsed, network=oracle.network
        )
    )
    if alone.unconfirmed:
        print(text.unconfirmed_lines(alone.unconfirmed))
    for why in oracle.blind.values():
        print(f"not counted: {why}")
    if line := runtime_line(oracle):
        print(line)  # --python: what the cases ran on
    if args.json is not None:
        report = json_report.check_report(
            oracle.target_name,
            ledgers=oracle.ledger_names,
            replays=oracle.replays,
            files=files,
            statuses=statuses,
            findings=findings,
            network=oracle.network,
            blind=oracle.blind,
            unconfirmed=alone.unconfirmed,
        )
        _write_report(args.json, json_report.encode(report))
    if store is not None and findings:
        stored = len({store.path_for(f) for _path, f in findings})
        print(f"\n{stored} distinct findings stored in {store.folder}")
    problem = None
    if oracle.failure is not None:
        checked = sum(statuses.values())
        problem = f"{oracle.failure} ({checked} of {len(files)} cases checked)"
    kinds = (f.kind for _path, f in findings)
    exit_status = EXIT_USAGE if problem else verdict_exit(kinds, args.fail_on)
    _write_ci_reports(args, oracle, files, statuses, findings, store, exit_status, problem)
    if problem is not None:
        raise UsageError(problem)
    return exit_status


def _write_ci_reports(
    args: argparse.Namespace,
    oracle: IsolatedOracle,
    files: Sequence[Path],
    statuses: Counter[str],
    findings: Sequence[tuple[Path, Finding]],
    store: FindingStore | None,
    exit_status: int,
    problem: str | None,
) -> None:
    """``--sarif`` and ``--summary-md``: the distinct findings, and what ran (reports.ci)."""
    if args.sarif is None and args.summary_md is None:
        return
    from tlsleak.reports.ci import RunInfo, from_check

    ledgers = ", ".join(oracle.ledger_names or ()) or "none"
    fail_alloc = ", failing allocations (--fail-alloc)" if args.fail_alloc else ""
    notes = [f"not counted: {why}" for why in oracle.blind.values()]
    if oracle.network is not None and (warning := oracle.network.warning()):
        notes.append(warning)
    run = RunInfo(
        command="check",
        target=oracle.target_name,
        ran=f"{len(files)} cases, ledgers {ledgers}, {oracle.replays} replays{fail_alloc}",
        outcomes=dict(sorted(statuses.items())),
        exit_status=exit_status,
        problem=problem,
        notes=tuple(notes),
    )
    write_ci_reports(args, run, from_check(findings, None if store is None else store.path_for))


def _fresh(args: argparse.Namespace) -> IsolatedOracle:
    """A worker like the check's, not started: one that has run nothing, as ``replay``'s."""
    return IsolatedOracle(
        args.target,
        ledgers=args.ledgers,
        replays=args.replays,
        timeout=args.timeout,
        python=args.python,
    )


def _check_files(
    args: argparse.Namespace,
    oracle: IsolatedOracle,
    files: Sequence[Path],
    store: FindingStore | None,
    show_progress: bool,
    alone: Alone,
) -> tuple[Counter[str], list[tuple[Path, Finding]]]:
    """Outcome counts and findings of every case in ``files`` (stored as found, with ``--out``).

    A finding counts once a fresh worker gives its signature too (:class:`Alone`).
    """
    statuses: Counter[str] = Counter()
    findings: list[tuple[Path, Finding]] = []
    runs = FailingRuns(oracle) if args.fail_alloc else None
    for i, path in enumerate(files, 1):
        case = load_case(path)
        verdict = oracle.check(case)
        statuses[str(verdict.outcome.status)] += 1
        found: list[tuple[Finding, FailPoint | None]] = [(f, None) for f in verdict.findings]
        if runs is not None and oracle.failure is None:
            _count, failing = sweep(runs, case, args.fail_budget)
            seen = {f.signature for f in verdict.findings}
            for at, failed in failing:
                # One bug is one finding per case, however many of its
                # allocations lead to it (BIO_new has four): the first is kept.
                new = [f for f in failed.findings if f.signature not in seen]
                seen.update(f.signature for f in new)
                found.extend((f, at) for f in new)
        for finding, point in found:
            counted = alone.admit(path, finding)
            findings.extend(counted)
            if store is not None:
                for where, each in counted:
                    _store_finding(store, oracle, args, each, point, where)
        if show_progress:
            progress(sys.stderr, f"{i}/{len(files)} cases, {len(findings)} findings")
        if oracle.failure is not None:
            break  # the worker died and cannot restart: report what was found
    return statuses, findings


def _require_countable(oracle: IsolatedOracle, files: Sequence[Path]) -> None:
    """Refuse ``--fail-alloc`` when the target's allocations are invisible to its ledgers.

    A ledger that can fail allocations but counts none of the target's (a
    library carrying its own OpenSSL, code that never calls OpenSSL) would fail
    nothing, and the run would end in "no findings": a usage error instead.
    """
    runs = FailingRuns(oracle)
    zeros = 0
    for path in files[:ZERO_PROBES]:
        count = runs.warm_up(load_case(path))
        if count:
            return
        zeros += count == 0  # None: the case crashed, which says nothing either way
    if zeros:
        raise UsageError(
            f"--fail-alloc: {oracle.target_name} made no allocation that its ledgers "
            f"({', '.join(oracle.ledger_names or ())}) count, on {zeros} "
            f"case{'s' if zeros > 1 else ''}, so there is nothing to make fail: it does not "
            "allocate through the OpenSSL they hook"
        )


def _refuse_path_as_target(spec: str) -> None:
    """A corpus path given where the target goes is a usage error that says so."""
    if spec in TARGETS or spec.startswith("c:") or ":" in spec or not os.path.lexists(spec):
        return
    what = "a folder" if os.path.isdir(spec) else "a file"
    raise UsageError(f"{spec} is {what}, not a target: tlsleak check TARGET PATH...")


def _check_report_path(path: Path) -> None:
    """Refuse a ``--json`` destination the report can't be written to, before any case runs."""
    check_output_path("--json", path)


def _write_report(path: Path, data: bytes) -> None:
    """Write the ``--json`` report whole (:func:`~tlsleak.cli._common.write_output`)."""
    write_output("--json", path, data)


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
    store: FindingStore,
    oracle: IsolatedOracle,
    args: argparse.Namespace,
    finding: Finding,
    point: FailPoint | None,
    path: Path,
) -> None:
    """Store ``finding``; a new signature is minimised first with the check's own oracle.

    An allocation failure is minimised with a warm-up before each failing run,
    then confirmed in a fresh process the way ``replay`` runs it, and stored
    with the point that process saw: the folder replays what was stored.
    """
    if store.has(finding):
        store.add(finding, finding.case, path)
        return
    reproducer, reproduced = finding.case, None
    # A timeout finding costs the whole timeout per try: not worth shrinking.
    if (
        args.minimize_budget > 0
        and finding.kind is not FindingKind.TIMEOUT
        and oracle.failure is None  # a worker that cannot restart checks nothing more
    ):
        from tlsleak.check.minimize import minimize, signature_predicate

        warmed = WarmedOracle(FailingRuns(oracle)) if finding.fail_at is not None else None
        predicate = signature_predicate(
            warmed or oracle, finding.signature, fail_at=finding.fail_at
        )
        try:
            reproducer = minimize(finding.case, predicate, budget=args.minimize_budget)
            reproduced = predicate.finding_for(reproducer)
        except WorkerError:  # a candidate killed the worker for good: store it as found
            reproducer, reproduced = finding.case, None
        if warmed is not None and reproduced is not None:
            point = warmed.points.get(reproducer.encode(), point)
    if point is not None and finding.kind is not FindingKind.TIMEOUT:
        point = _confirm_afresh(args, finding, reproducer, point)
    elif reproducer != finding.case and (
        gives_alone(_fresh(args), reproducer, finding.signature) is False
    ):
        # Shrunk in a worker that had run other cases: what replay will run
        # alone is the case that was confirmed alone (check.alone).
        reproducer, reproduced = finding.case, None
    store.add(finding, reproducer, path, reproducer_finding=reproduced, fail_point=point)


def _confirm_afresh(
    args: argparse.Namespace, finding: Finding, case: InitCase, point: FailPoint
) -> FailPoint:
    """The point a fresh process, run as ``replay`` runs it, gives ``finding`` at; warns if none."""
    again = confirm_afresh(_fresh(args), finding, point, case)
    if again is not None:
        return again
    stderr_message(
        f"warning: the {finding.kind} at {finding.step or '-'} with allocation "
        f"{point.fail_at} failing did not come back in a fresh process: 'tlsleak replay' "
        "may not reproduce it exactly"
    )
    return point
