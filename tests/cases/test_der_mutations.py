"""The DER layer on real material: tree shape, exact round trips, and every named mutation."""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

import pytest
from cryptography import x509

from tlsleak.cases import der
from tlsleak.cases.choices import RandomChoices, SimplestChoices
from tlsleak.cases.der import (
    MUTATIONS,
    Node,
    TagClass,
    encode_length,
    fix_lengths,
    mutate,
    parse,
    serialise,
    tlv,
)
from tlsleak.cases.material import Encoding, KeyFormat, KeyType, cert_bytes, identity, key_bytes

Simplest = SimplestChoices


def _cert(key_type: KeyType = KeyType.EC_P256) -> bytes:
    return cert_bytes(identity(key_type, issued=False).leaf, Encoding.DER)


def _walk(nodes: list[Node]) -> list[tuple[Node, int]]:
    """Every node with its depth, in document order."""
    out: list[tuple[Node, int]] = []
    stack = [(n, 0) for n in reversed(nodes)]
    while stack:
        node, depth = stack.pop()
        out.append((node, depth))
        stack.extend((c, depth + 1) for c in reversed(node.children or []))
    return out


def _tags(nodes: list[Node] | None) -> list[bytes]:
    assert nodes is not None
    return [n.tag for n in nodes]


def _material() -> list[tuple[str, bytes]]:
    blobs = []
    for key_type in KeyType:
        ident = identity(key_type)
        certs = [("leaf", ident.leaf), ("root", ident.root), *[("ca", c) for c in ident.chain]]
        for name, cert in certs:
            blobs.append((f"{key_type.value}-{name}-der", cert_bytes(cert, Encoding.DER)))
        for key_format in KeyFormat:
            if key_format.fits(key_type):
                password = b"pw" if key_format is KeyFormat.PKCS8_ENCRYPTED else b""
                key = key_bytes(ident.key, key_format, Encoding.DER, password)
                blobs.append((f"{key_type.value}-{key_format.value}-der", key))
    blobs.append(("ec-p256-leaf-pem", cert_bytes(identity(KeyType.EC_P256).leaf)))
    return blobs


MATERIAL = _material()


# --- building blocks ------------------------------------------------------------------------------


def test_encode_length_and_tlv() -> None:
    assert encode_length(0) == b"\x00"
    assert encode_length(127) == b"\x7f"
    assert encode_length(128) == b"\x81\x80"
    assert encode_length(256) == b"\x82\x01\x00"
    assert tlv(0x02, b"\x05") == b"\x02\x01\x05"
    with pytest.raises(ValueError, match="negative"):
        encode_length(-1)
    with pytest.raises(ValueError, match="single-octet"):
        tlv(0x100, b"")


# --- the model on real material -------------------------------------------------------------------


@pytest.mark.parametrize("key_type", list(KeyType))
def test_a_certificate_parses_into_its_asn1_shape(key_type: KeyType) -> None:
    cert = identity(key_type, issued=False).leaf
    nodes = parse(cert_bytes(cert, Encoding.DER))
    assert len(nodes) == 1
    outer = nodes[0]
    assert outer.universal == 16
    assert outer.constructed
    assert outer.tag_class is TagClass.UNIVERSAL
    assert _tags(outer.children) == [b"\x30", b"\x30", b"\x03"]  # tbs, algorithm, signature
    assert outer.children is not None
    tbs = outer.children[0]
    # version, serial, signature, issuer, validity, subject, key, extensions
    assert _tags(tbs.children) == [b"\xa0", b"\x02", *[b"\x30"] * 5, b"\xa3"]
    assert tbs.children is not None
    version, serial, validity = tbs.children[0], tbs.children[1], tbs.children[4]
    assert version.tag_class is TagClass.CONTEXT
    assert version.tag_number == 0
    assert version.children is not None
    assert version.children[0].content == b"\x02"  # v3
    assert int.from_bytes(serial.content, "big", signed=True) == cert.serial_number
    assert validity.children is not None
    assert [t.content for t in validity.children] == [b"250101000000Z", b"450101000000Z"]


