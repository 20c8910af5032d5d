"""How the oracle's replays confirm growth: on every replay, or by slope after warm-up.

A counter that grew on a case's first run is only a candidate (one-time
caches fill on first runs), so the oracle replays the case and a
:class:`Tally` judges what the replays showed, counter by counter, in one of
two ways:

* **every replay**: the counter grew on each of the n replays; the delta is
  the smallest growth seen.  Right for counters of one stack's objects, which
  move only when the target allocates.
* **by slope**: after :data:`SLOPE_WARMUPS` unjudged runs, the counter grew by
  at least n from before the first replay to after the last (each run's
  collection included), so that noise cancels out; the delta is the growth
  per run (rounded down).  Right for a process-wide counter (the ``heap``
  ledger: every malloc of the interpreter too), where a block freed a run
  late, or between two runs, makes each run look leaky on its own.  A
  window that kept some growth but less than n is followed by a fresh one,
  up to :data:`RENEWALS` times, and the last one judges: another thread's
  frees in one window can hide a leak of a block a run, and seldom do so
  in the next.

Counters a ledger marks ``report_only`` (bytes) never confirm anything by
themselves: they come along in the delta of a confirmed one.

A leak is growth that survives a full collection; a *cycle* is growth that
only the collection undoes (see :mod:`tlsleak.check.oracle`).  When only
slope counters grew, the first run's say is provisional and the window
settles it: growth it keeps is a leak, growth of which it keeps nothing a
cycle.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Final

from tlsleak.ledgers import Counts, Ledger

__all__ = ["CONFIRMS", "RENEWALS", "SLOPE_WARMUPS", "Tally", "slope_counters", "without"]

#: Unjudged runs before a slope verdict: caches that take a few attempts to
#: fill are full by then.
SLOPE_WARMUPS: Final = 2

#: Times a slope window that kept less than one per run is replaced by a
#: fresh one of n more runs (:meth:`Tally.unsettled`) before what it kept is
#: called noise.
RENEWALS: Final = 3

#: How growth is confirmed: as each ledger asks, on every replay, by slope.
CONFIRMS: Final = ("auto", "every", "slope")


def slope_counters(ledgers: Iterable[Ledger], confirm: str) -> frozenset[str]:
    """The counters of ``ledgers`` (started) judged by slope under ``confirm`` (:data:`CONFIRMS`).

    ``"auto"``: those of the ledgers that ask for it (``slope_verdict``).
    """
    if confirm == "every":
        return frozenset()
    chosen = [x for x in ledgers if confirm == "slope" or getattr(x, "slope_verdict", False)]
    return frozenset(name for x in chosen for name in x.snapshot())


def without(counts: Mapping[str, int], names: Iterable[str]) -> dict[str, int]:
    """``counts`` without the counters ``names``."""
    drop = set(names)
    return {k: v for k, v in counts.items() if k not in drop}


class Tally:
    """The replays of one case that grew, judged counter by counter.

    ``slope`` are the counters judged by slope (the rest on every replay),
    ``quiet`` those that confirm nothing alone (``report_only``), ``replays``
    is n, ``order`` the order of counters in the delta (the ledgers').  Feed
    each replay to :meth:`add`; :meth:`delta` is the verdict.
    """

    def __init__(
        self,
        *,
        slope: frozenset[str],
        quiet: frozenset[str],
        replays: int,
        order: Iterable[str] = (),
    ) -> None:
        self.slope = slope
        self.quiet = quiet
        self.replays = replays
        self.order = tuple(order)
        self.cycle = False
        self._by_slope = False  # whether only slope counters decided :attr:`cycle`
        self._recurring: dict[str, int] | None = None  # every replay: smallest growth
        self._made: dict[str, int] = {}  # by slope: each run's growth before collection
        self._first: Counts | None = None  # by slope: before the first replay,
        self._last: Counts = {}  # and after the last one's collection

    def triggers(self, counts: Mapping[str, int] | None) -> bool:
        """Whether ``counts`` holds a counter that starts and confirms replays."""
        return any(name not in self.quiet for name in counts or ())

    def decide_cycle(self, grown: Mapping[str, int], uncollected: Mapping[str, int]) -> bool:
        """From the first run: is it a cycle (collection undid the growth)?  Kept in :attr:`cycle`.

        Slope counters decide only when no other one grew: on a first run
        they also count caches being filled, which no collection frees.
        Their decision is provisional: one run of a process-wide count is
        noisy (the collection may free an unrelated block the same run
        left), so the replays' window settles it (:meth:`delta`).
        """
        exact = self.triggers(without(grown, self.slope))
        self._by_slope = not exact
        self.cycle = not self.triggers(without(uncollected, self.slope) if exact else uncollected)
        return self.cycle

    def add(
        self,
        grown: Mapping[str, int],
        survived: Mapping[str, int],
        counts: tuple[Counts, Counts, Counts] | None = None,
    ) -> bool:
        """One replay: its growth, what survived collection, and (slope) its signed counts.

        ``counts`` is (before, after the run, after collection), needed when
        :attr:`slope` is not empty.  Returns False when the verdict can no
        longer be a finding (no slope counter, and a replay without growth).
        """
        if counts is not None:
            before, ran, collected = counts
            _add(self._made, before, ran, self.slope)
            if self._first is None:
                self._first = before
            self._last = collected
        seen = grown if self.cycle else survived
        if self.cycle and self.triggers(without(survived, self.slope)):
            seen = {}  # this replay leaked for real: not the same behaviour
        seen = without(seen, self.slope)
        if self._recurring is None:
            self._recurring = dict(seen)
        else:
            self._recurring = {k: min(v, seen[k]) for k, v in self._recurring.items() if k in seen}
        return bool(self.slope) or self.triggers(self._recurring)

    def window(self, first: Counts, last: Counts) -> None:
        """Judge the slope counters from ``first`` to ``last``, not the replays' own counts.

        For a caller whose snapshots also count its own bookkeeping (Python
        objects): it measures both ends at the same point of its loop.
        """
        self._first, self._last = first, last

    def renew(self) -> None:
        """Start a fresh slope window (its ends come through :meth:`window`)."""
        self._made = {}

    def unsettled(self) -> bool:
        """Whether the window kept some growth, but less than one per run: renew it.

        A leak of a block or two per run in a process whose other threads
        free blocks of their own now and then can net less than n over n
        runs; a few more runs tell it from noise.
        """
        held = self._held()
        return self.triggers({k: v for k, v in held.items() if 0 < v < self.replays})

    def _held(self) -> dict[str, int]:
        """Each slope counter's change over the window (none before a window)."""
        held: dict[str, int] = {}
        if self._first is not None:
            _add(held, self._first, self._last, self.slope)
        return held

    def delta(self) -> dict[str, int] | None:
        """Growth per attempt of every confirmed counter; None when nothing is confirmed."""
        n = self.replays
        held = self._held()
        sloped = {k: v // n for k, v in held.items() if v >= n}
        made = {k: v // n for k, v in self._made.items() if v >= n}
        if self._by_slope and self._first is not None:
            # The window, n runs wide and taken after collection at both ends,
            # says what survived better than the first run: a one-block leak
            # whose first run's collection freed some other block is a leak,
            # and growth of which nothing at all survived is a cycle.
            kept = self.triggers({k: v for k, v in held.items() if v > 0})
            self.cycle = not self.triggers(sloped) and (self.cycle or not kept)
        if self.cycle:
            # Growth that collection undid, unless the replays leaked for real.
            sloped = {} if self.triggers(sloped) else made
        recurring = self._recurring or {}
        if not (self.triggers(recurring) or self.triggers(sloped)):
            return None
        found = {**recurring, **sloped}
        rank = {name: i for i, name in enumerate(self.order)}
        return dict(sorted(found.items(), key=lambda kv: (rank.get(kv[0], len(rank)), kv[0])))


def _add(window: dict[str, int], before: Counts, after: Counts, names: Iterable[str]) -> None:
    """Add each counter's signed change from ``before`` to ``after`` to ``window``."""
    for name in names:
        window[name] = window.get(name, 0) + after.get(name, 0) - before.get(name, 0)
