"""The defect catalogue: named ways to damage a valid init case.

Each defect is a function that takes Hypothesis's ``draw`` and a :class:`Base`
(a valid case and the material it was made from) and returns a damaged case.
It is declared with :func:`defect`, which registers it under a name derived
from the function's name (``truncated_cert_pem`` -> ``truncated-cert-pem``),
takes the docstring's first line as its one-line description, and makes every
case it returns carry that name in its labels.  The catalogue is
:data:`DEFECTS`, in declaration order; strategies shrink towards its start, so
the simplest defects come first.

Every parameter a defect needs (a cut point, a flipped bit, a garbage blob) is
drawn through ``draw``, so Hypothesis shrinks it like any other value.

``expect`` records what the default ``pyopenssl`` target does with the damaged
case, and ``steps`` where it may reject it.  These are facts about OpenSSL
checked by ``properties/test_defects.py`` over every base a defect applies to,
not wishes: where the outcome depends on the drawn parameters the defect says
:attr:`Expect.EITHER`, and where it depends on the base the defect narrows the
bases it applies to with :class:`Needs`.
"""

from __future__ import annotations

import datetime
import enum
import hashlib
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from functools import cache, lru_cache
from types import MappingProxyType
from typing import Final, Literal, get_args

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric import padding as asym_padding
from cryptography.x509.oid import NameOID
from hypothesis import strategies as st
from hypothesis.strategies import DrawFn

from tlsleak.cases import der
from tlsleak.cases.case import InitCase, Mode, Step
from tlsleak.cases.der import tlv
from tlsleak.cases.material import (
    _P256_ORDER,
    _P384_ORDER,
    POOL_SIZE,
    Encoding,
    Identity,
    KeyFormat,
    KeyType,
    PrivateKey,
    cert_bytes,
    encrypt_pkcs8,
    identity,
    key_bytes,
    pem_armor,
    private_key,
    sign,
)

__all__ = [
    "DEFECTS",
    "Base",
    "Defect",
    "DefectFn",
    "Expect",
    "Field",
    "Needs",
    "defect",
    "expired_leaf",
]

#: The blob a defect damages; ``pair`` is for defects that damage several at once.
Field = Literal["ca", "cert", "key", "password", "server_name", "pair"]
_FIELDS: Final[tuple[str, ...]] = get_args(Field)


class Expect(enum.Enum):
    """What the ``pyopenssl`` target does with a case carrying the defect."""

    #: Always rejected (at one of the defect's ``steps``, when it gives them).
    REJECTED = "rejected"
    #: Always accepted: OpenSSL tolerates the defect.
    ACCEPTED = "accepted"
    #: Rejected or accepted depending on the drawn parameters.
    EITHER = "either"


@dataclass(frozen=True, slots=True)
class Base:
    """A valid case together with what produced it.

    Defects rebuild blobs from ``identity`` and the serialisation choices
    rather than parse ``case``, so they never depend on the exact bytes of
    another defect's output.
    """

    case: InitCase
    identity: Identity
    cert_encoding: Encoding
    key_format: KeyFormat
    key_encoding: Encoding
    #: The key's password (empty unless ``key_format`` is encrypted).
    password: bytes = b""

    @property
    def key_type(self) -> KeyType:
        return self.identity.key_type

    @property
    def issued(self) -> bool:
        return self.identity.issued

    @property
    def mode(self) -> Mode:
        return self.case.mode

    @classmethod
    def build(
        cls,
        key_type: KeyType,
        *,
        issued: bool = False,
        mode: Mode = Mode.SERVER,
        cert_encoding: Encoding = Encoding.PEM,
        key_format: KeyFormat = KeyFormat.PKCS8,
        key_encoding: Encoding = Encoding.PEM,
        password: bytes = b"",
        with_ca: bool = True,
        server_name: bytes = b"",
    ) -> Base:
        """The valid base for these choices (``ValueError`` for an impossible combination).

        The certificate blob is the leaf followed by its chain in PEM; DER can
        hold a single certificate, so a DER blob is the leaf alone.  The CA
        blob is the root in the same encoding.
        """
        if not key_format.fits(key_type):
            raise ValueError(f"a {key_type.value} key can't be written as {key_format.value}")
        encrypted = key_format is KeyFormat.PKCS8_ENCRYPTED
        if encrypted and not password:
            raise ValueError("an encrypted key needs a password")
        if encrypted and key_encoding is Encoding.DER:
            # pyOpenSSL can't decrypt a DER key: such a case is a defect, not a base.
            raise ValueError("an encrypted key must be PEM")
        if password and not encrypted:
            raise ValueError("only an encrypted key takes a password")
        if server_name and mode is not Mode.CLIENT:
            raise ValueError("only client mode uses a server name")
        ident = identity(key_type, issued=issued)
        case = InitCase(
            mode=mode,
            ca=cert_bytes(ident.root, cert_encoding) if with_ca else b"",
            cert=_cert_blob(ident, ident.leaf, cert_encoding),
            key=key_bytes(ident.key, key_format, key_encoding, password),
            password=password,
            server_name=server_name,
        )
        return cls(case, ident, cert_encoding, key_format, key_encoding, password)

    def with_case(self, case: InitCase) -> Base:
        """The same base carrying ``case`` (used to stack defects)."""
        return replace(self, case=case)


def _cert_blob(ident: Identity, leaf: x509.Certificate, encoding: Encoding) -> bytes:
    if encoding is Encoding.DER:
        return cert_bytes(leaf, Encoding.DER)
    return b"".join(cert_bytes(c, Encoding.PEM) for c in (leaf, *ident.chain))


@dataclass(frozen=True, slots=True)
class Needs:
    """The bases a defect applies to; ``None`` in a dimension means any value.

    Declared as sets of values rather than as an opaque predicate so that a
    strategy can draw a fitting base directly instead of filtering.
    """

    key_types: frozenset[KeyType] | None = None
    cert_encodings: frozenset[Encoding] | None = None
    key_formats: frozenset[KeyFormat] | None = None
    key_encodings: frozenset[Encoding] | None = None
    modes: frozenset[Mode] | None = None
    issued: bool | None = None

    def admits(self, base: Base) -> bool:
        """Whether ``base`` is one of the bases these needs describe."""
        return (
            (self.key_types is None or base.key_type in self.key_types)
            and (self.cert_encodings is None or base.cert_encoding in self.cert_encodings)
            and (self.key_formats is None or base.key_format in self.key_formats)
            and (self.key_encodings is None or base.key_encoding in self.key_encodings)
            and (self.modes is None or base.mode in self.modes)
            and (self.issued is None or base.issued is self.issued)
        )


ANY: Final = Needs()
_PEM_CERT: Final = Needs(cert_encodings=frozenset({Encoding.PEM}))
_DER_CERT: Final = Needs(cert_encodings=frozenset({Encoding.DER}))
_PEM_KEY: Final = Needs(key_encodings=frozenset({Encoding.PEM}))
_DER_KEY: Final = Needs(key_encodings=frozenset({Encoding.DER}))
_ENCRYPTED: Final = Needs(key_formats=frozenset({KeyFormat.PKCS8_ENCRYPTED}))
_UNENCRYPTED: Final = Needs(
    key_formats=frozenset({KeyFormat.PKCS1, KeyFormat.SEC1, KeyFormat.PKCS8})
)
_CLIENT: Final = Needs(modes=frozenset({Mode.CLIENT}))

#: The signature of a defect function.
DefectFn = Callable[[DrawFn, Base], InitCase]