def test_wrapped_der_is_descended_into_and_opaque_bytes_are_not() -> None:
    (outer,) = parse(_cert(KeyType.EC_P256))
    assert outer.children is not None
    signature = outer.children[2]
    # An ECDSA signature is DER (SEQUENCE of r and s) inside the BIT STRING.
    assert signature.prefix == b"\x00"
    assert signature.children is not None
    assert _tags(signature.children[0].children) == [b"\x02", b"\x02"]
    tbs = outer.children[0]
    assert tbs.children is not None
    extensions = tbs.children[7].children
    assert extensions is not None
    for extension in extensions[0].children or []:
        value = (extension.children or [])[-1]
        assert value.universal == 4, extension
        assert value.children is not None, extension
    # Negative control: an RSA signature is random bytes and stays a leaf.
    (rsa_outer,) = parse(_cert(KeyType.RSA2048))
    assert rsa_outer.children is not None
    rsa_signature = rsa_outer.children[2]
    assert rsa_signature.children is None
    assert len(rsa_signature.content) == 257


@pytest.mark.parametrize(("name", "blob"), MATERIAL, ids=[n for n, _ in MATERIAL])
def test_material_round_trips_exactly_and_is_already_der(name: str, blob: bytes) -> None:
    nodes = parse(blob)
    assert serialise(nodes) == blob
    if name.endswith("-der"):
        assert not any(n.is_raw for n, _ in _walk(nodes))
        fix_lengths(nodes)  # DER already: nothing to repair
        assert serialise(nodes) == blob


# --- leniency: what is kept as it was -------------------------------------------------------------


def test_a_length_that_claims_too_much_is_kept_and_the_node_takes_what_there_is() -> None:
    data = b"\x30\x05\x02\x01\x01"
    (node,) = parse(data)
    assert node.length == b"\x05"
    assert _tags(node.children) == [b"\x02"]
    assert serialise([node]) == data
    fix_lengths([node])
    assert serialise([node]) == b"\x30\x03\x02\x01\x01"


def test_indefinite_lengths_keep_their_end_of_contents_until_fixed() -> None:
    data = b"\x30\x80\x02\x01\x05\x00\x00\x04\x00"
    nodes = parse(data)
    assert _tags(nodes) == [b"\x30", b"\x04"]
    assert nodes[0].length == b"\x80"
    assert _tags(nodes[0].children) == [b"\x02", b"\x00"]
    assert serialise(nodes) == data
    fix_lengths(nodes)
    assert serialise(nodes) == b"\x30\x03\x02\x01\x05\x04\x00"


def test_non_minimal_lengths_survive_the_round_trip() -> None:
    data = b"\x04\x81\x01\xff\x02\x83\x00\x00\x01\x07"
    nodes = parse(data)
    assert [n.length for n in nodes] == [b"\x81\x01", b"\x83\x00\x00\x01"]
    assert serialise(nodes) == data
    fix_lengths(nodes)
    assert serialise(nodes) == b"\x04\x01\xff\x02\x01\x07"


@pytest.mark.parametrize(
    ("data", "raw"),
    [
        (b"\x02\x01\x05\x30\x84\x00", b"\x30\x84\x00"),  # length octets cut short
        (b"\x02\x01\x05\x1f\x81", b"\x1f\x81"),  # multi-byte tag cut short
        (b"\x02\x01\x05\x04\xff\x00", b"\x04\xff\x00"),  # the reserved length octet
        (b"\x02\x01\x05\x30", b"\x30"),  # a tag and nothing else
        (b"\x02\x01\x05\x1f" + b"\x81" * 16 + b"\x01\x00", b"\x1f" + b"\x81" * 16 + b"\x01\x00"),
    ],
)
def test_an_unreadable_header_turns_the_rest_into_one_raw_node(data: bytes, raw: bytes) -> None:
    nodes = parse(data)
    assert len(nodes) == 2
    assert nodes[1].is_raw
    assert nodes[1].content == raw
    assert nodes[1].tag_class is None
    assert nodes[1].tag_number is None
    assert serialise(nodes) == data


