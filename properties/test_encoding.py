"""The case encoding: total decoding and a canonical encoding, for any bytes."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tlsleak.cases.case import InitCase, decode, encode
from tlsleak.strategies import init_cases


@given(st.binary(max_size=4096))
def test_any_bytes_decode_and_reencode_to_the_same_case(data: bytes) -> None:
    case = decode(data)
    assert decode(encode(case)) == case


@given(init_cases(max_defects=2))
def test_generated_cases_round_trip(case: InitCase) -> None:
    assert decode(encode(case)) == case
