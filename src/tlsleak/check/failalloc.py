"""Allocation-failure runs that replay the same: the warm-up, the sweep, and reproduction.

An allocation is named by its number in a run, and that numbering depends on
what ran before in the process: a process's first runs do OpenSSL's and the
library's one-time initialisation (thousands of allocations), and a case
fills caches on its first run that later runs find full.  So every failing
run here comes right after a *warm-up*: the same case run clean (twice in a
process that has not run it yet), whose allocation count is kept with the
point (:class:`~tlsleak.check.findings.FailPoint`).  The failing run then
numbers its allocations as the warm-up did, and a replay whose warm-up counts
differently knows that it is not failing the same allocation.  (Within a
sweep, a failing run that found nothing needs no new warm-up: see
:func:`sweep`.)

``check --fail-alloc``, the minimiser's checks, the confirmation of a stored
finding in a fresh process, ``replay``, and ``fuzz --fail-alloc`` (its
workers, in process through :class:`InProcess`, and its findings desk) all
go through :class:`FailingRuns`, so they all do exactly the same thing.  A
case's own fail point (:attr:`~tlsleak.cases.case.InitCase.fail_alloc`, what
the fuzzer mutates) is resolved against the warm-up's count
(:func:`~tlsleak.cases.case.resolve_fail_alloc`: every value names an
allocation the run makes) by :func:`check_case`; the warm-up and the
failing run are given the case without it, and a warm-up is keyed by that,
so cases that differ only in their fail point share one.

The sweep (:func:`failure_points`) fails every allocation when the budget
allows, and otherwise prefers the *tail* of the run, where the teardown and
the error path of the step the run stops at allocate (a ``BIO_new`` whose
NULL is used there is found only by failing one of the last few allocations),
then spreads the rest over the run, one point per stratum.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

from tlsleak.cases.case import InitCase, resolve_fail_alloc
from tlsleak.check.findings import FailPoint
from tlsleak.check.oracle import Finding, Oracle, Verdict
from tlsleak.check.worker import IsolatedOracle, WorkerError
from tlsleak.targets import Outcome, Status

__all__ = [
    "FailingRuns",
    "InProcess",
    "Reproduction",
    "WarmedOracle",
    "case_runner",
    "check_case",
    "confirm_afresh",
    "failure_points",
    "find_again",
    "reproduce",
    "sweep",
    "tail_size",
]


class AllocationOracle(Protocol):
    """What the runs need of :class:`~tlsleak.check.worker.IsolatedOracle`."""

    restarts: int
    #: Why no case can be checked any more (a worker that could not restart).
    failure: str | None

    def count_allocations(self, case: InitCase) -> int: ...

    def check(self, case: InitCase, *, fail_at: int | None = None) -> Verdict: ...


class FailingRuns:
    """Failing runs of cases on one oracle, each right after a warm-up of the same case."""

    def __init__(self, oracle: AllocationOracle) -> None:
        self.oracle = oracle
        # (worker generation, case) of the last warm-up: a case the current
        # process has not run yet needs one more clean run before counting.
        self._warm: tuple[int, bytes] | None = None

    def warm_up(self, case: InitCase) -> int | None:
        """Run ``case`` clean and return that run's allocation count; None if it crashed."""
        if self.oracle.failure is not None:
            return None
        case = case.without_fail_alloc()
        key = (self.oracle.restarts, case.encode())
        runs = 1 if self._warm == key else 2
        count = 0
        for _ in range(runs):
            count = self.oracle.count_allocations(case)
            if self.oracle.restarts != key[0]:
                self._warm = None
                return None  # the clean run itself crashed or hung: nothing to number
        self._warm = key
        return count

    def fail(self, case: InitCase, fail_at: int) -> tuple[FailPoint, Verdict] | None:
        """Warm up, then check ``case`` with allocation ``fail_at`` failing."""
        count = self.warm_up(case)
        if count is None:
            return None
        return FailPoint(fail_at, count), self.failed_after_warm_up(case, fail_at)

    def failed_after_warm_up(self, case: InitCase, fail_at: int) -> Verdict:
        """Check with ``fail_at`` failing; the caller has just warmed ``case`` up.

        A crash restarts the worker, which :meth:`warm_up` notices by the
        restart count: the new process gets both clean runs again.
        """
        return self.oracle.check(case, fail_at=fail_at)


class InProcess:
    """An :class:`~tlsleak.check.oracle.Oracle` in this process, as :class:`FailingRuns` needs it.

    It never restarts: a crash ends the process (a fuzz worker: libFuzzer
    keeps the input as a crash artefact, see :mod:`tlsleak.fuzz.workers`).
    """

    restarts = 0
    failure: str | None = None

    def __init__(self, oracle: Oracle) -> None:
        self.oracle = oracle

    def count_allocations(self, case: InitCase) -> int:
        return self.oracle.count_allocations(case)

    def check(self, case: InitCase, *, fail_at: int | None = None) -> Verdict:
        return self.oracle.check(case, fail_at=fail_at)


