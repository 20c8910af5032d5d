"""The moves the minimiser tries: smaller variants of a case, pass by pass.

A *pass* maps a case to its :class:`Candidate` moves.  Each candidate says how
many blob bytes it takes off (``saving``, exact or a close estimate), makes its
case only when asked (``make``), and carries a ``key`` that names *what it
does* rather than the bytes it produces: "drop this extension of block 2 of
the CA", "empty the password".  The key stays the same while other parts of
the case shrink, so :func:`tlsleak.check.minimize.shrink` can skip a move that
already failed in the current round instead of paying a check for it again.

The passes, in :data:`PASSES` order (the biggest wins first):

``fields``
    each field emptied, the certificate's chain dropped (the leaf kept), each
    blob cut to its first byte (a blob that is given but does not parse: all
    an error-path leak usually needs);
``blocks``
    runs of whole PEM blocks dropped from a blob: half of them, then
    quarters, ..., then one at a time, so one block needed out of a hundred
    is found in a few dozen checks, not a hundred; text before the first
    block dropped;
``swap``
    a certificate, key or public key (a whole DER blob or one PEM block)
    replaced by a much smaller valid one of the same kind and label from
    :mod:`tlsleak.cases.material` (Ed25519, EC P-256; RSA-2048 for an RSA
    PRIVATE KEY), and the leaf and key together by a matching pair, for paths
    that check the pair;
``der``
    inside each DER blob or PEM block body that starts with a constructed
    element (:mod:`tlsleak.cases.der`): an element dropped (an extension, a
    TBSCertificate field, an RDN, any SET or SEQUENCE member), half or a
    quarter of a long SET/SEQUENCE dropped, a constructed element emptied, a
    long INTEGER or string cut to one octet or to half, whatever follows the
    first element dropped; the lengths of the edited element's ancestors
    repaired, every other length left as it was (a lying length elsewhere may
    be the point);
``lines``
    PEM lines outside the base64 body (headers, blank lines, stray text): all
    at once, then one at a time;
``cut``
    each blob cut to half, then by a quarter, an eighth, ... one byte off.

The minimiser tries them largest ``saving`` first, above a threshold it
lowers step by step.  Everything is deterministic: no randomness, no set or
dict order that depends on hashing.  Work per pass is bounded whatever the
input: at most :data:`MAX_PIECES` blocks of a blob are looked into, at most
:data:`MAX_RUNS` runs of blocks per run length are offered, and DER is read
by :func:`tlsleak.cases.der.parse`, which stops after a bounded number of
elements.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, replace
from functools import cache, lru_cache, partial
from typing import Any, Final

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from tlsleak.cases import der, pem
from tlsleak.cases.blobs import is_pem, pem_blocks
from tlsleak.cases.case import FIELDS, InitCase
from tlsleak.cases.material import (
    Encoding,
    KeyFormat,
    KeyType,
    cert_bytes,
    identity,
    key_bytes,
    pem_armor,
)

__all__ = ["PASSES", "Candidate", "Pass"]


@dataclass(frozen=True, slots=True)
class Candidate:
    """One move: what it does (``key``), the bytes it saves, and how to make its case."""

    key: Hashable
    saving: int
    make: Callable[[], InitCase]


Pass = Callable[[InitCase], list[Candidate]]

#: Pieces (PEM blocks) per blob that the swap and der passes look into, and
#: text lines per blob the lines pass drops one by one: the blocks pass drops
#: the others first, so a huge bundle costs a bounded amount of work per step.
MAX_PIECES: Final = 128
#: Runs of blocks the blocks pass tries per blob and length of run, at most.
MAX_RUNS: Final = 256

_BEGIN: Final = b"-----BEGIN"
#: Fields that hold certificates or keys (the others are strings).
_BLOBS: Final = ("ca", "cert", "key")


def _digest(data: bytes) -> bytes:
    """A short stand-in for ``data`` in keys (blocks can be tens of KB)."""
    return hashlib.blake2b(data, digest_size=16).digest()


def _with(case: InitCase, name: str, blob: bytes) -> InitCase:
    """``case`` with blob field ``name`` set to ``blob`` (mode and labels kept)."""
    changes: dict[str, Any] = {name: blob}
    return replace(case, **changes)


def _pieces(blob: bytes) -> tuple[bytes, list[bytes]]:
    """The text before the first block and the blocks (as the targets cut them), or
    no prefix and the whole blob as one piece when it is not PEM."""
    prefix, pieces = _cut_into_pieces(blob)
    return prefix, list(pieces)


@lru_cache(maxsize=16)  # every move on a blob cuts it again: a bundle can hold thousands
def _cut_into_pieces(blob: bytes) -> tuple[bytes, tuple[bytes, ...]]:
    if not is_pem(blob):
        return b"", (blob,)
    return blob[: blob.find(_BEGIN)], tuple(pem_blocks(blob))


def _with_piece(case: InitCase, name: str, index: int, piece: bytes) -> InitCase:
    prefix, pieces = _pieces(getattr(case, name))
    pieces[index] = piece
    return _with(case, name, prefix + b"".join(pieces))


# --- fields and blocks ----------------------------------------------------------------------------


def field_drops(case: InitCase) -> list[Candidate]:
    """Each field emptied or cut to one byte; the certificate's chain dropped."""
    out = []
    for name in FIELDS:
        blob = getattr(case, name)
        if blob:
            out.append(Candidate(("empty", name), len(blob), partial(_with, case, name, b"")))
        if name in _BLOBS and len(blob) > 1:
            out.append(
                Candidate(("byte", name), len(blob) - 1, partial(_with, case, name, blob[:1]))
            )
    prefix, blocks = _pieces(case.cert)
    if len(blocks) > 1:
        chain = sum(len(b) for b in blocks[1:])
        out.append(Candidate(("chain",), chain, partial(_with, case, "cert", prefix + blocks[0])))
    return out


