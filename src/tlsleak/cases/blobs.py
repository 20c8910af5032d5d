"""How init paths split a blob into the objects it holds (shared by the targets).

Embedded TLS libraries decide PEM or DER by looking for PEM armor and, for a
PEM bundle, read one object per ``-----BEGIN`` line.  The splitting here is
deliberately dumb: it never judges a block (OpenSSL's parser does that, and its
errors are what we want to see), it only cuts the blob where a new block begins.
"""

from __future__ import annotations

_BEGIN = b"-----BEGIN"


def is_pem(blob: bytes) -> bool:
    """True when the blob carries PEM armor anywhere (else it is treated as DER)."""
    return _BEGIN in blob


def pem_blocks(blob: bytes) -> list[bytes]:
    """The blob cut before each ``-----BEGIN`` line; text before the first is dropped.

    Each piece runs to the next BEGIN or the end of the blob, so a block whose
    END line is missing or damaged still reaches the parser as it is.  A blob
    without armor has no blocks.
    """
    starts = []
    pos = blob.find(_BEGIN)
    while pos != -1:
        starts.append(pos)
        pos = blob.find(_BEGIN, pos + len(_BEGIN))
    ends = [*starts[1:], len(blob)] if starts else []
    return [blob[a:b] for a, b in zip(starts, ends, strict=True)]


def c_string(value: bytes) -> bytes:
    """``value`` as a C init path sees a NUL-terminated string: cut at the first NUL."""
    return value.split(b"\0", 1)[0]
