"""Error-path guidance: features from verdicts, and features onto coverage counters."""

from __future__ import annotations

import pytest

from tlsleak.cases.case import InitCase
from tlsleak.check.oracle import Oracle, Verdict
from tlsleak.fuzz.guidance import (
    FeatureCounters,
    alloc_bucket,
    features,
    is_alloc_bucket,
    is_error_pair,
)
from tlsleak.openssl.errors import OpenSSLError
from tlsleak.targets import Outcome, Status, resolve_target


def _verdict(step: str | None, *errors: tuple[str, str], allocations: int | None = None) -> Verdict:
    status = Status.REJECTED if step else Status.ACCEPTED
    outcome = Outcome(status, step, tuple(OpenSSLError(a, b) for a, b in errors), "")
    return Verdict(InitCase(), outcome, (), allocations)


def test_alloc_buckets_are_half_octaves() -> None:
    assert [alloc_bucket(n) for n in range(4)] == [0, 1, 2, 3]
    # 4-5 | 6-7 | 8-11 | 12-15 | 16-23 | 24-31
    assert [alloc_bucket(n) for n in (4, 5, 6, 7, 8, 11, 12, 15, 16, 23, 24)] == [
        4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9,
    ]  # fmt: skip
    # Monotone, and a bucket never spans more than +50%.
    buckets = [alloc_bucket(n) for n in range(1, 5000)]
    assert buckets == sorted(buckets)
    for b in set(buckets):
        members = [n for n in range(1, 5000) if alloc_bucket(n) == b]
        assert max(members) < 1.5 * min(members) + 1


def test_features_tell_error_paths_apart() -> None:
    pem = _verdict("certificate", ("PEM routines", "no start line"), allocations=40)
    asn1 = _verdict("certificate", ("asn1 encoding routines", "wrong tag"), allocations=40)
    deeper = _verdict("certificate", ("PEM routines", "no start line"), allocations=400)
    accepted = _verdict(None, allocations=900)
    assert features(pem) != features(asn1)  # another reason: another branch in C
    assert features(pem) != features(deeper)  # same reason, much further in
    assert features(pem) == features(_verdict("certificate", ("PEM routines", "no start line"),
                                              allocations=41))  # fmt: skip
    assert {f for f in features(pem) if is_error_pair(f)} == {
        "err certificate PEM routines no start line"
    }
    assert sum(map(is_alloc_bucket, features(accepted))) == 1
    assert any(is_error_pair(f) and "accepted" in f for f in features(accepted))
    assert not any(is_alloc_bucket(f) for f in features(_verdict("key")))  # nothing counted


def test_features_of_real_attempts(bad_cert_case: InitCase, valid_case: InitCase) -> None:
    with Oracle(resolve_target("pyopenssl")) as oracle:
        bad = oracle.check(bad_cert_case)
        good = oracle.check(valid_case)
    assert bad.allocations
    assert good.allocations
    assert features(bad) != features(good)
    assert any(f.startswith("err certificate") for f in features(bad))


def test_new_features_get_new_counters_and_old_ones_the_same() -> None:
    hits: list[int] = []
    counters = FeatureCounters([10, 11, 12], hits.append)
    counters.hit(["a", "b"])
    counters.hit(["b", "a"])
    assert hits == [10, 11, 11, 10]
    counters.hit(["c"])
    assert hits[-1] == 12
    # Past the pool, features share counters by a stable hash.
    counters.hit(["d"])
    assert hits[-1] in (10, 11, 12)
    again = FeatureCounters([10, 11, 12], hits.append)
    again.hit(["a", "b", "c", "d"])
    assert hits[-1] == counters.counter_for("d")


def test_an_empty_pool_is_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        FeatureCounters([], lambda _i: None)
