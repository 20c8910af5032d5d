"""Valid key and certificate material, made with ``cryptography`` and cached.

Generating a 2048-bit RSA key takes tens of milliseconds, far too slow to do per
Hypothesis example or per fuzz input.  So keys come from a small per-process
pool (``POOL_SIZE`` keys per type, made on first use), certificates are built
once per (key type, shape, pool slot), and serialised forms are cached too.
Everything a strategy draws is then a cheap choice among cached bytes.

The material is also *deterministic*: the same bytes in every process, so a
corpus grown twice with one seed holds the same files, and a Hypothesis
example replayed from its database is the very case that failed.  EC and
Edwards keys are derived from a hash of their slot's name; RSA keys are built
from primes found by a seeded search (:func:`rsa_primes`), stored below
because the search takes about half a second per key in Python (a test
re-derives them).  ECDSA signatures are deterministic (RFC 6979), RSA PKCS#1
v1.5 and EdDSA ones are by nature; validity dates are fixed (2025-2045) and
serials derive from the slot.  Encrypted keys are written here
(:func:`encrypt_pkcs8`) rather than by cryptography, which draws salt and IV
at random.

These keys are test material, public by construction: never use them for
anything but testing.

The material is valid on purpose: the defects in :mod:`tlsleak.cases.defects` damage
it in named ways.
"""

from __future__ import annotations

import base64
import datetime
import enum
import hashlib
import math
import random
from dataclasses import dataclass
from functools import cache
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives import padding as sym_padding
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tlsleak.cases import der

