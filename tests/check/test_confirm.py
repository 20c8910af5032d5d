"""How replays confirm growth (tlsleak.check.confirm): every replay, or by slope after warm-up.

On fakes, so that every counter moves exactly as the test says: a scripted
process-wide ledger (``slope_verdict``, bytes ``report_only``) under a
target that does nothing.  Positive controls: a steady leak, and a leak that
shows on one replay in three, are found by slope.  Negative controls: noise
that a later run frees, and a realloc that only grows bytes, are not, and the
realloc does not even start replays.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import pairwise

import pytest

from tlsleak.cases.case import InitCase
from tlsleak.check.confirm import CONFIRMS, RENEWALS, SLOPE_WARMUPS, Tally, slope_counters
from tlsleak.check.oracle import FindingKind, Oracle, root_counters
from tlsleak.targets.base import Outcome

# -- the Tally, alone -----------------------------------------------------------------


def _tally(slope: Iterable[str] = (), quiet: Iterable[str] = ()) -> Tally:
    return Tally(slope=frozenset(slope), quiet=frozenset(quiet), replays=3)


def _replays(tally: Tally, counts: list[int], name: str = "heap.blocks") -> bool:
    """Replays whose ``name`` reads ``counts[i]`` before run i and ``counts[i + 1]`` after.

    Nothing changes between runs here, so each run starts where the last ended.
    """
    going = True
    for start, end in pairwise(counts):
        before, after = {name: start}, {name: end}
        grown = {name: end - start} if end > start else {}
        going = tally.add(grown, grown, (before, after, after))
    return going


def test_every_replay_needs_growth_on_each() -> None:
    tally = _tally()
    assert tally.add({"SSL_CTX": 1}, {"SSL_CTX": 1})
    assert tally.add({"SSL_CTX": 2}, {"SSL_CTX": 2})
    assert tally.add({"SSL_CTX": 1}, {"SSL_CTX": 1})
    assert tally.delta() == {"SSL_CTX": 1}  # the smallest growth seen
    missed = _tally()
    assert missed.add({"SSL_CTX": 1}, {"SSL_CTX": 1})
    assert not missed.add({}, {})  # nothing can make it a finding any more
    assert missed.delta() is None


def test_slope_finds_a_steady_leak_and_one_that_skips_replays() -> None:
    steady = _tally({"heap.blocks"})
    _replays(steady, [100, 104, 108, 112])
    assert steady.delta() == {"heap.blocks": 4}
    # 3 blocks on one replay in three: one per attempt on average.  Growth
    # on every replay would miss it; the slope does not.
    bursty = _tally({"heap.blocks"})
    assert _replays(bursty, [100, 103, 103, 103])
    assert bursty.delta() == {"heap.blocks": 1}


def test_slope_cancels_noise_that_a_later_run_frees() -> None:
    noisy = _tally({"heap.blocks"})
    _replays(noisy, [100, 102, 100, 102])  # +2, -2, +2: 2 over 3 runs
    assert noisy.delta() is None


def test_slope_sees_what_is_freed_between_runs() -> None:
    # Each run leaves one block that goes between runs (the last attempt's
    # result, dropped after the next snapshot): every run alone grows by
    # one, the window from the first replay to the last does not.
    tally = _tally({"heap.blocks"})
    for _ in range(3):
        tally.add(
            {"heap.blocks": 1},
            {"heap.blocks": 1},
            ({"heap.blocks": 100},) + ({"heap.blocks": 101},) * 2,
        )
    assert tally.delta() is None
    every = _tally()
    for _ in range(3):
        every.add({"heap.blocks": 1}, {"heap.blocks": 1})
    assert every.delta() == {"heap.blocks": 1}  # what "every replay" calls a leak


def test_report_only_counters_confirm_nothing_alone_but_come_along() -> None:
    tally = _tally({"heap.blocks", "heap.bytes"}, quiet={"heap.bytes"})
    assert not tally.triggers({"heap.bytes": 32})
    assert tally.triggers({"heap.blocks": 1, "heap.bytes": 32})
    for i in range(3):
        before = {"heap.blocks": 7, "heap.bytes": 100 + 32 * i}
        after = {"heap.blocks": 7, "heap.bytes": 132 + 32 * i}
        tally.add({"heap.bytes": 32}, {"heap.bytes": 32}, (before, after, after))
    assert tally.delta() is None  # bytes grew, no block did
    leak = _tally({"heap.blocks", "heap.bytes"}, quiet={"heap.bytes"})
    for i in range(3):
        before = {"heap.blocks": 7 + i, "heap.bytes": 100 + 64 * i}
        after = {"heap.blocks": 8 + i, "heap.bytes": 164 + 64 * i}
        leak.add({"heap.blocks": 1}, {"heap.blocks": 1}, (before, after, after))
    assert leak.delta() == {"heap.blocks": 1, "heap.bytes": 64}


def test_exact_counters_decide_a_cycle_when_they_grew() -> None:
    tally = _tally({"heap.blocks"})
    # The typed counter's growth was freed by the collection (a cycle), while
    # the heap also kept caches filled on this first run: still a cycle.
    grown = {"SSL_CTX": 1, "heap.blocks": 40}
    assert tally.decide_cycle(grown, {"heap.blocks": 7})
    assert not _tally({"heap.blocks"}).decide_cycle(grown, {"SSL_CTX": 1, "heap.blocks": 7})
    # Only slope counters grew: they decide.
    assert not _tally({"heap.blocks"}).decide_cycle({"heap.blocks": 9}, {"heap.blocks": 9})
    assert _tally({"heap.blocks"}).decide_cycle({"heap.blocks": 9}, {})


def test_delta_lists_counters_in_the_ledgers_order() -> None:
    tally = Tally(
        slope=frozenset({"heap.bytes", "heap.blocks"}),
        quiet=frozenset(),
        replays=1,
        order=("SSL_CTX", "heap.blocks", "heap.bytes"),
    )
    tally.add(
        {"SSL_CTX": 1},
        {"SSL_CTX": 1},
        ({"heap.bytes": 0, "heap.blocks": 0}, {}, {"heap.bytes": 9, "heap.blocks": 2}),
    )
    assert list(tally.delta() or ()) == ["SSL_CTX", "heap.blocks", "heap.bytes"]


def test_slope_counters_by_mode() -> None:
    assert CONFIRMS == ("auto", "every", "slope")
    heap, typed = _Scripted([0]), _Typed()
    assert slope_counters([heap, typed], "auto") == {"heap.blocks", "heap.bytes"}
    assert slope_counters([heap, typed], "every") == set()
    assert slope_counters([heap, typed], "slope") == {"heap.blocks", "heap.bytes", "SSL_CTX"}


def test_both_heap_ledgers_name_one_loss_by_the_process_heap() -> None:
    both = {"openssl-heap.blocks": 9, "openssl-heap.bytes": 900, "heap.blocks": 9, "heap.bytes": 9}
    assert root_counters(both) == ["heap.blocks", "heap.bytes"]
    assert root_counters({"openssl-heap.blocks": 9}) == ["openssl-heap.blocks"]
    assert root_counters({"SSL_CTX": 1, "heap.blocks": 9}) == ["SSL_CTX"]


# -- in the oracle, with a scripted process-wide ledger ------------------------------


class _Scripted:
    """A process-wide heap whose blocks follow a script, one step per attempt.

    Each step is how many blocks the next attempt leaves; bytes grow by 32
    on every attempt (a buffer that realloc keeps growing).  With
    ``late_free``, each attempt also makes one block that is freed right
    after the next snapshot (the last attempt's result, dropped late).
    """

    name = "scripted-heap"
    report_only = ("heap.bytes",)
    slope_verdict = True

    def __init__(self, steps: list[int], *, late_free: bool = False) -> None:
        self._steps: Iterator[int] = iter(steps)
        self.late_free = late_free
        self.blocks = 1000
        self.bytes = 64_000
        self.pending = 0
        self.attempts = 0

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def snapshot(self) -> dict[str, int]:
        counts = {"heap.blocks": self.blocks, "heap.bytes": self.bytes}
        self.blocks -= self.pending
        self.pending = 0
        return counts

    def attempt(self) -> None:
        self.attempts += 1
        self.blocks += next(self._steps, 0)
        self.bytes += 32
        if self.late_free:
            self.blocks += 1
            self.pending += 1


class _Typed:
    name = "typed"

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def snapshot(self) -> dict[str, int]:
        return {"SSL_CTX": 0}


class _Target:
    name = "scripted"
    description = "moves the scripted heap"
    ledgers = ()

    def __init__(self, heap: _Scripted) -> None:
        self.heap = heap

    def run(self, case: InitCase) -> Outcome:
        self.heap.attempt()
        return Outcome.accepted()

    def error_queue(self) -> None:
        return None


def _check(
    steps: list[int], confirm: str = "auto", *, late_free: bool = False
) -> tuple[list[FindingKind], int]:
    heap = _Scripted(steps, late_free=late_free)
    with Oracle(_Target(heap), ledgers=[heap], confirm=confirm) as oracle:
        verdict = oracle.check(InitCase())
    return [f.kind for f in verdict.findings], heap.attempts


def test_growing_bytes_alone_start_no_replay() -> None:
    assert _check([0, 0, 0, 0, 0, 0]) == ([], 1)  # one attempt, no replay


def test_a_steady_leak_is_found_after_warm_up() -> None:
    kinds, attempts = _check([1] * 10)
    assert kinds == [FindingKind.LEAK]
    assert attempts == 1 + SLOPE_WARMUPS + 3


@pytest.mark.parametrize(
    ("confirm", "found"), [("auto", []), ("slope", []), ("every", [FindingKind.CYCLE])]
)
def test_a_late_free_is_noise_only_to_every_replay(confirm: str, found: list[FindingKind]) -> None:
    # Every attempt shows one more block, gone by the next snapshot: growth
    # on each replay that no collection explains, which "every replay" takes
    # for a cycle and the slope, which sees it go, takes for nothing.
    assert _check([], confirm, late_free=True)[0] == found


def test_a_leak_under_late_noise_is_still_found() -> None:
    kinds, _ = _check([2] * 10, late_free=True)
    assert kinds == [FindingKind.LEAK]


def test_a_bad_confirm_mode_is_refused() -> None:
    heap = _Scripted([])
    with pytest.raises(ValueError, match="confirm must be one of auto, every, slope"):
        Oracle(_Target(heap), ledgers=[heap], confirm="sometimes")


# -- the window settles what one noisy first run of a slope counter suggested -------


def _settled(first_run_uncollected: dict[str, int], window: list[int], made: int) -> Tally:
    """A slope-only tally: first run grew 1 block, then 3 replays over ``window``.

    ``window`` are the counts after collection before the first replay and
    after the last; each replay made ``made`` blocks before its collection.
    """
    tally = _tally({"heap.blocks"})
    tally.decide_cycle({"heap.blocks": 1}, first_run_uncollected)
    start, end = window
    for i in range(3):
        before = {"heap.blocks": start + i * (end - start) // 3}
        ran = {"heap.blocks": before["heap.blocks"] + made}
        tally.add({"heap.blocks": made}, {}, (before, ran, before))
    tally.window({"heap.blocks": start}, {"heap.blocks": end})
    return tally


def test_a_leak_whose_first_collection_freed_another_block_is_a_leak() -> None:
    # Positive control: the collection after the first run freed an unrelated
    # block, so that run looked like a cycle; the window keeps 1 block a run.
    tally = _settled({}, [1000, 1003], made=1)
    assert tally.delta() == {"heap.blocks": 1}
    assert not tally.cycle


def test_growth_the_window_sees_collected_is_a_cycle_whatever_the_first_run_said() -> None:
    tally = _settled({"heap.blocks": 1}, [1000, 1000], made=1)
    assert tally.delta() == {"heap.blocks": 1}
    assert tally.cycle


def test_exact_counters_keep_their_cycle_decision() -> None:
    # Negative control: a typed object freed by collection decided the cycle;
    # the heap's window does not overrule it.
    tally = _tally({"heap.blocks"})
    assert tally.decide_cycle({"SSL_CTX": 1, "heap.blocks": 5}, {})
    tally.add({"SSL_CTX": 1}, {}, ({"heap.blocks": 0}, {"heap.blocks": 0}, {"heap.blocks": 0}))
    tally.delta()
    assert tally.cycle


def test_a_window_whose_leak_other_frees_hid_is_renewed() -> None:
    # Positive control: a block a run, and another thread's free in the first
    # window (step -1) nets 1 over 3 runs; the fresh window keeps 3.
    kinds, attempts = _check([1, 1, 1, 1, -1, 1] + [1] * 10)
    assert kinds == [FindingKind.LEAK]
    assert attempts == 1 + SLOPE_WARMUPS + 3 + 3


def test_a_cache_that_stops_filling_is_no_finding_after_renewals() -> None:
    # Negative control: a cache that takes one more block now and then, then
    # no more: the windows keep 1, 1, then nothing.
    kinds, attempts = _check([1, 1, 1, 1, 0, 0, 1, 0, 0])
    assert kinds == []
    assert attempts == 1 + SLOPE_WARMUPS + 3 * 3


def test_windows_are_renewed_at_most_renewals_times() -> None:
    # A count that keeps netting 1 over 3 runs: noise, judged after the last window.
    kinds, attempts = _check([1, 1, 1] + [1, 0, 0] * 10)
    assert kinds == []
    assert attempts == 1 + SLOPE_WARMUPS + 3 * (1 + RENEWALS)