@dataclass(frozen=True, slots=True)
class Defect:
    """One entry of the catalogue."""

    #: Lowercase, hyphenated; the label the damaged cases carry.
    name: str
    #: One line saying what is wrong with the damaged case.
    description: str
    field: Field
    expect: Expect
    #: Where the ``pyopenssl`` target may reject the case (``None``: not stated).
    steps: frozenset[str] | None
    #: The bases the defect applies to.
    needs: Needs
    #: Damage a base: checks that the defect applies and labels the result.
    apply: DefectFn

    def applies(self, base: Base) -> bool:
        """Whether this defect can damage ``base``."""
        return self.needs.admits(base)

    @property
    def touches(self) -> frozenset[str]:
        """The case fields the defect may rewrite (stacked defects must not share any).

        A cross-blob defect is counted as touching every key-related field, so
        it is never stacked with a defect that reads what it rewrote.
        """
        if self.field == "pair":
            return frozenset({"cert", "key", "password"})
        return frozenset({self.field})


_REGISTRY: dict[str, Defect] = {}

#: Every defect, by name, in declaration order (simplest first).
DEFECTS: Final[Mapping[str, Defect]] = MappingProxyType(_REGISTRY)


def defect(
    *,
    field: Field,
    expect: Expect,
    steps: Iterable[str] | None = None,
    needs: Needs = ANY,
) -> Callable[[DefectFn], Defect]:
    """Register the decorated function as a defect (see the module docstring)."""
    if field not in _FIELDS:
        raise ValueError(f"field must be one of {_FIELDS}, not {field!r}")
    # Plain strings, not Step members: targets written by users report any
    # string as a step, and a plain set compares and prints the same for both.
    step_set = None if steps is None else frozenset(str(s) for s in steps)

    def register(fn: DefectFn) -> Defect:
        name = fn.__name__.replace("_", "-")
        doc = (fn.__doc__ or "").strip()
        if not doc:
            raise ValueError(f"defect {name} needs a docstring (its description)")
        if name in _REGISTRY:
            raise ValueError(f"defect {name} is declared twice")

        def apply(draw: DrawFn, base: Base) -> InitCase:
            if not needs.admits(base):
                raise ValueError(f"defect {name} does not apply to this base")
            return fn(draw, base).with_labels(name)

        apply.__name__ = fn.__name__
        apply.__doc__ = fn.__doc__
        entry = Defect(name, doc.splitlines()[0], field, expect, step_set, needs, apply)
        _REGISTRY[name] = entry
        return entry

    return register


# --- helpers --------------------------------------------------------------------------------------

_BEGIN: Final = b"-----BEGIN "
_END: Final = b"-----END "
# Characters that are not base64 and that OpenSSL's decoder does not skip as
# whitespace.  Left out: '-' (a run of dashes is armor), '=' (padding ends the
# data rather than being an error) and ':' (OpenSSL takes a line holding one
# for a PEM header, a different code path from a bad character).
_NOT_BASE64: Final = b"!#$%&*.;?@^_~"
# Hidden junk must not end the line, start armor or look like a PEM header.
_JUNK_SAFE: Final = bytes.maketrans(b"\n-:", b" +;")
# What `openssl x509 -text` output is made of, minus the dash.
_TEXT: Final = "abcdefghijklmnopqrstuvwxyz ABCDEFXYZ0123456789:=./,()\n"


def _body_span(block: bytes) -> tuple[int, int]:
    """Where the base64 body of a single PEM block starts and ends."""
    start = block.index(b"\n", block.index(_BEGIN)) + 1
    return start, block.index(_END, start)


def _relabel(block: bytes, label: bytes) -> bytes:
    start, end = _body_span(block)
    return b"-----BEGIN %s-----\n%s-----END %s-----\n" % (label, block[start:end], label)


def _leaf_pem(base: Base) -> bytes:
    return cert_bytes(base.identity.leaf, Encoding.PEM)


def _chain_pem(base: Base) -> bytes:
    return b"".join(cert_bytes(c, Encoding.PEM) for c in base.identity.chain)


def _leaf_der(base: Base) -> bytes:
    return cert_bytes(base.identity.leaf, Encoding.DER)


def _key_der(base: Base) -> bytes:
    return key_bytes(base.identity.key, base.key_format, Encoding.DER, base.password)


def _serialise_key(base: Base, key: PrivateKey, key_type: KeyType) -> bytes:
    """``key`` written the way ``base`` writes its own (format, encoding, password)."""
    fmt = base.key_format if base.key_format.fits(key_type) else KeyFormat.PKCS8
    password = base.password if fmt is KeyFormat.PKCS8_ENCRYPTED else b""
    return key_bytes(key, fmt, base.key_encoding, password)


def _garbage(draw: DrawFn, *, min_size: int = 1, max_size: int = 256) -> bytes:
    """Drawn bytes that can never look like PEM armor to the blob splitter."""
    # Without dashes no "-----BEGIN" can appear, so the blob keeps the shape
    # (PEM or DER) the defect means it to have.
    return draw(st.binary(min_size=min_size, max_size=max_size)).replace(b"-", b"+")


def _flip(draw: DrawFn, der: bytes) -> bytes:
    pos = draw(st.integers(0, len(der) - 1))
    mask = draw(st.integers(1, 255))
    return der[:pos] + bytes([der[pos] ^ mask]) + der[pos + 1 :]


def _nuls_into_body(draw: DrawFn, block: bytes) -> bytes:
    start, end = _body_span(block)
    # Before a base64 character, never just before a newline: OpenSSL reads a
    # line up to its first NUL, so NULs at the end of a line cut nothing (see
    # cert_junk_after_nul) while anywhere else they cut the line short.
    positions = [i for i in range(start, end) if block[i] not in b"\r\n"]
    pos = positions[draw(st.integers(0, len(positions) - 1))]
    count = draw(st.integers(1, 8))
    return block[:pos] + b"\0" * count + block[pos:]


def _bad_base64(draw: DrawFn, block: bytes) -> bytes:
    start, end = _body_span(block)
    # Only replace base64 characters: replacing a newline would merge lines,
    # which is a different (and tolerated) change.
    positions = [i for i in range(start, end) if block[i] not in b"\r\n"]
    pos = positions[draw(st.integers(0, len(positions) - 1))]
    char = draw(st.sampled_from(_NOT_BASE64))
    return block[:pos] + bytes([char]) + block[pos + 1 :]


def _truncate_body(draw: DrawFn, block: bytes) -> bytes:
    start, end = _body_span(block)
    return block[: draw(st.integers(start, end))]


def _truncate_der(draw: DrawFn, der: bytes) -> bytes:
    return der[: draw(st.integers(1, len(der) - 1))]


_EXPIRED_FROM: Final = datetime.datetime(2000, 1, 1, tzinfo=datetime.UTC)
_EXPIRED_UNTIL: Final = datetime.datetime(2001, 1, 1, tzinfo=datetime.UTC)
_FUTURE_FROM: Final = datetime.datetime(2090, 1, 1, tzinfo=datetime.UTC)
_FUTURE_UNTIL: Final = datetime.datetime(2100, 1, 1, tzinfo=datetime.UTC)


def _leaf_copy(
    ident: Identity,
    serial_offset: int,
    not_before: datetime.datetime,
    not_after: datetime.datetime,
    extra: x509.ExtensionType | None = None,
) -> x509.Certificate:
    """A re-signed copy of ``ident``'s leaf (same key, issuer and extensions).

    ``extra``, when given, is added as a critical extension.  The pooled keys
    of :func:`tlsleak.cases.material.private_key` are reused, so the copy still
    matches the identity's key and chains to the same intermediate.
    """
    leaf = ident.leaf
    if ident.issued:
        # material.identity signs the leaf with the CA key, which is also the
        # intermediate's key: the copy chains exactly like the leaf.
        issuer, signer = ident.chain[0].subject, ident.root_key
    else:
        issuer, signer = leaf.subject, ident.key
    builder = (
        x509.CertificateBuilder()
        .subject_name(leaf.subject)
        .issuer_name(issuer)
        .public_key(ident.key.public_key())
        .serial_number(leaf.serial_number + serial_offset)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )
    for ext in leaf.extensions:
        builder = builder.add_extension(ext.value, ext.critical)
    if extra is not None:
        builder = builder.add_extension(extra, critical=True)
    return sign(builder, signer)