def test_multi_byte_tags_are_read() -> None:
    (node,) = parse(b"\xbf\x81\x00\x00")
    assert node.tag == b"\xbf\x81\x00"
    assert node.tag_class is TagClass.CONTEXT
    assert node.constructed
    assert node.tag_number == 128
    assert node.universal is None
    assert node.children == []


def test_a_tree_built_by_hand_is_serialised_with_computed_lengths() -> None:
    integer = Node(b"\x02", content=b"\x05")
    tree = Node(b"\x30", children=[integer, Node(b"\x05")])
    assert serialise([tree]) == tlv(0x30, tlv(0x02, b"\x05") + tlv(0x05, b""))
    integer.length = b"\x09"  # a lie, written as told
    assert serialise([tree])[2:4] == b"\x02\x09"
    assert "2 children" in repr(tree)
    assert "raw" in repr(Node.raw(b"x"))


def test_deep_trees_built_by_hand_do_not_recurse() -> None:
    node = Node(b"\x05")
    for _ in range(20_000):
        node = Node(b"\x30", children=[node])
    data = serialise([node])
    assert data.endswith(b"\x05\x00")
    fix_lengths([node])
    assert serialise([node]) == data
    repr(node)


# --- fix_lengths on real material -----------------------------------------------------------------


def test_fix_lengths_repairs_a_certificate_whose_serial_changed() -> None:
    nodes = parse(_cert())
    assert nodes[0].children is not None
    tbs = nodes[0].children[0]
    assert tbs.children is not None
    serial = tbs.children[1]
    new_serial = 0x0102030405060708090A0B0C0D0E0F1011121314
    serial.content = new_serial.to_bytes(20, "big")
    stale = serialise(nodes)  # every length still says what it said
    with pytest.raises(ValueError, match="error parsing asn1 value"):
        x509.load_der_x509_certificate(stale)
    fix_lengths(nodes)
    assert x509.load_der_x509_certificate(serialise(nodes)).serial_number == new_serial


# --- mutations ------------------------------------------------------------------------------------


def test_the_registry_is_named_and_described() -> None:
    names = list(MUTATIONS)
    assert names[0] == "length-too-short"
    assert names[-1] == der.RAW_BYTES
    for name, mutation in MUTATIONS.items():
        assert mutation.name == name
        assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)+", name)
        assert mutation.description
        assert "\n" not in mutation.description


def test_the_simplest_choices_give_the_simplest_mutation() -> None:
    cert = _cert()
    out, name = mutate(cert, Simplest())
    size = len(cert) - 4  # 30 82 xx xx
    assert name == "length-too-short"
    assert out == b"\x30\x82" + (size - 1).to_bytes(2, "big") + cert[4:]


_INT = tlv(0x02, b"\x05")
_OID = tlv(0x06, b"\x2a\x03")
_BITS = tlv(0x03, b"\x00\xff")
_UTC = tlv(0x17, b"250101000000Z")
_GEN = tlv(0x18, b"20250101000000Z")
_PARTS = [_INT, _OID, _BITS, _UTC, _GEN]
DOC = tlv(0x30, b"".join(_PARTS))
_BODY = DOC[2:]


def _doc(**replace: bytes) -> bytes:
    """DOC with some elements replaced (by position name), lengths recomputed."""
    parts = dict(zip(["int", "oid", "bits", "utc", "gen"], _PARTS, strict=True))
    parts.update(replace)
    return tlv(0x30, b"".join(parts.values()))


