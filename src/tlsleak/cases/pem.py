"""PEM-level, structure-aware mutations: a lossless PEM model and named ways to damage it.

The model
---------
:func:`split` cuts any bytes into :class:`Block` and :class:`Text` parts.  It
reads PEM the way OpenSSL's PEM reader finds it, but never judges it:

- lines end at ``"\\n"`` only, as ``BIO_gets`` reads them; a ``"\\r"`` before
  it belongs to the line ending, a lone ``"\\r"`` or a NUL is ordinary data;
- a block starts at a line that begins with ``-----BEGIN`` (at the start of
  the input or right after a ``"\\n"``; a ``-----BEGIN`` inside a line is text,
  as it is to OpenSSL, although :func:`tlsleak.cases.blobs.pem_blocks` cuts
  there);
- it ends with the first later line that begins with ``-----END``, whatever
  its label (its END line), or, when another ``-----BEGIN`` line or the end of
  the input comes first, right before that (the END line is missing);
- inside, the header lines are the run of lines holding a ``":"`` right after
  the BEGIN line (``Proc-Type: 4,ENCRYPTED``, ``DEK-Info: AES-128-CBC,<IV>``),
  then one blank line when there is one; the rest up to the END line is the
  body, base64 or not, kept byte for byte.  (OpenSSL keeps reading headers up
  to the blank line; stopping at the first line without a colon keeps base64
  lines in the body when that blank line is missing, which is what a mutator
  wants to work on.)
- everything else, before, between and after blocks, is text.

A block keeps its lines as raw bytes, line endings included (:attr:`Block.begin`,
:attr:`~Block.headers`, :attr:`~Block.blank`, :attr:`~Block.body`,
:attr:`~Block.end`); labels, header fields and body lines are read from them
on demand.  Every byte of the input lands in exactly one field of one part, so
the model is total and **lossless**: ``join(split(data)) == data`` for any
bytes, PEM or not, CRLF, NULs and all.

Mutations
---------
:data:`MUTATIONS` maps a hyphenated name to a :class:`Mutation`: a one-line
description, the test of whether it can act on a part, and the function that
rewrites the part into one or more parts.  All but two act on one block;
``armor`` and ``armor-raw`` act on an input without any block and turn it
into one.  Registry order is simplest first.  :func:`mutate` picks a block
(towards the first), then one of the mutations that apply to it (towards the
first in registry order), applies it and joins the parts again.  With a
``body_mutator`` one more mutation is possible, ``der``: the block's body is
decoded (leniently: characters outside the base64 alphabet are dropped), the
DER goes through ``body_mutator`` and the result is armored again in 64-column
lines; its name comes back as ``"der:<name>"``.  When no mutation applies (a
``mutations`` selection that fits nothing in the input) the input comes back
unchanged, named ``"unchanged"``.

Bounds
------
:func:`mutate` is total: any bytes give bytes and a name, never an exception
(an unknown mutation name is the caller's bug and a ``ValueError``).  It costs
time linear in the input and a bounded amount of Python work beyond that:

- at most :data:`MAX_BLOCKS` blocks are considered; from the next
  ``-----BEGIN`` line on, the input is carried through as one text part.  The
  search for blocks, END lines and headers is done by ``bytes.find`` and
  regular expressions, never line by line in Python;
- mutations that rewrite a body (re-wrapping, whitespace, padding, truncation,
  ``der``) apply only to bodies of at most :data:`MAX_BODY` bytes, and
  ``armor`` only to inputs whose base64 fits in that; the others work on any
  block with a few C-level passes (``find``, ``replace``, slicing, ``join``);
- one call makes at most about 20 decisions;
- the output is at most ``2 * len(data) + 256 KiB`` long (duplicating a block,
  CRLF line endings on a block of empty lines, one-character lines), plus 4/3
  of what ``body_mutator`` returns for ``der``.

So a 1 MiB input mutates in a few milliseconds, whatever it holds: what is
left is a handful of passes over it in C.

Shrinking
---------
Every decision goes through :class:`~tlsleak.cases.choices.Choices`.  With
:class:`~tlsleak.cases.choices.DrawChoices` Hypothesis shrinks the block index
towards the first block, the mutation towards the simplest applicable one in
registry order, and each mutation's own decisions towards its first option
(labels in the order of :data:`LABELS`, the first variant of a header, an
all-zero IV, the smallest count or position).  When no selected mutation
applies to the drawn block, the next block that has one is taken, so a shrunk
block index still lands on a block the mutation can act on.  A ``der``
mutation's own decisions are drawn by ``body_mutator`` from the same
``Choices`` and shrink the same way.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Final, TypeAlias

from tlsleak.cases.choices import Choices

__all__ = [
    "DER",
    "LABELS",
    "MAX_BLOCKS",
    "MAX_BODY",
    "MUTATIONS",
    "UNCHANGED",
    "Block",
    "BodyMutator",
    "Mutation",
    "Part",
    "Text",
    "join",
    "mutate",
    "split",
]

#: Blocks :func:`mutate` considers; the rest of the input is carried as text.
MAX_BLOCKS: Final = 128
#: Largest body (in bytes, line endings included) a body-rewriting mutation touches.
MAX_BODY: Final = 64 * 1024

#: Labels a block is relabelled to, simplest (the most common) first.
LABELS: Final = (
    b"CERTIFICATE",
    b"TRUSTED CERTIFICATE",
    b"X509 CRL",
    b"RSA PRIVATE KEY",
    b"PRIVATE KEY",
    b"ENCRYPTED PRIVATE KEY",
    b"EC PRIVATE KEY",
    b"PUBLIC KEY",
    b"X509 CERTIFICATE",
    b"NEW CERTIFICATE REQUEST",
    b"DSA PRIVATE KEY",
)

_BEGIN: Final = b"-----BEGIN"
_END: Final = b"-----END"
# The run of header lines: each holds a colon and ends with "\n".  The two
# character classes are disjoint, so matching never backtracks.
_HEADERS: Final = re.compile(rb"(?:[^\n:]*:[^\n]*\n)+")
_BLANK: Final = re.compile(rb"[ \t\r]*\n")
_NOT_BASE64: Final = re.compile(rb"[^A-Za-z0-9+/]+")
_HAS_BASE64: Final = re.compile(rb"[A-Za-z0-9+/]")
_BARE_LF: Final = re.compile(rb"(?<!\r)\n")
_WHITESPACE: Final = b" \t\r\n\v\f"


# --- the model ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Text:
    """Bytes outside any block, kept as they were."""

    data: bytes

    def __bytes__(self) -> bytes:
        return self.data


@dataclass(frozen=True, slots=True)
class Block:
    """One PEM block as raw lines; its bytes are the concatenation of the fields.

    ``begin`` is the BEGIN line, ``headers`` the header lines, ``blank`` the
    blank line after them, ``body`` everything up to ``end``, the END line
    (empty when it is missing).  Each keeps its line endings; ``begin``,
    ``body`` or ``end`` may lack one at the end of the input.
    """

    begin: bytes
    headers: bytes = b""
    blank: bytes = b""
    body: bytes = b""
    end: bytes = b""

    def __bytes__(self) -> bytes:
        return b"".join(_fields(self))

    @property
    def label(self) -> bytes:
        """The label of the BEGIN line (``b"CERTIFICATE"``)."""
        return _label(self.begin, _BEGIN)

    @property
    def end_label(self) -> bytes | None:
        """The label of the END line, which may differ from :attr:`label`; None without one."""
        return _label(self.end, _END) if self.end else None

    @property
    def newline(self) -> bytes:
        """The BEGIN line's line ending (``"\\n"`` without one), which added lines take."""
        return b"\r\n" if self.begin.endswith(b"\r\n") else b"\n"

    @property
    def fields(self) -> tuple[tuple[bytes, bytes], ...]:
        """The header lines as ``(name, value)``, both stripped."""
        out = []
        for line in _lines(self.headers):
            name, _, value = line.partition(b":")
            out.append((name.strip(), value.strip()))
        return tuple(out)

    @property
    def body_lines(self) -> tuple[bytes, ...]:
        """The body's lines, line endings included."""
        return tuple(_lines(self.body))