@cache
def expired_leaf(ident: Identity) -> x509.Certificate:
    """A copy of ``ident``'s leaf (same key, issuer and extensions) that expired in 2001.

    Built once per identity: signing is the slow part, and the pooled keys of
    :func:`tlsleak.cases.material.private_key` are reused, so the expired leaf still
    matches the identity's key and chains to the same intermediate.
    """
    return _leaf_copy(ident, 0x10000, _EXPIRED_FROM, _EXPIRED_UNTIL)


@cache
def _future_leaf(ident: Identity) -> x509.Certificate:
    """A copy of ``ident``'s leaf that only becomes valid in 2090 (built once per identity)."""
    return _leaf_copy(ident, 0x20000, _FUTURE_FROM, _FUTURE_UNTIL)


@cache
def _critical_unknown_leaf(ident: Identity) -> x509.Certificate:
    """A copy of ``ident``'s leaf with a critical extension of a type nobody knows."""
    leaf = ident.leaf
    unknown = x509.UnrecognizedExtension(x509.ObjectIdentifier(f"{_UNKNOWN_ARC}.1"), b"\x05\x00")
    return _leaf_copy(ident, 0x30000, leaf.not_valid_before_utc, leaf.not_valid_after_utc, unknown)


@cache
def _public_key_bytes(key: PrivateKey, encoding: Encoding) -> bytes:
    enc = serialization.Encoding.PEM if encoding is Encoding.PEM else serialization.Encoding.DER
    return key.public_key().public_bytes(enc, serialization.PublicFormat.SubjectPublicKeyInfo)


def _other_key(base: Base) -> PrivateKey:
    """A pooled key of the base's type that is not the base's key."""
    # Slot 1 is what identity(kt, slot=1) uses; the loop only matters for a
    # base built on a non-default slot.
    for slot in (1, *range(POOL_SIZE)):
        key = private_key(base.key_type, slot)
        if key is not base.identity.key:
            return key
    raise AssertionError("POOL_SIZE must be at least 2")  # pragma: no cover


# --- hand-built DER -------------------------------------------------------------------------------
#
# cryptography refuses to write most of the semantic defects (an even RSA
# modulus, a point off the curve, a version-1 certificate), so they are built
# element by element with der.tlv.  The reader below only takes apart what
# material.py wrote, which is well-formed DER.

_NULL: Final = b"\x05\x00"
# A private arc nobody registered: OpenSSL knows no name for any OID under it.
_UNKNOWN_ARC: Final = "1.3.6.1.4.1.55555"
_RSA_OID: Final = "1.2.840.113549.1.1.1"
_EC_OID: Final = "1.2.840.10045.2.1"
_DSA_OID: Final = "1.2.840.10040.4.1"
_DH_OID: Final = "1.2.840.113549.1.3.1"  # PKCS#3 dhKeyAgreement
_DHX_OID: Final = "1.2.840.10046.2.1"  # X9.42 dhpublicnumber
_EDWARDS_OIDS: Final = {KeyType.ED25519: "1.3.101.112", KeyType.ED448: "1.3.101.113"}


@dataclass(frozen=True, slots=True)
class _Curve:
    oid: str
    #: The prime of the field the coordinates live in.
    prime: int
    order: int
    #: Bytes in a coordinate or a private scalar.
    size: int


_CURVES: Final = {
    # Field primes from SEC 2 (https://www.secg.org/sec2-v2.pdf), 2.4.2 and 2.5.1.
    KeyType.EC_P256: _Curve(
        "1.2.840.10045.3.1.7", 2**256 - 2**224 + 2**192 + 2**96 - 1, _P256_ORDER, 32
    ),
    KeyType.EC_P384: _Curve("1.3.132.0.34", 2**384 - 2**128 - 2**96 + 2**32 - 1, _P384_ORDER, 48),
}

# FIPS 186 DSA domain parameters (1024-bit p, 160-bit q), generated once with
# OpenSSL and stored so the DSA key is the same in every process: q divides
# p - 1 and g has order q.  Fixed numbers cost nothing; generating takes a
# noticeable fraction of a second.
_DSA_P: Final = int(
    "c82d129e1bac26955ba9efe1e3be88ac2b63b8ce7974f90d1a0290394e4b4f14"
    "a8e9941ee0548454f673d0774a394ca0225b2941a85e41789e2f4f5ff91346c5"
    "754cd5d9fc6ab50cddab911a5162c49f83d16c91f7c751cc5305ad0aca7b35b7"
    "5c01ba9090c6b714122fbd408500a2637e79a0193a5270fe75682847b60ecfa3",
    16,
)
_DSA_Q: Final = 0xAF3D14430A38EFBC8A5DB720C6CCAA4F61105215
_DSA_G: Final = int(
    "1331c2f6f3ed74d195762866bd1439c1cf80382988d847502f6b5471c004dc71"
    "e6df4784febe8015af57d94a284b7bf65bebadf13da7b30e03271580a4725035"
    "cda50707982b660c4f643217628f6e3c1ae1f5ac29e5f54fe330a72a2348b234"
    "d4c9d3c2a3b4e8ffd8ea4cdb4a004ed405c9715c7c20dfa169e933d3265273e1",
    16,
)
# The private value of the DSA and DH keys: fixed, like all tlsleak material.
_DSA_X: Final = int.from_bytes(hashlib.shake_256(b"tlsleak dsa key").digest(32)) % (_DSA_Q - 1) + 1


# Signature AlgorithmIdentifiers a certificate's outer algorithm can be set
# to: every one material.py signs with (RSA ones carry NULL parameters).
_SIGNATURE_ALGORITHMS: Final = (
    der.sequence(der.oid("1.2.840.113549.1.1.11"), _NULL),  # sha256WithRSAEncryption
    der.sequence(der.oid("1.2.840.113549.1.1.12"), _NULL),  # sha384WithRSAEncryption
    der.sequence(der.oid("1.2.840.113549.1.1.13"), _NULL),  # sha512WithRSAEncryption
    der.sequence(der.oid("1.2.840.10045.4.3.2")),  # ecdsa-with-SHA256
    der.sequence(der.oid("1.2.840.10045.4.3.3")),  # ecdsa-with-SHA384
    der.sequence(der.oid("1.2.840.10045.4.3.4")),  # ecdsa-with-SHA512
    der.sequence(der.oid("1.3.101.112")),  # Ed25519
    der.sequence(der.oid("1.3.101.113")),  # Ed448
)


def _span(der: bytes, pos: int = 0) -> tuple[int, int]:
    """Where the content of the element at ``pos`` starts, and where the element ends."""
    first = der[pos + 1]
    if first < 0x80:
        return pos + 2, pos + 2 + first
    start = pos + 2 + (first & 0x7F)
    return start, start + int.from_bytes(der[pos + 2 : start])


def _children(der: bytes) -> list[bytes]:
    """The elements (tag, length and content) inside the constructed element ``der``."""
    pos, end = _span(der)
    out = []
    while pos < end:
        _, after = _span(der, pos)
        out.append(der[pos:after])
        pos = after
    return out


