"""Totality of the fuzzer's custom mutator and the mutated_cases strategy.

Any bytes in, a canonical case encoding out, no exception: the custom mutator
runs inside libFuzzer, where an exception ends the campaign.
"""

from __future__ import annotations

import random
from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from tlsleak.cases.case import MAX_FAIL_ALLOC, InitCase, decode
from tlsleak.cases.choices import DrawChoices, RandomChoices
from tlsleak.cases.defects import DEFECTS
from tlsleak.cases.mutator import custom_crossover, custom_mutator, mutate_case
from tlsleak.strategies import MUTATED, init_cases, mutated_cases


def _truncate(data: bytes, max_size: int) -> bytes:
    return data[:max_size]


@given(st.binary(max_size=4096), st.binary(max_size=512), st.data())
def test_mutate_case_is_total_with_drawn_choices(
    data: bytes, other: bytes, draws: st.DataObject
) -> None:
    case, name = mutate_case(data, DrawChoices(draws.draw), other=other)
    assert name
    assert decode(case.encode()) == case


@given(st.binary(max_size=4096), st.integers(0, 2**32 - 1), st.integers(1, 1 << 16))
def test_custom_mutator_is_total_and_fits(data: bytes, seed: int, max_size: int) -> None:
    out = custom_mutator(data, max_size, seed, byte_mutate=_truncate)
    assert len(out) <= max_size


@given(st.binary(max_size=2048), st.binary(max_size=2048), st.integers(0, 2**32 - 1))
def test_custom_crossover_is_total_and_fits(a: bytes, b: bytes, seed: int) -> None:
    out = custom_crossover(a, b, 1024, seed)
    assert len(out) <= 1024


@given(init_cases(max_defects=2), st.integers(0, 2**32 - 1))
def test_mutating_real_cases_gives_canonical_encodings(case: InitCase, seed: int) -> None:
    data = case.encode()
    rng = random.Random(seed)
    for _ in range(5):
        mutated, _name = mutate_case(data, RandomChoices(rng))
        data = mutated.encode()
        assert decode(data).encode() == data


@given(mutated_cases(max_mutations=3))
def test_mutated_cases_say_what_was_done(case: InitCase) -> None:
    mutations = [label for label in case.labels if label.startswith(MUTATED)]
    assert 1 <= len(mutations) <= 3
    assert all(label in DEFECTS for label in case.labels if not label.startswith(MUTATED))


def test_mutated_cases_checks_its_options() -> None:
    for bad in ({"max_mutations": 0}, {"max_mutations": True}, {"base": "cases"}):
        try:
            mutated_cases(**bad).example()  # type: ignore[arg-type]
        except InvalidArgument:
            continue
        raise AssertionError(f"{bad} was accepted")


@given(st.binary(max_size=4096), st.binary(max_size=512), st.data())
def test_mutate_case_with_fail_alloc_is_total_with_drawn_choices(
    data: bytes, other: bytes, draws: st.DataObject
) -> None:
    # Points at either end of their range included: a nudge must stay in it.
    case, name = mutate_case(data, DrawChoices(draws.draw), other=other, fail_alloc=True)
    assert name
    assert decode(case.encode()) == case


@given(
    st.binary(max_size=1024),
    st.sampled_from([1, -1, 2, -2, MAX_FAIL_ALLOC, -MAX_FAIL_ALLOC, MAX_FAIL_ALLOC - 3]),
    st.integers(0, 2**32 - 1),
)
def test_custom_entries_with_fail_alloc_are_total_and_canonical(
    blob: bytes, point: int, seed: int
) -> None:
    data = replace(decode(blob), fail_alloc=point).encode()
    out = custom_mutator(data, 1 << 16, seed, byte_mutate=_truncate, fail_alloc=True)
    assert decode(decode(out).encode()) == decode(out)
    crossed = custom_crossover(data, blob, 1 << 16, seed, fail_alloc=True)
    assert decode(crossed).fail_alloc == point
