"""A lenient DER/TLV layer of tlsleak's own (no OpenSSL): build, parse, damage.

(Skeleton: the tree parser, serialiser and mutations are being written.)
"""

from __future__ import annotations

__all__ = ["encode_length", "tlv"]


def encode_length(n: int) -> bytes:
    """The DER length octets for ``n`` (short form below 128, else minimal long form)."""
    if n < 0:
        raise ValueError(f"a length can't be negative: {n}")
    if n < 0x80:
        return bytes([n])
    octets = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(octets)]) + octets


def tlv(tag: int, content: bytes) -> bytes:
    """One correctly encoded element: a single-octet ``tag``, its length and ``content``."""
    if not 0 <= tag <= 0xFF:
        raise ValueError(f"tlv() takes a single-octet tag, not {tag:#x}")
    return bytes([tag]) + encode_length(len(content)) + content