def _pkcs8(algorithm: bytes, private: bytes) -> bytes:
    """A PrivateKeyInfo: version 0, the AlgorithmIdentifier and the private key's encoding."""
    return der.sequence(der.integer(0), algorithm, der.octet_string(private))


@lru_cache(maxsize=1024)
def _write_key(base: Base, info: bytes, traditional: bytes | None = None) -> bytes:
    """A hand-built key written the way ``base`` writes its own.

    ``info`` is the key as PKCS#8; ``traditional`` as PKCS#1 or SEC1, used
    when that is the base's format (a key with no such form falls back to
    PKCS#8).  An encrypted base gets the key encrypted with its password.
    """
    fmt = base.key_format
    if fmt is KeyFormat.PKCS1 and traditional is not None:
        der, label = traditional, b"RSA PRIVATE KEY"
    elif fmt is KeyFormat.SEC1 and traditional is not None:
        der, label = traditional, b"EC PRIVATE KEY"
    elif fmt is KeyFormat.PKCS8_ENCRYPTED:
        der, label = encrypt_pkcs8(info, base.password), b"ENCRYPTED PRIVATE KEY"
    else:
        der, label = info, b"PRIVATE KEY"
    return der if base.key_encoding is Encoding.DER else pem_armor(label, der)


def _rsa_numbers(base: Base) -> rsa.RSAPrivateNumbers:
    key = base.identity.key
    if not isinstance(key, rsa.RSAPrivateKey):
        raise TypeError("an RSA defect needs an RSA base")  # pragma: no cover
    return key.private_numbers()


def _write_rsa(base: Base, n: int, e: int, d: int, p: int, q: int, crt: Iterable[int]) -> bytes:
    """An RSAPrivateKey of these numbers, checked for nothing, written as ``base`` writes keys."""
    pkcs1 = der.sequence(der.integer(0), *(der.integer(v) for v in (n, e, d, p, q, *crt)))
    return _write_key(base, _pkcs8(der.sequence(der.oid(_RSA_OID), _NULL), pkcs1), pkcs1)


def _ec_numbers(base: Base) -> tuple[_Curve, int, int, int]:
    """The base's curve, private scalar and public point (x, y)."""
    key = base.identity.key
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise TypeError("an EC defect needs an EC base")  # pragma: no cover
    numbers = key.private_numbers()
    public = numbers.public_numbers
    return _CURVES[base.key_type], numbers.private_value, public.x, public.y


def _point(curve: _Curve, x: int, y: int) -> bytes:
    """An uncompressed point."""
    return b"\x04" + x.to_bytes(curve.size) + y.to_bytes(curve.size)


def _write_ec(base: Base, curve_oid: str, scalar: bytes, point: bytes | None) -> bytes:
    """An ECPrivateKey on the named curve ``curve_oid``, written as ``base`` writes keys.

    SEC1 names the curve inside the key; PKCS#8 in the AlgorithmIdentifier
    only, as OpenSSL writes it.
    """

    def ec_private_key(curve: bytes | None) -> bytes:
        parts = [der.integer(1), der.octet_string(scalar)]
        if curve is not None:
            parts.append(tlv(0xA0, curve))
        if point is not None:
            parts.append(tlv(0xA1, der.bit_string(point)))
        return der.sequence(*parts)

    named = der.oid(curve_oid)
    info = _pkcs8(der.sequence(der.oid(_EC_OID), named), ec_private_key(None))
    return _write_key(base, info, ec_private_key(named))


def _tbs_fields(cert: x509.Certificate) -> list[bytes]:
    """The fields of ``cert``'s TBSCertificate: version, serial, signature, ..., extensions."""
    return _children(cert.tbs_certificate_bytes)


def _sign_raw(key: PrivateKey, data: bytes) -> bytes:
    """``data`` signed as :func:`tlsleak.cases.material.sign` signs a certificate."""
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(data, asym_padding.PKCS1v15(), hashes.SHA256())
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(data, ec.ECDSA(hashes.SHA256(), deterministic_signing=True))
    if isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey):
        return key.sign(data)
    raise TypeError(f"tlsleak material has no {type(key).__name__} keys")  # pragma: no cover


def _resign(fields: Iterable[bytes], algorithm: bytes, signer: PrivateKey) -> bytes:
    """A certificate DER: the TBSCertificate of ``fields``, signed by ``signer``.

    ``algorithm`` is the signature AlgorithmIdentifier ``signer`` signs with
    (the one already inside ``fields``), written again as the outer one.
    """
    tbs = der.sequence(*fields)
    return der.sequence(tbs, algorithm, der.bit_string(_sign_raw(signer, tbs)))


def _leaf_signer(ident: Identity) -> PrivateKey:
    return ident.root_key if ident.issued else ident.key


def _cert_blob_der(base: Base, leaf: bytes) -> bytes:
    """The certificate blob with a hand-built leaf, in the base's encoding."""
    if base.cert_encoding is Encoding.DER:
        return leaf
    return pem_armor(b"CERTIFICATE", leaf) + _chain_pem(base)


@cache
def _v1_root(ident: Identity) -> bytes:
    """``ident``'s root re-signed as a version-1 certificate (no version, no extensions)."""
    version, *fields, extensions = _tbs_fields(ident.root)
    if version[0] != 0xA0 or extensions[0] != 0xA3:
        raise AssertionError("material.py writes version-3 certificates with extensions")
    return _resign(fields, fields[1], ident.root_key)


@cache
def _cycle(ident: Identity) -> tuple[x509.Certificate, x509.Certificate]:
    """Two CA certificates issuing each other, the first named like ``ident``'s intermediate.

    The first holds the intermediate's key (which signed the leaf), so a
    chain builder starting from the leaf walks into the cycle.
    """
    inter, other_name = ident.chain[0], _cycle_name(ident)
    other_key = private_key(ident.key_type, 1)

    def ca(
        serial: int, subject: x509.Name, key: PrivateKey, issuer: x509.Name, signer: PrivateKey
    ) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(serial)
            .not_valid_before(inter.not_valid_before_utc)
            .not_valid_after(inter.not_valid_after_utc)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        )
        return sign(builder, signer)

    serial = inter.serial_number + 0x40000
    first = ca(serial, inter.subject, ident.root_key, other_name, other_key)
    second = ca(serial + 1, other_name, other_key, inter.subject, ident.root_key)
    return first, second


def _cycle_name(ident: Identity) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "tlsleak test material"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"tlsleak cycle {ident.key_type.value}"),
        ]
    )


# --- certificate ----------------------------------------------------------------------------------


@defect(field="cert", expect=Expect.REJECTED, steps={Step.CHECK_KEY})
def empty_cert(draw: DrawFn, base: Base) -> InitCase:
    """Certificate blob left empty while a key is given."""
    return replace(base.case, cert=b"")


@defect(field="cert", expect=Expect.REJECTED, steps={Step.CERTIFICATE}, needs=_PEM_CERT)
def truncated_cert_pem(draw: DrawFn, base: Base) -> InitCase:
    """Certificate PEM cut short at a random point inside the leaf's base64 body."""
    return replace(base.case, cert=_truncate_body(draw, _leaf_pem(base)))


@defect(field="cert", expect=Expect.REJECTED, steps={Step.CERTIFICATE}, needs=_DER_CERT)
def truncated_cert_der(draw: DrawFn, base: Base) -> InitCase:
    """Certificate DER cut short at a random point."""
    return replace(base.case, cert=_truncate_der(draw, _leaf_der(base)))


@defect(field="cert", expect=Expect.REJECTED, steps={Step.CERTIFICATE}, needs=_PEM_CERT)
def cert_bad_base64(draw: DrawFn, base: Base) -> InitCase:
    """One character of the leaf's base64 body replaced by a non-base64 character."""
    return replace(base.case, cert=_bad_base64(draw, _leaf_pem(base)) + _chain_pem(base))


