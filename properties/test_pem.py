"""The PEM model is lossless and ``mutate`` is total, for any bytes and any decisions."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from tlsleak.cases.choices import Choices, DrawChoices, RandomChoices
from tlsleak.cases.material import KeyFormat, KeyType, cert_bytes, identity, key_bytes
from tlsleak.cases.pem import LABELS, MUTATIONS, Block, join, mutate, split

_IDENT = identity(KeyType.EC_P256)
_MATERIAL = [
    cert_bytes(_IDENT.leaf),
    key_bytes(_IDENT.key, KeyFormat.SEC1),
    key_bytes(identity(KeyType.RSA2048).key, KeyFormat.PKCS1),
]

# Fragments that, glued together at random, make text PEM's parser has to
# think about: armor pieces, header syntax, base64, line endings, junk.
_FRAGMENTS = [
    b"-----BEGIN ",
    b"-----END ",
    b"-----",
    b"CERTIFICATE",
    b"EC PRIVATE KEY",
    b"\n",
    b"\r\n",
    b"\r",
    b"Proc-Type: 4,ENCRYPTED",
    b"DEK-Info: AES-128-CBC,00",
    b":",
    b"MIIB",
    b"QUFB",
    b"=",
    b" ",
    b"\t",
    b"\0",
    b"\xff",
]
pem_ish = st.lists(st.sampled_from(_FRAGMENTS) | st.binary(max_size=8), max_size=60).map(b"".join)

_EOL = st.sampled_from([b"\n", b"\r\n"])
_LABEL = st.sampled_from(LABELS)


@st.composite
def pem_blocks(draw: st.DrawFn) -> tuple[bytes, list[bytes]]:
    """Well-formed PEM text (blocks, optional headers, text between) and its labels."""
    out, labels = [], []
    for _ in range(draw(st.integers(0, 4))):
        eol, label = draw(_EOL), draw(_LABEL)
        labels.append(label)
        out.append(draw(st.sampled_from([b"", b"text" + eol, eol])))
        out.append(b"-----BEGIN " + label + b"-----" + eol)
        if draw(st.booleans()):
            out.append(b"Proc-Type: 4,ENCRYPTED" + eol + b"DEK-Info: DES-CBC,00" + eol + eol)
        lines = draw(st.lists(st.sampled_from([b"MIIB", b"QUFB", b"QQ=="]), max_size=5))
        out.extend(line + eol for line in lines)
        out.append(b"-----END " + label + b"-----" + eol)
    return b"".join(out), labels


@given(st.binary(max_size=2048))
def test_split_join_is_lossless_for_any_bytes(data: bytes) -> None:
    assert join(split(data)) == data


@given(pem_ish)
def test_split_join_is_lossless_for_pem_ish_bytes(data: bytes) -> None:
    assert join(split(data)) == data


@given(pem_blocks())
def test_split_finds_every_block_of_well_formed_pem(case: tuple[bytes, list[bytes]]) -> None:
    data, labels = case
    parts = split(data)
    assert join(parts) == data
    blocks = [p for p in parts if isinstance(p, Block)]
    assert [(b.label, b.end_label) for b in blocks] == [(label, label) for label in labels]
    for block in blocks:
        assert b"-----" not in block.body
        assert all(name in (b"Proc-Type", b"DEK-Info") for name, _ in block.fields)


def _check(data: bytes, out: bytes, name: str) -> None:
    assert isinstance(out, bytes)
    assert name in MUTATIONS or name == "unchanged"
    # The documented bound on the output, without a body_mutator.
    assert len(out) <= 2 * len(data) + 256 * 1024


@given(st.binary(max_size=2048) | pem_ish | st.sampled_from(_MATERIAL), st.data())
def test_mutate_is_total_with_drawn_decisions(data: bytes, draws: st.DataObject) -> None:
    out, name = mutate(data, DrawChoices(draws.draw))
    _check(data, out, name)


@given(pem_blocks(), st.data())
def test_mutate_is_total_on_well_formed_pem(
    case: tuple[bytes, list[bytes]], draws: st.DataObject
) -> None:
    data = case[0]
    out, name = mutate(data, DrawChoices(draws.draw))
    _check(data, out, name)


@given(st.binary(max_size=2048) | pem_ish | st.sampled_from(_MATERIAL), st.integers(0, 2**32))
def test_mutate_is_total_and_reproducible_with_a_seeded_rng(data: bytes, seed: int) -> None:
    out, name = mutate(data, RandomChoices(random.Random(seed)))
    _check(data, out, name)
    assert mutate(data, RandomChoices(random.Random(seed))) == (out, name)


@given(
    pem_ish | st.sampled_from(_MATERIAL),
    st.lists(st.sampled_from([*MUTATIONS, "der"]), unique=True),
    st.binary(max_size=512),
    st.text(max_size=20),
    st.data(),
)
def test_a_body_mutator_returning_garbage_is_tolerated(
    data: bytes, names: list[str], garbage: bytes, garbage_name: str, draws: st.DataObject
) -> None:
    def garbage_mutator(der: bytes, choices: Choices) -> tuple[bytes, str]:
        return garbage, garbage_name

    out, name = mutate(data, DrawChoices(draws.draw), mutations=names, body_mutator=garbage_mutator)
    assert isinstance(out, bytes)
    if name.startswith("der:"):
        assert name == "der:" + garbage_name
        assert "der" in names
    else:
        assert name in names or name == "unchanged"
