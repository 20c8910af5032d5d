"""The init case: what a TLS initialisation path is given, and its byte encoding.

An :class:`InitCase` mirrors the options an embedded TLS library takes when it
sets up a connection (Mongoose's ``mg_tls_opts``, mbedTLS/OpenSSL glue code in
servers, Python wrappers): the mode, a CA blob, a certificate blob (leaf,
optionally followed by its chain), a private key blob, the key's password and
the server name.  ``labels`` name the defects that were applied to make it; they
are carried along so that a corpus file says what it was meant to exercise.

``fail_alloc`` is not something the init path is given but how it is run:
an allocation to make fail (``tlsleak fuzz --fail-alloc``, see
:func:`resolve_fail_alloc` and docs/fuzzing.md), carried in the case so that
the fuzzer mutates it along with the blobs and a corpus file or a crashing
input says which allocation it failed.  Targets never look at it.

Byte encoding, version 1 (used for every corpus file and every fuzz input)::

    byte 0      flags: bit 0 set = client mode, clear = server mode;
                bit 1 set = a fail point follows the labels.
                Bits 2-7 are reserved: written as 0, ignored when read.
    then six fields, in this order:
                ca, cert, key, password, server_name, labels
                each one is a length (unsigned LEB128, at most 4 bytes read)
                followed by that many bytes.
    then, when bit 1 is set, the fail point: one unsigned LEB128 (at most 4
                bytes read) ``u``, zigzag-coded over the non-zero integers:
                ``u = 2(n-1)`` for ``n > 0``, ``u = 2(-n)-1`` for ``n < 0``.

Decoding is *total*: every byte string decodes to some case, so no fuzz
execution is wasted on a parse error.  A length that runs past the end of the
input is cut to what is left, fields missing at the end are empty (a missing
fail point reads as ``u = 0``, that is ``n = 1``), bytes after the last field
are ignored, and the empty string is a server-mode case with every blob
empty.  ``labels`` is UTF-8 (invalid bytes become U+FFFD), split on commas,
empty names dropped.  Encoding is canonical, so for every byte string ``b``:
``decode(encode(decode(b))) == decode(b)``.  Files written before the fail
point existed have bit 1 clear and decode exactly as they did.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from typing import Final

__all__ = [
    "FIELDS",
    "MAX_FAIL_ALLOC",
    "InitCase",
    "Mode",
    "Step",
    "decode",
    "encode",
    "resolve_fail_alloc",
]


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
_FAIL_ALLOC_FLAG: Final = 0x02
# A 4-byte LEB128 length reaches 256 MiB, far past any input worth reading;
# capping the bytes read keeps decoding O(1) per field whatever the input.
_MAX_VARINT_BYTES: Final = 4
#: The largest ``abs(fail_alloc)``: its zigzag code fits in the 4 bytes read.
MAX_FAIL_ALLOC: Final = 1 << (7 * _MAX_VARINT_BYTES - 1)


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
    #: Which allocation of a run to make fail (see :func:`resolve_fail_alloc`);
    #: None: run it with every allocation succeeding.  Not part of the input.
    fail_alloc: int | None = None

    def __post_init__(self) -> None:
        if self.fail_alloc is not None and not 0 < abs(self.fail_alloc) <= MAX_FAIL_ALLOC:
            raise ValueError(
                f"fail_alloc must be a non-zero integer of at most {MAX_FAIL_ALLOC} either way, "
                f"not {self.fail_alloc}"
            )

    def with_labels(self, *labels: str) -> InitCase:
        """A copy with ``labels`` appended (duplicates kept out)."""
        merged = self.labels + tuple(x for x in labels if x not in self.labels)
        return replace(self, labels=_clean_labels(merged))

    def encode(self) -> bytes:
        """This case in the version 1 byte encoding."""
        return encode(self)

    def without_fail_alloc(self) -> InitCase:
        """This case without its fail point: what the target is given (and what warms up)."""
        return self if self.fail_alloc is None else replace(self, fail_alloc=None)

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


def resolve_fail_alloc(fail_alloc: int, count: int) -> int | None:
    """The allocation (1 to ``count``) that ``fail_alloc`` names in a run of ``count``.

    Positive values count from the start (1: the first allocation), negative
    ones from the end (-1: the last), and both wrap around modulo ``count``,
    so every value the fuzzer makes names an allocation the run does make (no
    execution spent failing an allocation past the end) and one anchored at
    either end of the run keeps its place when the other end drifts.  None
    when the run makes no allocation: there is nothing to fail.
    """
    if count <= 0:
        return None
    if fail_alloc > 0:
        return 1 + (fail_alloc - 1) % count
    return count - (-fail_alloc - 1) % count


def _zigzag(n: int) -> int:
    return 2 * (n - 1) if n > 0 else -2 * n - 1


def _unzigzag(u: int) -> int:
    return u // 2 + 1 if u % 2 == 0 else -(u + 1) // 2


def encode(case: InitCase) -> bytes:
    """Encode ``case`` (see the module docstring for the format)."""
    flags = _CLIENT_FLAG if case.mode is Mode.CLIENT else 0
    if case.fail_alloc is not None:
        flags |= _FAIL_ALLOC_FLAG
    parts = [bytes([flags])]
    labels = ",".join(_clean_labels(case.labels)).encode("utf-8")
    for blob in (case.ca, case.cert, case.key, case.password, case.server_name, labels):
        if len(blob) >= 1 << (7 * _MAX_VARINT_BYTES):
            raise ValueError(f"a field of {len(blob)} bytes is too large to encode")
        parts.append(_varint(len(blob)))
        parts.append(blob)
    if case.fail_alloc is not None:
        parts.append(_varint(_zigzag(case.fail_alloc)))
    return b"".join(parts)


def decode(data: bytes) -> InitCase:
    """Decode any byte string into a case; never raises."""
    view = memoryview(data)
    pos = 1
    fields: list[bytes] = []
    for _ in range(len(FIELDS) + 1):
        length, pos = _read_varint(view, pos)
        end = min(pos + length, len(view))
        fields.append(bytes(view[pos:end]))
        pos = end
    ca, cert, key, password, server_name, raw_labels = fields
    flags = data[0] if data[:1] else 0
    mode = Mode.CLIENT if flags & _CLIENT_FLAG else Mode.SERVER
    labels = _clean_labels(tuple(raw_labels.decode("utf-8", "replace").split(",")))
    fail_alloc = _unzigzag(_read_varint(view, pos)[0]) if flags & _FAIL_ALLOC_FLAG else None
    return InitCase(mode, ca, cert, key, password, server_name, labels, fail_alloc)


def _read_varint(view: memoryview, pos: int) -> tuple[int, int]:
    """(the LEB128 number at ``pos``, at most 4 bytes of it; where it ends); 0 past the end."""
    value = 0
    for i in range(_MAX_VARINT_BYTES):
        if pos >= len(view):
            break
        byte = view[pos]
        pos += 1
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            break
    return value, pos