def check_case(runs: FailingRuns, case: InitCase) -> tuple[Verdict, FailPoint | None]:
    """Check ``case`` as its own fail point says: the verdict, and the point it failed.

    Without a fail point, one plain check.  With one, a warm-up, then the run
    with the allocation the point resolves to against the warm-up's count
    failing.  A case whose warm-up crashed (its crash is a plain finding) or
    that makes no allocation is checked plainly: there is nothing to fail.
    """
    if case.fail_alloc is None:
        return runs.oracle.check(case), None
    count = runs.warm_up(case)
    point = None if count is None else resolve_fail_alloc(case.fail_alloc, count)
    if count is None or point is None:
        return runs.oracle.check(case), None
    return runs.failed_after_warm_up(case, point), FailPoint(point, count)


def case_runner(
    oracle: Oracle, *, fail_alloc: bool
) -> Callable[[InitCase], tuple[Verdict, FailPoint | None]]:
    """How a fuzz worker checks an input: :func:`check_case`, or a plain check.

    Without ``fail_alloc`` a fail point the input carries is dropped, so a
    campaign runs as it always did.  Raises ValueError when ``fail_alloc``
    is asked of an oracle with no ledger that can make allocations fail.
    """
    if not fail_alloc:
        return lambda case: (oracle.check(case.without_fail_alloc()), None)
    if oracle.injector is None:
        raise ValueError(
            f"--fail-alloc: no ledger of target {oracle.target.name} can make allocations fail"
        )
    runs = FailingRuns(InProcess(oracle))
    return lambda case: check_case(runs, case)


