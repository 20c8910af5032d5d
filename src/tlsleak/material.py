"""Valid key and certificate material, made with ``cryptography`` and cached.

Generating a 2048-bit RSA key takes tens of milliseconds, far too slow to do per
Hypothesis example or per fuzz input.  So keys come from a small per-process
pool (``POOL_SIZE`` keys per type, made on first use), certificates are built
once per (key type, shape, pool slot), and serialised forms are cached too.
Everything a strategy draws is then a cheap choice among cached bytes.

The material is valid on purpose: the defects in :mod:`tlsleak.defects` damage
it in named ways.  Validity dates are fixed (2025-2045) and serials are derived
from the slot, so two runs build certificates of the same shape.
"""

from __future__ import annotations

import datetime
import enum
from dataclasses import dataclass
from functools import cache
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "POOL_SIZE",
    "Encoding",
    "Identity",
    "KeyFormat",
    "KeyType",
    "PrivateKey",
    "cert_bytes",
    "identity",
    "key_bytes",
    "private_key",
]

PrivateKey = CertificateIssuerPrivateKeyTypes

#: Keys generated per key type and process.  Two are enough for "a key of the
#: same type that does not match"; more only slows the first use.
POOL_SIZE: Final = 3

_NOT_BEFORE: Final = datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC)
_NOT_AFTER: Final = datetime.datetime(2045, 1, 1, tzinfo=datetime.UTC)


class KeyType(enum.Enum):
    """The key types tlsleak makes material for."""

    RSA2048 = "rsa2048"
    EC_P256 = "ec-p256"
    EC_P384 = "ec-p384"
    ED25519 = "ed25519"
    ED448 = "ed448"


class KeyFormat(enum.Enum):
    """How a private key is serialised."""

    PKCS1 = "pkcs1"  # "RSA PRIVATE KEY": RSA only
    SEC1 = "sec1"  # "EC PRIVATE KEY": EC only
    PKCS8 = "pkcs8"  # "PRIVATE KEY"
    PKCS8_ENCRYPTED = "pkcs8-encrypted"  # "ENCRYPTED PRIVATE KEY": needs a password

    def fits(self, key_type: KeyType) -> bool:
        """Whether a key of ``key_type`` can be written in this format."""
        if self is KeyFormat.PKCS1:
            return key_type is KeyType.RSA2048
        if self is KeyFormat.SEC1:
            return key_type in (KeyType.EC_P256, KeyType.EC_P384)
        return True


class Encoding(enum.Enum):
    """PEM (armored base64) or DER (raw ASN.1)."""

    PEM = "pem"
    DER = "der"


@cache
def private_key(key_type: KeyType, slot: int = 0) -> PrivateKey:
    """The pooled private key of ``key_type`` in ``slot`` (0 <= slot < POOL_SIZE)."""
    if not 0 <= slot < POOL_SIZE:
        raise ValueError(f"slot must be in [0, {POOL_SIZE}), not {slot}")
    if key_type is KeyType.RSA2048:
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if key_type is KeyType.EC_P256:
        return ec.generate_private_key(ec.SECP256R1())
    if key_type is KeyType.EC_P384:
        return ec.generate_private_key(ec.SECP384R1())
    if key_type is KeyType.ED25519:
        return ed25519.Ed25519PrivateKey.generate()
    return ed448.Ed448PrivateKey.generate()


def _hash_for(key: PrivateKey) -> hashes.SHA256 | None:
    # Ed25519/Ed448 sign the message itself; passing a hash is an error.
    if isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey):
        return None
    return hashes.SHA256()


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "tlsleak test material"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _certificate(
    subject: str,
    key: PrivateKey,
    issuer: str,
    issuer_key: PrivateKey,
    serial: int,
    *,
    ca: bool,
    path_length: int | None = None,
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(_NOT_BEFORE)
        .not_valid_after(_NOT_AFTER)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=path_length), critical=True)
    )
    if ca:
        usage = x509.KeyUsage(False, False, False, False, False, True, True, False, False)
        builder = builder.add_extension(usage, critical=True)
    else:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False
        ).add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
    return builder.sign(issuer_key, _hash_for(issuer_key))


@dataclass(frozen=True)
class Identity:
    """A certificate with its key, and what is needed to trust it.

    ``chain`` holds the certificates that go after the leaf in a certificate
    blob (the intermediate for an issued identity, nothing for a self-signed
    one); ``root`` is what goes in the CA blob.
    """

    key_type: KeyType
    leaf: x509.Certificate
    key: PrivateKey
    chain: tuple[x509.Certificate, ...]
    root: x509.Certificate
    root_key: PrivateKey

    @property
    def issued(self) -> bool:
        return bool(self.chain)


@cache
def identity(key_type: KeyType, *, issued: bool = True, slot: int = 0) -> Identity:
    """A cached identity: self-signed, or root -> intermediate -> leaf when ``issued``.

    ``slot`` picks the leaf key from the pool (so two slots give identities
    whose keys differ).  CA keys use the last pool slot, of the same type.
    """
    leaf_key = private_key(key_type, slot)
    serial = 0x7100 + slot * 16 + list(KeyType).index(key_type)
    if not issued:
        leaf = _certificate("localhost", leaf_key, "localhost", leaf_key, serial, ca=False)
        return Identity(key_type, leaf, leaf_key, (), leaf, leaf_key)
    ca_key = private_key(key_type, POOL_SIZE - 1)
    root_name = f"tlsleak root {key_type.value}"
    inter_name = f"tlsleak intermediate {key_type.value}"
    root = _certificate(root_name, ca_key, root_name, ca_key, serial + 1, ca=True, path_length=1)
    inter = _certificate(inter_name, ca_key, root_name, ca_key, serial + 2, ca=True, path_length=0)
    leaf = _certificate("localhost", leaf_key, inter_name, ca_key, serial + 3, ca=False)
    return Identity(key_type, leaf, leaf_key, (inter,), root, ca_key)


@cache
def cert_bytes(cert: x509.Certificate, encoding: Encoding = Encoding.PEM) -> bytes:
    """``cert`` serialised as PEM or DER."""
    enc = serialization.Encoding.PEM if encoding is Encoding.PEM else serialization.Encoding.DER
    return cert.public_bytes(enc)


@cache
def key_bytes(
    key: PrivateKey,
    key_format: KeyFormat = KeyFormat.PKCS8,
    encoding: Encoding = Encoding.PEM,
    password: bytes = b"",
) -> bytes:
    """``key`` serialised; ``password`` is required for (and only used by) PKCS8_ENCRYPTED."""
    enc = serialization.Encoding.PEM if encoding is Encoding.PEM else serialization.Encoding.DER
    encryption: serialization.KeySerializationEncryption = serialization.NoEncryption()
    if key_format is KeyFormat.PKCS8_ENCRYPTED:
        if not password:
            raise ValueError("an encrypted key needs a password")
        encryption = serialization.BestAvailableEncryption(password)
        fmt = serialization.PrivateFormat.PKCS8
    elif key_format is KeyFormat.PKCS8:
        fmt = serialization.PrivateFormat.PKCS8
    else:
        fmt = serialization.PrivateFormat.TraditionalOpenSSL
    return key.private_bytes(enc, fmt, encryption)
