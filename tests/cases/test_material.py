"""Valid material: deterministic across processes, and the stored RSA primes are derived."""

from __future__ import annotations

import subprocess
import sys

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from tlsleak.cases.material import (
    _RSA_PRIMES,
    POOL_SIZE,
    Encoding,
    KeyFormat,
    KeyType,
    cert_bytes,
    identity,
    key_bytes,
    private_key,
    rsa_primes,
)

_DIGEST = """
import hashlib
from tlsleak.cases.material import Encoding, KeyFormat, KeyType, cert_bytes, identity, key_bytes
h = hashlib.sha256()
for kt in KeyType:
    for issued in (True, False):
        i = identity(kt, issued=issued)
        h.update(cert_bytes(i.leaf) + cert_bytes(i.root) + key_bytes(i.key))
    # Encrypted keys too: salt and IV derive from the key and the password.
    for encoding in Encoding:
        h.update(key_bytes(i.key, KeyFormat.PKCS8_ENCRYPTED, encoding, b"pw"))
print(h.hexdigest())
"""


def test_material_is_the_same_in_every_process() -> None:
    runs = {
        subprocess.run(
            [sys.executable, "-c", _DIGEST], capture_output=True, text=True, check=True
        ).stdout
        for _ in range(2)
    }
    assert len(runs) == 1


def test_stored_rsa_primes_come_from_the_seeded_search() -> None:
    assert tuple(rsa_primes(slot) for slot in range(POOL_SIZE)) == _RSA_PRIMES


@pytest.mark.parametrize("slot", range(POOL_SIZE))
def test_rsa_pool_keys_are_2048_bit_and_distinct(slot: int) -> None:
    key = private_key(KeyType.RSA2048, slot)
    assert isinstance(key, rsa.RSAPrivateKey)
    assert key.key_size == 2048
    others = [private_key(KeyType.RSA2048, s) for s in range(POOL_SIZE) if s != slot]
    assert all(o.private_numbers() != key.private_numbers() for o in others)


@pytest.mark.parametrize("key_type", list(KeyType))
def test_slots_differ_and_leaf_matches_its_key(key_type: KeyType) -> None:
    a, b = identity(key_type, slot=0), identity(key_type, slot=1)
    assert key_bytes(a.key) != key_bytes(b.key)
    assert a.leaf.public_key() == a.key.public_key()
    assert a.chain[0].subject == a.leaf.issuer
    assert a.root.subject == a.chain[0].issuer


def test_formats_that_do_not_fit_are_refused() -> None:
    assert not KeyFormat.PKCS1.fits(KeyType.EC_P256)
    assert not KeyFormat.SEC1.fits(KeyType.RSA2048)
    with pytest.raises(ValueError, match="password"):
        key_bytes(private_key(KeyType.EC_P256), KeyFormat.PKCS8_ENCRYPTED)
    with pytest.raises(ValueError, match="slot"):
        private_key(KeyType.EC_P256, POOL_SIZE)


def test_der_and_pem_hold_the_same_certificate() -> None:
    ident = identity(KeyType.ED25519)
    assert x509.load_der_x509_certificate(cert_bytes(ident.leaf, Encoding.DER)) == ident.leaf
    assert x509.load_pem_x509_certificate(cert_bytes(ident.leaf, Encoding.PEM)) == ident.leaf


def test_encrypted_keys_open_with_their_password_only() -> None:
    from cryptography.hazmat.primitives import serialization

    key = identity(KeyType.EC_P256).key
    for encoding, load in (
        (Encoding.PEM, serialization.load_pem_private_key),
        (Encoding.DER, serialization.load_der_private_key),
    ):
        blob = key_bytes(key, KeyFormat.PKCS8_ENCRYPTED, encoding, b"pw")
        assert load(blob, b"pw").private_numbers() == key.private_numbers()  # type: ignore[union-attr]
        with pytest.raises(ValueError, match="Incorrect password"):
            load(blob, b"not the password")