Part: TypeAlias = Block | Text

#: What :func:`mutate` calls for ``der``: DER in, damaged DER and a name out.
BodyMutator: TypeAlias = Callable[[bytes, Choices], tuple[bytes, str]]


def _fields(block: Block) -> tuple[bytes, bytes, bytes, bytes, bytes]:
    return (block.begin, block.headers, block.blank, block.body, block.end)


def _label(line: bytes, keyword: bytes) -> bytes:
    # Lenient on purpose: any number of closing dashes, spaces around the label.
    return line[len(keyword) :].rstrip(_WHITESPACE).rstrip(b"-").strip(b" \t")


def _lines(data: bytes) -> list[bytes]:
    """``data`` cut after each ``"\\n"`` (``bytes.splitlines`` would also cut at a lone CR)."""
    pieces = data.split(b"\n")
    lines = [piece + b"\n" for piece in pieces[:-1]]
    if pieces[-1]:
        lines.append(pieces[-1])
    return lines


def _line_start(data: bytes, marker: bytes, pos: int) -> int:
    """Where the first line at or after ``pos`` that begins with ``marker`` starts, or -1."""
    if pos == 0 and data.startswith(marker):
        return 0
    hit = data.find(b"\n" + marker, max(pos - 1, 0))
    return -1 if hit == -1 else hit + 1