@defect(
    field="cert",
    expect=Expect.REJECTED,
    # Self-signed: no armor left, the blob is read as DER and fails.  Issued:
    # the intermediate becomes the first block and is used as the leaf; the
    # key does not match it (see mismatched_key for why that fails at "key").
    steps={Step.CERTIFICATE, Step.KEY},
    needs=_PEM_CERT,
)
def cert_missing_begin(draw: DrawFn, base: Base) -> InitCase:
    """The leaf's BEGIN CERTIFICATE line removed."""
    leaf = _leaf_pem(base)
    return replace(base.case, cert=leaf[leaf.index(b"\n") + 1 :] + _chain_pem(base))


@defect(field="cert", expect=Expect.REJECTED, steps={Step.CERTIFICATE}, needs=_PEM_CERT)
def cert_missing_end(draw: DrawFn, base: Base) -> InitCase:
    """The leaf's END CERTIFICATE line removed."""
    leaf = _leaf_pem(base)
    return replace(base.case, cert=leaf[: leaf.index(_END)] + _chain_pem(base))


@defect(field="cert", expect=Expect.REJECTED, steps={Step.CERTIFICATE}, needs=_PEM_CERT)
def cert_mismatched_armor(draw: DrawFn, base: Base) -> InitCase:
    """Leaf armored as BEGIN CERTIFICATE ... END PRIVATE KEY."""
    leaf = _leaf_pem(base)
    damaged = leaf[: leaf.index(_END)] + b"-----END PRIVATE KEY-----\n"
    return replace(base.case, cert=damaged + _chain_pem(base))


@defect(field="cert", expect=Expect.REJECTED, steps={Step.CERTIFICATE}, needs=_PEM_CERT)
def cert_labelled_crl(draw: DrawFn, base: Base) -> InitCase:
    """Leaf armored as an X509 CRL instead of a CERTIFICATE."""
    return replace(base.case, cert=_relabel(_leaf_pem(base), b"X509 CRL") + _chain_pem(base))


@defect(field="cert", expect=Expect.REJECTED, steps={Step.CERTIFICATE}, needs=_PEM_CERT)
def cert_labelled_trusted(draw: DrawFn, base: Base) -> InitCase:
    """Leaf armored as TRUSTED CERTIFICATE, a label plain certificate readers refuse."""
    leaf = _relabel(_leaf_pem(base), b"TRUSTED CERTIFICATE")
    return replace(base.case, cert=leaf + _chain_pem(base))


@defect(field="cert", expect=Expect.ACCEPTED, needs=_PEM_CERT)
def cert_legacy_label(draw: DrawFn, base: Base) -> InitCase:
    """Leaf armored with the legacy X509 CERTIFICATE label (OpenSSL still reads it)."""
    leaf = _relabel(_leaf_pem(base), b"X509 CERTIFICATE")
    return replace(base.case, cert=leaf + _chain_pem(base))


@defect(field="cert", expect=Expect.REJECTED, steps={Step.CERTIFICATE})
def empty_cert_body(draw: DrawFn, base: Base) -> InitCase:
    """Certificate blob holding armor with an empty body."""
    return replace(base.case, cert=b"-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n")


@defect(field="cert", expect=Expect.ACCEPTED, needs=_PEM_CERT)
def cert_trailing_garbage_pem(draw: DrawFn, base: Base) -> InitCase:
    """Garbage bytes after the last END CERTIFICATE line."""
    return replace(base.case, cert=base.case.cert + _garbage(draw))


@defect(field="cert", expect=Expect.ACCEPTED, needs=_DER_CERT)
def cert_trailing_garbage_der(draw: DrawFn, base: Base) -> InitCase:
    """Garbage bytes after the certificate DER."""
    return replace(base.case, cert=_leaf_der(base) + _garbage(draw))


@defect(field="cert", expect=Expect.REJECTED, steps={Step.CERTIFICATE}, needs=_PEM_CERT)
def cert_nul_bytes(draw: DrawFn, base: Base) -> InitCase:
    """NUL bytes inserted before a character of the leaf's base64 body."""
    return replace(base.case, cert=_nuls_into_body(draw, _leaf_pem(base)) + _chain_pem(base))


@defect(field="cert", expect=Expect.ACCEPTED, needs=_PEM_CERT)
def cert_junk_after_nul(draw: DrawFn, base: Base) -> InitCase:
    """A NUL byte and junk at the end of a line of the leaf's body (OpenSSL drops them)."""
    # OpenSSL's PEM reader treats each line as a C string: whatever follows a
    # NUL up to the newline is never seen.  Junk hidden there passes every
    # check, which is worth having in a corpus for paths that do see it.
    leaf = _leaf_pem(base)
    start, end = _body_span(leaf)
    line_ends = [i for i in range(start, end) if leaf[i] == ord("\n")]
    pos = line_ends[draw(st.integers(0, len(line_ends) - 1))]
    # No ':' in the junk: OpenSSL looks for one over the *whole* line (NUL or
    # not) to spot a PEM header, and a header inside the body is an error.
    junk = draw(st.binary(max_size=64)).translate(_JUNK_SAFE)
    damaged = leaf[:pos] + b"\0" + junk + leaf[pos:]
    return replace(base.case, cert=damaged + _chain_pem(base))


@defect(field="cert", expect=Expect.REJECTED, steps={Step.CERTIFICATE})
def oversized_cert(draw: DrawFn, base: Base) -> InitCase:
    """Certificate blob of a few hundred KiB of armored garbage."""
    # The garbage comes from a seeded PRNG, not from draw: drawing hundreds of
    # KiB through Hypothesis would be slow and shrink poorly.  Size and seed
    # shrink instead.
    size = draw(st.integers(200 * 1024, 600 * 1024))
    seed = draw(st.integers(0, 2**32 - 1))
    blob = pem_armor(b"CERTIFICATE", random.Random(seed).randbytes(size))
    return replace(base.case, cert=blob)


@defect(field="cert", expect=Expect.ACCEPTED)
def expired_cert(draw: DrawFn, base: Base) -> InitCase:
    """Leaf certificate that expired in 2001 (init paths do not check validity dates)."""
    cert = _cert_blob(base.identity, expired_leaf(base.identity), base.cert_encoding)
    return replace(base.case, cert=cert)


@defect(
    field="cert",
    expect=Expect.ACCEPTED,
    needs=Needs(cert_encodings=frozenset({Encoding.PEM}), issued=True),
)
def chain_wrong_order(draw: DrawFn, base: Base) -> InitCase:
    """Leaf followed by the root and then the intermediate (chain out of order)."""
    ident = base.identity
    chain = (ident.root, *reversed(ident.chain))
    blob = _leaf_pem(base) + b"".join(cert_bytes(c, Encoding.PEM) for c in chain)
    return replace(base.case, cert=blob)


@defect(field="cert", expect=Expect.ACCEPTED, needs=_PEM_CERT)
def cert_crlf(draw: DrawFn, base: Base) -> InitCase:
    """Certificate PEM with CRLF line endings."""
    return replace(base.case, cert=base.case.cert.replace(b"\n", b"\r\n"))


@defect(field="cert", expect=Expect.ACCEPTED, needs=_PEM_CERT)
def text_before_cert(draw: DrawFn, base: Base) -> InitCase:
    """Human-readable text before the BEGIN line, as `openssl x509 -text` writes it."""
    text = draw(st.text(alphabet=_TEXT, max_size=200))
    prefix = b"Certificate:\n" + text.encode("ascii") + b"\n"
    return replace(base.case, cert=prefix + base.case.cert)