# What each mutation does to DOC with the simplest choices: its first node (the
# outer SEQUENCE, or the first element of the right type), its first options.
SIMPLEST = {
    "length-too-short": b"\x30" + bytes([len(_BODY) - 1]) + _BODY,
    "length-too-long": b"\x30" + bytes([len(_BODY) + 1]) + _BODY,
    "length-long-form": b"\x30\x81" + bytes([len(_BODY)]) + _BODY,
    "length-leading-zeros": b"\x30\x82\x00" + bytes([len(_BODY)]) + _BODY,
    "length-indefinite": b"\x30\x80" + _BODY + b"\x00\x00",
    "truncate-at-node": b"",
    "drop-node": b"",
    "duplicate-node": DOC + DOC,
    "reorder-children": tlv(0x30, _OID + _INT + _BITS + _UTC + _GEN),
    "trailing-data": DOC + b"\x00",
    "tag-swap-universal": b"\x31" + DOC[1:],
    "tag-flip-constructed": b"\x10" + DOC[1:],
    "tag-context-specific": b"\xa0" + DOC[1:],
    "tag-high-form": b"\x3f\x10" + DOC[1:],
    "nest-deep": tlv(0x30, DOC),
    "integer-zero": _doc(int=tlv(0x02, b"\x00")),
    "integer-empty": _doc(int=tlv(0x02, b"")),
    "integer-negative": _doc(int=tlv(0x02, b"\xff")),
    "integer-leading-zeros": _doc(int=tlv(0x02, b"\x00\x05")),
    "integer-huge": _doc(int=tlv(0x02, b"\x01" + bytes(999))),
    "oid-empty": _doc(oid=tlv(0x06, b"")),
    "oid-bad-continuation": _doc(oid=tlv(0x06, b"\x2a\x83")),
    "oid-unknown-arc": _doc(oid=tlv(0x06, b"\x2a\x03\x00")),
    "oid-long-arc": _doc(oid=tlv(0x06, b"\x2a\x03\x81" + b"\x80" * 8 + b"\x00")),
    "bitstring-unused-over-7": _doc(bits=tlv(0x03, b"\x08\xff")),
    "bitstring-unused-no-data": _doc(bits=tlv(0x03, b"\x01")),
    "time-no-z": _doc(utc=tlv(0x17, b"250101000000")),
    "time-bad-digits": _doc(utc=tlv(0x17, b"a50101000000Z")),
    "time-month-13": _doc(utc=tlv(0x17, b"251301000000Z")),
    "time-feb-30": _doc(utc=tlv(0x17, b"250230000000Z")),
    "time-fraction": _doc(utc=tlv(0x17, b"250101000000.5Z")),
    "raw-bytes": b"\x31" + DOC[1:],  # no raw node: the fallback flips the first bit
}


def test_every_mutation_has_a_worked_example() -> None:
    assert set(SIMPLEST) == set(MUTATIONS)


@pytest.mark.parametrize("name", list(SIMPLEST))
def test_each_mutation_does_what_it_says_with_the_simplest_choices(name: str) -> None:
    assert mutate(DOC, Simplest(), mutations=[name]) == (SIMPLEST[name], name)


@pytest.mark.parametrize("name", list(MUTATIONS))
def test_each_mutation_applies_to_a_certificate_and_changes_it(name: str) -> None:
    cert = _cert()
    reported = set()
    for seed in range(30):
        out, got = mutate(cert, RandomChoices(random.Random(seed)), mutations=[name])
        assert out != cert
        assert got in (name, der.RAW_BYTES)
        reported.add(got)
    assert name in reported


@pytest.mark.parametrize(
    "name",
    [
        "length-too-short",
        "length-too-long",
        "length-leading-zeros",
        "length-indefinite",
        "truncate-at-node",
        "drop-node",
        "trailing-data",
        "tag-swap-universal",
        "tag-flip-constructed",
        "tag-context-specific",
        "tag-high-form",
        "nest-deep",
    ],
)
def test_damage_to_the_outer_sequence_is_rejected_by_cryptography(name: str) -> None:
    cert = _cert()
    # Negative control: the round trip itself is accepted.
    assert x509.load_der_x509_certificate(serialise(parse(cert))).serial_number
    out, got = mutate(cert, Simplest(), mutations=[name])  # lands on the outer SEQUENCE
    assert got == name
    with pytest.raises(ValueError, match="error parsing asn1 value"):
        x509.load_der_x509_certificate(out)


# Mutations that leave every length in the output consistent (on DER input),
# and, as a control, ones whose very point is a length fix_lengths would change.
_CONSISTENT = [
    "drop-node",
    "duplicate-node",
    "reorder-children",
    "nest-deep",
    "tag-swap-universal",
    "tag-context-specific",
    "tag-high-form",
    "integer-zero",
    "integer-negative",
    "integer-leading-zeros",
    "integer-huge",
    "oid-bad-continuation",
    "oid-long-arc",
    "bitstring-unused-over-7",
    "bitstring-unused-no-data",
    "time-no-z",
    "time-fraction",
]
_INCONSISTENT = ["length-too-long", "length-long-form", "length-leading-zeros"]