def _line_end(data: bytes, pos: int) -> int:
    """Where the line holding ``pos`` ends (after its ``"\\n"``, or at the end of ``data``)."""
    newline = data.find(b"\n", pos)
    return len(data) if newline == -1 else newline + 1


def _block(data: bytes, start: int, content: int, stop: int, after: int) -> Block:
    """The block whose BEGIN line is ``data[start:content]`` and END line ``data[stop:after]``."""
    headers = _HEADERS.match(data, content, stop)
    body = headers_end = headers.end() if headers else content
    if headers:
        blank = _BLANK.match(data, headers_end, stop)
        if blank:
            body = blank.end()
    return Block(
        begin=data[start:content],
        headers=data[content:headers_end],
        blank=data[headers_end:body],
        body=data[body:stop],
        end=data[stop:after],
    )


def _split(data: bytes, max_blocks: int | None) -> list[Part]:
    parts: list[Part] = []
    pos = 0  # where the bytes not yet in a part begin
    next_begin = _line_start(data, _BEGIN, 0)
    # The next END line is looked up again only once the search has passed it,
    # and never once there is none: with the BEGIN search, that keeps the
    # scanning linear however many blocks and stray END lines the input holds.
    next_end = -2
    count = 0
    while next_begin != -1 and (max_blocks is None or count < max_blocks):
        start = next_begin
        if start > pos:
            parts.append(Text(data[pos:start]))
        content = _line_end(data, start)
        next_begin = _line_start(data, _BEGIN, content)
        if next_end != -1 and next_end < content:
            next_end = _line_start(data, _END, content)
        if next_end != -1 and (next_begin == -1 or next_end < next_begin):
            stop, after = next_end, _line_end(data, next_end)
        else:
            stop = after = len(data) if next_begin == -1 else next_begin
        parts.append(_block(data, start, content, stop, after))
        pos = after
        count += 1
    if pos < len(data):
        parts.append(Text(data[pos:]))
    return parts


def split(data: bytes) -> list[Part]:
    """``data`` as blocks and the text around them; total, and ``join(split(data)) == data``."""
    return _split(bytes(data), None)


def join(parts: Sequence[Part]) -> bytes:
    """The bytes of ``parts``, in order."""
    # Field by field: one copy of a large body, not two.
    return b"".join(
        field
        for part in parts
        for field in (_fields(part) if isinstance(part, Block) else (part.data,))
    )


# --- building blocks ------------------------------------------------------------------------------


def _eol(line: bytes) -> bytes:
    if line.endswith(b"\r\n"):
        return b"\r\n"
    return b"\n" if line.endswith(b"\n") else b""


def _armor_line(keyword: bytes, label: bytes, eol: bytes) -> bytes:
    return b"%s %s-----%s" % (keyword, label, eol)