@defect(field="cert", expect=Expect.REJECTED, steps={Step.CHAIN}, needs=_PEM_CERT)
def garbage_chain_cert(draw: DrawFn, base: Base) -> InitCase:
    """Leaf followed by a CERTIFICATE block whose body is garbage."""
    garbage = pem_armor(b"CERTIFICATE", draw(st.binary(min_size=1, max_size=512)))
    return replace(base.case, cert=_leaf_pem(base) + garbage)


@defect(
    field="cert",
    expect=Expect.EITHER,
    # A flip in the signature or a string is invisible at init; one in the
    # structure fails the parse; one in the public key makes the key not
    # match (at "key", or at "check-key" if it changed the key's type).
    steps={Step.CERTIFICATE, Step.KEY, Step.CHECK_KEY},
    needs=_DER_CERT,
)
def cert_flipped_byte(draw: DrawFn, base: Base) -> InitCase:
    """Certificate DER with the bits of one byte flipped."""
    return replace(base.case, cert=_flip(draw, _leaf_der(base)))


@defect(field="cert", expect=Expect.REJECTED, steps={Step.CERTIFICATE}, needs=_DER_CERT)
def cert_inflated_length(draw: DrawFn, base: Base) -> InitCase:
    """Certificate DER whose outer SEQUENCE length claims more bytes than the blob holds."""
    der = _leaf_der(base)
    # Every certificate material.py makes is over 127 bytes, so the outer
    # length is in long form: 0x8n then n length bytes.
    width = der[1] & 0x7F
    length = int.from_bytes(der[2 : 2 + width], "big")
    extra = draw(st.integers(1, 4096))
    new_length = min(length + extra, 256**width - 1)
    return replace(base.case, cert=der[:2] + new_length.to_bytes(width, "big") + der[2 + width :])


@defect(field="cert", expect=Expect.ACCEPTED)
def not_yet_valid_cert(draw: DrawFn, base: Base) -> InitCase:
    """Leaf certificate that only becomes valid in 2090."""
    cert = _cert_blob(base.identity, _future_leaf(base.identity), base.cert_encoding)
    return replace(base.case, cert=cert)


@defect(field="cert", expect=Expect.ACCEPTED)
def cert_critical_unknown_extension(draw: DrawFn, base: Base) -> InitCase:
    """Leaf certificate with a critical extension of an unknown type."""
    leaf = _critical_unknown_leaf(base.identity)
    return replace(base.case, cert=_cert_blob(base.identity, leaf, base.cert_encoding))


@defect(field="cert", expect=Expect.REJECTED, steps={Step.CERTIFICATE})
def cert_unknown_key_algorithm(draw: DrawFn, base: Base) -> InitCase:
    """Leaf whose SubjectPublicKeyInfo names an algorithm OpenSSL does not know."""
    fields = _tbs_fields(base.identity.leaf)
    key_bits = _children(fields[6])[1]
    algorithm = der.oid(f"{_UNKNOWN_ARC}.2.{draw(st.integers(0, 2**32))}")
    params = _NULL if draw(st.booleans()) else b""
    fields[6] = der.sequence(der.sequence(algorithm, params), key_bits)
    leaf = _resign(fields, fields[2], _leaf_signer(base.identity))
    return replace(base.case, cert=_cert_blob_der(base, leaf))


@defect(field="cert", expect=Expect.ACCEPTED)
def cert_signature_algorithm_mismatch(draw: DrawFn, base: Base) -> InitCase:
    """Leaf whose outer signature algorithm differs from the one inside its TBSCertificate."""
    tbs, inner, signature = _children(_leaf_der(base))
    outer = draw(st.sampled_from([a for a in _SIGNATURE_ALGORITHMS if a != inner]))
    return replace(base.case, cert=_cert_blob_der(base, der.sequence(tbs, outer, signature)))


@defect(field="cert", expect=Expect.ACCEPTED, needs=_PEM_CERT)
def chain_duplicate_cert(draw: DrawFn, base: Base) -> InitCase:
    """Certificate bundle repeating one of its certificates after the chain."""
    certs = (base.identity.leaf, *base.identity.chain)
    again = cert_bytes(draw(st.sampled_from(certs)), Encoding.PEM)
    return replace(base.case, cert=base.case.cert + again * draw(st.integers(1, 3)))


@defect(
    field="cert",
    expect=Expect.ACCEPTED,
    needs=Needs(cert_encodings=frozenset({Encoding.PEM}), issued=True),
)
def chain_cycle(draw: DrawFn, base: Base) -> InitCase:
    """Leaf followed by two CA certificates that issue each other."""
    blob = _leaf_pem(base) + b"".join(cert_bytes(c) for c in _cycle(base.identity))
    return replace(base.case, cert=blob)


# --- private key ----------------------------------------------------------------------------------


@defect(field="key", expect=Expect.REJECTED, steps={Step.CHECK_KEY})
def empty_key(draw: DrawFn, base: Base) -> InitCase:
    """Key blob left empty while a certificate is given."""
    return replace(base.case, key=b"")


@defect(field="key", expect=Expect.REJECTED, steps={Step.KEY}, needs=_PEM_KEY)
def truncated_key_pem(draw: DrawFn, base: Base) -> InitCase:
    """Key PEM cut short at a random point inside its base64 body."""
    return replace(base.case, key=_truncate_body(draw, base.case.key))


@defect(field="key", expect=Expect.REJECTED, steps={Step.KEY}, needs=_DER_KEY)
def truncated_key_der(draw: DrawFn, base: Base) -> InitCase:
    """Key DER cut short at a random point."""
    return replace(base.case, key=_truncate_der(draw, base.case.key))


@defect(field="key", expect=Expect.REJECTED, steps={Step.KEY}, needs=_PEM_KEY)
def key_bad_base64(draw: DrawFn, base: Base) -> InitCase:
    """One character of the key's base64 body replaced by a non-base64 character."""
    return replace(base.case, key=_bad_base64(draw, base.case.key))


@defect(field="key", expect=Expect.REJECTED, steps={Step.KEY}, needs=_PEM_KEY)
def key_labelled_certificate(draw: DrawFn, base: Base) -> InitCase:
    """Key armored as a CERTIFICATE."""
    return replace(base.case, key=_relabel(base.case.key, b"CERTIFICATE"))


@defect(field="key", expect=Expect.REJECTED, steps={Step.KEY}, needs=_PEM_KEY)
def key_nul_bytes(draw: DrawFn, base: Base) -> InitCase:
    """NUL bytes inserted before a character of the key's base64 body."""
    return replace(base.case, key=_nuls_into_body(draw, base.case.key))


@defect(field="key", expect=Expect.ACCEPTED, needs=_PEM_KEY)
def key_trailing_garbage_pem(draw: DrawFn, base: Base) -> InitCase:
    """Garbage bytes after the key's END line."""
    return replace(base.case, key=base.case.key + _garbage(draw))


@defect(field="key", expect=Expect.ACCEPTED, needs=_DER_KEY)
def key_trailing_garbage_der(draw: DrawFn, base: Base) -> InitCase:
    """Garbage bytes after the key DER."""
    return replace(base.case, key=base.case.key + _garbage(draw))


# SSL_CTX_use_PrivateKey checks a key against the certificate already in its
# slot (RSA, EC, Ed25519, Ed448 each have one), so a key that does not match
# is refused at "key"; only a key for an empty slot gets to the explicit check.
@defect(field="key", expect=Expect.REJECTED, steps={Step.KEY})
def mismatched_key(draw: DrawFn, base: Base) -> InitCase:
    """Key of the right type that does not match the certificate."""
    return replace(base.case, key=_serialise_key(base, _other_key(base), base.key_type))


