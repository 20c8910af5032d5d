"""The oracle: snapshot every ledger, run the case, snapshot again, and judge.

The invariant: after each attempt (accepted-then-torn-down, or rejected) every
live count is back at its value from before the attempt.  A count that grew is
only a *candidate*: OpenSSL and Python fill one-time caches the first time a
code path runs.  The oracle replays the same case ``replays`` times and calls it
a leak only when growth recurs on every replay; the reported delta is what
recurred every time (the smallest growth seen per counter).

Python's cyclic garbage collector is kept out of the measured window and run
only when a count grew.  Growth that the collector then frees is reported as a
``cycle`` (freed only by the collector: a reference cycle holds the handles
until a collection happens to run); growth it does not free is a ``leak``.

Two findings need no replay: an ``exception`` (the path raised something other
than a documented rejection) and ``error-queue`` (the path returned with
entries left on OpenSSL's error queue).  What findings and verdicts are, and
how a finding is named, is :mod:`tlsleak.check.verdict`.
"""

from __future__ import annotations

import errno
import gc
from array import array
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from typing import Any, Final, Protocol, runtime_checkable

from tlsleak.cases.case import InitCase
from tlsleak.cases.hooks import note_outcome
from tlsleak.check.confirm import CONFIRMS, RENEWALS, SLOPE_WARMUPS, Tally, slope_counters
from tlsleak.check.verdict import (
    OWNERSHIP,
    PROMPTED,
    Finding,
    FindingKind,
    Verdict,
    format_delta,
    root_counters,
)
from tlsleak.ledgers import Counts, Ledger, Site, growth, make_ledger
from tlsleak.ledgers.symbols import LostStack, StackRecorder, root_stack, several_entries
from tlsleak.openssl.errors import OpenSSLError
from tlsleak.openssl.hygiene import ErrorStates
from tlsleak.targets import CallableTarget, Outcome, Status, Target
from tlsleak.targets.probe import sift

__all__ = [
    "DEFAULT_REPLAYS",
    "OWNERSHIP",
    "PROMPTED",
    "AttributingLedger",
    "FaultInjector",
    "Finding",
    "FindingKind",
    "LeakError",
    "Oracle",
    "Site",
    "Verdict",
    "assert_no_leaks",
    "format_delta",
    "root_counters",
    "settle_collector",
]

#: Replays that must all show the growth again before it is called a leak.
DEFAULT_REPLAYS = 3
#: Runs of a leaking case with caller stacks recorded (:meth:`Oracle._attribute`).
STACK_ATTEMPTS: Final = 3
#: Runs after those, unrecorded, for their threads to wind down (the same).
SETTLE_ATTEMPTS: Final = 2