def _wrap(text: bytes, width: int, eol: bytes) -> bytes:
    """``text`` in lines of ``width`` characters, each ended by ``eol``."""
    if not text:
        return b""
    if width >= 16:
        return eol.join(text[i : i + width] for i in range(0, len(text), width)) + eol
    # Narrow lines are too many to slice one by one: interleave columns instead,
    # one strided copy per column and per character of the line ending.
    full = len(text) // width
    step = width + len(eol)
    out = bytearray(full * step)
    columns = text[: full * width]
    for column in range(width):
        out[column::step] = columns[column::width]
    for offset, char in enumerate(eol, width):
        out[offset::step] = bytes([char]) * full
    rest = text[full * width :]
    return bytes(out) + (rest + eol if rest else b"")


def _armor(label: bytes, der: bytes, eol: bytes) -> Block:
    """A well-formed block: ``der`` in base64, 64 columns, as OpenSSL writes it."""
    return Block(
        begin=_armor_line(_BEGIN, label, eol),
        body=_wrap(base64.b64encode(der), 64, eol),
        end=_armor_line(_END, label, eol),
    )


def _b64_text(body: bytes) -> bytes:
    return body.translate(None, _WHITESPACE)


def _decode(body: bytes) -> bytes:
    """The DER in a body, read leniently: never an error, whatever the body holds."""
    text = _NOT_BASE64.sub(b"", body)
    if len(text) % 4 == 1:
        text = text[:-1]  # a lone sixth of a byte decodes to nothing
    return base64.b64decode(text + b"=" * (-len(text) % 4))


def _other_label(label: bytes | None, choices: Choices) -> bytes:
    return choices.choice([x for x in LABELS if x != label])


def _with_headers(block: Block, lines: Sequence[bytes]) -> Block:
    """``block`` with its headers replaced by ``lines`` and a blank line after them."""
    eol = block.newline
    return replace(block, headers=b"".join(line + eol for line in lines), blank=eol)


def _hex_iv(size: int, choices: Choices) -> bytes:
    return choices.blob(size, size).hex().upper().encode()


# --- the registry ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Mutation:
    """One named mutation: whether it ``applies`` to a part, and how it rewrites it.

    ``apply`` returns the parts that take the place of the part it was given
    (the block and a new one next to it, say).
    """

    name: str
    description: str
    applies: Callable[[Part], bool]
    apply: Callable[[Part, Choices], list[Part]]


_REGISTRY: dict[str, Mutation] = {}

#: Every mutation by name, in registry order (simplest first).  ``der`` is not
#: here: it needs the ``body_mutator`` given to :func:`mutate`.
MUTATIONS: Final[Mapping[str, Mutation]] = MappingProxyType(_REGISTRY)

#: The name of the DER-level mutation (only with a ``body_mutator``) and the
#: prefix of the names it returns.
DER: Final = "der"
#: The name :func:`mutate` returns when no mutation applied.
UNCHANGED: Final = "unchanged"

_BlockFn: TypeAlias = Callable[[Block, Choices], list[Part]]


def _on_block(
    name: str, when: Callable[[Block], bool] | None = None
) -> Callable[[_BlockFn], _BlockFn]:
    """Register a block mutation; its docstring is its description."""

    def register(fn: _BlockFn) -> _BlockFn:
        def applies(part: Part) -> bool:
            return isinstance(part, Block) and (when is None or when(part))

        def apply(part: Part, choices: Choices) -> list[Part]:
            if not isinstance(part, Block):
                raise TypeError(f"{name} mutates a block, not {type(part).__name__}")
            return fn(part, choices)

        _REGISTRY[name] = Mutation(name, (fn.__doc__ or "").strip(), applies, apply)
        return fn

    return register


def _on_text(
    name: str, when: Callable[[bytes], bool] | None = None
) -> Callable[[Callable[[bytes, Choices], Block]], None]:
    """Register a mutation for an input without blocks (given to it as one text part)."""

    def register(fn: Callable[[bytes, Choices], Block]) -> None:
        def applies(part: Part) -> bool:
            return isinstance(part, Text) and (when is None or when(part.data))

        def apply(part: Part, choices: Choices) -> list[Part]:
            if not isinstance(part, Text):
                raise TypeError(f"{name} wraps text, not {type(part).__name__}")
            return [fn(part.data, choices)]

        _REGISTRY[name] = Mutation(name, (fn.__doc__ or "").strip(), applies, apply)

    return register