@defect(field="key", expect=Expect.REJECTED, steps={Step.KEY, Step.CHECK_KEY})
def other_type_key(draw: DrawFn, base: Base) -> InitCase:
    """Key of another type than the certificate's."""
    # P-256 and P-384 share the EC slot, so they fail at "key"; the others
    # land in an empty slot and fail at "check-key".
    other = draw(st.sampled_from([kt for kt in KeyType if kt is not base.key_type]))
    return replace(base.case, key=_serialise_key(base, private_key(other), other))


@defect(field="key", expect=Expect.REJECTED, steps={Step.KEY})
def public_key(draw: DrawFn, base: Base) -> InitCase:
    """The certificate's public key given where the private key belongs."""
    return replace(base.case, key=_public_key_bytes(base.identity.key, base.key_encoding))


@defect(field="key", expect=Expect.REJECTED, steps={Step.KEY}, needs=_ENCRYPTED)
def encrypted_key_der(draw: DrawFn, base: Base) -> InitCase:
    """Encrypted PKCS#8 key in DER, with its password (pyOpenSSL decrypts PEM only)."""
    return replace(base.case, key=_key_der(base))


@defect(
    field="key",
    expect=Expect.EITHER,
    # A flip in an unused or redundant part (a CRT parameter, a version
    # byte some parsers ignore) may still load and match.
    steps={Step.KEY, Step.CHECK_KEY},
    needs=_DER_KEY,
)
def key_flipped_byte(draw: DrawFn, base: Base) -> InitCase:
    """Key DER with the bits of one byte flipped."""
    return replace(base.case, key=_flip(draw, base.case.key))


_RSA: Final = Needs(key_types=frozenset({KeyType.RSA2048}))
_EC: Final = Needs(key_types=frozenset(_CURVES))
_EDWARDS: Final = Needs(key_types=frozenset(_EDWARDS_OIDS))


@defect(field="key", expect=Expect.ACCEPTED, needs=_RSA)
def rsa_key_bad_crt(draw: DrawFn, base: Base) -> InitCase:
    """RSA key matching the certificate whose dp, dq or qinv is wrong."""
    numbers = _rsa_numbers(base)
    crt = [numbers.dmp1, numbers.dmq1, numbers.iqmp]
    crt[draw(st.integers(0, 2))] += draw(st.integers(1, 2**64))
    pub = numbers.public_numbers
    return replace(
        base.case, key=_write_rsa(base, pub.n, pub.e, numbers.d, numbers.p, numbers.q, crt)
    )


# OpenSSL parses the next three keys without complaint: what refuses them is
# that their public half differs from the certificate's.  With a certificate
# to match, the exponents pass every init step (see rsa_identity_exponent_one).
@defect(field="key", expect=Expect.REJECTED, steps={Step.KEY}, needs=_RSA)
def rsa_key_even_modulus(draw: DrawFn, base: Base) -> InitCase:
    """RSA key whose modulus is even (one of its primes is 2)."""
    q, e = _rsa_numbers(base).q, 65537
    d = pow(e, -1, q - 1)  # material.py's primes have q - 1 prime to e
    return replace(base.case, key=_write_rsa(base, 2 * q, e, d, 2, q, (0, d % (q - 1), 1)))


@defect(field="key", expect=Expect.REJECTED, steps={Step.KEY}, needs=_RSA)
def rsa_key_exponent_one(draw: DrawFn, base: Base) -> InitCase:
    """RSA key with public (and private) exponent 1, the certificate's modulus."""
    numbers = _rsa_numbers(base)
    n, p, q = numbers.public_numbers.n, numbers.p, numbers.q
    return replace(base.case, key=_write_rsa(base, n, 1, 1, p, q, (1, 1, numbers.iqmp)))


@defect(field="key", expect=Expect.REJECTED, steps={Step.KEY}, needs=_RSA)
def rsa_key_even_exponent(draw: DrawFn, base: Base) -> InitCase:
    """RSA key with an even public exponent, the certificate's modulus."""
    numbers = _rsa_numbers(base)
    e = 2 * draw(st.integers(1, 2**31))
    crt = (numbers.dmp1, numbers.dmq1, numbers.iqmp)
    n = numbers.public_numbers.n
    return replace(base.case, key=_write_rsa(base, n, e, numbers.d, numbers.p, numbers.q, crt))


@defect(field="key", expect=Expect.REJECTED, steps={Step.KEY}, needs=_EC)
def ec_key_point_off_curve(draw: DrawFn, base: Base) -> InitCase:
    """EC key whose public point is not on its curve."""
    curve, secret, x, y = _ec_numbers(base)
    bad_y = (y + draw(st.integers(1, 2**32))) % curve.prime
    # Only (x, y) and (x, -y) are on the curve.
    while bad_y in (y, -y % curve.prime):
        bad_y = (bad_y + 1) % curve.prime
    scalar = secret.to_bytes(curve.size)
    return replace(base.case, key=_write_ec(base, curve.oid, scalar, _point(curve, x, bad_y)))


# OpenSSL takes the public point as given when the key holds one: a private
# scalar that does not belong to it goes unnoticed until something signs.
@defect(field="key", expect=Expect.ACCEPTED, needs=_EC)
def ec_key_zero_scalar(draw: DrawFn, base: Base) -> InitCase:
    """EC key holding the certificate's public point and a private scalar of zero."""
    curve, _, x, y = _ec_numbers(base)
    key = _write_ec(base, curve.oid, bytes(curve.size), _point(curve, x, y))
    return replace(base.case, key=key)


@defect(field="key", expect=Expect.REJECTED, steps={Step.KEY}, needs=_EC)
def ec_key_zero_scalar_no_point(draw: DrawFn, base: Base) -> InitCase:
    """EC key with a private scalar of zero and no public point to go with it."""
    # OpenSSL derives the point from the scalar (the point at infinity), which
    # does not match the certificate.
    curve = _ec_numbers(base)[0]
    return replace(base.case, key=_write_ec(base, curve.oid, bytes(curve.size), None))


