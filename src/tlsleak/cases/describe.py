"""Say, for humans, what an :class:`InitCase` holds (``tlsleak corpus show``).

For each blob: its size, whether it is PEM (with the label of every block) or
DER, and what each object parses as - a certificate (subject, key type,
validity), a private key (type and size), a public key, or why it does not
parse.  Parsing uses cryptography's own parsers, never the target, so showing
a case can't run the code under test.
"""

from __future__ import annotations

import re
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa

from tlsleak.cases.blobs import is_pem, pem_blocks
from tlsleak.cases.case import InitCase

__all__ = ["describe_case", "key_type_name"]

_LABEL = re.compile(rb"-----BEGIN ([^-\r\n]{0,64})-----")


def key_type_name(key: Any) -> str:
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        return f"RSA {key.key_size}"
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        return f"EC {key.curve.name}"
    if isinstance(key, ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey):
        return "Ed25519"
    if isinstance(key, ed448.Ed448PrivateKey | ed448.Ed448PublicKey):
        return "Ed448"
    if isinstance(key, dsa.DSAPrivateKey | dsa.DSAPublicKey):
        return f"DSA {key.key_size}"
    return type(key).__name__


def _cert_text(cert: x509.Certificate) -> str:
    try:
        subject = cert.subject.rfc4514_string()
    except ValueError:
        subject = "<undecodable subject>"
    try:
        key = key_type_name(cert.public_key())
    except (ValueError, TypeError):
        key = "unsupported key"
    after = cert.not_valid_after_utc.date().isoformat()
    return f"certificate {subject or '<empty subject>'}, {key}, valid to {after}"


def _parse(obj: bytes, pem: bool, password: bytes) -> str:
    """What one object parses as, trying certificate, private key, public key."""
    loaders: list[tuple[str, Any]] = [
        ("cert", (x509.load_pem_x509_certificate if pem else x509.load_der_x509_certificate)),
        ("key", serialization.load_pem_private_key if pem else serialization.load_der_private_key),
        ("pub", serialization.load_pem_public_key if pem else serialization.load_der_public_key),
    ]
    problems = []
    for kind, loader in loaders:
        try:
            if kind == "cert":
                return _cert_text(loader(obj))
            if kind == "key":
                return f"private key {key_type_name(loader(obj, password or None))}"
            return f"public key {key_type_name(loader(obj))}"
        except TypeError as exc:  # password missing, or given for a plain key
            problems.append(str(exc))
        except Exception as exc:  # any parse failure is just a description
            problems.append(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    # The key loader's complaint is the telling one for an encrypted key.
    telling = next((p for p in problems if "password" in p.lower()), problems[0])
    return f"does not parse ({telling[:120]})"


def _describe_blob(blob: bytes, password: bytes) -> list[str]:
    if not blob:
        return ["empty"]
    if is_pem(blob):
        blocks = pem_blocks(blob)
        lines = [f"{len(blob)} bytes, PEM, {len(blocks)} block(s)"]
        for i, block in enumerate(blocks, 1):
            match = _LABEL.match(block)
            label = match.group(1).decode("ascii", "replace") if match else "?"
            lines.append(f"  [{i}] {label}: {_parse(block, True, password)}")
        return lines
    printable = sum(32 <= b < 127 or b in b"\r\n\t" for b in blob[:4096])
    kind = "text, no PEM armor" if printable == min(len(blob), 4096) else "DER/binary"
    return [f"{len(blob)} bytes, {kind}", f"  {_parse(blob, False, password)}"]


def describe_case(case: InitCase) -> str:
    """A multi-line description of ``case``."""
    lines = [
        f"mode:        {case.mode.value}",
        f"labels:      {', '.join(case.labels) or '(none)'}",
        f"password:    {len(case.password)} bytes" if case.password else "password:    (none)",
        f"server name: {case.server_name[:80]!r}"
        + (f" ({len(case.server_name)} bytes)" if len(case.server_name) > 80 else ""),
    ]
    for name in ("ca", "cert", "key"):
        blob_lines = _describe_blob(getattr(case, name), case.password)
        lines.append(f"{name + ':':<13}{blob_lines[0]}")
        lines.extend(" " * 13 + line for line in blob_lines[1:])
    return "\n".join(lines)
