"""Shrink a failing case to a small reproducer while it keeps failing the same way.

:func:`shrink` is a greedy, deterministic, structure-aware shrinker; it holds
the smallest failing case found so far and tries the moves of
:mod:`tlsleak.check.shrinkers` on it.  There are six passes:

1. ``fields``: each field emptied (CA, certificate, key, password, server
   name), the certificate's chain dropped, each blob cut to one byte;
2. ``blocks``: runs of PEM blocks dropped from multi-block blobs (halves,
   quarters, ..., single blocks: chain members, extra certificates of a CA
   bundle);
3. ``swap``: a certificate or key replaced by a much smaller valid one of the
   same kind (Ed25519 or EC P-256 instead of RSA-4096), the leaf and key by a
   matching pair;
4. ``der``: inside each DER blob or PEM block body, elements dropped
   (extensions, TBSCertificate fields, RDNs, SET/SEQUENCE members, half a
   long SEQUENCE at once), constructed elements emptied, long INTEGERs and
   strings shortened, with the lengths around the edit repaired;
5. ``lines``: PEM lines outside the base64 body dropped (headers, blank
   lines, stray text);
6. ``cut``: each blob truncated: to half, then by a quarter, ... one byte off.

The budget goes to the big wins first, whichever pass offers them.  A round
lowers a threshold from half the case's size to one byte, halving it each
time; at each threshold the passes run in the order above, each trying, most
saving first, its moves that take off at least that many bytes.  So a field
dropped, half a bundle, a certificate swapped or a whole extension comes
before a byte cut off the end, and cutting a 1 MB blob of junk in half comes
before dropping its small DER elements.  After a success the pass goes on
from the new, smaller case.  A move that failed is not tried again in the
same round: it is named by what it does ("drop this extension of that
block"), so it keeps its name while the rest of the case shrinks.  When a
round made progress another one runs with those memories cleared, since a
move that failed may succeed once something else is gone; the search stops
at a round without progress, or when the budget runs out.

A candidate is tried only when it is strictly smaller than the current best
(fewer total blob bytes; equal size broken by the byte encoding), so the
search always terminates, and no encoding is tried twice.  ``mode`` and
``labels`` are never changed: the labels say what the case was made from, and
stay true of its pieces.

**Budget**: at most ``budget`` calls of the predicate (default 200), the
original case's own check not included (it is taken to fail; pass it through
the predicate yourself if that is in doubt).  Each call of a
:func:`signature_predicate` is one oracle check, which for a leak means the
first run plus its replays.  When the budget runs out the best case so far is
returned, so a small budget gives a partly shrunk case, never a wrong one.
:func:`minimize` returns the case; :func:`shrink` a :class:`Shrunk` that also
says the sizes before and after, the checks spent and what each pass won.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Final, Protocol

from tlsleak.cases.case import InitCase
from tlsleak.check.oracle import Finding, Verdict
from tlsleak.check.shrinkers import PASSES, Candidate, Pass

__all__ = [
    "DEFAULT_BUDGET",
    "CheckingOracle",
    "Shrunk",
    "SignaturePredicate",
    "minimize",
    "shrink",
    "signature_predicate",
]

#: Predicate calls :func:`minimize` makes at most, unless told otherwise.
DEFAULT_BUDGET: Final = 200


@dataclass(frozen=True)
class Shrunk:
    """What :func:`shrink` made of a case.

    ``case`` is the smallest failing case found (the very object given when
    nothing smaller failed); ``before`` and ``after`` are blob bytes
    (:attr:`InitCase.size`); ``calls`` the predicate calls made; ``wins`` the
    successful moves per pass name; ``complete`` is False when the budget or
    ``stop`` ended the search before a round without progress.
    """

    case: InitCase
    before: int
    after: int
    calls: int
    wins: Mapping[str, int] = field(default_factory=dict)
    complete: bool = True


def _key(case: InitCase) -> tuple[int, bytes]:
    return case.size, case.encode()


class _Search:
    """The state of one :func:`shrink`: the best case, what was tried, the calls left."""

    def __init__(
        self,
        case: InitCase,
        still_fails: Callable[[InitCase], bool],
        budget: int,
        stop: Callable[[], bool] | None,
    ) -> None:
        self.best, self.best_key = case, _key(case)
        self.still_fails, self.budget, self.stop = still_fails, budget, stop
        self.tried = {self.best_key[1]}
        self.calls = 0
        self.wins: dict[str, int] = {}
        self.out_of_calls = False
        # Each pass's moves on the best case, biggest saving first (sorted() is
        # stable: moves that save as much keep the pass's order); made again
        # only once the best case changes.
        self._moves: dict[str, list[Candidate]] = {}

    def moves(self, name: str, moves: Pass) -> list[Candidate]:
        if name not in self._moves:
            self._moves[name] = sorted(moves(self.best), key=lambda c: -c.saving)
        return self._moves[name]

    def run_pass(self, name: str, moves: Pass, failed: set[Hashable], least: int) -> bool:
        """Try the pass's moves that save at least ``least`` bytes until none succeeds;
        whether one did."""
        progress = False
        while self._step(name, moves, failed, least):
            progress = True
        return progress

    def _step(self, name: str, moves: Pass, failed: set[Hashable], least: int) -> bool:
        """Try the pass's next moves down to ``least`` bytes saved, up to a success.

        A move is tried (or found useless) once per best case: those left are
        the ones saving less than ``least``, kept for a lower threshold.
        """
        pending = self.moves(name, moves)
        for i, candidate in enumerate(pending):
            if candidate.saving < least:
                self._moves[name] = pending[i:]
                return False
            if candidate.key in failed:
                continue
            case = candidate.make()
            key = _key(case)
            if key >= self.best_key or key[1] in self.tried:
                continue
            if self.calls >= self.budget or (self.stop is not None and self.stop()):
                self.out_of_calls = True
                return False
            self.tried.add(key[1])
            self.calls += 1
            if self.still_fails(case):
                self.best, self.best_key = case, key
                self.wins[name] = self.wins.get(name, 0) + 1
                self._moves.clear()
                return True
            failed.add(candidate.key)
        self._moves[name] = []
        return False


def shrink(
    case: InitCase,
    still_fails: Callable[[InitCase], bool],
    *,
    budget: int = DEFAULT_BUDGET,
    stop: Callable[[], bool] | None = None,
) -> Shrunk:
    """The smallest case found for which ``still_fails`` holds, calling it at most ``budget``
    times, with the sizes before and after (see the module docstring).

    ``case`` itself is assumed to fail and is returned when nothing smaller
    does.  Deterministic: the same case and predicate give the same result.
    ``stop``, when given, is asked before every call: once it says True the
    best case so far is returned (a campaign told to stop now).
    """
    if budget < 0:
        raise ValueError(f"budget must not be negative, not {budget}")
    search = _Search(case, still_fails, budget, stop)
    progress = True
    while progress and not search.out_of_calls:
        progress = False
        failed: set[Hashable] = set()  # moves that failed this round, by key
        least = 1 << max(search.best.size // 2, 1).bit_length() - 1
        while least >= 1 and not search.out_of_calls:
            for name, moves in PASSES:
                progress = search.run_pass(name, moves, failed, least) or progress
                if search.out_of_calls:
                    break
            least //= 2
    best = search.best
    return Shrunk(
        best, case.size, best.size, search.calls, search.wins, complete=not search.out_of_calls
    )


def minimize(
    case: InitCase,
    still_fails: Callable[[InitCase], bool],
    *,
    budget: int = DEFAULT_BUDGET,
    stop: Callable[[], bool] | None = None,
) -> InitCase:
    """The case :func:`shrink` finds: ``case`` itself (the same object) when nothing
    smaller fails, so callers can tell whether it shrank."""
    return shrink(case, still_fails, budget=budget, stop=stop).case


class CheckingOracle(Protocol):
    """What :func:`signature_predicate` needs: :class:`~tlsleak.check.oracle.Oracle` and
    :class:`~tlsleak.check.worker.IsolatedOracle` both fit."""

    def check(self, case: InitCase, *, fail_at: int | None = None) -> Verdict: ...


class SignaturePredicate:
    """True for a case whose check yields a finding with ``signature``.

    ``matches`` keeps the matching finding per case encoding, so the caller
    can have the minimised case's own finding (its deltas, its sites) without
    checking it once more.  ``calls`` counts the checks made.
    """

    def __init__(
        self, oracle: CheckingOracle, signature: str, *, fail_at: int | None = None
    ) -> None:
        self.oracle = oracle
        self.signature = signature
        self.fail_at = fail_at
        self.calls = 0
        self.matches: dict[bytes, Finding] = {}

    def __call__(self, case: InitCase) -> bool:
        self.calls += 1
        verdict = self.oracle.check(case, fail_at=self.fail_at)
        for finding in verdict.findings:
            if finding.signature == self.signature:
                self.matches[case.encode()] = finding
                return True
        return False

    def finding_for(self, case: InitCase) -> Finding | None:
        """The matching finding this predicate saw for ``case``, if any."""
        return self.matches.get(case.encode())


def signature_predicate(
    oracle: CheckingOracle, signature: str, *, fail_at: int | None = None
) -> SignaturePredicate:
    """A predicate for :func:`minimize`: checking the case with ``oracle`` (started)
    yields a finding whose signature is exactly ``signature``.

    Give ``fail_at`` for an allocation-failure finding: its signature says
    "allocation failure", which only a check with that allocation failing can
    reproduce.
    """
    return SignaturePredicate(oracle, signature, fail_at=fail_at)