@defect(field="key", expect=Expect.ACCEPTED, needs=_EC)
def ec_key_scalar_over_order(draw: DrawFn, base: Base) -> InitCase:
    """EC key whose private scalar is the right one plus a multiple of the group order."""
    curve, secret, x, y = _ec_numbers(base)
    scalar = secret + draw(st.integers(1, 2**16)) * curve.order
    raw = scalar.to_bytes(max(curve.size, (scalar.bit_length() + 7) // 8))
    return replace(base.case, key=_write_ec(base, curve.oid, raw, _point(curve, x, y)))


@defect(field="key", expect=Expect.REJECTED, steps={Step.KEY}, needs=_EC)
def ec_key_unknown_curve(draw: DrawFn, base: Base) -> InitCase:
    """EC key on a named curve whose OID OpenSSL does not know."""
    curve, secret, x, y = _ec_numbers(base)
    oid = f"{_UNKNOWN_ARC}.3.{draw(st.integers(0, 2**32))}"
    key = _write_ec(base, oid, secret.to_bytes(curve.size), _point(curve, x, y))
    return replace(base.case, key=key)


@defect(field="key", expect=Expect.REJECTED, steps={Step.KEY}, needs=_EDWARDS)
def edwards_key_wrong_length(draw: DrawFn, base: Base) -> InitCase:
    """Ed25519 or Ed448 private key one or more bytes too short or too long."""
    key = base.identity.key
    if not isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey):
        raise TypeError("an Edwards defect needs an Edwards base")  # pragma: no cover
    raw = key.private_bytes_raw()
    length = draw(st.integers(0, 2 * len(raw) - 1))
    length += length >= len(raw)  # every length but the right one
    seed = (raw * 3)[:length]
    info = _pkcs8(der.sequence(der.oid(_EDWARDS_OIDS[base.key_type])), der.octet_string(seed))
    return replace(base.case, key=_write_key(base, info))


# OpenSSL still has a DSA slot: the key lands there, next to an empty
# certificate, and only the explicit check refuses it (like other_type_key).
@defect(field="key", expect=Expect.REJECTED, steps={Step.CHECK_KEY})
def dsa_key(draw: DrawFn, base: Base) -> InitCase:
    """A 1024-bit DSA key where the certificate's key belongs."""
    params = der.sequence(der.integer(_DSA_P), der.integer(_DSA_Q), der.integer(_DSA_G))
    info = _pkcs8(der.sequence(der.oid(_DSA_OID), params), der.integer(_DSA_X))
    return replace(base.case, key=_write_key(base, info))


# No slot takes a DH key: SSL_CTX_use_PrivateKey refuses its type outright.
@defect(field="key", expect=Expect.REJECTED, steps={Step.KEY})
def dh_key(draw: DrawFn, base: Base) -> InitCase:
    """A Diffie-Hellman key (PKCS#3 or X9.42), which can't sign, as the key."""
    # The DSA group doubles as a DH group: X9.42 names its subgroup order q.
    if draw(st.booleans()):
        algorithm = der.sequence(
            der.oid(_DHX_OID),
            der.sequence(der.integer(_DSA_P), der.integer(_DSA_G), der.integer(_DSA_Q)),
        )
    else:
        algorithm = der.sequence(
            der.oid(_DH_OID), der.sequence(der.integer(_DSA_P), der.integer(_DSA_G))
        )
    return replace(base.case, key=_write_key(base, _pkcs8(algorithm, der.integer(_DSA_X))))


# --- password -------------------------------------------------------------------------------------


@defect(field="password", expect=Expect.REJECTED, steps={Step.KEY}, needs=_ENCRYPTED)
def wrong_password(draw: DrawFn, base: Base) -> InitCase:
    """Encrypted key given a wrong password."""
    password = draw(st.binary(min_size=1, max_size=64))
    # Init paths that take the password as a C string stop at the first NUL;
    # the password must be wrong for them too.
    if password.split(b"\0", 1)[0] == base.password:
        password = b"not " + password
    return replace(base.case, password=password)


@defect(field="password", expect=Expect.REJECTED, steps={Step.KEY}, needs=_ENCRYPTED)
def missing_password(draw: DrawFn, base: Base) -> InitCase:
    """Encrypted key given no password."""
    return replace(base.case, password=b"")


@defect(field="password", expect=Expect.ACCEPTED, needs=_UNENCRYPTED)
def needless_password(draw: DrawFn, base: Base) -> InitCase:
    """Unencrypted key given a password (which is ignored)."""
    return replace(base.case, password=draw(st.binary(min_size=1, max_size=64)))


# --- CA -------------------------------------------------------------------------------------------


@defect(field="ca", expect=Expect.REJECTED, steps={Step.CA})
def ca_is_key(draw: DrawFn, base: Base) -> InitCase:
    """CA blob holding the private key instead of a certificate."""
    ident = base.identity
    ca = key_bytes(ident.key, base.key_format, base.key_encoding, base.password)
    return replace(base.case, ca=ca)


@defect(field="ca", expect=Expect.REJECTED, steps={Step.CA})
def garbage_ca(draw: DrawFn, base: Base) -> InitCase:
    """CA blob of random bytes."""
    return replace(base.case, ca=_garbage(draw, max_size=512))


@defect(field="ca", expect=Expect.REJECTED, steps={Step.CA})
def ca_garbage_second_cert(draw: DrawFn, base: Base) -> InitCase:
    """CA bundle whose second CERTIFICATE block is garbage."""
    garbage = pem_armor(b"CERTIFICATE", draw(st.binary(min_size=1, max_size=512)))
    return replace(base.case, ca=cert_bytes(base.identity.root, Encoding.PEM) + garbage)


@defect(field="ca", expect=Expect.ACCEPTED)
def ca_version_1(draw: DrawFn, base: Base) -> InitCase:
    """The root given as CA re-signed as a version-1 certificate (no extensions)."""
    root = _v1_root(base.identity)
    ca = root if base.cert_encoding is Encoding.DER else pem_armor(b"CERTIFICATE", root)
    return replace(base.case, ca=ca)


# --- server name ----------------------------------------------------------------------------------


@defect(field="server_name", expect=Expect.REJECTED, steps={Step.SERVER_NAME}, needs=_CLIENT)
def long_server_name(draw: DrawFn, base: Base) -> InitCase:
    """Server name over the 255-byte limit of the SNI extension."""
    length = draw(st.integers(256, 4096))
    # DNS-shaped (63-byte labels) so only the length is wrong.
    name = ((b"x" * 63 + b".") * (length // 64 + 1))[:length]
    return replace(base.case, server_name=name)


@defect(field="server_name", expect=Expect.ACCEPTED, needs=_CLIENT)
def server_name_nul(draw: DrawFn, base: Base) -> InitCase:
    """Server name with a NUL byte after a valid name (C init paths stop at the NUL)."""
    head = base.case.server_name or b"localhost"
    return replace(base.case, server_name=head + b"\0" + draw(st.binary(max_size=512)))


@defect(field="server_name", expect=Expect.ACCEPTED, needs=_CLIENT)
def binary_server_name(draw: DrawFn, base: Base) -> InitCase:
    """Server name of arbitrary non-NUL bytes within the length limit (not a hostname)."""
    name = draw(st.binary(min_size=1, max_size=255)).replace(b"\0", b"\x01")
    return replace(base.case, server_name=name)


# --- several blobs --------------------------------------------------------------------------------


@defect(field="pair", expect=Expect.REJECTED, steps={Step.CERTIFICATE})
def cert_key_swapped(draw: DrawFn, base: Base) -> InitCase:
    """Certificate given as the key and key given as the certificate."""
    return replace(base.case, cert=base.case.key, key=base.case.cert)


def _rsa_identity(base: Base, e: int, d: int, crt: Iterable[int]) -> InitCase:
    """The base's leaf and key with public exponent ``e`` (the leaf re-signed by its issuer)."""
    numbers = _rsa_numbers(base)
    n = numbers.public_numbers.n
    fields = _tbs_fields(base.identity.leaf)
    fields[6] = der.sequence(
        der.sequence(der.oid(_RSA_OID), _NULL),
        der.bit_string(der.sequence(der.integer(n), der.integer(e))),
    )
    leaf = _resign(fields, fields[2], _leaf_signer(base.identity))
    key = _write_rsa(base, n, e, d, numbers.p, numbers.q, crt)
    return replace(base.case, cert=_cert_blob_der(base, leaf), key=key)


# Neither exponent is refused at init: OpenSSL checks an RSA key's size, not
# its exponent, and key and certificate match.
@defect(field="pair", expect=Expect.ACCEPTED, needs=_RSA)
def rsa_identity_exponent_one(draw: DrawFn, base: Base) -> InitCase:
    """RSA certificate and key with public exponent 1 (encryption is the identity)."""
    numbers = _rsa_numbers(base)
    return _rsa_identity(base, 1, 1, (1, 1, numbers.iqmp))


@defect(field="pair", expect=Expect.ACCEPTED, needs=_RSA)
def rsa_identity_even_exponent(draw: DrawFn, base: Base) -> InitCase:
    """RSA certificate and key with an even public exponent (no private exponent exists)."""
    numbers = _rsa_numbers(base)
    e = 2 * draw(st.integers(1, 2**31))
    return _rsa_identity(base, e, numbers.d, (numbers.dmp1, numbers.dmq1, numbers.iqmp))