def _runs(count: int) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` of the runs of blocks to try dropping: halves, quarters, ..., ones.

    Runs shorter than ``count / MAX_RUNS`` wait until the blob has shrunk, so a
    bundle of thousands of blocks costs a bounded amount of work per step.
    """
    size = count // 2
    while size >= max(1, -(-count // MAX_RUNS)):
        for start in range(0, count, size):
            stop = min(start + size, count)
            if stop - start < count:
                yield start, stop
        size //= 2


def _without_run(case: InitCase, name: str, start: int, stop: int) -> InitCase:
    prefix, blocks = _pieces(getattr(case, name))
    return _with(case, name, prefix + b"".join(blocks[:start] + blocks[stop:]))


def block_drops(case: InitCase) -> list[Candidate]:
    """Runs of PEM blocks dropped, and the text before the first block."""
    out = []
    for name in FIELDS:
        blob = getattr(case, name)
        if not is_pem(blob):
            continue
        prefix, blocks = _pieces(blob)
        if prefix:
            make = partial(_with, case, name, blob[len(prefix) :])
            out.append(Candidate(("prefix", name), len(prefix), make))
        for start, stop in _runs(len(blocks)):
            run = b"".join(blocks[start:stop])
            make = partial(_without_run, case, name, start, stop)
            out.append(Candidate(("blocks", name, start, _digest(run)), len(run), make))
    return out


# --- swaps for smaller valid material -------------------------------------------------------------

#: The small key types tried, smallest first.
_SMALL: Final = (KeyType.ED25519, KeyType.EC_P256)
_CERT_LABELS: Final = (b"CERTIFICATE", b"X509 CERTIFICATE", b"TRUSTED CERTIFICATE")
#: Key labels and the format a replacement key takes under each.
_KEY_FORMATS: Final = {
    b"PRIVATE KEY": KeyFormat.PKCS8,
    b"EC PRIVATE KEY": KeyFormat.SEC1,
    b"RSA PRIVATE KEY": KeyFormat.PKCS1,
    b"ENCRYPTED PRIVATE KEY": KeyFormat.PKCS8_ENCRYPTED,
}


@cache
def _small_cert(key_type: KeyType) -> bytes:
    return cert_bytes(identity(key_type, issued=False).leaf, Encoding.DER)


@lru_cache(maxsize=64)  # by password too, and a fuzzed case can bring any
def _small_key(key_type: KeyType, key_format: KeyFormat, password: bytes) -> bytes:
    """The DER of the small self-signed identity's key; empty when the format can't hold it."""
    encrypted = key_format is KeyFormat.PKCS8_ENCRYPTED
    if not key_format.fits(key_type) or (encrypted and not password):
        return b""
    key = identity(key_type, issued=False).key
    try:
        return key_bytes(key, key_format, Encoding.DER, password if encrypted else b"")
    except (ValueError, UnsupportedAlgorithm):
        return b""


@cache
def _small_public(key_type: KeyType) -> bytes:
    public = identity(key_type, issued=False).key.public_key()
    return public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _piece_kind(name: str, piece: bytes) -> tuple[bytes | None, str, tuple[KeyFormat, ...]]:
    """A piece's PEM label (None for DER), what it holds ("cert", "key", "public" or
    "" when unknown), and for a key the formats a stand-in may take."""
    if not is_pem(piece):
        if name == "key":
            return None, "key", (KeyFormat.PKCS8, KeyFormat.PKCS8_ENCRYPTED)
        return None, "cert", ()
    label = next((p.label for p in pem.split(piece) if isinstance(p, pem.Block)), b"")
    if label in _KEY_FORMATS:
        return label, "key", (_KEY_FORMATS[label],)
    if label in _CERT_LABELS:
        return label, "cert", ()
    return label, "public" if label == b"PUBLIC KEY" else "", ()


def _key_stand_ins(
    label: bytes | None, formats: tuple[KeyFormat, ...], password: bytes
) -> list[tuple[KeyType, bytes]]:
    out = []
    for key_format in formats:
        types = (KeyType.RSA2048,) if key_format is KeyFormat.PKCS1 else _SMALL
        for key_type in types:
            data = _small_key(key_type, key_format, password)
            if data:
                out.append((key_type, _armored(label, data)))
    return out


def _stand_ins(name: str, piece: bytes, password: bytes) -> list[bytes]:
    """Small valid pieces of the same kind and label as ``piece``."""
    label, kind, formats = _piece_kind(name, piece)
    if kind == "key":
        return [small for _, small in _key_stand_ins(label, formats, password)]
    if not kind:
        return []
    small = _small_cert if kind == "cert" else _small_public
    return [_armored(label, small(key_type)) for key_type in _SMALL]


def _armored(label: bytes | None, data: bytes) -> bytes:
    return data if label is None else pem_armor(label, data)


def swaps(case: InitCase) -> list[Candidate]:
    """Certificates and keys replaced by small valid ones; the leaf and key by a pair."""
    out = []
    for name in _BLOBS:
        blob = getattr(case, name)
        for index, piece in enumerate(_pieces(blob)[1][:MAX_PIECES] if blob else []):
            for small in _stand_ins(name, piece, case.password):
                if len(small) < len(piece):
                    what = ("swap", name, index, _digest(piece), _digest(small))
                    make = partial(_with_piece, case, name, index, small)
                    out.append(Candidate(what, len(piece) - len(small), make))
    if not case.cert or not case.key:
        return out
    leaf, key = _pieces(case.cert)[1][0], _pieces(case.key)[1][0]
    leaf_label, leaf_kind, _ = _piece_kind("cert", leaf)
    key_label, key_kind, formats = _piece_kind("key", key)
    if leaf_kind != "cert" or key_kind != "key":
        return out
    for key_type, small_key in _key_stand_ins(key_label, formats, case.password):
        small_cert = _armored(leaf_label, _small_cert(key_type))
        saving = len(leaf) + len(key) - len(small_cert) - len(small_key)
        if saving > 0:
            pair = ("pair", _digest(leaf + key), _digest(small_cert + small_key))
            out.append(Candidate(pair, saving, partial(_pair, case, small_cert, small_key)))
    return out


def _pair(case: InitCase, cert: bytes, key: bytes) -> InitCase:
    return _with_piece(_with_piece(case, "cert", 0, cert), "key", 0, key)


# --- DER elements ---------------------------------------------------------------------------------

# Universal tags whose content is not shortened: OIDs and times are what they
# name, and BOOLEAN and NULL are too short to bother.
_KEEP_CONTENT: Final = frozenset({1, 5, 6, 23, 24})
_INTEGER, _BIT_STRING = 2, 3


@dataclass(frozen=True, slots=True)
class _Edit:
    """One edit of a DER tree: at ``path`` (child indexes from the top), ``what`` is
    ``"drop"`` (``count`` nodes from there), ``"clear"`` (all children) or ``"set"``
    (the content becomes ``content``)."""

    what: str
    path: tuple[int, ...]
    saving: int
    key: Hashable
    count: int = 1
    content: bytes = b""


def _refresh(node: der.Node) -> None:
    """Give an edited node, or an ancestor of one, its correct length again.

    An indefinite node still closed by its end-of-contents is consistent as it
    is, so it keeps its BER form.
    """
    kids = node.children
    if node.tag and not (node.length == b"\x80" and kids and kids[-1].tag == b"\x00"):
        node.length = None


def _apply(data: bytes, edit: _Edit) -> bytes:
    """``data`` with ``edit`` made; only the lengths around the edit change."""
    roots = der.parse(data)
    container, touched = roots, []
    for index in edit.path[:-1]:
        parent = container[index]
        assert parent.children is not None
        touched.append(parent)
        container = parent.children
    index = edit.path[-1]
    if edit.what == "drop":
        del container[index : index + edit.count]
    elif edit.what == "clear":
        container[index].children = []
        touched.append(container[index])
    else:
        container[index].content = edit.content
        touched.append(container[index])
    for node in touched:
        _refresh(node)
    return der.serialise(roots)


def _shortened(node: der.Node) -> list[bytes]:
    """Shorter contents for a long primitive node: one octet, then half."""
    content = node.content
    if len(content) <= 2 or node.universal in _KEEP_CONTENT or node.is_raw:
        return []
    minimal = {_INTEGER: b"\x01", _BIT_STRING: b"\x00"}.get(node.universal or -1, content[:1])
    half = content[: len(content) // 2]
    return [minimal, half] if len(half) > len(minimal) else [minimal]


@lru_cache(maxsize=128)
def _der_edits(data: bytes) -> tuple[_Edit, ...]:
    """Every edit the ``der`` pass tries on DER ``data``, in document order.

    Cached by content: after a success only the piece that changed is walked
    again.  Keys hold digests, not element bytes, so a cached entry costs about
    as much memory as ``data`` itself (plus shortened contents).
    """
    roots = der.parse(data)
    if not roots or not roots[0].children:
        return ()  # not DER that starts with a constructed element: cutting will do
    edits: list[_Edit] = []
    if len(roots) > 1:  # what follows the first element, all of it
        trailing = der.serialise(roots[1:])
        edits.append(
            _Edit("drop", (1,), len(trailing), ("trailing", _digest(trailing)), len(roots) - 1)
        )
    stack: list[tuple[list[der.Node], int, tuple[int, ...], bytes]] = [(roots, 0, (0,), b"")]
    while stack:
        container, index, path, tags = stack.pop()
        node = container[index]
        here = tags + node.tag + b"/"  # the tags from the top: where, not which
        encoded = der.serialise([node])
        which = _digest(encoded)
        if len(path) > 1:
            edits.append(_Edit("drop", path, len(encoded), ("drop", here, which)))
        kids = node.children
        if kids is None:
            for content in _shortened(node):
                what = ("set", here, which, content)
                edits.append(_Edit("set", path, len(node.content) - len(content), what, 1, content))
            continue
        if len(kids) >= 2:
            size = len(node.content_octets()) - len(node.prefix)
            edits.append(_Edit("clear", path, size, ("clear", here, which)))
        size = len(kids) // 2
        while len(kids) >= 4 and size >= 2:
            for start in range(0, len(kids) - size + 1, size):
                run = der.serialise(kids[start : start + size])
                run_key = ("drop-run", here, start, _digest(run))
                edits.append(_Edit("drop", (*path, start), len(run), run_key, size))
            size //= 2
        stack.extend((kids, i, (*path, i), here) for i in reversed(range(len(kids))))
    return tuple(edits)


def _pem_body(piece: bytes) -> tuple[bytes, bytes] | None:
    """The DER and the label of one PEM block, or None when it has headers or bad armor."""
    parsed = next((part for part in pem.split(piece) if isinstance(part, pem.Block)), None)
    if parsed is None or parsed.headers or parsed.end_label != parsed.label:
        return None
    try:
        # Whitespace is line breaks; any other character outside base64 means
        # a damaged body, which is the case's point, not ours to clean.
        return base64.b64decode(b"".join(parsed.body.split()), validate=True), parsed.label
    except ValueError:
        return None


def _edited(case: InitCase, name: str, index: int, label: bytes | None, edit: _Edit) -> InitCase:
    data = _pem_body(_pieces(getattr(case, name))[1][index]) if label is not None else None
    body = data[0] if data is not None else getattr(case, name)
    return _with_piece(case, name, index, _armored(label, _apply(body, edit)))


def der_edits(case: InitCase) -> list[Candidate]:
    """DER elements dropped, emptied or shortened, in every DER blob and PEM block body."""
    out = []
    for name in _BLOBS:
        blob = getattr(case, name)
        if not blob:
            continue
        for index, piece in enumerate(_pieces(blob)[1][:MAX_PIECES]):
            label: bytes | None = None
            if is_pem(piece):
                body = _pem_body(piece)
                if body is None:
                    continue
                data, label = body
            else:
                data = piece
            for edit in _der_edits(data):
                make = partial(_edited, case, name, index, label, edit)
                out.append(Candidate(("der", name, index, edit.key), edit.saving, make))
    return out


# --- text lines and truncation --------------------------------------------------------------------

# A base64 body line (RFC 7468 allows trailing whitespace).  Everything else
# between the armor lines is a header or stray text.
_BASE64_LINE: Final = re.compile(rb"[A-Za-z0-9+/=]+[ \t]*\r?\n?")
_ARMOR: Final = (b"-----BEGIN", b"-----END")


def _without_lines(case: InitCase, name: str, drop: frozenset[int]) -> InitCase:
    lines = getattr(case, name).splitlines(keepends=True)
    return _with(case, name, b"".join(x for i, x in enumerate(lines) if i not in drop))


def line_drops(case: InitCase) -> list[Candidate]:
    """PEM lines outside the base64 body dropped: all at once, then one at a time (the
    first :data:`MAX_PIECES` of them)."""
    out = []
    for name in FIELDS:
        blob = getattr(case, name)
        if not is_pem(blob):
            continue
        lines = blob.splitlines(keepends=True)
        text = [
            i
            for i, line in enumerate(lines)
            if not line.lstrip().startswith(_ARMOR) and not _BASE64_LINE.fullmatch(line)
        ]
        drops = [frozenset(text)] if len(text) > 1 else []
        which = _digest(blob)  # a line's index names it only within this blob
        for drop in [*drops, *(frozenset({i}) for i in text[:MAX_PIECES])]:
            saving = sum(len(lines[i]) for i in drop)
            make = partial(_without_lines, case, name, drop)
            out.append(Candidate(("lines", name, which, min(drop), len(drop)), saving, make))
    return out


def _cut(case: InitCase, name: str, cut: int) -> InitCase:
    blob = getattr(case, name)
    return _with(case, name, blob[: len(blob) - cut])


def cuts(case: InitCase) -> list[Candidate]:
    """Each blob cut to half, then by a quarter, an eighth, ... down to one byte off."""
    out = []
    for name in FIELDS:
        blob = getattr(case, name)
        which = _digest(blob)
        cut = len(blob) // 2
        while cut >= 1:
            out.append(Candidate(("cut", name, which, cut), cut, partial(_cut, case, name, cut)))
            cut //= 2
    return out


#: The passes, in the order the minimiser runs them, with their names.
PASSES: Final[tuple[tuple[str, Pass], ...]] = (
    ("fields", field_drops),
    ("blocks", block_drops),
    ("swap", swaps),
    ("der", der_edits),
    ("lines", line_drops),
    ("cut", cuts),
)