@pytest.mark.parametrize("name", _CONSISTENT + _INCONSISTENT)
def test_a_mutation_deep_in_the_tree_keeps_the_outer_lengths_consistent(name: str) -> None:
    cert = _cert(KeyType.RSA2048)
    repaired = 0
    for seed in range(20):
        out, got = mutate(cert, RandomChoices(random.Random(seed)), mutations=[name])
        assert got == name
        nodes = parse(out)
        fix_lengths(nodes)
        if name in _CONSISTENT:
            assert serialise(nodes) == out, seed
        repaired += serialise(nodes) != out
    if name in _INCONSISTENT:
        # Not every time: a lie inside an extension's OCTET STRING makes it no
        # longer wrap DER, so the new parse keeps it as bytes that fix_lengths
        # doesn't look into.
        assert repaired >= 10


def test_a_changed_integer_deep_inside_is_what_the_parser_trips_on() -> None:
    cert = _cert()
    out, got = mutate(cert, Simplest(), mutations=["integer-leading-zeros"])
    # The first INTEGER is the version inside [0]: 02 01 02 -> 02 02 00 02.
    assert got == "integer-leading-zeros"
    assert b"\xa0\x04\x02\x02\x00\x02" in out
    assert len(out) == len(cert) + 1
    # Every length around it is right: the parser gets as far as the version.
    with pytest.raises(ValueError, match=r"InvalidValue.*TbsCertificate::version"):
        x509.load_der_x509_certificate(out)


def test_a_mutation_that_would_change_nothing_falls_back_to_raw_bytes() -> None:
    twins = tlv(0x30, tlv(0x02, b"\x05") * 2)  # swapping equal children changes nothing
    out, name = mutate(twins, Simplest(), mutations=["reorder-children"])
    assert name == der.RAW_BYTES
    assert out == b"\x31" + twins[1:]


def test_a_tag_no_longer_than_the_bound_is_read() -> None:
    data = b"\x1f" + b"\x81" * 15 + b"\x01\x00"  # 16 octets after the first
    (node,) = parse(data)
    assert node.tag == data[:-1]
    assert node.length == b"\x00"


@pytest.mark.parametrize("bad", [["no-such-mutation"], "length-too-short", []])
def test_a_bad_selection_is_the_callers_bug(bad: Sequence[str]) -> None:
    with pytest.raises(ValueError, match="mutations"):
        mutate(_cert(), Simplest(), mutations=bad)


# --- bounds ---------------------------------------------------------------------------------------


def _big_inputs() -> list[tuple[str, bytes]]:
    mib = 1 << 20
    nested = b"".join(tlv(0x04, tlv(0x30, tlv(0x02, b"\x01"))) for _ in range(mib // 7))
    return [
        ("random", random.Random(7).randbytes(mib)),
        ("indefinite", b"\x30\x80" * (mib // 2)),
        ("small-elements", b"\x02\x01\x00" * (mib // 3)),
        ("wrapped-der", nested),
        ("one-huge-octet-string", tlv(0x04, bytes(mib))),
        ("certificates", _cert() * (mib // len(_cert()))),
    ]


@pytest.mark.parametrize(("label", "data"), _big_inputs(), ids=[n for n, _ in _big_inputs()])
def test_a_mebibyte_is_parsed_within_the_bounds_and_mutated(label: str, data: bytes) -> None:
    nodes = parse(data)
    assert serialise(nodes) == data
    walked = _walk(nodes)
    elements = [n for n, _ in walked if not n.is_raw]
    assert len(elements) <= der.MAX_NODES
    assert max(depth for _, depth in walked) <= der.MAX_DEPTH + 1  # + a raw remainder
    for seed in range(3):
        out, name = mutate(data, RandomChoices(random.Random(seed)))
        assert out != data
        assert name in MUTATIONS
        assert len(out) <= len(data) + der.MAX_GROWTH