class Oracle:
    """Checks cases against one target with a set of ledgers.

    Use as a context manager (or call :meth:`start` and :meth:`close`): the
    ledgers are started once and stay installed across cases, because some of
    them interpose on the OpenSSL binding for as long as they count.

    ``ledgers`` defaults to the ledgers the target names; pass ledger names or
    :class:`~tlsleak.ledgers.Ledger` objects to choose.  ``replays`` is how many
    re-runs must show the growth again (at least 1).

    Replays start when a counter grew, except counters a ledger marks
    ``report_only`` (heap bytes).  ``confirm`` is how they confirm growth
    (:mod:`tlsleak.check.confirm`): on ``"every"`` replay, by ``"slope"``
    after warm-up, or ``"auto"``: by slope for ledgers that ask for it
    (``slope_verdict``).
    """

    def __init__(
        self,
        target: Target,
        *,
        ledgers: Iterable[str | Ledger] | None = None,
        replays: int = DEFAULT_REPLAYS,
        warmups: int = 0,
        confirm: str = "auto",
    ) -> None:
        if replays < 1:
            raise ValueError(f"replays must be at least 1, not {replays}")
        if warmups < 0:
            raise ValueError(f"warmups must be at least 0, not {warmups}")
        if confirm not in CONFIRMS:
            raise ValueError(f"confirm must be one of {', '.join(CONFIRMS)}, not {confirm!r}")
        self.confirm = confirm
        self.target = target
        self.replays = replays
        #: Unjudged replays before the judged ones, once a count grew: a
        #: process-wide counter also sees caches that take a few attempts to
        #: fill (OpenSSL's error ring, method stores), which a leak outlasts.
        self.warmups = warmups
        chosen = target.ledgers if ledgers is None else ledgers
        self.ledgers: list[Ledger] = [make_ledger(x) if isinstance(x, str) else x for x in chosen]
        self._queue = target.error_queue()
        self._error_states = ErrorStates()
        self._started = False
        #: Ledgers dropped at start because they cannot see the target, with why.
        self.blind: dict[str, str] = {}
        self._fail_at: int | None = None
        self._pick_counters()

    def _pick_counters(self) -> None:
        #: The first ledger that can make allocations fail, if any.
        self.injector: FaultInjector | None = next(
            (x for x in self.ledgers if isinstance(x, FaultInjector)), None
        )
        # The finest allocation counter on offer: the heap's (every
        # CRYPTO_malloc) over the object ledger's (constructor calls).
        counters = [x for x in self.ledgers if isinstance(x, FaultInjector)]
        counters.sort(key=lambda x: getattr(x, "name", "") != "openssl-heap")
        self._counter: FaultInjector | None = counters[0] if counters else None
        #: Counters whose growth alone does not start replays.
        self._quiet = frozenset(n for x in self.ledgers for n in getattr(x, "report_only", ()))
        #: Counters of ledgers whose growth that collection undoes is no cycle
        #: finding (``judges_cycles = False``: Python's own garbage, which the
        #: collector exists to free).
        self._no_cycles = frozenset(
            name
            for x in self.ledgers
            if self._started and not getattr(x, "judges_cycles", True)
            for name in x.snapshot()
        )

    def _tally(self) -> Tally:
        """A judge for one case's replays (the delta lists counters in the ledgers' order)."""
        slope = slope_counters(self.ledgers, self.confirm)
        return Tally(slope=slope, quiet=self._quiet, replays=self.replays, order=self._snapshot())

    def start(self) -> Oracle:
        """Start every ledger, and keep only those that see the target.

        Each ledger must count one object the target allocates through its own
        stack (:mod:`tlsleak.targets.probe`).  A blind one is dropped and named
        in :attr:`blind` when another ledger sees the target; when none does,
        :class:`~tlsleak.ledgers.LedgerBlind` says which ledger and why, since
        every count would stay at its baseline whatever the target leaks.
        """
        if not self._started:
            started: list[Ledger] = []
            try:
                for ledger in self.ledgers:
                    ledger.start()
                    started.append(ledger)
                kept, blind = sift(self.target, self.ledgers)
            except BaseException:
                for ledger in reversed(started):
                    ledger.stop()
                raise
            for ledger in self.ledgers:
                if not any(ledger is x for x in kept):
                    ledger.stop()
            self.ledgers = kept
            self.blind.update(blind)
            self._started = True
            self._pick_counters()
        return self

    def close(self) -> None:
        if self._started:
            for ledger in reversed(self.ledgers):
                ledger.stop()
            self._started = False

    def __enter__(self) -> Oracle:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _snapshot(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for ledger in self.ledgers:
            counts.update(ledger.snapshot())
        return counts

    def _attempt(
        self, case: InitCase
    ) -> tuple[Outcome, dict[str, int], Counts, tuple[OpenSSLError, ...]]:
        """One measured run: (outcome, growth, counts before, errors left on the queue)."""
        queue = self._queue
        if queue is not None:
            # Errors from before this attempt are not this attempt's.
            queue.clear()
        collecting = gc.isenabled()
        gc.disable()  # a collection mid-run would hide a cycle or free old garbage
        try:
            before = self._snapshot()
            if self._counter is not None and self._fail_at is None:
                self._counter.reset_allocations()
            if self._fail_at is not None and self.injector is not None:
                self.injector.fail_at(self._fail_at)
            try:
                outcome = self.target.run(case)
            finally:
                if self._fail_at is not None and self.injector is not None:
                    self.injector.fail_at(0)
            if self._fail_at is not None:
                outcome = _out_of_memory_is_a_rejection(outcome)
            left = queue.drain() if queue is not None else ()
            # Popping an entry (ours, or the target's own) can leave its data
            # buffer in the thread's error state; clearing every libcrypto's
            # frees it before the snapshot.  Otherwise errors would also show
            # as heap "leaks" at err.c (see tlsleak.openssl.hygiene).
            if queue is not None:
                queue.clear()
            self._error_states.clear()
            after = self._snapshot()
        finally:
            if collecting:
                gc.enable()
        return outcome, growth(before, after), before, left

    def _after_collection(self, before: Counts) -> dict[str, int]:
        return growth(before, self._collected())

    def _collected(self) -> dict[str, int]:
        """The counts after a full collection."""
        gc.collect()
        return self._snapshot()

    def check(self, case: InitCase, *, fail_at: int | None = None) -> Verdict:
        """Run ``case`` once, replay it if any count grew, and return the verdict.

        ``fail_at=k`` makes the k-th allocation of every attempt fail (see
        :meth:`count_allocations`); it needs a ledger that injects failures.
        """
        if not self._started:
            raise RuntimeError("start the oracle (use it as a context manager) before check()")
        if fail_at is not None and self.injector is None:
            raise ValueError("none of this oracle's ledgers can make allocations fail")
        self._fail_at = fail_at
        try:
            return self._check(case)
        finally:
            self._fail_at = None

    def warm_up(self, cases: Iterable[InitCase], *, rounds: int = 3) -> None:
        """Run ``cases`` ``rounds`` times each, unjudged, before judging anything.

        The first attempts in a fresh process fill caches (providers, method
        stores, the error ring) a little more each time.  Counters of one
        library's objects never see that; a process-wide counter does, and
        would call the first cases' one-time growth a leak.
        """
        if not self._started:
            raise RuntimeError("start the oracle (use it as a context manager) before warm_up()")
        for case in cases:
            for _ in range(rounds):
                self._attempt(case)

    def count_allocations(self, case: InitCase) -> int:
        """How many allocations one run of ``case`` makes (for :meth:`check`'s ``fail_at``)."""
        if self.injector is None:
            raise ValueError("none of this oracle's ledgers counts allocations")
        self.injector.reset_allocations()
        self.target.run(case)
        count = self.injector.allocations()
        if self._queue is not None:
            self._queue.clear()
        return count

    def _check(self, case: InitCase) -> Verdict:
        outcome, grown, before, left = self._attempt(case)
        allocations = None
        if self._counter is not None and self._fail_at is None:
            allocations = self._counter.allocations()
        name = self.target.name
        fail_at = self._fail_at
        findings: list[Finding] = []
        if outcome.status is Status.ERROR:
            findings.append(Finding(FindingKind.EXCEPTION, name, case, outcome, fail_at=fail_at))
        if left:
            findings.append(
                Finding(
                    FindingKind.ERROR_QUEUE, name, case, outcome, errors_left=left, fail_at=fail_at
                )
            )
        if any(name not in self._quiet for name in grown) and not self._only_its_own(case, grown):
            leak = self._confirm(case, outcome, grown, self._after_collection(before))
            if leak is not None:
                findings.append(leak)
        return Verdict(case, outcome, tuple(findings), allocations)

    def _confirm(
        self, case: InitCase, outcome: Outcome, grown: dict[str, int], uncollected: dict[str, int]
    ) -> Finding | None:
        # The first run grew; did the collector free it?  That decides what we
        # look for in the replays: growth that survives collection (a leak) or
        # growth that only collection undoes (a cycle).
        tally = self._tally()
        # Counters that judge no cycles count their growth as surviving: the
        # slope window decides whether it is a leak.
        kept = {n: v for n, v in grown.items() if n in self._no_cycles}
        tally.decide_cycle(grown, {**uncollected, **kept})
        warmups = max(self.warmups, SLOPE_WARMUPS) if tally.slope else self.warmups
        # With a slope, the last warm-up shapes the tally (see _slope_replays).
        for _ in range(warmups - 1 if tally.slope else warmups):
            self._attempt(case)
        if tally.slope:  # a slope needs signed counts: every replay is measured
            self._slope_replays(case, tally)
        for _ in range(0 if tally.slope else self.replays):
            again, before = self._attempt(case)[1:3]
            survived = self._after_collection(before) if again else {}
            if not tally.add(again, survived):
                return None
        recurring = tally.delta()
        if recurring is None:
            return None
        # The replays may have settled what the first run suggested (Tally.delta).
        kind = FindingKind.CYCLE if tally.cycle else FindingKind.LEAK
        sites, lost = ((), None) if tally.cycle else self._attribute(case)
        first = min((s for s in sites if s.first), key=lambda s: s.first, default=None)
        return Finding(
            kind,
            self.target.name,
            case,
            outcome,
            delta=recurring,
            replays=self.replays,
            sites=sites,
            fail_at=self._fail_at,
            # Without an OpenSSL site, a C caller's exported symbol (heap-only leaks).
            root_site=(
                f"{first.file}:{first.line}" if first is not None else lost.root if lost else None
            ),
            root_build=None if first is not None or lost is None else lost.root_build,
            caller=None if lost is None or lost.caller is None else str(lost.caller),
            stack=() if lost is None else tuple(str(f) for f in lost.frames),
        )

    def _measured(
        self, case: InitCase
    ) -> tuple[dict[str, int], dict[str, int], tuple[Counts, Counts, Counts]]:
        """One replay for a slope: (growth, growth after collection, signed counts).

        The outcome is dropped before the counts after the run are taken: a
        count of Python objects would hold it against the run.  Counters that
        judge no cycles (``pyobjects``) show no growth before collection.
        """
        again, before = self._attempt(case)[1:3]
        ran = self._snapshot()
        collected = self._collected()
        for name in self._no_cycles:
            if name in before:
                ran[name] = before[name]
        return again, growth(before, collected), (before, ran, collected)

    def _only_its_own(self, case: InitCase, grown: Counts) -> bool:
        """Whether growth of ``pyobjects`` alone was only the attempt's own objects: no replays.

        Every attempt grows a count of Python objects (the outcome it returns
        is alive when it ends), which would send every case to replays.  One
        more run between two marks taken as in :meth:`_slope_replays` tells:
        a correct target nets zero there, a leak or a cache still filling
        does not, and goes on to the replays.
        """
        if not self._no_cycles or any(
            name not in self._quiet and name not in self._no_cycles for name in grown
        ):
            return False
        names = sorted(self._no_cycles)
        ends = array("q", bytes(16 * len(names)))
        self._mark(ends, names, 0)
        self._attempt(case)
        self._mark(ends, names, len(names))
        return all(ends[len(names) + i] <= ends[i] for i in range(len(names)))

    def _slope_replays(self, case: InitCase, tally: Tally) -> None:
        """The replays of a slope verdict, the window's ends taken where the oracle holds the same.

        A count of Python objects (``pyobjects``) counts the oracle's own
        bookkeeping too: a replay's outcome, the counts it keeps, the tally's
        state.  So the last warm-up first gives the tally its shape (it grows
        nothing by slope, and the counters judged on every replay must have
        grown on it too), then the ends of the window of n replays are
        measured after a full collection (which also empties the
        interpreter's free lists), at the same point, and written into an
        array made before the first (storing into it makes no object): a
        correct target nets zero.  An unsettled window (:meth:`Tally.unsettled`)
        is followed by a fresh one from where it ended.
        """
        names = sorted(tally.slope)
        ends = array("q", bytes(16 * len(names)))
        again, survived, (before, _ran, collected) = self._measured(case)
        tally.add(again, survived, (before, before, collected))
        del again, survived, before, _ran, collected
        self._mark(ends, names, 0)
        width = len(names)
        for renewal in range(1 + RENEWALS):
            if renewal:
                if not tally.unsettled():
                    break
                ends[:width] = ends[width:]  # the fresh window starts where the last ended
                tally.renew()
            for _ in range(self.replays):
                tally.add(*self._measured(case))
            self._mark(ends, names, width)
            tally.window(
                {name: ends[i] for i, name in enumerate(names)},
                {name: ends[width + i] for i, name in enumerate(names)},
            )

    def _mark(self, ends: array[int], names: Sequence[str], at: int) -> None:
        """Write the counts ``names`` after a full collection into ``ends`` from ``at``."""
        counts = self._collected()
        for i, name in enumerate(names):
            ends[at + i] = counts.get(name, 0)

    def _attribute(self, case: InitCase) -> tuple[tuple[Site, ...], LostStack | None]:
        """One more replay, with allocation sites and caller stacks recorded.

        Returns where the leaked blocks come from (the library-internal
        sites, biggest first) and the stack of the first block lost that has
        a caller outside the runtime (:func:`~tlsleak.ledgers.symbols.root_stack`).
        Every attributing ledger records during the same single replay.
        When its lost blocks were entered from more than one place (see
        :meth:`_stacks_over_runs`), stacks are recorded again over several.
        """
        attributing = [x for x in self.ledgers if isinstance(x, AttributingLedger)]
        recording = [x for x in self.ledgers if isinstance(x, StackRecorder)]
        if not attributing and not recording:
            return (), None
        marks = [ledger.begin_attribution() for ledger in attributing]
        stack_marks = [ledger.begin_stacks() for ledger in recording]
        try:
            self._attempt(case)
            gc.collect()
        finally:
            # Stacks first: ending the other attributions allocates.
            lost = [s for r, m in zip(recording, stack_marks, strict=True) for s in r.end_stacks(m)]
            found = [
                x for a, m in zip(attributing, marks, strict=True) for x in a.end_attribution(m)
            ]
        sites: list[Site] = []
        for x in found:
            first = int(getattr(x, "first", 0))  # a user's ledger may not know the order
            sites.append(Site(str(x.file), int(x.line), int(x.blocks), int(x.bytes), first))
        ordered = tuple(sorted(sites, key=lambda x: (-x.bytes, x.file, x.line)))
        root = root_stack(lost)
        if several_entries(lost):
            root = self._stacks_over_runs(case, recording)
        # Naming the stacks made garbage (ctypes, a subprocess): gone before
        # the next check, or its collection there would look like a cycle.
        del lost, found
        gc.collect()
        return ordered, root

    def _stacks_over_runs(
        self, case: InitCase, recording: Sequence[StackRecorder]
    ) -> LostStack | None:
        """The root stack of :data:`STACK_ATTEMPTS` runs recorded together.

        One run cannot tell the case's own leak from blocks a thread of that
        run has yet to free (gRPC's server threads wind down after ``stop``);
        over several, followed by :data:`SETTLE_ATTEMPTS` unrecorded ones, a
        leak lost a block on every one (None when no stack did).  Only when
        that matters: a library's leaks are entered from one place.
        """
        stack_marks = [ledger.begin_stacks() for ledger in recording]
        try:
            for _ in range(STACK_ATTEMPTS):
                self._attempt(case)
            # Recording paused, more runs let those threads finish: what they
            # free leaves the table (blocks of a ledger that can't pause count
            # more runs, which a leak passes too).
            for ledger in recording:
                if callable(pause := getattr(ledger, "pause_stacks", None)):
                    pause()
            for _ in range(SETTLE_ATTEMPTS):
                self._attempt(case)
            gc.collect()
        finally:
            lost = [s for r, m in zip(recording, stack_marks, strict=True) for s in r.end_stacks(m)]
        return root_stack(lost, STACK_ATTEMPTS)


def _out_of_memory_is_a_rejection(outcome: Outcome) -> Outcome:
    """With an allocation made to fail, ``MemoryError`` is the right reaction, not a finding.

    A binding that turns the NULL into ``MemoryError`` has handled it; what it
    leaked or left queued on the way is still judged.  So has Python code
    whose system call failed for want of memory (``OSError`` with ``ENOMEM``:
    the process-wide ``heap`` ledger fails glibc's allocations too).
    """
    message = outcome.message
    if outcome.status is Status.ERROR and message.startswith(("MemoryError", _ENOMEM)):
        return replace(outcome, status=Status.REJECTED)
    return outcome


_ENOMEM: Final = f"OSError: [Errno {errno.ENOMEM}]"


def settle_collector() -> None:
    """Collect, then move every object alive now out of the collector's sight (``gc.freeze``).

    For processes that exist to run the oracle (the fuzz workers, the
    isolated checker), not for a user's test process.  The oracle runs a full
    collection after every attempt that grew a count, and one costs ~10 ms
    in an interpreter that has imported atheris, pyOpenSSL and Hypothesis;
    frozen objects are not traversed, so it drops to the objects made since,
    and a leak check on control-leaky went from 26 ms to 2 ms.  Verdicts are
    unchanged: a cycle made by an attempt is made of new objects, and what a
    frozen object refers to is alive either way.  Call it again now and then
    to take in what has become long-lived since.
    """
    gc.collect()
    gc.freeze()


@runtime_checkable
class AttributingLedger(Protocol):
    """A ledger that can say where the blocks live since a mark were allocated."""

    def begin_attribution(self) -> int:
        """Start recording allocation sites; return a mark."""
        ...

    def end_attribution(self, mark: int) -> Sequence[Any]:
        """Stop recording; the sites still live (``file``, ``line``, ``blocks``, ``bytes``,
        optionally ``first``: the allocation order of the earliest block)."""
        ...


@runtime_checkable
class FaultInjector(Protocol):
    """A ledger that counts allocations and can make the k-th one fail."""

    def reset_allocations(self) -> None: ...

    def allocations(self) -> int: ...

    def fail_at(self, k: int) -> None:
        """Make the k-th allocation from now fail (0: none)."""
        ...


class LeakError(AssertionError):
    """Raised by :func:`assert_no_leaks`; ``findings`` holds what was found."""

    def __init__(self, findings: Sequence[Finding]) -> None:
        self.findings = tuple(findings)
        lines = [f.summary() for f in self.findings]
        super().__init__("\n".join(lines))


def assert_no_leaks(
    fn: Target | Callable[[InitCase], Any],
    *cases: InitCase,
    ledgers: Iterable[str | Ledger] | None = None,
    replays: int = DEFAULT_REPLAYS,
    rejections: Sequence[type[BaseException]] | None = None,
) -> list[Verdict]:
    """Assert that ``fn`` keeps every live count at its baseline for each case.

    ``fn`` is a :class:`~tlsleak.targets.Target` or a callable taking an
    :class:`~tlsleak.cases.case.InitCase` (see :class:`~tlsleak.targets.CallableTarget`
    for what counts as a rejection; ``rejections`` overrides it).  Raises
    :class:`LeakError` listing every finding; returns the verdicts otherwise.
    Inside a Hypothesis test, each outcome and rejecting step is an event
    (``tlsleak outcome: rejected``, ``tlsleak step: key``) for
    ``--hypothesis-show-statistics``.
    """
    if isinstance(fn, Target):
        target = fn
    elif rejections is None:
        target = CallableTarget(fn)
    else:
        target = CallableTarget(fn, rejections=rejections)
    with Oracle(target, ledgers=ledgers, replays=replays) as oracle:
        verdicts = [oracle.check(case) for case in cases]
    for verdict in verdicts:
        note_outcome(verdict.outcome.status, verdict.outcome.step)
    findings = [f for v in verdicts for f in v.findings]
    if findings:
        raise LeakError(findings)
    return verdicts
