"""The init case: what a TLS initialisation path is given, and its byte encoding.

An :class:`InitCase` mirrors the options an embedded TLS library takes when it
sets up a connection (Mongoose's ``mg_tls_opts``, mbedTLS/OpenSSL glue code in
servers, Python wrappers): the mode, a CA blob, a certificate blob (leaf,
optionally followed by its chain), a private key blob, the key's password and
the server name.  ``labels`` name the defects that were applied to make it; they
are carried along so that a corpus file says what it was meant to exercise.

Byte encoding, version 1 (used for every corpus file and every fuzz input)::

    byte 0      flags: bit 0 set = client mode, clear = server mode.
                Bits 1-7 are reserved: written as 0, ignored when read.
    then six fields, in this order:
                ca, cert, key, password, server_name, labels
                each one is a length (unsigned LEB128, at most 4 bytes read)
                followed by that many bytes.

Decoding is *total*: every byte string decodes to some case, so no fuzz
execution is wasted on a parse error.  A length that runs past the end of the
input is cut to what is left, fields missing at the end are empty, bytes after
the last field are ignored, and the empty string is a server-mode case with
every blob empty.  ``labels`` is UTF-8 (invalid bytes become U+FFFD), split on
commas, empty names dropped.  Encoding is canonical, so for every byte string
``b``: ``decode(encode(decode(b))) == decode(b)``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from typing import Final

__all__ = ["FIELDS", "InitCase", "Mode", "Step", "decode", "encode"]


class Step(enum.StrEnum):
    """The steps of an init path, as tlsleak's own targets name them (and defects expect them).

    Targets written by users may use any string as a step.
    """

    CONTEXT = "context"
    CA = "ca"
    CERTIFICATE = "certificate"
    CHAIN = "chain"
    KEY = "key"
    CHECK_KEY = "check-key"
    CONNECTION = "connection"
    SERVER_NAME = "server-name"
    TEARDOWN = "teardown"
    INIT = "init"


class Mode(enum.Enum):
    """Which side of the connection the init path sets up."""

    SERVER = "server"
    CLIENT = "client"


#: The blob fields of a case, in encoding order (``labels`` follows them).
FIELDS: Final = ("ca", "cert", "key", "password", "server_name")

_CLIENT_FLAG: Final = 0x01
# A 4-byte LEB128 length reaches 256 MiB, far past any input worth reading;
# capping the bytes read keeps decoding O(1) per field whatever the input.
_MAX_VARINT_BYTES: Final = 4


@dataclass(frozen=True, slots=True)
class InitCase:
    """One input to a TLS init path.

    Every blob is raw bytes exactly as a user would put them in a config file
    or buffer (PEM or DER, possibly damaged); an empty blob means "not given".
    """

    mode: Mode = Mode.SERVER
    ca: bytes = b""
    cert: bytes = b""
    key: bytes = b""
    password: bytes = b""
    server_name: bytes = b""
    labels: tuple[str, ...] = field(default=())

    def with_labels(self, *labels: str) -> InitCase:
        """A copy with ``labels`` appended (duplicates kept out)."""
        merged = self.labels + tuple(x for x in labels if x not in self.labels)
        return replace(self, labels=_clean_labels(merged))

    def encode(self) -> bytes:
        """This case in the version 1 byte encoding."""
        return encode(self)

    @property
    def size(self) -> int:
        """Total size of the blobs, in bytes."""
        return sum(len(getattr(self, name)) for name in FIELDS)


def _clean_labels(labels: tuple[str, ...]) -> tuple[str, ...]:
    # Commas separate labels in the encoding, so a label can't hold one; this
    # keeps encode/decode a round trip for any label a caller passes.
    out: list[str] = []
    for label in labels:
        for part in label.split(","):
            if part and part not in out:
                out.append(part)
    return tuple(out)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def encode(case: InitCase) -> bytes:
    """Encode ``case`` (see the module docstring for the format)."""
    flags = _CLIENT_FLAG if case.mode is Mode.CLIENT else 0
    parts = [bytes([flags])]
    labels = ",".join(_clean_labels(case.labels)).encode("utf-8")
    for blob in (case.ca, case.cert, case.key, case.password, case.server_name, labels):
        if len(blob) >= 1 << (7 * _MAX_VARINT_BYTES):
            raise ValueError(f"a field of {len(blob)} bytes is too large to encode")
        parts.append(_varint(len(blob)))
        parts.append(blob)
    return b"".join(parts)


def decode(data: bytes) -> InitCase:
    """Decode any byte string into a case; never raises."""
    view = memoryview(data)
    pos = 1
    fields: list[bytes] = []
    for _ in range(len(FIELDS) + 1):
        length = 0
        for i in range(_MAX_VARINT_BYTES):
            if pos >= len(view):
                break
            byte = view[pos]
            pos += 1
            length |= (byte & 0x7F) << (7 * i)
            if not byte & 0x80:
                break
        end = min(pos + length, len(view))
        fields.append(bytes(view[pos:end]))
        pos = end
    ca, cert, key, password, server_name, raw_labels = fields
    mode = Mode.CLIENT if data[:1] and data[0] & _CLIENT_FLAG else Mode.SERVER
    labels = _clean_labels(tuple(raw_labels.decode("utf-8", "replace").split(",")))
    return InitCase(mode, ca, cert, key, password, server_name, labels)
