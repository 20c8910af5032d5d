"""The case encoding: total decoding and a canonical encoding, for any bytes."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

from tlsleak.cases.case import InitCase, decode, encode, resolve_fail_alloc
from tlsleak.strategies import init_cases


@given(st.binary(max_size=4096))
def test_any_bytes_decode_and_reencode_to_the_same_case(data: bytes) -> None:
    case = decode(data)
    assert decode(encode(case)) == case


@given(init_cases(max_defects=2))
def test_generated_cases_round_trip(case: InitCase) -> None:
    assert decode(encode(case)) == case


@given(
    init_cases(max_defects=1),
    st.one_of(st.none(), st.integers(1, 1 << 27), st.integers(-(1 << 27), -1)),
)
def test_cases_with_a_fail_point_round_trip(case: InitCase, point: int | None) -> None:
    with_point = replace(case, fail_alloc=point)
    assert decode(encode(with_point)) == with_point


@given(st.binary(max_size=512), st.integers(-(1 << 27), 1 << 27).filter(bool))
def test_any_bytes_with_a_fail_point_decode_canonically(data: bytes, point: int) -> None:
    # Setting bit 1 of any input makes a fail point of whatever follows the labels.
    case = decode(bytes([(data[:1] or b"\0")[0] | 0x02]) + data[1:])
    assert case.fail_alloc is not None
    assert decode(encode(case)) == case
    assert decode(encode(replace(case, fail_alloc=point))).fail_alloc == point


@given(st.integers(-(1 << 27), 1 << 27).filter(bool), st.integers(0, 100_000))
def test_a_fail_point_always_names_an_allocation_of_the_run(point: int, count: int) -> None:
    resolved = resolve_fail_alloc(point, count)
    assert resolved is None if count == 0 else 1 <= resolved <= count  # type: ignore[operator]
