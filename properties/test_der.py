"""The DER layer is total and lossless: any bytes parse, round-trip and mutate."""

from __future__ import annotations

import random

import pytest
from hypothesis import find, given, settings
from hypothesis import strategies as st
from hypothesis.strategies import DrawFn

from tlsleak.cases import der
from tlsleak.cases.choices import DrawChoices, RandomChoices, SimplestChoices
from tlsleak.cases.der import MUTATIONS, fix_lengths, mutate, parse, serialise, tlv
from tlsleak.cases.material import Encoding, KeyFormat, KeyType, cert_bytes, identity, key_bytes

_NAMES = list(MUTATIONS)


def _check(data: bytes, out: bytes, name: str) -> None:
    assert isinstance(out, bytes)
    assert out != data
    assert name in MUTATIONS
    assert len(out) <= len(data) + der.MAX_GROWTH


# --- DER-ish inputs: nested tlv() so mutations land on structure ----------------------------------

_PRIMITIVE = [0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x0A, 0x0C, 0x13, 0x16, 0x17, 0x18, 0x80, 0x82]
_CONSTRUCTED = [0x30, 0x31, 0xA0, 0xA3]

_leaves = st.one_of(
    st.builds(tlv, st.sampled_from(_PRIMITIVE), st.binary(max_size=24)),
    st.integers(-(2**70), 2**70).map(
        lambda n: tlv(0x02, n.to_bytes(n.bit_length() // 8 + 1, "big", signed=True))
    ),
    st.sampled_from(
        [
            tlv(0x06, bytes.fromhex("2a864886f70d01010b")),  # sha256WithRSAEncryption
            tlv(0x17, b"250101000000Z"),
            tlv(0x18, b"20450101000000Z"),
            tlv(0x03, b"\x00\x05\xa0"),
            tlv(0x05, b""),
        ]
    ),
)


def _wrap(children: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    lists = st.lists(children, max_size=4).map(b"".join)
    return st.one_of(
        st.builds(tlv, st.sampled_from(_CONSTRUCTED), lists),
        children.map(lambda inner: tlv(0x04, inner)),  # wrapped DER, as in extensions
        children.map(lambda inner: tlv(0x03, b"\x00" + inner)),  # and in keys
    )


der_ish = st.recursive(_leaves, _wrap, max_leaves=24)


def _material() -> list[bytes]:
    blobs = [cert_bytes(identity(kt).leaf, Encoding.DER) for kt in KeyType]
    blobs.append(key_bytes(identity(KeyType.EC_P256).key, KeyFormat.SEC1, Encoding.DER))
    return blobs


# --- round trip -----------------------------------------------------------------------------------


@given(st.binary(max_size=4096))
def test_any_bytes_round_trip_exactly(data: bytes) -> None:
    assert serialise(parse(data)) == data


@given(der_ish)
def test_der_round_trips_fully_parsed_and_fix_lengths_changes_nothing(data: bytes) -> None:
    nodes = parse(data)
    assert serialise(nodes) == data
    stack = list(nodes)
    while stack:
        node = stack.pop()
        assert not node.is_raw
        stack.extend(node.children or [])
    fix_lengths(nodes)
    assert serialise(nodes) == data


# --- mutate is total ------------------------------------------------------------------------------


@given(st.binary(max_size=2048), st.data())
def test_any_bytes_mutate_under_draw_choices(data: bytes, draw: st.DataObject) -> None:
    out, name = mutate(data, DrawChoices(draw.draw))
    _check(data, out, name)


@given(st.binary(max_size=2048), st.integers(0, 2**64))
def test_any_bytes_mutate_under_random_choices(data: bytes, seed: int) -> None:
    out, name = mutate(data, RandomChoices(random.Random(seed)))
    _check(data, out, name)
    # Reproducible from the seed: the fuzzer relies on it.
    assert mutate(data, RandomChoices(random.Random(seed))) == (out, name)


@given(der_ish, st.data())
def test_der_mutates_under_draw_choices(data: bytes, draw: st.DataObject) -> None:
    out, name = mutate(data, DrawChoices(draw.draw))
    _check(data, out, name)
    assert serialise(parse(out)) == out


@given(der_ish, st.integers(0, 2**64))
def test_der_mutates_under_random_choices(data: bytes, seed: int) -> None:
    out, name = mutate(data, RandomChoices(random.Random(seed)))
    _check(data, out, name)


@given(der_ish, st.lists(st.sampled_from(_NAMES), min_size=1, max_size=3), st.data())
def test_a_selection_is_honoured_or_the_fallback_is_named(
    data: bytes, names: list[str], draw: st.DataObject
) -> None:
    out, name = mutate(data, DrawChoices(draw.draw), mutations=names)
    _check(data, out, name)
    assert name in (*names, der.RAW_BYTES)


@given(st.sampled_from(_material()), st.data())
def test_real_material_mutates(data: bytes, draw: st.DataObject) -> None:
    out, name = mutate(data, DrawChoices(draw.draw))
    _check(data, out, name)
    assert name != der.RAW_BYTES  # a certificate or key always offers structure


# --- deep nesting ---------------------------------------------------------------------------------


def _nested_definite(levels: int) -> bytes:
    """``levels`` SEQUENCEs around a NULL, lengths correct, built without quadratic copying."""
    headers = []
    size = 2
    for _ in range(levels):
        header = b"\x30" + der.encode_length(size)
        headers.append(header)
        size += len(header)
    return b"".join(reversed(headers)) + b"\x05\x00"


DEEP = {
    "definite": _nested_definite(10_000),
    "indefinite": b"\x30\x80" * 10_000,
    "lying": b"\x30\x84\x7f\xff\xff\xff" * 10_000,
    "wrapped": b"\x04\x02" * 10_000,
}


@pytest.mark.parametrize("kind", list(DEEP))
@settings(max_examples=10)
@given(draw=st.data(), seed=st.integers(0, 2**32))
def test_deep_nesting_neither_recurses_nor_raises(
    kind: str, draw: st.DataObject, seed: int
) -> None:
    data = DEEP[kind]
    nodes = parse(data)
    assert serialise(nodes) == data
    for choices in (DrawChoices(draw.draw), RandomChoices(random.Random(seed))):
        out, name = mutate(data, choices)
        _check(data, out, name)
    fix_lengths(nodes)
    serialise(nodes)


# --- shrinking ------------------------------------------------------------------------------------


Simplest = SimplestChoices


@st.composite
def _mutated(draw: DrawFn, data: bytes, names: tuple[str, ...]) -> tuple[bytes, str]:
    return mutate(data, DrawChoices(draw), mutations=names)


# Selections whose mutations make the same number of decisions: Hypothesis
# shrinks towards fewer decisions before smaller ones, so across the whole
# registry a mutation without parameters can win over the first one.
@pytest.mark.parametrize(
    "names",
    [("length-too-short", "length-too-long"), ("time-feb-30",)],
)
def test_draw_choices_shrink_to_the_simplest_mutation(names: tuple[str, ...]) -> None:
    cert = cert_bytes(identity(KeyType.ED25519, issued=False).leaf, Encoding.DER)
    smallest = find(
        _mutated(cert, names), lambda _: True, settings=settings(database=None, max_examples=20)
    )
    assert smallest == mutate(cert, Simplest(), mutations=names)
    if names == ("time-feb-30",):  # the first time there is: notBefore
        assert b"\x17\x0d250230000000Z" in smallest[0]
