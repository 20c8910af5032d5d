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
entries left on OpenSSL's error queue).
"""

from __future__ import annotations

import enum
import errno
import gc
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final, Protocol, runtime_checkable

from tlsleak.cases.case import InitCase, decode
from tlsleak.check.confirm import CONFIRMS, SLOPE_WARMUPS, Tally, slope_counters
from tlsleak.ledgers import Counts, Ledger, Site, growth, make_ledger
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


class FindingKind(enum.StrEnum):
    """What is wrong."""

    #: Live counts grew on every replay and the collector did not free them.
    LEAK = "leak"
    #: Counts grew on every replay, and only the garbage collector freed them.
    CYCLE = "cycle"
    #: The path returned with entries left on OpenSSL's error queue.
    ERROR_QUEUE = "error-queue"
    #: The path raised an exception that is not a documented rejection.
    EXCEPTION = "exception"
    #: The process running the path died on a signal (isolated runs only).
    CRASH = "crash"
    #: The path did not return in time (isolated runs only).
    TIMEOUT = "timeout"
    #: OpenSSL asked for a pass phrase on the terminal: no password callback
    #: was given (isolated runs only, where the worker's stderr is read).
    PROMPT = "prompt"


#: What a ``prompt`` finding says went wrong.
#: (A program that does this stops and waits for someone to type.)
PROMPTED: Final = "OpenSSL prompted for a pass phrase: no password callback"


#: OpenSSL object types, owners before what they own: a leaked SSL keeps its
#: SSL_CTX (a reference) and BIOs alive, a leaked SSL_CTX its store, certificate
#: and key.  See :func:`root_counters`.
OWNERSHIP: Final = (
    "SSL",
    "SSL_CTX",
    "X509_STORE_CTX",
    "X509_STORE",
    "SSL_SESSION",
    "X509",
    "X509_CRL",
    "EVP_PKEY",
    "EC_KEY",
    "DH",
    "X509_NAME",
    "BIO",
)


def root_counters(delta: Mapping[str, int]) -> list[str]:
    """The counters of ``delta`` that name the bug rather than its consequences.

    When typed objects leaked, the outermost ones in :data:`OWNERSHIP` order
    (the first leaked type and any other of the two outermost levels seen:
    SSL and SSL_CTX both, when both leaked); the heap's blocks and bytes and
    the file descriptors are then what those objects hold.  Without typed
    objects, every counter.  Mongoose's bug leaked SSL_CTX and SSL after a bad
    CA, and SSL_CTX, SSL and the X509 it already held after a bad key: the
    same missing free, so the same roots.
    """
    typed = [name for name in OWNERSHIP if name in delta]
    if not typed:
        if any(name.startswith("heap.") for name in delta):
            # Every OpenSSL heap block is a malloc block too: with both heap
            # ledgers on, one loss is counted twice, and the process heap's
            # names (the ones either ledger alone used to give) name it.
            return sorted(name for name in delta if not name.startswith("openssl-heap."))
        return sorted(delta)
    outer = OWNERSHIP.index(typed[0])
    return sorted(name for name in typed if OWNERSHIP.index(name) <= outer + 1)


def format_delta(delta: Mapping[str, int]) -> str:
    """``{"SSL_CTX": 1, "SSL": 1}`` -> ``"SSL_CTX +1, SSL +1"``."""
    return ", ".join(f"{name} {value:+d}" for name, value in delta.items())


@dataclass(frozen=True)
class Finding:
    """One thing wrong with one case on one target."""

    kind: FindingKind
    target: str
    case: InitCase
    outcome: Outcome
    #: Growth per counter that recurred on every replay (leak and cycle).
    delta: Mapping[str, int] = field(default_factory=dict)
    #: Entries left on the OpenSSL error queue (error-queue).
    errors_left: tuple[OpenSSLError, ...] = ()
    #: How many replays confirmed it (0 for findings that need none).
    replays: int = 0
    #: Where the leaked heap blocks were allocated, biggest first (heap leaks
    #: replayed in attribution mode).
    sites: tuple[Site, ...] = ()
    #: The allocation made to fail (allocation-failure injection), if any.
    fail_at: int | None = None
    #: Where the first block still live after the attribution replay was
    #: allocated (``file:line``): what was lost first, which is what the bug
    #: lost.  What hangs off it, and so the ranking of :attr:`sites` by bytes,
    #: varies with the input (a bigger certificate, a longer chain).
    root_site: str | None = None

    @property
    def step(self) -> str | None:
        """The step where the path failed (None if it was accepted)."""
        return self.outcome.step

    @property
    def signature(self) -> str:
        """Stable identity: the same bug found twice has the same signature.

        Target, kind and (for allocation-failure findings) that fact, then:
        for a leak or a cycle, the outermost leaked object types
        (:func:`root_counters`) and the :attr:`root_site`, but not the step:
        one missing free in an error path shows behind every step that fails
        after the allocation, and counter *names* and the first lost block
        only, since a leak's size and what hangs off its root vary with the
        input.  For the other kinds the step comes next,
        then what went wrong there (the exception's type, the signal); a
        prompt by its step alone (the prompt is always the same).  An
        error-queue finding is placed by :attr:`left_by`, not by the errors'
        text: one missing ``ERR_clear_error`` leaves whatever the input made
        the parser say (:attr:`variant`).
        """
        parts = [self.target, str(self.kind)]
        if self.kind is FindingKind.ERROR_QUEUE:
            parts.append(self.left_by)
        elif self.kind not in (FindingKind.LEAK, FindingKind.CYCLE):
            parts.append(str(self.step or "-"))
        if self.fail_at is not None:
            parts.append("allocation failure")
        if self.kind in (FindingKind.LEAK, FindingKind.CYCLE):
            parts.append(", ".join(root_counters(self.delta)))
            if self.root_site is not None:
                parts.append(self.root_site)
        elif self.kind not in (FindingKind.ERROR_QUEUE, FindingKind.PROMPT):
            parts.append(self.outcome.message.split(":", 1)[0])
        return " | ".join(parts)

    @property
    def left_by(self) -> str:
        """Which part of the path left the errors of an error-queue finding.

        The failing step when what was left includes that step's own errors
        (its error path returns without clearing them), or when the target
        does not say which errors are its own (a C library reports only its
        step); else ``"success"``: a call that succeeded queued them
        (X509_STORE_add_cert's "invalid certificate"), whatever step the
        attempt later failed at, if any.
        """
        errors = self.outcome.errors
        if self.step and (not errors or set(errors) & set(self.errors_left)):
            return str(self.step)
        return "success"

    @property
    def variant(self) -> str:
        """What differs between findings of one signature: the errors left, the deltas."""
        if self.kind is FindingKind.ERROR_QUEUE:
            return "; ".join(str(e) for e in self.errors_left)
        return format_delta(self.delta)

    @property
    def what(self) -> str:
        """What went wrong, short: the outcome's message, or what a prompt means."""
        return PROMPTED if self.kind is FindingKind.PROMPT else self.outcome.message

    def summary(self) -> str:
        """One line for humans."""
        if self.kind is FindingKind.LEAK:
            what = f"{format_delta(self.delta)} per attempt, never freed"
        elif self.kind is FindingKind.CYCLE:
            what = f"{format_delta(self.delta)} per attempt, freed only by the garbage collector"
        elif self.kind is FindingKind.ERROR_QUEUE:
            what = "left on the error queue: " + "; ".join(str(e) for e in self.errors_left)
        else:
            what = self.what
        if self.sites:
            what += " (" + ", ".join(str(s) for s in self.sites[:3]) + ")"
        if self.fail_at is not None:
            what += f" [allocation {self.fail_at} made to fail]"
        if what.startswith(self.outcome.message) and self.outcome.message:
            # An exception, a crash or a hang: the outcome already says it all.
            rest = what[len(self.outcome.message) :]
            return f"{self.kind} in {self.target}: {self.outcome.describe()}{rest}"
        return f"{self.kind} in {self.target} ({self.outcome.describe()}): {what}"

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (the case is given as its hex encoding)."""
        return {
            "kind": str(self.kind),
            "target": self.target,
            "step": None if self.step is None else str(self.step),
            "signature": self.signature,
            "outcome": {
                "status": str(self.outcome.status),
                "errors": [[e.library, e.reason] for e in self.outcome.errors],
                "message": self.outcome.message,
            },
            "delta": dict(self.delta),
            "errors_left": [[e.library, e.reason] for e in self.errors_left],
            "replays": self.replays,
            "sites": [[s.file, s.line, s.blocks, s.bytes] for s in self.sites],
            "fail_at": self.fail_at,
            # Only where known, so reports without heap attribution keep their form.
            **({"root_site": self.root_site} if self.root_site is not None else {}),
            "labels": list(self.case.labels),
            "case_hex": self.case.encode().hex(),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Finding:
        """The inverse of :meth:`to_json` (reports read back, worker replies)."""
        outcome = data["outcome"]
        return cls(
            kind=FindingKind(data["kind"]),
            target=data["target"],
            case=decode(bytes.fromhex(data["case_hex"])),
            outcome=Outcome(
                Status(outcome["status"]),
                data["step"],
                tuple(OpenSSLError(a, b) for a, b in outcome["errors"]),
                outcome["message"],
            ),
            delta=dict(data["delta"]),
            errors_left=tuple(OpenSSLError(a, b) for a, b in data["errors_left"]),
            replays=data["replays"],
            sites=tuple(Site(f, ln, b, n) for f, ln, b, n in data.get("sites", ())),
            fail_at=data.get("fail_at"),
            root_site=data.get("root_site"),
        )

    def reproduces(self, recorded: Finding) -> bool:
        """Whether this fresh finding is the bug that ``recorded`` (a stored one) stands for.

        Equal signatures, or for a leak stored before leaks were named by
        their root site (its signature ranked the top sites by bytes, which
        this one no longer keeps), equal signatures but for the root site.
        """
        if self.signature == recorded.signature:
            return True
        legacy = recorded.root_site is None and bool(recorded.sites)
        return legacy and replace(self, root_site=None).signature == recorded.signature


@dataclass(frozen=True)
class Verdict:
    """What the oracle made of one case."""

    case: InitCase
    outcome: Outcome
    findings: tuple[Finding, ...] = ()
    #: Allocations the first run made, when a ledger counts them (the
    #: fuzzer's guidance buckets it: a new count is a new path through C).
    allocations: int | None = None

    @property
    def clean(self) -> bool:
        return not self.findings


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
            self._pick_counters()
            self._started = True
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
        if any(name not in self._quiet for name in grown):
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
        cycle = tally.decide_cycle(grown, uncollected)
        warmups = max(self.warmups, SLOPE_WARMUPS) if tally.slope else self.warmups
        for _ in range(warmups):
            self._attempt(case)
        for _ in range(self.replays):
            _outcome, again, before, _left = self._attempt(case)
            if tally.slope:  # a slope needs signed counts: every replay is measured
                ran, collected = self._snapshot(), self._collected()
                going = tally.add(again, growth(before, collected), (before, ran, collected))
            else:
                survived = self._after_collection(before) if again else {}
                going = tally.add(again, survived)
            if not going:
                return None
        recurring = tally.delta()
        if recurring is None:
            return None
        kind = FindingKind.CYCLE if cycle else FindingKind.LEAK
        sites = () if cycle else self._attribute(case)
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
            root_site=None if first is None else f"{first.file}:{first.line}",
        )

    def _attribute(self, case: InitCase) -> tuple[Site, ...]:
        """One more replay with allocation sites recorded: where the leaked blocks come from."""
        sites: list[Site] = []
        for ledger in self.ledgers:
            if not isinstance(ledger, AttributingLedger):
                continue
            mark = ledger.begin_attribution()
            try:
                self._attempt(case)
                gc.collect()
            finally:
                found = ledger.end_attribution(mark)
            for x in found:
                first = int(getattr(x, "first", 0))  # a user's ledger may not know the order
                sites.append(Site(str(x.file), int(x.line), int(x.blocks), int(x.bytes), first))
        return tuple(sorted(sites, key=lambda x: (-x.bytes, x.file, x.line)))


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
    """
    if isinstance(fn, Target):
        target = fn
    elif rejections is None:
        target = CallableTarget(fn)
    else:
        target = CallableTarget(fn, rejections=rejections)
    with Oracle(target, ledgers=ledgers, replays=replays) as oracle:
        verdicts = [oracle.check(case) for case in cases]
    findings = [f for v in verdicts for f in v.findings]
    if findings:
        raise LeakError(findings)
    return verdicts
