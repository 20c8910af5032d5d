"""What material a target can load at all, and what material a case stands for.

Stacks differ in what they support, not only in what they accept: Mbed TLS
2.28 verifies no EdDSA signature, Mongoose reads no DER key, Python's ``ssl``
loads certificates and keys from PEM files only.  A damaged Ed25519 case that
such a stack rejects says nothing about how strict it is, so ``tlsleak diff``
counts it as ``unsupported`` for that stack rather than as a disagreement.

What a stack can load is *measured*, never assumed: :func:`probes` gives one
valid case per :class:`Material` (key type, certificate encoding, key format,
key encoding: every combination :class:`~tlsleak.cases.defects.Base` can
build), and a target supports a material when it accepts that case.

What a damaged case stands for is read from its bytes by :func:`material_of`,
as far as the damage leaves it readable: the key types whose algorithm
identifiers appear in its blobs, the encoding of its certificate and key
blobs, and the format the key's PEM label (or DER structure) names.  What
can't be read stays ``None`` and matches any value (:func:`supports`): a case
is refused as unsupported only for what it visibly is.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Final

from tlsleak.cases import der
from tlsleak.cases.blobs import is_pem, pem_blocks
from tlsleak.cases.case import InitCase
from tlsleak.cases.material import Encoding, KeyFormat, KeyType

__all__ = ["Material", "Seen", "material_of", "probes", "supports"]

#: The password of the probes' encrypted keys.
_PASSWORD: Final = b"tlsleak probe"


@dataclass(frozen=True, slots=True, order=True)
class Material:
    """One kind of valid material: what a capability probe loads."""

    key_type: str
    cert_encoding: str
    key_format: str
    key_encoding: str

    def __str__(self) -> str:
        return (
            f"{self.key_type} cert {self.cert_encoding}, key {self.key_format} {self.key_encoding}"
        )


@dataclass(frozen=True, slots=True)
class Seen:
    """What a case visibly stands for; ``None`` (or no key types) where damage hides it."""

    key_types: frozenset[str] = frozenset()
    cert_encoding: str | None = None
    key_format: str | None = None
    key_encoding: str | None = None

    def matches(self, material: Material, key_type: str | None) -> bool:
        """Whether ``material`` is of ``key_type`` (any, if None) and agrees with what was seen."""
        return (
            (key_type is None or material.key_type == key_type)
            and self.cert_encoding in (None, material.cert_encoding)
            and self.key_format in (None, material.key_format)
            and self.key_encoding in (None, material.key_encoding)
        )


def probes() -> list[tuple[Material, InitCase]]:
    """One valid server-mode case for every material a base can be built from, in order.

    Measured on the bundled targets, client mode loads exactly what server
    mode loads, so the probes are server mode only.
    """
    from tlsleak.cases.defects import Base  # the catalogue imports Hypothesis: only when probing

    found: list[tuple[Material, InitCase]] = []
    for key_type in KeyType:
        for cert_encoding in Encoding:
            for key_format in KeyFormat:
                for key_encoding in Encoding:
                    encrypted = key_format is KeyFormat.PKCS8_ENCRYPTED
                    try:
                        base = Base.build(
                            key_type,
                            cert_encoding=cert_encoding,
                            key_format=key_format,
                            key_encoding=key_encoding,
                            password=_PASSWORD if encrypted else b"",
                        )
                    except ValueError:  # a combination no base has (a DER encrypted key)
                        continue
                    material = Material(
                        key_type.value, cert_encoding.value, key_format.value, key_encoding.value
                    )
                    found.append((material, base.case))
    return found


def supports(loads: Mapping[Material, bool], seen: Seen) -> bool:
    """Whether a target that loads ``loads`` can load what ``seen`` stands for.

    Every key type seen must be loadable with the encodings and format seen;
    where nothing was seen, any loadable material will do.  A key seen in a
    shape no valid material has (an encrypted DER key: that is the defect)
    counts by key type and certificate encoding alone.
    """
    if not any(seen.matches(material, None) for material in loads):
        seen = replace(seen, key_format=None, key_encoding=None)
    wanted: Iterable[str | None] = sorted(seen.key_types) or [None]
    return all(
        any(ok and seen.matches(material, key_type) for material, ok in loads.items())
        for key_type in wanted
    )


# -- reading a case --------------------------------------------------------------------

#: DER encodings of the algorithm identifiers that name each key type: in a
#: certificate's SubjectPublicKeyInfo and in an unencrypted PKCS#8 key
#: (RFC 8017 A.1, RFC 5480 2.1.1 and 2.1.1.1, RFC 8410 3).
_KEY_OIDS: Final = {
    KeyType.RSA2048.value: der.oid("1.2.840.113549.1.1.1"),
    KeyType.EC_P256.value: der.oid("1.2.840.10045.3.1.7"),
    KeyType.EC_P384.value: der.oid("1.3.132.0.34"),
    KeyType.ED25519.value: der.oid("1.3.101.112"),
    KeyType.ED448.value: der.oid("1.3.101.113"),
}

#: PEM labels of private keys (RFC 7468 10 and 11; OpenSSL's traditional ones).
_KEY_LABELS: Final = {
    b"RSA PRIVATE KEY": KeyFormat.PKCS1.value,
    b"EC PRIVATE KEY": KeyFormat.SEC1.value,
    b"PRIVATE KEY": KeyFormat.PKCS8.value,
    b"ENCRYPTED PRIVATE KEY": KeyFormat.PKCS8_ENCRYPTED.value,
}

_EDWARDS: Final = frozenset({KeyType.ED25519.value, KeyType.ED448.value})
_LABEL: Final = re.compile(rb"-----BEGIN ([^-\r\n]{1,64})-----")
_NOT_BASE64: Final = re.compile(rb"[^A-Za-z0-9+/]")
_PBES2: Final = der.oid("1.2.840.113549.1.5.13")


def material_of(case: InitCase) -> Seen:
    """What ``case`` visibly stands for (see the module docstring)."""
    leaf = _ders(case.cert)[:1]
    key_types = _key_types(leaf) or _key_types(_ders(case.key)) or _key_types(_ders(case.ca))
    return Seen(
        key_types=frozenset(key_types),
        cert_encoding=_encoding(case.cert),
        key_format=_key_format(case.key),
        key_encoding=_encoding(case.key),
    )


def _encoding(blob: bytes) -> str | None:
    """PEM for armored or plain text, DER for binary, None for an empty blob."""
    if not blob:
        return None
    text = blob[:4096]
    printable = all(32 <= b < 127 or b in b"\r\n\t" for b in text)
    return Encoding.PEM.value if is_pem(blob) or printable else Encoding.DER.value


def _ders(blob: bytes) -> list[bytes]:
    """The DER objects of ``blob``: each PEM block's body decoded as far as it goes, or itself."""
    if not is_pem(blob):
        return [blob] if blob else []
    out = []
    for block in pem_blocks(blob):
        body = block.split(b"\n", 1)[1] if b"\n" in block else b""
        body = _NOT_BASE64.sub(b"", body.split(b"-----END", 1)[0])
        body = body[: len(body) // 4 * 4]
        try:
            out.append(base64.b64decode(body))
        except binascii.Error:
            continue
    return out


def _key_types(ders: Iterable[bytes]) -> set[str]:
    found = {name for data in ders for name, oid in _KEY_OIDS.items() if oid in data}
    # The EdDSA identifiers name a signature as well as a key; RSA's and EC's
    # name only keys.  Beside an RSA or EC key, an EdDSA one is a signature's
    # (cert-signature-algorithm-mismatch relabels the signature Ed448).
    return found - _EDWARDS if found - _EDWARDS else found


def _key_format(blob: bytes) -> str | None:
    if is_pem(blob):
        match = _LABEL.search(blob)
        return _KEY_LABELS.get(match.group(1)) if match else None
    if not blob:
        return None
    if _PBES2 in blob:
        return KeyFormat.PKCS8_ENCRYPTED.value
    roots = der.parse(blob)
    fields = roots[0].children if roots and roots[0].children else []
    if len(fields) < 2 or fields[0].universal != 2:  # not a SEQUENCE that opens with an INTEGER
        return None
    version, second = fields[0].content, fields[1].universal
    if version == b"\x00" and second == 0x10:
        return KeyFormat.PKCS8.value  # version 0, then the AlgorithmIdentifier
    if version == b"\x00" and second == 2:
        return KeyFormat.PKCS1.value  # version 0, then the modulus
    if version == b"\x01" and second == 4:
        return KeyFormat.SEC1.value  # version 1, then the private key octets
    return None
