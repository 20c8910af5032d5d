"""The findings desk of a fuzz campaign: one record per signature, minimised and stored.

A worker reports a signature the first time it sees it and counts repeats.
The campaign keeps one record per signature: a new one is minimised (with a
budget) by a checker of its own in the background, an isolated oracle
(:class:`tlsleak.check.worker.IsolatedOracle`), and stored; repeats are added
to its count every few seconds.  The input a worker died on (see
:mod:`tlsleak.fuzz.workers`) is checked here in isolation, where a crash or a
hang is a finding, and stored like the others.

A worker finds a signature after thousands of other inputs, and the checker
minimises it after other findings: growth can be what those left behind (see
:mod:`tlsleak.check.alone`).  So a plain finding (not of a failing run, not a
timeout) is stored only once a ``fresh`` checker, which has run nothing, gives
its signature on the input alone, as ``tlsleak replay`` runs it; a reproducer
minimised in the checker is kept only when a fresh checker gives it too, else
the input confirmed alone is stored.  Workers report a signature once each, so
a later report of it (another worker, a restarted one) with another input is
tried too, up to :data:`~tlsleak.check.alone.TRIES` inputs; a signature none
of them gives alone is an *unconfirmed* record: no folder, shown apart, never
gating the exit status.  A fresh checker that cannot tell (it would not start)
leaves the finding counted.

With ``--fail-alloc`` (``fail_alloc``), an input's fail
point is honoured here too (:func:`tlsleak.check.failalloc.check_case`): a
worker that crashed on an allocation it made fail left its input, fail point
included, and the crash is found again in isolation.  A finding of a failing
run is found again by the checker (:func:`~tlsleak.check.failalloc.find_again`,
after a warm-up, as every failing run), minimised with the point it failed
there (:class:`~tlsleak.check.failalloc.WarmedOracle`), confirmed in a fresh
process the way ``tlsleak replay`` runs it, and stored with that process's
:class:`~tlsleak.check.findings.FailPoint`; its reproducer carries the point
as its ``fail_alloc``.  One that does not come back in isolation is stored as
found, without a point, and the campaign says so.  Without ``--fail-alloc``
a fail point an input carries is dropped, as the workers drop it.
"""

from __future__ import annotations

import queue
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from tlsleak.cases.case import InitCase, decode
from tlsleak.check.alone import TRIES, Alone, gives_alone
from tlsleak.check.failalloc import (
    FailingRuns,
    WarmedOracle,
    check_case,
    confirm_afresh,
    find_again,
)
from tlsleak.check.findings import FailPoint, FindingError, FindingStore
from tlsleak.check.oracle import Finding, FindingKind
from tlsleak.check.worker import IsolatedOracle, WorkerError
from tlsleak.fuzz.stats import FindingRecord
from tlsleak.targets import Outcome, Status

__all__ = ["Desk"]

#: Where :class:`~tlsleak.check.alone.Alone` is told a campaign's finding came
#: from: a campaign's inputs have no file.
_INPUT = Path("-")


