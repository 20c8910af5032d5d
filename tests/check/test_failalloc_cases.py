"""A case's own fail point (fuzz --fail-alloc): resolved after a warm-up, found again elsewhere."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tlsleak.cases.case import InitCase
from tlsleak.check.failalloc import FailingRuns, case_runner, check_case, find_again
from tlsleak.check.findings import FailPoint
from tlsleak.check.oracle import Finding, FindingKind, Oracle, Verdict
from tlsleak.targets import Outcome, Status, resolve_target

_REJECTED = Outcome(Status.REJECTED, None, (), "rejected")


class _Counting:
    """An allocation oracle whose runs make ``count`` allocations; ``bug_at`` fails loudly."""

    restarts = 0
    failure: str | None = None

    def __init__(self, count: int, bug_at: int | None = None) -> None:
        self.count = count
        self.bug_at = bug_at
        self.calls: list[tuple[str, bytes, int | None]] = []

    def count_allocations(self, case: InitCase) -> int:
        self.calls.append(("warm", case.encode(), None))
        return self.count

    def check(self, case: InitCase, *, fail_at: int | None = None) -> Verdict:
        self.calls.append(("check", case.encode(), fail_at))
        found = ()
        if fail_at is not None and fail_at == self.bug_at:
            found = (Finding(FindingKind.LEAK, "t", case, _REJECTED, fail_at=fail_at),)
        return Verdict(case, _REJECTED, found)


def test_a_case_without_a_fail_point_is_one_plain_check() -> None:
    oracle = _Counting(10)
    verdict, point = check_case(FailingRuns(oracle), InitCase(cert=b"x"))
    assert point is None
    assert not verdict.findings
    assert [c[0] for c in oracle.calls] == ["check"]
    assert oracle.calls[0][2] is None


@pytest.mark.parametrize(("fail_alloc", "resolved"), [(3, 3), (13, 3), (-1, 10), (-12, 9)])
def test_a_fail_point_fails_its_allocation_after_a_warm_up(fail_alloc: int, resolved: int) -> None:
    oracle = _Counting(10, bug_at=resolved)
    case = InitCase(cert=b"x", fail_alloc=fail_alloc)
    verdict, point = check_case(FailingRuns(oracle), case)
    assert point == FailPoint(resolved, 10)
    assert [f.fail_at for f in verdict.findings] == [resolved]
    # Two clean runs of the case without its point (a fresh process), then the failing
    # one: its findings keep the input as fuzzed, point included.
    plain = InitCase(cert=b"x").encode()
    failing = ("check", case.encode(), resolved)
    assert oracle.calls == [("warm", plain, None), ("warm", plain, None), failing]


def test_cases_that_differ_only_in_their_fail_point_share_the_warm_up() -> None:
    oracle = _Counting(10)
    runs = FailingRuns(oracle)
    check_case(runs, InitCase(cert=b"x", fail_alloc=1))
    oracle.calls.clear()
    check_case(runs, InitCase(cert=b"x", fail_alloc=-4))
    assert [c[0] for c in oracle.calls] == ["warm", "check"]  # one clean run is enough now


def test_a_run_without_allocations_is_checked_plainly() -> None:
    oracle = _Counting(0)
    verdict, point = check_case(FailingRuns(oracle), InitCase(fail_alloc=5))
    assert point is None
    assert oracle.calls[-1][2] is None
    assert verdict.case.fail_alloc == 5


def test_find_again_tries_the_case_point_here_then_the_point_seen_elsewhere() -> None:
    # The worker counted 12 and failed 12 (its -1); here the run counts 10.
    here = _Counting(10, bug_at=10)
    case = InitCase(cert=b"x", fail_alloc=-1)
    again = find_again(FailingRuns(here), case, 12, lambda f: True)
    assert again.found
    assert again.point == FailPoint(10, 10)
    # Anchored at the start, the case's point misses; what the worker failed is tried next.
    there = _Counting(10, bug_at=7)
    again = find_again(FailingRuns(there), InitCase(cert=b"x", fail_alloc=2), 7, lambda f: True)
    assert again.found
    assert again.point == FailPoint(7, 10)
    assert [c[2] for c in there.calls if c[0] == "check"] == [2, 7]


def test_find_again_says_when_nothing_comes_back() -> None:
    oracle = _Counting(10, bug_at=None)
    again = find_again(FailingRuns(oracle), InitCase(fail_alloc=1), 4, lambda f: True)
    assert not again.found
    assert again.point == FailPoint(1, 10)


# --- the fuzz worker's runner, in process on the planted controls -------------------------


@pytest.fixture(scope="module")
def leaky() -> Oracle:
    oracle = Oracle(resolve_target("control-leaky")).start()
    yield oracle  # type: ignore[misc]
    oracle.close()


def test_the_runner_fails_the_allocation_an_input_names(
    leaky: Oracle, valid_case: InitCase
) -> None:
    refused = replace(valid_case, key=b"not a key")
    run = case_runner(leaky, fail_alloc=True)
    verdict, point = run(replace(refused, fail_alloc=-1))
    assert point is not None
    assert point.fail_at == point.warmup_allocations  # -1: the last allocation
    assert all(f.fail_at == point.fail_at for f in verdict.findings)


def test_without_fail_alloc_the_runner_ignores_the_point(
    leaky: Oracle, valid_case: InitCase
) -> None:
    run = case_runner(leaky, fail_alloc=False)
    verdict, point = run(replace(valid_case, fail_alloc=2))
    assert point is None
    assert verdict.case.fail_alloc is None
    assert all(f.fail_at is None for f in verdict.findings)


def test_the_runner_refuses_an_oracle_that_cannot_fail_allocations() -> None:
    oracle = Oracle(resolve_target("control-fixed"), ledgers=["fds"]).start()
    try:
        assert case_runner(oracle, fail_alloc=False) is not None
        with pytest.raises(ValueError, match="--fail-alloc: no ledger"):
            case_runner(oracle, fail_alloc=True)
    finally:
        oracle.close()
