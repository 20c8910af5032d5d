"""The case model and its byte encoding."""

from __future__ import annotations

import os

import pytest

from tlsleak.cases.case import InitCase, Mode, decode, encode


def test_empty_input_is_an_empty_server_case() -> None:
    assert decode(b"") == InitCase()


def test_round_trip_of_a_full_case() -> None:
    case = InitCase(Mode.CLIENT, b"ca", b"cert" * 100, b"\0key", b"pw", b"example.org", ("a", "b"))
    assert decode(encode(case)) == case
    assert case.encode() == encode(case)


def test_layout_is_the_documented_one() -> None:
    # flags, then (LEB128 length, bytes) for ca, cert, key, password, server_name, labels
    case = InitCase(Mode.CLIENT, b"C", b"x" * 200, b"", b"", b"", ("t",))
    assert (
        encode(case) == b"\x01" + b"\x01C" + b"\xc8\x01" + b"x" * 200 + b"\x00\x00\x00" + b"\x01t"
    )


def test_reserved_flag_bits_are_ignored() -> None:
    assert decode(b"\xfe").mode is Mode.SERVER
    assert decode(b"\xff").mode is Mode.CLIENT


def test_lengths_past_the_end_are_cut() -> None:
    case = decode(b"\x00\x7fabc")
    assert case.ca == b"abc"
    assert case.cert == b""


def test_overlong_varint_is_bounded() -> None:
    # Four continuation bytes: the length read stops there, decoding goes on.
    case = decode(b"\x00\xff\xff\xff\xff" + b"z" * 10)
    assert case.ca == b"z" * 10


@pytest.mark.parametrize("seed", range(200))
def test_decoding_is_total_and_canonical(seed: int) -> None:
    data = os.urandom(seed % 64) if seed % 2 else bytes((seed * 7 + i) % 256 for i in range(seed))
    case = decode(data)
    assert decode(encode(case)) == case


def test_labels_never_hold_commas_or_empties() -> None:
    case = InitCase(labels=("a,b", "", "a", "c"))
    assert decode(encode(case)).labels == ("a", "b", "c")
    assert case.with_labels("c", "d").labels == ("a", "b", "c", "d")


def test_invalid_utf8_labels_decode_stably() -> None:
    data = b"\x00\x00\x00\x00\x00\x00\x03\xffa,"
    case = decode(data)
    assert case.labels == ("\ufffda",)
    assert decode(encode(case)) == case
