"""The fuzzer's custom mutator: whole cases changed the way configurations break."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import replace

import pytest

from tlsleak.cases.case import InitCase, decode
from tlsleak.cases.choices import RandomChoices
from tlsleak.cases.material import Encoding, KeyType, cert_bytes, identity
from tlsleak.cases.mutator import (
    OPERATIONS,
    custom_crossover,
    custom_mutator,
    mutate_blob,
    mutate_case,
    mutate_fail_alloc,
)
from tlsleak.targets import Status
from tlsleak.targets.pyopenssl import PyOpenSSLTarget


def _names(case: InitCase, donor: InitCase, n: int = 400) -> Counter[str]:
    names: Counter[str] = Counter()
    for seed in range(n):
        choices = RandomChoices(random.Random(seed))
        _out, name = mutate_case(case.encode(), choices, other=donor.encode())
        names[name.split(":")[0].split("@")[0]] += 1
    return names


def test_every_operation_is_used(valid_case: InitCase, bad_key_case: InitCase) -> None:
    names = _names(valid_case, bad_key_case)
    kinds = {"pem", "der", "material", "crossover", "splice", "mode", "password", "server-name"}
    assert kinds <= set(names), names
    assert len(OPERATIONS) == 7


def test_mutations_keep_labels_and_change_the_case(valid_case: InitCase) -> None:
    labelled = valid_case.with_labels("empty-cert")
    changed = 0
    for seed in range(100):
        out, _name = mutate_case(labelled.encode(), RandomChoices(random.Random(seed)))
        assert out.labels == ("empty-cert",)
        changed += out != labelled
    assert changed > 80  # a few no-ops (material already there, same mode twice) at most


def test_der_blobs_get_der_mutations_and_pem_blobs_pem_ones() -> None:
    ident = identity(KeyType.EC_P256)
    der_cert = cert_bytes(ident.leaf, Encoding.DER)
    pem_cert = cert_bytes(ident.leaf)
    for seed in range(30):
        _out, name = mutate_blob(der_cert, RandomChoices(random.Random(seed)))
        assert name.startswith("der:")
        _out, name = mutate_blob(pem_cert, RandomChoices(random.Random(seed)))
        assert name.startswith(("pem:", "der:"))


def test_structure_aware_mutation_reaches_steps_past_the_certificate(
    bad_cert_case: InitCase,
) -> None:
    # Positive control: from a case rejected at the certificate, mutations
    # (valid material swapped in, then a damaged key) reach the later steps.
    # Negative control: libFuzzer-style random byte flips of the same input
    # stay at the certificate step or before.
    target = PyOpenSSLTarget()
    rng = random.Random(7)
    structured: set[str] = set()
    flipped: set[str] = set()
    for _ in range(150):
        data = bad_cert_case.encode()
        for _ in range(3):
            case, _name = mutate_case(data, RandomChoices(rng))
            data = case.encode()
        structured.add(str(target.run(decode(data)).step))
        raw = bytearray(bad_cert_case.encode())
        for _ in range(3):
            raw[rng.randrange(len(raw))] = rng.randrange(256)
        flipped.add(str(target.run(decode(bytes(raw))).step))
    later = {"key", "check-key", "chain", "connection", "server-name", "None"}
    assert structured & later
    assert not flipped & (later - {"None"})


def test_custom_mutator_respects_max_size(valid_case: InitCase) -> None:
    def byte_mutate(data: bytes, max_size: int) -> bytes:
        return data[:max_size]

    data = valid_case.encode()
    for seed in range(50):
        out = custom_mutator(data, 64, seed, byte_mutate=byte_mutate)
        assert len(out) <= 64
        big = custom_mutator(data, 1 << 20, seed, byte_mutate=byte_mutate)
        assert decode(big).encode() == big or big == data  # canonical, or the byte share


def test_custom_crossover_takes_a_blob_from_the_other_input(
    valid_case: InitCase, bad_key_case: InitCase
) -> None:
    a, b = InitCase(cert=b"A" * 10), bad_key_case
    taken = 0
    for seed in range(40):
        out = decode(custom_crossover(a.encode(), b.encode(), 1 << 20, seed))
        taken += out.key == b.key or out.ca == b.ca or out.cert != a.cert
    assert taken > 10
    assert len(custom_crossover(valid_case.encode(), b.encode(), 10, 1)) <= 10


@pytest.mark.parametrize("data", [b"", b"\xff" * 1000, bytes(range(256)) * 40])
def test_any_input_is_mutated(data: bytes) -> None:
    for seed in range(20):
        case, name = mutate_case(data, RandomChoices(random.Random(seed)))
        assert isinstance(case, InitCase)
        assert name


def test_mutated_input_with_pyopenssl_stays_a_verdict(valid_case: InitCase) -> None:
    target = PyOpenSSLTarget()
    for seed in range(60):
        case, name = mutate_case(valid_case.encode(), RandomChoices(random.Random(seed)))
        assert target.run(case).status is not Status.ERROR or "password" in name, name


# --- the fail point (tlsleak fuzz --fail-alloc) -------------------------------------------


def test_without_fail_alloc_the_fail_point_is_never_touched(valid_case: InitCase) -> None:
    pointed = replace(valid_case, fail_alloc=-3)
    for seed in range(200):
        out, name = mutate_case(pointed.encode(), RandomChoices(random.Random(seed)))
        assert out.fail_alloc == -3
        assert not name.startswith("fail-alloc")
        plain, _name = mutate_case(valid_case.encode(), RandomChoices(random.Random(seed)))
        assert plain.fail_alloc is None


def test_without_fail_alloc_the_draws_are_those_of_before(valid_case: InitCase) -> None:
    # The same seed gives the same mutation whether or not a point is carried.
    pointed = replace(valid_case, fail_alloc=7)
    for seed in range(50):
        a, name_a = mutate_case(valid_case.encode(), RandomChoices(random.Random(seed)))
        b, name_b = mutate_case(pointed.encode(), RandomChoices(random.Random(seed)))
        assert name_a == name_b
        assert b == replace(a, fail_alloc=7)


def test_with_fail_alloc_points_are_set_moved_and_cleared(valid_case: InitCase) -> None:
    names: Counter[str] = Counter()
    signs: Counter[bool] = Counter()
    data = valid_case.encode()
    for seed in range(2000):
        out, name = mutate_case(data, RandomChoices(random.Random(seed)), fail_alloc=True)
        names[name if name.startswith("fail-alloc") else "other"] += 1
        if out.fail_alloc is not None:
            signs[out.fail_alloc > 0] += 1
        data = out.encode()  # a walk, as the fuzzer's corpus makes one
        assert decode(data) == out
    assert {"fail-alloc:set", "fail-alloc:nudge", "fail-alloc:new", "fail-alloc:clear"} <= set(
        names
    )
    assert names["other"] > sum(n for k, n in names.items() if k != "other")  # blobs still lead
    assert signs[True]
    assert signs[False]


def test_a_nudge_stays_at_its_end_of_the_run(valid_case: InitCase) -> None:
    for point in (1, -1, 3, -3):
        pointed = replace(valid_case, fail_alloc=point)
        for seed in range(200):
            out, name = mutate_fail_alloc(pointed, RandomChoices(random.Random(seed)))
            if name == "fail-alloc:nudge":
                assert out.fail_alloc is not None
                assert (out.fail_alloc > 0) == (point > 0)


def test_the_custom_mutator_reaches_the_fail_point_only_when_asked(valid_case: InitCase) -> None:
    def bytes_kept(data: bytes, _max: int) -> bytes:
        return data

    data = valid_case.encode()
    asked = [
        decode(custom_mutator(data, 1 << 20, seed, byte_mutate=bytes_kept, fail_alloc=True))
        for seed in range(200)
    ]
    assert sum(c.fail_alloc is not None for c in asked) > 20
    plain = [
        decode(custom_mutator(data, 1 << 20, seed, byte_mutate=bytes_kept)) for seed in range(200)
    ]
    assert all(c.fail_alloc is None for c in plain)


def test_without_fail_alloc_the_atheris_entries_drop_a_point(valid_case: InitCase) -> None:
    # A byte flip may set bit 1; the structure-aware output is then what it was before
    # points existed, so a campaign without --fail-alloc makes the inputs it always made.
    def libfuzzer_own(_data: bytes, _max: int) -> bytes:
        return b""  # libFuzzer's byte mutation: not the structure-aware output

    pointed = replace(valid_case, fail_alloc=5).encode()
    other = replace(valid_case, cert=b"").encode()
    for seed in range(100):
        out = custom_mutator(pointed, 1 << 20, seed, byte_mutate=libfuzzer_own)
        assert out == b"" or decode(out).fail_alloc is None
        assert decode(custom_crossover(pointed, other, 1 << 20, seed)).fail_alloc is None
        kept = custom_crossover(pointed, other, 1 << 20, seed, fail_alloc=True)
        assert decode(kept).fail_alloc == 5