def tail_size(count: int, budget: int) -> int:
    """How many of the last allocations the sweep always fails: a quarter of the budget."""
    return 0 if count <= budget else max(1, budget // 4)


def failure_points(case: InitCase, count: int, budget: int) -> list[int]:
    """Which of ``count`` allocations to fail, at most ``budget`` of them, in order.

    All of them when the budget allows.  Otherwise the first allocation (the
    constructor that starts the path), the last quarter-budget allocations
    (:func:`tail_size`: teardown, and the error path of the step the run stops
    at), and one point in each of the equal strata the rest of the run is cut
    into, drawn with a generator seeded by the case, so that a re-run fails
    the same allocations and no stretch of the run is left out.
    """
    if count <= budget:
        return list(range(1, count + 1))
    tail = tail_size(count, budget)
    points = {1, *range(count - tail + 1, count + 1)}
    middle_first, middle_last = 2, count - tail  # the stretch between, inclusive
    strata = budget - len(points)
    span = middle_last - middle_first + 1
    if strata > 0 and span > 0:
        rng = random.Random(hashlib.sha256(case.encode()).digest())
        for i in range(min(strata, span)):
            low = middle_first + span * i // strata
            high = middle_first + span * (i + 1) // strata - 1
            points.add(rng.randint(low, max(low, high)))
    return sorted(points)[:budget]


def sweep(
    runs: FailingRuns, case: InitCase, budget: int
) -> tuple[int | None, Iterator[tuple[FailPoint, Verdict]]]:
    """The warm-up count of ``case`` and its failing runs (lazily), within ``budget``.

    The warm-up is done again after a failing run that found something (a
    leak, a crash that restarted the worker: the process is no longer as the
    warm-up left it), and each point is recorded with the count of the
    warm-up it follows.  A failing run that found nothing leaves the numbering
    as it was (measured: no warm-up between 9,600 such runs counted
    differently), so it needs none.  Points in the tail keep their distance
    from the end if a warm-up counts differently from the first, so the tail
    is still the tail.
    """
    count = runs.warm_up(case)
    if not count:
        return count, iter(())
    planned = count

    def run() -> Iterator[tuple[FailPoint, Verdict]]:
        tail_from = planned - tail_size(planned, budget) + 1
        now: int | None = planned
        for k in failure_points(case, planned, budget):
            if runs.oracle.failure is not None:
                return  # the worker died and cannot restart: check reports what was found
            if now is None:
                now = runs.warm_up(case)
                if now is None:
                    return  # the case no longer runs clean: its crash is already reported
            point = k + (now - planned) if k >= tail_from else k
            if not 1 <= point <= now:
                continue
            verdict = runs.failed_after_warm_up(case, point)
            yield FailPoint(point, now), verdict
            if verdict.findings:
                now = None

    return count, run()


@dataclass(frozen=True)
class Reproduction:
    """What :func:`reproduce` saw."""

    #: Whether a finding that ``matches`` appeared.
    found: bool
    #: The point that gave it (or the one tried first), numbered by this warm-up.
    point: FailPoint | None
    #: The verdict of that run (None when the case crashed while warming up).
    verdict: Verdict | None
    #: Whether the warm-up counted what the stored point says (None: nothing stored).
    same_count: bool | None


def reproduce(
    runs: FailingRuns,
    case: InitCase,
    fail_at: int,
    warmup_allocations: int | None,
    matches: Callable[[Finding], bool],
) -> Reproduction:
    """Redo a stored allocation failure: warm up, fail ``fail_at``, look for ``matches``.

    When the warm-up counts differently from ``warmup_allocations``, the
    numbering has drifted (the library or OpenSSL changed, or the point was
    found after other cases ran), and the allocation as far from the end as
    the stored one was is tried too: a tail allocation keeps that distance.
    """
    count = runs.warm_up(case)
    if count is None:
        return Reproduction(False, None, None, None)
    same = None if warmup_allocations is None else count == warmup_allocations
    tries = [fail_at]
    if warmup_allocations is not None and not same:
        from_end = count - (warmup_allocations - fail_at)
        if 1 <= from_end <= count and from_end != fail_at:
            tries.append(from_end)
    first: tuple[FailPoint, Verdict] | None = None
    for i, k in enumerate(tries):
        if i:
            again = runs.warm_up(case)
            if again is None:
                break
            count = again
        verdict = runs.failed_after_warm_up(case, k)
        point = FailPoint(k, count)
        if any(matches(f) for f in verdict.findings):
            return Reproduction(True, point, verdict, same)
        first = first or (point, verdict)
    if first is None:
        return Reproduction(False, None, None, same)
    return Reproduction(False, first[0], first[1], same)


def find_again(
    runs: FailingRuns, case: InitCase, seen_at: int | None, matches: Callable[[Finding], bool]
) -> Reproduction:
    """Find a finding of another process again: ``case``'s fail point, then ``seen_at``.

    A fuzz worker resolved the case's point against its own warm-up and
    failed allocation ``seen_at``; this process may count the run
    differently, so the case's point is resolved against this warm-up first
    (it keeps its distance from the end of the run it names, or from the
    start), and ``seen_at`` itself is tried next.
    """
    count = runs.warm_up(case)
    if count is None:
        return Reproduction(False, None, None, None)
    tries = [] if case.fail_alloc is None else [resolve_fail_alloc(case.fail_alloc, count)]
    tries += [seen_at] if seen_at is not None and 1 <= seen_at <= count else []
    first: tuple[FailPoint, Verdict] | None = None
    for k in dict.fromkeys(t for t in tries if t is not None):
        if first is not None:
            again = runs.warm_up(case)
            if again is None:
                break
            count = again
        point = FailPoint(k, count)
        verdict = runs.failed_after_warm_up(case, k)
        if any(matches(f) for f in verdict.findings):
            return Reproduction(True, point, verdict, None)
        first = first or (point, verdict)
    if first is None:
        return Reproduction(False, None, None, None)
    return Reproduction(False, first[0], first[1], None)


class WarmedOracle:
    """An oracle for the minimiser: every check with ``fail_at`` comes after a warm-up.

    It remembers each case's point, so the minimised reproducer is stored
    with the warm-up count its own failing run was numbered by.
    """

    def __init__(self, runs: FailingRuns) -> None:
        self.runs = runs
        self.points: dict[bytes, FailPoint] = {}

    def check(self, case: InitCase, *, fail_at: int | None = None) -> Verdict:
        if fail_at is None:
            return self.runs.oracle.check(case)
        done = self.runs.fail(case, fail_at)
        if done is None:  # the case crashes clean (or the worker is gone): not this finding
            outcome = Outcome(Status.ERROR, None, (), "the case does not run clean")
            return Verdict(case, outcome)
        point, verdict = done
        self.points[case.encode()] = point
        return verdict


def confirm_afresh(
    fresh: IsolatedOracle, finding: Finding, point: FailPoint, case: InitCase
) -> FailPoint | None:
    """The point at which ``fresh``, a process that has run nothing yet, gives ``finding`` again.

    What ran before in a check's or a campaign's checker can shift the
    numbering (a case that ran earlier filled a cache this one would fill);
    ``replay`` starts afresh, so what a stored finding needs is a fresh
    process's point.  None when it did not come back there (the caller says
    that ``replay`` may not reproduce it exactly); ``fresh`` is closed.
    """
    try:
        fresh.start()
        again = reproduce(
            FailingRuns(fresh),
            case,
            point.fail_at,
            point.warmup_allocations,
            lambda f: f.signature == finding.signature,
        )
    except WorkerError:
        return None
    finally:
        fresh.close()
    return again.point if again.found else None