class Desk:
    """Deduplicates findings, minimises new ones in a thread of its own, stores them."""

    def __init__(
        self,
        store: FindingStore,
        checker: IsolatedOracle,
        budget: int,
        *,
        fresh: Callable[[], IsolatedOracle],
        fail_alloc: bool = False,
    ) -> None:
        self.store = store
        self.checker = checker
        self.budget = budget
        #: Makes a checker that has run nothing (not started): findings are
        #: confirmed alone in one, and with --fail-alloc, failures afresh.
        self.fresh = fresh
        self.fail_alloc = fail_alloc
        self.runs = FailingRuns(checker)
        self.records: dict[str, FindingRecord] = {}
        self._pending: Counter[str] = Counter()
        self._findings: dict[str, Finding] = {}
        self._alone = Alone(fresh)
        #: The inputs queued to be tried alone, per signature (at most TRIES).
        self._tries: dict[str, set[bytes]] = {}
        #: Signatures stored as found, without a try alone (a worker's death
        #: the checker did not reproduce: a fresh one would not either).
        self._as_found: set[str] = set()
        self._lock = threading.Lock()
        self._jobs: queue.Queue[tuple[str, Any] | None] = queue.Queue()
        self._hurry = threading.Event()
        self.errors: list[str] = []
        self._thread = threading.Thread(target=self._work, name="tlsleak-findings", daemon=True)
        self._thread.start()

    # Called from the campaign's loop.

    def offer(self, finding: Finding) -> None:
        """A worker's first report of a signature (or the checker's, of a worker's death)."""
        with self._lock:
            step = str(finding.step or "-")
            signature = finding.signature
            tries = self._tries.setdefault(signature, set())
            data = finding.case.without_fail_alloc().encode()
            new_input = data not in tries and len(tries) < TRIES
            if new_input:
                tries.add(data)
            record = self.records.get(signature)
            if record is not None:
                record.count += 1
                record.steps[step] = record.steps.get(step, 0) + 1
                self._pending[signature] += 1
                # Another worker's input of a signature not stored yet: tried
                # alone too (a failure or a timeout is stored from the first).
                plain = finding.fail_at is None and finding.kind is not FindingKind.TIMEOUT
                if not (new_input and plain and record.folder is None):
                    return
            else:
                self.records[signature] = FindingRecord(
                    signature, str(finding.kind), step, finding.summary(), steps={step: 1}
                )
                self._findings[signature] = finding
        self._jobs.put(("finding", finding))

    def repeats(self, signature: str, times: int, step: str = "-") -> None:
        with self._lock:
            record = self.records.get(signature)
            if record is not None:
                record.count += times
                record.steps[step] = record.steps.get(step, 0) + times
                self._pending[signature] += times

    def artifact(self, kind: FindingKind | None, data: bytes, how: str) -> None:
        self._jobs.put(("artifact", (kind, data, how)))

    def snapshot(self) -> list[FindingRecord]:
        """Copies of the records, for a status (the thread updates them)."""
        with self._lock:
            return [replace(r, steps=dict(r.steps)) for r in self.records.values()]

    def flush_counts(self) -> None:
        """Write the repeats counted since the last flush into the stored findings."""
        with self._lock:
            ready = {
                s: n for s, n in self._pending.items() if n and self.records[s].folder is not None
            }
            for signature in ready:
                del self._pending[signature]
        for signature, times in ready.items():
            try:
                self.store.add_repeats(self._findings[signature], times)
            except FindingError as exc:
                self._error(str(exc))

    def finish(self, *, hurry: bool, waiting: Callable[[], None] | None = None) -> None:
        """Handle what is queued (without minimising when ``hurry``), then stop.

        ``waiting`` is called every fraction of a second meanwhile (to show progress).
        """
        if hurry:
            self._hurry.set()
        self._jobs.put(None)
        while self._thread.is_alive():
            self._thread.join(0.2)
            if waiting is not None:
                waiting()
        self.flush_counts()

    def _error(self, message: str) -> None:
        with self._lock:
            if message not in self.errors:
                self.errors.append(message)

    # The thread.

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            what, payload = job
            try:
                if what == "finding":
                    self._store(payload)
                else:
                    self._check_artifact(*payload)
            except FindingError as exc:
                self._error(str(exc))
            except WorkerError as exc:
                self._error(f"checker: {exc}")
            except Exception as exc:  # a long campaign must outlive one bad finding
                self._error(f"could not store a finding: {type(exc).__name__}: {exc}")

    def _store(self, finding: Finding) -> None:
        with self._lock:
            if self.records[finding.signature].folder is not None:
                return  # stored from an earlier try of the signature
        if finding.fail_at is not None and self.fail_alloc:
            self._store_failure(finding)
            return
        case = finding.case.without_fail_alloc()
        if not self._counts(replace(finding, case=case)):
            return
        reproducer, reproduced = case, None
        # A timeout costs the whole timeout per try: not worth shrinking.
        if self.budget > 0 and not self._hurry.is_set() and finding.kind is not FindingKind.TIMEOUT:
            from tlsleak.check.minimize import minimize, signature_predicate

            predicate = signature_predicate(self.checker, finding.signature)
            reproducer = minimize(
                reproducer, predicate, budget=self.budget, stop=self._hurry.is_set
            )
            reproduced = predicate.finding_for(reproducer)
            if (
                reproducer != case
                and gives_alone(self.fresh(), reproducer, finding.signature) is False
            ):
                # Shrunk in a checker that had run other inputs: what replay
                # will run alone is the input that was confirmed alone.
                reproducer, reproduced = case, None
        folder, _new = self.store.add(finding, reproducer, reproducer_finding=reproduced)
        self._stored(finding, folder, reproducer)

    def _counts(self, finding: Finding) -> bool:
        """Whether ``finding`` counts: a fresh checker gives it alone (check.alone).

        If not, its record is unconfirmed, until a later input of the
        signature is given alone.  ``finding.fail_at`` is None here.
        """
        if finding.signature in self._as_found or self._alone.admit(_INPUT, finding):
            with self._lock:
                self.records[finding.signature].unconfirmed = False
            return True
        with self._lock:
            self.records[finding.signature].unconfirmed = True
        return False

    def _store_failure(self, finding: Finding) -> None:
        """Store a finding of a failing run with the point that replays it (see the docstring)."""
        assert finding.fail_at is not None
        signature = finding.signature

        def matches(found: Finding) -> bool:
            return found.signature == signature

        again = find_again(self.runs, finding.case, finding.fail_at, matches)
        if not again.found or again.point is None:
            self._error(
                f"the {finding.kind} at {finding.step or '-'} with allocation {finding.fail_at} "
                "failing did not come back in isolation: stored as found, without its warm-up "
                "count; 'tlsleak replay' may not reproduce it exactly"
            )
            as_found = replace(finding.case, fail_alloc=finding.fail_at)
            folder, _new = self.store.add(finding, as_found)
            self._stored(finding, folder, as_found)
            return
        point: FailPoint = again.point
        reproducer, reproduced = finding.case.without_fail_alloc(), None
        if self.budget > 0 and not self._hurry.is_set() and finding.kind is not FindingKind.TIMEOUT:
            from tlsleak.check.minimize import minimize, signature_predicate

            warmed = WarmedOracle(self.runs)
            predicate = signature_predicate(warmed, signature, fail_at=point.fail_at)
            reproducer = minimize(
                reproducer, predicate, budget=self.budget, stop=self._hurry.is_set
            )
            reproduced = predicate.finding_for(reproducer)
            if reproduced is not None:
                point = warmed.points.get(reproducer.encode(), point)
        if finding.kind is not FindingKind.TIMEOUT:
            point = self._confirm_afresh(finding, reproducer, point)
        reproducer = replace(reproducer, fail_alloc=point.fail_at)
        folder, _new = self.store.add(
            finding, reproducer, reproducer_finding=reproduced, fail_point=point
        )
        self._stored(finding, folder, reproducer)

    def _confirm_afresh(self, finding: Finding, case: InitCase, point: FailPoint) -> FailPoint:
        """The point at which a fresh process, run as ``replay`` runs it, gives ``finding``.

        The checker has run other cases before: they can shift the numbering.
        """
        again = confirm_afresh(self.fresh(), finding, point, case)
        if again is not None:
            return again
        self._error(
            f"the {finding.kind} at {finding.step or '-'} with allocation {point.fail_at} "
            "failing did not come back in a fresh process: 'tlsleak replay' may not "
            "reproduce it exactly"
        )
        return point

    def _stored(self, finding: Finding, folder: Path, reproducer: InitCase) -> None:
        with self._lock:
            record = self.records[finding.signature]
            record.folder = folder
            record.minimized = reproducer.without_fail_alloc() != finding.case.without_fail_alloc()

    def _check_artifact(self, kind: FindingKind | None, data: bytes, how: str) -> None:
        case = decode(data)
        if self.fail_alloc:
            verdict, _point = check_case(self.runs, case)  # its fail point, as the worker ran it
        else:
            case = case.without_fail_alloc()
            verdict = self.checker.check(case)
        found = [f for f in verdict.findings if f.kind in (FindingKind.CRASH, FindingKind.TIMEOUT)]
        if not found:
            # Not reproduced in isolation (flaky, or it needed the worker's
            # history): still a finding, with what the worker's death said.
            outcome = Outcome(Status.ERROR, None, (), f"worker {how}; not reproduced in isolation")
            found = [Finding(kind or FindingKind.CRASH, self.checker.target_name, case, outcome)]
            with self._lock:
                self._as_found.update(f.signature for f in found)
        for finding in found:
            self.offer(finding)