__all__ = [
    "POOL_SIZE",
    "Encoding",
    "Identity",
    "KeyFormat",
    "KeyType",
    "PrivateKey",
    "cert_bytes",
    "encrypt_pkcs8",
    "identity",
    "key_bytes",
    "pem_armor",
    "private_key",
    "rsa_primes",
    "sign",
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


def _seed(key_type: KeyType, slot: int, size: int) -> bytes:
    name = f"tlsleak material v1 {key_type.value} slot {slot}".encode()
    return hashlib.shake_256(name).digest(size)


_SMALL_PRIMES: Final = [p for p in range(3, 5000) if all(p % d for d in range(2, int(p**0.5) + 1))]


def _probable_prime(n: int, rng: random.Random, rounds: int = 20) -> bool:
    if math.gcd(n, math.prod(_SMALL_PRIMES)) != 1:
        return False
    d, s = n - 1, 0
    while not d & 1:
        d, s = d >> 1, s + 1
    for _ in range(rounds):  # Miller-Rabin
        x = pow(rng.randrange(2, n - 2), d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = pow(x, 2, n)
            if x == n - 1:
                break
        else:
            return False
    return True


def rsa_primes(slot: int, bits: int = 1024) -> tuple[int, int]:
    """The seeded search behind the RSA pool: two ``bits``-bit primes for ``slot``.

    Each candidate has its top two bits set (so the modulus has exactly
    ``2 * bits`` bits) and ``p - 1`` prime to 65537.  Slow in Python, so the
    results for the pool are stored in ``_RSA_PRIMES``.
    """
    rng = random.Random(_seed(KeyType.RSA2048, slot, 32))
    found: list[int] = []
    while len(found) < 2:
        candidate = rng.getrandbits(bits) | (3 << (bits - 2)) | 1
        if math.gcd(candidate - 1, _RSA_E) == 1 and _probable_prime(candidate, rng):
            found.append(candidate)
    return found[0], found[1]


_RSA_E: Final = 65537

# rsa_primes(slot) for slot in range(POOL_SIZE); tests/cases/test_material.py checks it.
_RSA_PRIMES: Final[tuple[tuple[int, int], ...]] = (
    (
        int(
            "ee546a3745f2cb3f08ebe938a148041bc4f1cb0fae7912e3a7a5ad27af123667"
            "60f933fe78f7d584d11e51c345ec694968de0305442a5b97e88df21932f9114e"
            "6754c1ebc95b4a9fc10857352384050d724990bfbd96efa1a27fe9b22b0d3037"
            "8a4f4aa4b2b8f98a031eaeda943d0ecf1ebbb2475c87b03308935b519a9df911",
            16,
        ),
        int(
            "f160e9ba2c2b70c0073ac49470b25d39c92cd8ba07b9ed3b184655191292c7c6"
            "9ebf9660505a405291c0f908227aa21856fc3a19c5ea5ed0f4c7a47c5ef2b0b8"
            "0b8e519e327f5edf7903f8842baa68b746eda5bee84a548c88466e2d13fce495"
            "474a3aa0797f4f168cccff42d59fb32abf6940671f5b98802d982d5b76fc8259",
            16,
        ),
    ),
    (
        int(
            "e0f39a35e305fefcb169b11daa53871b14f6b3dfa23d9996ffe175b5e5e9fabd"
            "5878ad944b038b1baeb23d589b9b5c90043a3bd1f7aeb873b00e1752fabc26be"
            "b874a908c44986d76803a268db38ad3cc67b19145ba30fbdf90d2767e76eb6cd"
            "b3f49a2f620979b57eb2b59a2e78dfd6e98e595e5a42ed1d590fd97561e58b77",
            16,
        ),
        int(
            "c6b3f5960ed162cd721439eccdbc9933f635c3efc28a24fe0ad37e87f87c4ded"
            "e621bdf4117615cf7f5afb7d9bcd955324178c1e97c2da1a2e178d0d60a485a9"
            "383f747eb90b77861fb9841cfa3adb41f0deb17cc39b619caf34d415c2f9bb63"
            "fb26e43e8badb3cb45ddc1e0ec6573e56213db5973937ca9221865813a35f885",
            16,
        ),
    ),
    (
        int(
            "dba458d990a289670b3aec29c0141a497a45c31d63be5bd745facfa371b2b92f"
            "d8981cfa4b0815cf15b23127ece95a365743b7879a3d72d0202c3b1592f8b201"
            "3223a50ba7c453d9669570e96f5c10102a75427a6824fb05dc85e4960303dbe4"
            "df2ce1b1359a0efcfdf6aca1baf313212b020487c85ffaf424c6d1faea106a79",
            16,
        ),
        int(
            "c4894d67c79a9bd17ff9e0273b35cb6c394fc847e9911bd95ded965c3b620d0c"
            "24fa2d399785490d747c8fa3e51bed4271fe1c70ecf65897b143a6f0d7c75473"
            "aa9d3c8893b84ee6a3bf0df1b517f32d1412b42c885d9fb07fd3bdbe12412761"
            "1ebc9f08d99aeff9c7483e4763c69003fa5def829dd3e44f525bd3e60d3e1333",
            16,
        ),
    ),
)


def _rsa_key(slot: int) -> rsa.RSAPrivateKey:
    p, q = _RSA_PRIMES[slot]
    d = pow(_RSA_E, -1, (p - 1) * (q - 1))
    public = rsa.RSAPublicNumbers(_RSA_E, p * q)
    numbers = rsa.RSAPrivateNumbers(
        p, q, d, rsa.rsa_crt_dmp1(d, p), rsa.rsa_crt_dmq1(d, q), rsa.rsa_crt_iqmp(p, q), public
    )
    return numbers.private_key()


def _ec_key(curve: ec.EllipticCurve, order: int, slot: int, key_type: KeyType) -> PrivateKey:
    secret = int.from_bytes(_seed(key_type, slot, 64)) % (order - 1) + 1
    return ec.derive_private_key(secret, curve)


# Group orders, from SEC 2 (https://www.secg.org/sec2-v2.pdf), 2.4.2 and 2.5.1.
_P256_ORDER: Final = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
_P384_ORDER: Final = int(
    "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF"
    "581A0DB248B0A77AECEC196ACCC52973",
    16,
)


@cache
def private_key(key_type: KeyType, slot: int = 0) -> PrivateKey:
    """The pooled private key of ``key_type`` in ``slot`` (0 <= slot < POOL_SIZE).

    The same key in every process (see the module docstring).
    """
    if not 0 <= slot < POOL_SIZE:
        raise ValueError(f"slot must be in [0, {POOL_SIZE}), not {slot}")
    if key_type is KeyType.RSA2048:
        return _rsa_key(slot)
    if key_type is KeyType.EC_P256:
        return _ec_key(ec.SECP256R1(), _P256_ORDER, slot, key_type)
    if key_type is KeyType.EC_P384:
        return _ec_key(ec.SECP384R1(), _P384_ORDER, slot, key_type)
    if key_type is KeyType.ED25519:
        return ed25519.Ed25519PrivateKey.from_private_bytes(_seed(key_type, slot, 32))
    return ed448.Ed448PrivateKey.from_private_bytes(_seed(key_type, slot, 57))


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
    return sign(builder, issuer_key)


def sign(builder: x509.CertificateBuilder, key: PrivateKey) -> x509.Certificate:
    """Sign ``builder`` with ``key``: SHA-256 (none for EdDSA), deterministically.

    RFC 6979 nonces for ECDSA, so the signature, and the certificate's bytes,
    are the same in every process.
    """
    deterministic = True if isinstance(key, ec.EllipticCurvePrivateKey) else None
    return builder.sign(key, _hash_for(key), ecdsa_deterministic=deterministic)


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
        # Not cryptography's BestAvailableEncryption: it draws salt and IV at
        # random, and the material must be the same in every process.
        info = key.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, encryption
        )
        encrypted = encrypt_pkcs8(info, password)
        if encoding is Encoding.DER:
            return encrypted
        return pem_armor(b"ENCRYPTED PRIVATE KEY", encrypted)
    if key_format is KeyFormat.PKCS8:
        fmt = serialization.PrivateFormat.PKCS8
    else:
        fmt = serialization.PrivateFormat.TraditionalOpenSSL
    return key.private_bytes(enc, fmt, encryption)


# PBES2 as OpenSSL writes it by default (PKCS#5 v2.1, RFC 8018).
_PBES2_OID: Final = "1.2.840.113549.1.5.13"
_PBKDF2_OID: Final = "1.2.840.113549.1.5.12"
_HMAC_SHA256_OID: Final = "1.2.840.113549.2.9"
_AES256_CBC_OID: Final = "2.16.840.1.101.3.4.1.42"
_PBKDF2_ROUNDS: Final = 2048


def encrypt_pkcs8(info: bytes, password: bytes) -> bytes:
    """``info`` as an EncryptedPrivateKeyInfo (PBES2: PBKDF2-HMAC-SHA256, AES-256-CBC).

    Salt and IV derive from the content, so a key encrypts to the same bytes
    in every process.
    """
    digest = hashlib.sha256(b"tlsleak pbes2\0" + password + b"\0" + info).digest()
    salt, iv = digest[:16], digest[16:]
    secret = PBKDF2HMAC(hashes.SHA256(), 32, salt, _PBKDF2_ROUNDS).derive(password)
    padder = sym_padding.PKCS7(128).padder()
    encryptor = Cipher(algorithms.AES(secret), modes.CBC(iv)).encryptor()
    ciphertext = encryptor.update(padder.update(info) + padder.finalize()) + encryptor.finalize()
    prf = der.sequence(der.oid(_HMAC_SHA256_OID), b"\x05\x00")  # NULL parameters
    kdf = der.sequence(
        der.oid(_PBKDF2_OID), der.sequence(der.octet_string(salt), der.integer(_PBKDF2_ROUNDS), prf)
    )
    scheme = der.sequence(der.oid(_AES256_CBC_OID), der.octet_string(iv))
    return der.sequence(
        der.sequence(der.oid(_PBES2_OID), der.sequence(kdf, scheme)), der.octet_string(ciphertext)
    )


def pem_armor(label: bytes, data: bytes) -> bytes:
    """``data`` armored with ``label`` in 64-column lines, as OpenSSL writes it."""
    text = base64.b64encode(data)
    lines = b"\n".join(text[i : i + 64] for i in range(0, len(text), 64))
    return b"-----BEGIN %s-----\n%s\n-----END %s-----\n" % (label, lines, label)
