"""``tlsleak replay``: re-run a stored finding's reproducer, exactly as ``check`` ran it.

Three results: **still there** (the same finding appears: exit 1, or 0 when
``--fail-on`` does not gate its kind), **gone** (no finding at all: exit 0),
and **cannot reproduce exactly** (exit 2, one line saying what differs and
what to do): an allocation failure whose warm-up run counts differently from
the stored one is failing another allocation, so its absence proves nothing;
and a reproducer that now gives *other* findings (another kind, or another
signature) has not been shown fixed either.

A finding folder names code to run: ``replay`` loads only a built-in target,
a ``c:`` library (by the absolute path stored with it, warning when its sha256
changed) or a ``package.module:function`` path, prints which before loading
it, and refuses anything else unless the user names a target with
``--target SPEC`` (see docs/findings.md, "Trust").
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Final

from tlsleak.check.failalloc import FailingRuns, Reproduction, reproduce
from tlsleak.check.findings import LibraryRecord, StoredFinding, library_record, load_stored
from tlsleak.check.oracle import Finding, Verdict, format_delta
from tlsleak.check.worker import IsolatedOracle
from tlsleak.cli._common import (
    EXIT_CLEAN,
    EXIT_USAGE,
    Commands,
    UsageError,
    add_fail_on,
    add_replays,
    add_timeout,
    started,
    stderr_message,
    verdict_exit,
)
from tlsleak.cli._python import add_python, runtime_line
from tlsleak.reports.text import SITES_SHOWN
from tlsleak.targets import TARGETS

__all__ = ["add_parser", "run"]

#: ``package.module:function`` (the function may be dotted): what a stored
#: user target may look like.  Anything else in a folder is refused.
_IDENTIFIER: Final = r"[A-Za-z_][A-Za-z0-9_]*"
MODULE_PATH: Final = re.compile(rf"{_IDENTIFIER}(\.{_IDENTIFIER})*:{_IDENTIFIER}(\.{_IDENTIFIER})*")


def add_parser(commands: Commands) -> None:
    """Add ``replay`` to the sub-commands ``commands``."""
    replay = commands.add_parser(
        "replay",
        help="re-run a stored finding's reproducer",
        description="Run the reproducer of FINDING_DIR (written by 'check --out') on the "
        "finding's target, as check ran it. Exit 1 when the same finding still appears, "
        "0 when it is gone, 2 when it can't be reproduced exactly.",
    )
    replay.set_defaults(run=run)
    replay.add_argument("folder", type=Path, metavar="FINDING_DIR")
    replay.add_argument(
        "--target",
        metavar="SPEC",
        help="replay on this target instead of the one the folder names (a folder from "
        "someone else names code that replay would load)",
    )
    add_replays(replay)
    add_timeout(replay, "seconds before the run")
    add_fail_on(replay)
    add_python(replay)


def run(args: argparse.Namespace) -> int:
    stored = load_stored(args.folder)
    recorded = stored.finding
    spec, what = _target_to_load(args, stored)
    print(f"target: {spec} ({what})")
    oracle = started(
        IsolatedOracle(spec, replays=args.replays, timeout=args.timeout, python=args.python)
    )
    if line := runtime_line(oracle):
        print(line)  # --python: what the reproducer runs on
    if oracle.network is not None and (line := oracle.network.warning()):
        print(line)  # the worker could reach the network (tlsleak._netns)
    reproduction: Reproduction | None = None
    try:
        if recorded.fail_at is None:
            verdict: Verdict | None = oracle.check(stored.reproducer)
        else:
            if not oracle.can_fail_allocations:
                raise UsageError(
                    f"{args.folder}: an allocation-failure finding, but no ledger of target "
                    f"{oracle.target_name} can make allocations fail"
                )
            point = stored.fail_point
            reproduction = reproduce(
                FailingRuns(oracle),
                stored.reproducer,
                recorded.fail_at if point is None else point.fail_at,
                None if point is None else point.warmup_allocations,
                lambda f: _same_bug(f, recorded),
            )
            verdict = reproduction.verdict
    finally:
        oracle.close()
    _print_run(args.folder, recorded, stored, reproduction, verdict)
    if verdict is not None and any(_same_bug(f, recorded) for f in verdict.findings):
        print("still there: the same finding appears again")
        return verdict_exit([recorded.kind], args.fail_on)
    if reproduction is not None and not reproduction.same_count:
        stderr_message(_not_exactly(args.folder, stored, reproduction))
        return EXIT_USAGE
    if verdict is not None and any(f.other_build(recorded) for f in verdict.findings):
        stderr_message(
            f"cannot reproduce exactly: {args.folder} names its root {recorded.root_site} by "
            f"a function's start in build {recorded.root_build} of a stripped library, which is "
            "not the build loaded now; re-run 'tlsleak check' with its reproducer on this build"
        )
        return EXIT_USAGE
    if verdict is not None and verdict.findings:
        # Another finding (another kind, or the same one named differently,
        # e.g. after the library changed): the stored one may be behind it.
        stderr_message(_changed(args.folder, recorded, verdict.findings))
        return EXIT_USAGE
    print("gone: the reproducer no longer gives this finding")
    return EXIT_CLEAN


def _same_bug(finding: Finding, recorded: Finding) -> bool:
    # The target is whatever replay was told to load (an absolute path for a
    # library stored by a relative one, or --target): the bug is the rest.
    return replace(finding, target=recorded.target).reproduces(recorded)


def _target_to_load(args: argparse.Namespace, stored: StoredFinding) -> tuple[str, str]:
    """The target spec to load and what it is, or a ``UsageError`` when it may not be loaded."""
    name = stored.finding.target
    if args.target is not None:
        _warn_if_rebuilt(stored, library_record(args.target))
        return args.target, "given with --target"
    if name in TARGETS:
        return name, "built in"
    if name.startswith("c:"):
        library = stored.library
        if library is None:  # stored before libraries were recorded: as given then
            return name, "C library, by the path stored with the finding"
        if not Path(library.path).is_file():
            raise UsageError(
                f"{args.folder}: the library {library.path} it was found in is gone: rebuild "
                "it there, or replay on another build with --target c:PATH"
            )
        _warn_if_rebuilt(stored, library_record(library.spec))
        return library.spec, "C library stored with the finding, loaded from there"
    if MODULE_PATH.fullmatch(name):
        return name, "Python module path: replay imports it"
    raise UsageError(
        f"{args.folder}: its target {name!r} is not a built-in target, a c: library or a "
        "package.module:function path; replay it on a target you trust with --target SPEC"
    )


def _warn_if_rebuilt(stored: StoredFinding, now: LibraryRecord | None) -> None:
    """One line on stderr when the library to load is not the build the finding came from.

    Expected after a fix (the library was rebuilt); worth knowing when it was not.
    """
    before = stored.library
    if before is not None and now is not None and now.sha256 != before.sha256:
        stderr_message(
            f"warning: {now.path} is not the build the finding came from (sha256 "
            f"{now.sha256[:12]}, stored {before.sha256[:12]}): replaying it as it is now"
        )


def _print_run(
    folder: Path,
    recorded: Finding,
    stored: StoredFinding,
    reproduction: Reproduction | None,
    verdict: Verdict | None,
) -> None:
    where = ""
    if recorded.fail_at is not None:
        point = stored.fail_point
        where = f", allocation {recorded.fail_at if point is None else point.fail_at} failing"
        if point is not None:
            where += f" after a warm-up of {point.warmup_allocations} allocations"
    print(f"{folder}: {recorded.kind} on {recorded.target}{where}")
    if reproduction is not None and reproduction.point is not None:
        made = reproduction.point
        print(f"warm-up: {made.warmup_allocations} allocations; failed allocation {made.fail_at}")
    if verdict is None:
        print("outcome: the reproducer crashed before any allocation could be made to fail")
        return
    print(f"outcome: {verdict.outcome.describe()}")
    for finding in verdict.findings:
        what = format_delta(finding.delta) if finding.delta else finding.summary()
        print(f"  {finding.kind} at {finding.step or '-'}: {what}")
        for site in finding.sites[:SITES_SHOWN]:
            print(f"    {site}")


def _not_exactly(folder: Path, stored: StoredFinding, reproduction: Reproduction) -> str:
    """The one line for "cannot reproduce exactly": what differs, and what to do."""
    again = f"re-run 'tlsleak check TARGET {folder / 'reproducer'} --fail-alloc'"
    point = stored.fail_point
    if point is None:
        return (
            f"cannot reproduce exactly: {folder} was stored without the warm-up count its "
            f"allocation number depends on, so a miss can't be told from a fix; {again}"
        )
    if reproduction.point is None:
        return (
            f"cannot reproduce exactly: the reproducer no longer runs clean (it crashed in the "
            f"warm-up run), so no allocation could be made to fail; {again}"
        )
    return (
        f"cannot reproduce exactly: the warm-up run made {reproduction.point.warmup_allocations} "
        f"allocations, the stored one {point.warmup_allocations} (the library or OpenSSL "
        f"changed), so allocation {point.fail_at} is another one now; {again}"
    )


def _changed(folder: Path, recorded: Finding, found: Sequence[Finding]) -> str:
    """The one line for a reproducer that gives findings, but not the stored one."""
    now = ", ".join(sorted({f.signature for f in found}))
    return (
        f"cannot reproduce exactly: {folder} now gives {now}, not the stored "
        f"{recorded.signature}; if that is the same bug, store it again with "
        f"'tlsleak check {recorded.target} {folder / 'reproducer'}"
        f"{' --fail-alloc' if recorded.fail_at is not None else ''} --out DIR'"
    )
