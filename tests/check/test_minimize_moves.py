"""The minimiser's moves (check.shrinkers): each makes the case it says, and only that."""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tlsleak.cases import der
from tlsleak.cases.blobs import pem_blocks
from tlsleak.cases.case import InitCase
from tlsleak.cases.material import (
    Encoding,
    KeyFormat,
    KeyType,
    cert_bytes,
    identity,
    key_bytes,
)
from tlsleak.check.shrinkers import (
    Candidate,
    block_drops,
    der_edits,
    field_drops,
    swaps,
)


def _made(candidates: list[Candidate]) -> list[InitCase]:
    return [c.make() for c in candidates]


def _public(key_or_cert: bytes) -> bytes:
    """The SubjectPublicKeyInfo of a PEM certificate or (possibly encrypted) PEM key."""
    if b"CERTIFICATE" in key_or_cert:
        public = x509.load_pem_x509_certificate(key_or_cert).public_key()
    else:
        password = b"pw" if b"ENCRYPTED" in key_or_cert else None
        public = serialization.load_pem_private_key(key_or_cert, password).public_key()
    return public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def test_fields_are_emptied_cut_to_a_byte_and_the_chain_dropped() -> None:
    ident = identity(KeyType.EC_P256)
    leaf, chain = cert_bytes(ident.leaf), cert_bytes(ident.chain[0])
    case = InitCase(cert=leaf + chain, key=key_bytes(ident.key), password=b"pw")
    made = _made(field_drops(case))
    assert InitCase(key=case.key, password=b"pw") in made
    assert InitCase(cert=b"-", key=case.key, password=b"pw") in made
    assert InitCase(cert=leaf, key=case.key, password=b"pw") in made  # the chain dropped
    assert InitCase(cert=case.cert, key=case.key) in made
    # Strings are emptied, never cut to a byte here (cutting is the last pass's job).
    assert InitCase(cert=case.cert, key=case.key, password=b"p") not in made


def test_blocks_go_in_halves_then_quarters_then_one_by_one_and_text_before_stays() -> None:
    blocks = [cert_bytes(identity(t, issued=False).leaf) for t in KeyType][:4]
    bundle = b"".join(blocks)
    case = InitCase(ca=b"stray text\n" + bundle)
    candidates = block_drops(case)
    kept = [c.make().ca for c in candidates]
    assert kept[0] == bundle  # the text before the first block, on its own
    runs = [c.saving for c in candidates[1:]]
    # Halves (two blocks), then single blocks; every one keeps the stray text.
    assert runs == [len(blocks[0] + blocks[1]), len(blocks[2] + blocks[3]), *map(len, blocks)]
    assert all(ca.startswith(b"stray text\n") for ca in kept[1:])
    assert kept[1] == b"stray text\n" + blocks[2] + blocks[3]


def test_a_der_drop_repairs_the_lengths_around_it_and_no_others() -> None:
    lying = b"\x02\x81\x01\x05"  # INTEGER 5 with a long-form length: a defect to keep
    inner = der.sequence(lying, der.octet_string(b"x" * 40))
    data = der.sequence(inner, der.integer(7))
    made = {c.make().cert for c in der_edits(InitCase(cert=data))}
    assert der.sequence(der.sequence(lying), der.integer(7)) in made
    assert der.sequence(der.integer(7)) in made  # a whole SEQUENCE member dropped
    assert der.sequence(der.sequence(), der.integer(7)) in made  # a SEQUENCE emptied
    # The long OCTET STRING cut to one octet and to half.
    assert der.sequence(der.sequence(lying, der.octet_string(b"x")), der.integer(7)) in made
    assert der.sequence(der.sequence(lying, der.octet_string(b"x" * 20)), der.integer(7)) in made


def test_der_edits_reach_into_pem_bodies_and_keep_the_label() -> None:
    blob = cert_bytes(identity(KeyType.EC_P256, issued=False).leaf)
    candidates = der_edits(InitCase(cert=blob))
    assert candidates
    for case in _made(candidates[:20]):
        [block] = pem_blocks(case.cert)
        assert block.startswith(b"-----BEGIN CERTIFICATE-----\n")
        assert block.endswith(b"-----END CERTIFICATE-----\n")
        assert len(case.cert) <= len(blob)


def test_a_large_key_and_certificate_are_swapped_for_small_ones_of_the_same_kind() -> None:
    ident = identity(KeyType.RSA2048, issued=False)
    cert = cert_bytes(ident.leaf)
    key = key_bytes(ident.key, KeyFormat.PKCS8_ENCRYPTED, password=b"pw")
    case = InitCase(cert=cert, key=key, password=b"pw")
    made = _made(swaps(case))
    certs = [c.cert for c in made if c.cert != cert]
    keys = [c.key for c in made if c.key != key]
    assert certs
    assert keys
    for small in certs:
        assert small.startswith(b"-----BEGIN CERTIFICATE-----")
        assert len(small) < len(cert)
        x509.load_pem_x509_certificate(small)
    for small in keys:
        assert small.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
        _public(small)  # it decrypts with the case's password
    pairs = [c for c in made if c.cert != cert and c.key != key]
    assert pairs
    for pair in pairs:
        assert _public(pair.cert) == _public(pair.key)


def test_a_swap_keeps_the_pem_label_and_is_only_offered_when_smaller() -> None:
    p384 = identity(KeyType.EC_P384, issued=False).key
    sec1 = key_bytes(p384, KeyFormat.SEC1)
    [swapped] = [c.key for c in _made(swaps(InitCase(key=sec1)))]
    assert swapped.startswith(b"-----BEGIN EC PRIVATE KEY-----")
    assert len(swapped) < len(sec1)
    # An RSA-2048 PKCS#1 key is already as small as its stand-in.
    rsa = key_bytes(identity(KeyType.RSA2048).key, KeyFormat.PKCS1)
    assert swaps(InitCase(key=rsa)) == []
    # DER stays DER.
    der_cert = cert_bytes(identity(KeyType.RSA2048).root, Encoding.DER)
    for case in _made(swaps(InitCase(ca=der_cert))):
        x509.load_der_x509_certificate(case.ca)