def _small_body(block: Block) -> bool:
    return 0 < len(block.body) <= MAX_BODY and _HAS_BASE64.search(block.body) is not None


def _last_field(block: Block) -> int:
    """Which field (in :func:`_fields` order) holds the block's last line."""
    fields = _fields(block)
    return max(i for i, field in enumerate(fields) if field or i == 0)


@_on_block("missing-final-newline", lambda b: _fields(b)[_last_field(b)].endswith(b"\n"))
def _missing_final_newline(block: Block, choices: Choices) -> list[Part]:
    """The block's last line loses its line ending (the next part runs on, if any)."""
    fields = list(_fields(block))
    last = _last_field(block)
    fields[last] = fields[last][: -len(_eol(fields[last]))]
    return [Block(*fields)]


@_on_block("trailing-whitespace")
def _trailing_whitespace(block: Block, choices: Choices) -> list[Part]:
    """Spaces or tabs before the line ending of the BEGIN line, the END line or both."""
    space = choices.choice((b" ", b"\t", b" \t "))
    where = choices.choice(("begin", "end", "both")) if block.end else "begin"

    def padded(line: bytes) -> bytes:
        eol = _eol(line)
        return line[: len(line) - len(eol)] + space + eol

    begin = padded(block.begin) if where != "end" else block.begin
    end = padded(block.end) if where != "begin" else block.end
    return [replace(block, begin=begin, end=end)]


