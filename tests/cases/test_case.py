"""The case model and its byte encoding."""

from __future__ import annotations

import os

import pytest

from tlsleak.cases.case import InitCase, Mode, decode, encode, resolve_fail_alloc


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


# --- the fail point (tlsleak fuzz --fail-alloc) -------------------------------------------


@pytest.mark.parametrize("point", [1, 2, 64, 65, -1, -2, -64, 1 << 27, -(1 << 27)])
def test_a_fail_point_round_trips(point: int) -> None:
    case = InitCase(Mode.CLIENT, b"ca", b"cert", labels=("x",), fail_alloc=point)
    assert decode(encode(case)) == case
    assert decode(encode(case)).fail_alloc == point


def test_a_fail_point_is_flag_bit_1_and_a_zigzag_varint_after_the_labels() -> None:
    plain = encode(InitCase(cert=b"c", labels=("t",)))
    assert encode(InitCase(cert=b"c", labels=("t",), fail_alloc=1)) == b"\x02" + plain[1:] + b"\x00"
    assert encode(InitCase(fail_alloc=-1))[-1:] == b"\x01"
    assert encode(InitCase(fail_alloc=2))[-1:] == b"\x02"
    assert encode(InitCase(fail_alloc=-65))[-2:] == b"\x81\x01"


def test_cases_without_a_fail_point_encode_as_before() -> None:
    # Every corpus file written before the field existed has bit 1 clear.
    case = InitCase(Mode.CLIENT, b"C", b"x" * 200, b"", b"", b"", ("t",))
    assert encode(case)[0] == 0x01
    assert decode(encode(case)).fail_alloc is None


def test_a_set_bit_without_its_varint_is_the_first_allocation() -> None:
    # Total: a byte mutation that sets bit 1 alone gives a case, canonically encoded.
    case = decode(b"\x02")
    assert case.fail_alloc == 1
    assert decode(encode(case)) == case
    assert decode(b"\xfe").fail_alloc == 1
    assert decode(b"\xfc").fail_alloc is None


def test_an_invalid_fail_point_is_refused() -> None:
    for bad in (0, (1 << 27) + 1, -(1 << 27) - 1):
        with pytest.raises(ValueError, match="fail_alloc"):
            InitCase(fail_alloc=bad)


def test_without_fail_alloc_keeps_everything_else() -> None:
    case = InitCase(Mode.CLIENT, b"ca", labels=("a",), fail_alloc=-4)
    assert case.without_fail_alloc() == InitCase(Mode.CLIENT, b"ca", labels=("a",))
    plain = InitCase()
    assert plain.without_fail_alloc() is plain


@pytest.mark.parametrize(
    ("point", "count", "resolved"),
    [
        (1, 10, 1),
        (10, 10, 10),
        (11, 10, 1),
        (25, 10, 5),
        (-1, 10, 10),
        (-10, 10, 1),
        (-11, 10, 10),
        (7, 1, 1),
        (-7, 1, 1),
        (3, 0, None),
        (-3, 0, None),
    ],
)
def test_a_fail_point_resolves_within_the_run(point: int, count: int, resolved: int | None) -> None:
    assert resolve_fail_alloc(point, count) == resolved