@_on_block("crlf", lambda b: any(_BARE_LF.search(f) for f in _fields(b)))
def _crlf(block: Block, choices: Choices) -> list[Part]:
    """Every line ending of the block becomes CRLF."""
    fields = (f.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n") for f in _fields(block))
    return [Block(*fields)]


@_on_block("lf", lambda b: any(b"\r\n" in f for f in _fields(b)))
def _lf(block: Block, choices: Choices) -> list[Part]:
    """Every CRLF line ending of the block becomes a bare LF."""
    return [Block(*(f.replace(b"\r\n", b"\n") for f in _fields(block)))]


def _rewrapped(block: Block, width: int) -> list[Part]:
    return [replace(block, body=_wrap(_b64_text(block.body), width, block.newline))]


@_on_block("rewrap-76", _small_body)
def _rewrap_76(block: Block, choices: Choices) -> list[Part]:
    """The body re-wrapped in 76-column lines (MIME's width, not PEM's 64)."""
    return _rewrapped(block, 76)


@_on_block("rewrap-one-line", lambda b: _small_body(b) and b.body.count(b"\n") > 1)
def _rewrap_one_line(block: Block, choices: Choices) -> list[Part]:
    """The whole body on one long line."""
    return _rewrapped(block, MAX_BODY)


@_on_block("rewrap-1", _small_body)
def _rewrap_1(block: Block, choices: Choices) -> list[Part]:
    """The body in one-character lines."""
    return _rewrapped(block, 1)


@_on_block("rewrap-ragged", _small_body)
def _rewrap_ragged(block: Block, choices: Choices) -> list[Part]:
    """The body in lines of varying widths (a cycle of two to four widths, 16 to 128)."""
    # 16 columns at least keeps the Python loop short (MAX_BODY / 16 lines);
    # rewrap-1 covers very short lines.
    widths = [choices.integer(16, 128) for _ in range(choices.integer(2, 4))]
    text, eol = _b64_text(block.body), block.newline
    lines: list[bytes] = []
    pos = k = 0
    while pos < len(text):
        lines.append(text[pos : pos + widths[k % len(widths)]] + eol)
        pos += widths[k % len(widths)]
        k += 1
    return [replace(block, body=b"".join(lines))]


@_on_block("body-whitespace", _small_body)
def _body_whitespace(block: Block, choices: Choices) -> list[Part]:
    """One to eight runs of spaces or tabs inserted inside the body."""
    body = block.body
    for _ in range(choices.integer(1, 8)):
        pos = choices.integer(0, len(body) - 1)
        if pos and body[pos - 1 : pos + 1] == b"\r\n":
            pos -= 1  # keep CRLF whole: a space before it, not inside it
        body = body[:pos] + choices.choice((b" ", b"\t", b"  ", b" \t")) + body[pos:]
    return [replace(block, body=body)]


def _text_options(block: Block) -> tuple[bytes | None, ...]:
    label = block.label[:64] or LABELS[0]
    return (
        b"\n",
        b"subject=CN = localhost\n",
        # `openssl pkcs12` output: text between blocks whose lines look like headers.
        b"Bag Attributes\n    localKeyID: 01 00 00 00 \n",
        b"Proc-Type: 4,ENCRYPTED\n",
        b"-----\n",
        b"-----END " + label + b"-----\n",  # a stray END line outside any block
        b"x-----BEGIN " + label + b"-----\n",  # armor, but not at the start of a line
        b"\0\n",
        None,  # drawn bytes
    )


@_on_block("text-between")
def _text_between(block: Block, choices: Choices) -> list[Part]:
    """Text before or after the block: a comment, header-like lines, stray armor, junk."""
    after = choices.boolean()
    text = choices.choice(_text_options(block))
    if text is None:
        text = choices.blob(1, 64) + b"\n"
    return [block, Text(text)] if after else [Text(text), block]


@_on_block("duplicate-block")
def _duplicate_block(block: Block, choices: Choices) -> list[Part]:
    """The block twice in a row."""
    return [block, block]


@_on_block("relabel")
def _relabel(block: Block, choices: Choices) -> list[Part]:
    """BEGIN and END lines relabelled alike, to a label the block does not have."""
    label = _other_label(block.label, choices)
    end = _armor_line(_END, label, _eol(block.end)) if block.end else b""
    return [replace(block, begin=_armor_line(_BEGIN, label, _eol(block.begin)), end=end)]


@_on_block("mismatch-labels", lambda b: bool(b.end))
def _mismatch_labels(block: Block, choices: Choices) -> list[Part]:
    """The END line's label (or the BEGIN line's) changed, so the two differ."""
    if choices.boolean():
        label = _other_label(block.end_label, choices)
        return [replace(block, begin=_armor_line(_BEGIN, label, _eol(block.begin)))]
    label = _other_label(block.label, choices)
    return [replace(block, end=_armor_line(_END, label, _eol(block.end)))]


@_on_block("missing-end", lambda b: bool(b.end))
def _missing_end(block: Block, choices: Choices) -> list[Part]:
    """The END line removed."""
    return [replace(block, end=b"")]


@_on_block("empty-body", lambda b: bool(b.body))
def _empty_body(block: Block, choices: Choices) -> list[Part]:
    """The body removed; armor and headers kept."""
    return [replace(block, body=b"")]


@_on_block("truncate-body", _small_body)
def _truncate_body(block: Block, choices: Choices) -> list[Part]:
    """The body cut after one of its lines (one line or more dropped); END kept."""
    lines = _lines(block.body)
    drop = choices.integer(1, len(lines))
    return [replace(block, body=b"".join(lines[: len(lines) - drop]))]


@_on_block("missing-padding", lambda b: b"=" in b.body)
def _missing_padding(block: Block, choices: Choices) -> list[Part]:
    """The body's "=" padding removed."""
    return [replace(block, body=block.body.replace(b"=", b""))]


@_on_block("padding-in-middle", _small_body)
def _padding_in_middle(block: Block, choices: Choices) -> list[Part]:
    """Padding ("=", "==" or "====") inserted before the end of the body."""
    body = block.body
    end = len(body.rstrip(_WHITESPACE + b"="))  # insert before the last base64 character
    pos = choices.integer(0, max(end - 1, 0))
    if pos and body[pos - 1 : pos + 1] == b"\r\n":
        pos -= 1
    pad = choices.choice((b"=", b"==", b"===="))
    return [replace(block, body=body[:pos] + pad + body[pos:])]


def _insert_options(block: Block) -> tuple[bytes, ...]:
    eol = block.newline
    return (block.body, _wrap(base64.b64encode(b"\x30\x00"), 64, eol), b"")


@_on_block("insert-block")
def _insert_block(block: Block, choices: Choices) -> list[Part]:
    """A block of another kind (another label) before or after this one."""
    after = choices.boolean()
    label = _other_label(block.label, choices)
    body = choices.choice(_insert_options(block))
    eol = block.newline
    other = Block(_armor_line(_BEGIN, label, eol), body=body, end=_armor_line(_END, label, eol))
    return [block, other] if after else [other, block]


# ECPKParameters for `EC PARAMETERS` blocks, as `openssl ecparam -genkey` writes
# them before an EC key: named curves OpenSSL knows, then OIDs it does not.
_EC_PARAMETERS: Final = (
    bytes.fromhex("06082a8648ce3d030107"),  # prime256v1 (1.2.840.10045.3.1.7)
    bytes.fromhex("06052b81040022"),  # secp384r1 (1.3.132.0.34)
    bytes.fromhex("06082a8648ce3d030163"),  # 1.2.840.10045.3.1.99: unassigned prime curve
    bytes.fromhex("06032a0304"),  # 1.2.3.4: not a curve at all
)


@_on_block("ec-parameters", lambda b: b"KEY" in b.label)
def _ec_parameters(block: Block, choices: Choices) -> list[Part]:
    """An EC PARAMETERS block (a known or an unknown named curve) before a key block."""
    params = _armor(b"EC PARAMETERS", choices.choice(_EC_PARAMETERS), block.newline)
    return [params, block]


_PROC_TYPE: Final = b"Proc-Type: 4,ENCRYPTED"


@_on_block("legacy-no-dek-info")
def _legacy_no_dek_info(block: Block, choices: Choices) -> list[Part]:
    """Legacy encryption header Proc-Type 4,ENCRYPTED without a DEK-Info line."""
    return [_with_headers(block, [_PROC_TYPE])]


@_on_block("legacy-not-encrypted")
def _legacy_not_encrypted(block: Block, choices: Choices) -> list[Part]:
    """A Proc-Type that does not say ENCRYPTED, with a well-formed DEK-Info."""
    kind = choices.choice((b"4,MIC-CLEAR", b"4,", b"3,ENCRYPTED", b"4,ENCRYPTE"))
    dek = b"DEK-Info: AES-128-CBC," + _hex_iv(16, choices)
    return [_with_headers(block, [b"Proc-Type: " + kind, dek])]


@_on_block("legacy-wrong-cipher")
def _legacy_wrong_cipher(block: Block, choices: Choices) -> list[Part]:
    """Legacy encryption headers for a real cipher, over a body that is not encrypted."""
    cipher, iv_size = choices.choice(
        ((b"AES-128-CBC", 16), (b"AES-256-CBC", 16), (b"DES-EDE3-CBC", 8), (b"id-aes128-GCM", 12))
    )
    dek = b"DEK-Info: " + cipher + b"," + _hex_iv(iv_size, choices)
    return [_with_headers(block, [_PROC_TYPE, dek])]


@_on_block("legacy-unknown-cipher")
def _legacy_unknown_cipher(block: Block, choices: Choices) -> list[Part]:
    """Legacy encryption headers naming a cipher OpenSSL does not know."""
    cipher = choices.choice((b"AES-128-XYZ", b"NOT-A-CIPHER", b""))
    dek = b"DEK-Info: " + cipher + b"," + _hex_iv(16, choices)
    return [_with_headers(block, [_PROC_TYPE, dek])]


@_on_block("legacy-iv-length")
def _legacy_iv_length(block: Block, choices: Choices) -> list[Part]:
    """Legacy encryption headers for AES-128-CBC with an IV of the wrong length."""
    size = choices.choice((0, 8, 15, 17, 32))
    dek = b"DEK-Info: AES-128-CBC," + _hex_iv(size, choices)
    return [_with_headers(block, [_PROC_TYPE, dek])]


@_on_block("legacy-iv-not-hex")
def _legacy_iv_not_hex(block: Block, choices: Choices) -> list[Part]:
    """Legacy encryption headers for AES-128-CBC whose IV holds a non-hex character."""
    iv = bytearray(_hex_iv(16, choices))
    iv[choices.integer(0, len(iv) - 1)] = choices.choice(b"GZ -\0")
    return [_with_headers(block, [_PROC_TYPE, b"DEK-Info: AES-128-CBC," + bytes(iv)])]


# Base64 and 64-column lines cost a Python loop per line: armoring is capped
# like the body-rewriting mutations (MAX_BODY of base64 at most).
@_on_text("armor", lambda data: len(data) <= MAX_BODY // 4 * 3)
def _armor_text(data: bytes, choices: Choices) -> Block:
    """An input without blocks taken as DER: base64, 64 columns, armored with some label."""
    return _armor(choices.choice(LABELS), data, b"\n")


@_on_text("armor-raw")
def _armor_raw(data: bytes, choices: Choices) -> Block:
    """An input without blocks put as it is between BEGIN and END lines of some label."""
    label = choices.choice(LABELS)
    body = data + b"\n" if data and not data.endswith(b"\n") else data
    return Block(_armor_line(_BEGIN, label, b"\n"), body=body, end=_armor_line(_END, label, b"\n"))


def _der(block: Block, choices: Choices, body_mutator: BodyMutator) -> tuple[Block, str]:
    der, name = body_mutator(_decode(block.body), choices)
    body = _wrap(base64.b64encode(bytes(der)), 64, block.newline)
    return replace(block, body=body), f"{DER}:{name}"


# --- mutate ---------------------------------------------------------------------------------------


def _selected(mutations: Sequence[str] | None, with_der: bool) -> tuple[list[Mutation], bool]:
    """The registry entries named (all by default) in registry order, and whether ``der`` is."""
    if mutations is None:
        return list(_REGISTRY.values()), with_der
    if isinstance(mutations, str | bytes):
        raise ValueError(f"mutations is a sequence of names, not one name: {mutations!r}")
    names = set(mutations)
    unknown = sorted(names - _REGISTRY.keys() - {DER})
    if unknown:
        raise ValueError(f"unknown PEM mutation(s): {', '.join(map(repr, unknown))}")
    if DER in names and not with_der:
        raise ValueError(f"{DER!r} needs a body_mutator")
    return [m for m in _REGISTRY.values() if m.name in names], DER in names


def mutate(
    data: bytes,
    choices: Choices,
    *,
    mutations: Sequence[str] | None = None,
    body_mutator: BodyMutator | None = None,
) -> tuple[bytes, str]:
    """``data`` with one PEM mutation applied, and the mutation's name.

    ``mutations`` restricts the choice to those names (all of :data:`MUTATIONS`,
    plus ``der`` when a ``body_mutator`` is given, by default); an unknown name,
    or ``der`` without a ``body_mutator``, is a ``ValueError``.  Never raises
    otherwise, for any ``data``; see the module docstring for the bounds.
    """
    allowed, der = _selected(mutations, body_mutator is not None)
    data = bytes(data)
    parts = _split(data, MAX_BLOCKS)
    blocks = [i for i, part in enumerate(parts) if isinstance(part, Block)]
    if blocks:
        first = choices.integer(0, len(blocks) - 1)
        order = blocks[first:] + blocks[:first]
    else:
        parts, order = [Text(data)], [0]
    # The chosen block first; when nothing selected applies to it, the next one.
    for index in order:
        target = parts[index]
        usable = [m.name for m in allowed if m.applies(target)]
        if der and isinstance(target, Block) and len(target.body) <= MAX_BODY:
            usable.append(DER)
        if usable:
            break
    else:
        return data, UNCHANGED
    name = choices.choice(usable)
    if name == DER and isinstance(target, Block) and body_mutator is not None:
        block, name = _der(target, choices, body_mutator)
        new: list[Part] = [block]
    else:
        new = _REGISTRY[name].apply(target, choices)
    return join([*parts[:index], *new, *parts[index + 1 :]]), name
