"""A lenient DER/TLV layer of tlsleak's own (no OpenSSL): build, parse, damage.

The model
---------
:func:`parse` reads any bytes as a list of :class:`Node` (the top-level
elements, usually one).  A node keeps its *tag octets* as they were (multi-byte
tags included; class, constructed bit and number are read from them on
demand), its *length octets* as they were (so a length that lies, a long form
where the short one was due, leading zero octets or an indefinite ``0x80`` all
survive), and either its content octets or, when the content was parsed, its
``children``.  What can't be read as a header becomes a *raw* node (empty tag,
the bytes in ``content``), and reading stops there for that level:

- a constructed node is descended into; its children are whatever its content
  parses into, raw remainder included.  With the indefinite length ``0x80``
  the children run up to an end-of-contents element (``00 00``, kept as the
  last child) or to the end of the enclosing content;
- a length that claims more than there is, or ``0x80`` on a primitive node,
  makes the node take the rest of the enclosing content (its length octets
  still say what they said);
- a tag or length that is cut short, a tag of more than :data:`MAX_TAG_OCTETS`
  octets and the reserved length octet ``0xFF`` end the level: the rest of it
  is one raw node;
- a primitive OCTET STRING, or a BIT STRING with no unused bits, whose content
  is exactly one element of strict DER (definite, minimal lengths, nothing
  left over) is descended into too: certificates wrap extensions, keys and
  ECDSA signatures that way.  The BIT STRING's unused-bits octet is kept in
  ``prefix``.

Every input byte lands in exactly one tag, length, prefix or content field, so
the model is total and **lossless**: ``serialise(parse(data)) == data`` for
any bytes, DER or not.

A node whose ``length`` is ``None`` gets the correct (minimal, definite)
length when serialised.  :func:`fix_lengths` sets every length of a tree that
way (and drops the end-of-contents of indefinite nodes), which turns a tree
edited by hand back into consistent DER.

Mutations
---------
:data:`MUTATIONS` maps a hyphenated name to a :class:`Mutation`: a one-line
description, the test of whether it can act at a :class:`Site` (a node in its
tree) and the function that acts.  Registry order is simplest first: lengths,
structure, tags, then values (INTEGER, OID, BIT STRING, times), then
``raw-bytes``.  :func:`mutate` parses, picks a node on which at least one of
the selected mutations applies, picks one of those, applies it, makes the
lengths of the node's *ancestors* correct again (so a change deep in the tree
is seen where it was made, not as a lying outer length) and serialises.  The
mutated node's own length is only recomputed when its content changed and
the mutation is not about lengths; nodes elsewhere keep their octets.  When
nothing selected applies (empty or non-DER input, a selection that fits
nothing), or the result equals the input, the input gets a ``raw-bytes``
(:data:`RAW_BYTES`) mutation instead (flip, delete or insert bytes), whatever
the selection: the output always differs from the input, and the name says
what happened.

Bounds
------
:func:`parse` and :func:`mutate` never raise for any bytes (an unknown
mutation name is the caller's bug and a ``ValueError``), never recurse, and
cost time linear in the input plus a bounded amount of Python work:

- at most :data:`MAX_NODES` headers are decoded per parse (the look-ahead
  that decides whether an OCTET/BIT STRING wraps DER counts too); past that,
  the rest of every open level is kept as one raw node;
- nodes deeper than :data:`MAX_DEPTH` are not descended into (their content
  stays bytes); tags longer than :data:`MAX_TAG_OCTETS` octets end the level;
- every input byte is copied O(1) times: a parse slices each leaf once, and
  :func:`mutate` copies whatever the mutation left alone straight from the
  input in runs, re-encoding only the mutated node and its ancestors (the
  walk after parsing is bounded by :data:`MAX_NODES` too).  So a 1 MiB input
  mutates in a few milliseconds, whatever it holds;
- a mutation makes the output at most :data:`MAX_GROWTH` bytes longer than the
  input: duplicates and copies only of nodes up to :data:`MAX_COPY` bytes,
  huge INTEGERs up to :data:`MAX_HUGE_INTEGER` octets, at most
  :data:`MAX_WRAP` wrapping SEQUENCEs, at most 126 length octets, small
  inserts.  :func:`serialise`, :func:`fix_lengths` and ``repr`` don't recurse
  either, so trees of any depth built by hand are fine.

Shrinking
---------
Every decision goes through :class:`~tlsleak.cases.choices.Choices`, in this order:
the node (among those some selected mutation applies to, in document order,
so towards the outermost first element), the mutation (towards the first
applicable one in registry order), then the mutation's own parameters
(towards the first option or the smallest count).  Under
:class:`~tlsleak.cases.choices.DrawChoices` each decision shrinks that way; note
that Hypothesis also prefers *fewer* decisions, so over the whole registry a
mutation without parameters (``length-long-form``, ``drop-node``) can be what
a failing example shrinks to, rather than the first one.  Among mutations
that decide as much, the shrunk example is the first applicable mutation on
the first node it fits, with its first options: ``length-too-short`` by one
octet on the outer SEQUENCE, ``time-feb-30`` on notBefore.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, TypeAlias

from tlsleak.cases.choices import Choices

__all__ = [
    "MUTATIONS",
    "Mutation",
    "Node",
    "Site",
    "TagClass",
    "bit_string",
    "encode_length",
    "fix_lengths",
    "integer",
    "mutate",
    "octet_string",
    "oid",
    "parse",
    "sequence",
    "serialise",
    "tlv",
]

#: Headers :func:`parse` decodes at most (a certificate has about 60).
MAX_NODES: Final = 512
#: Nesting :func:`parse` descends to at most (a certificate needs about 10).
MAX_DEPTH: Final = 64
#: Octets after the first one of a multi-byte tag that :func:`parse` accepts.
MAX_TAG_OCTETS: Final = 16
#: Largest node (in bytes) ``duplicate-node`` or ``trailing-data`` copies.
MAX_COPY: Final = 8 * 1024
#: Most content octets ``integer-huge`` writes.
MAX_HUGE_INTEGER: Final = 8 * 1024
#: Most SEQUENCEs ``nest-deep`` wraps around a node (OpenSSL stops at 30).
MAX_WRAP: Final = 1024
#: How much longer than its input :func:`mutate`'s output can be.
MAX_GROWTH: Final = 16 * 1024

_INDEFINITE: Final = b"\x80"
_EOC: Final = b"\x00"  # the end-of-contents tag and its (short, zero) length octet

# Universal tag numbers the value mutations look for.
_BOOLEAN, _INTEGER, _BIT_STRING, _OCTET_STRING, _NULL, _OID = 1, 2, 3, 4, 5, 6
_ENUMERATED, _UTF8_STRING, _RELATIVE_OID, _SEQUENCE, _SET = 10, 12, 13, 16, 17
_PRINTABLE, _T61, _IA5, _UTC_TIME, _GENERALIZED_TIME, _BMP = 19, 20, 22, 23, 24, 30


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


# --- building correct DER -------------------------------------------------------------------------
# For material that must be well-formed around one deliberate defect (an even
# RSA modulus, a point off the curve, a hand-encrypted key): cryptography
# refuses to write such values, so they are built element by element.


def integer(n: int) -> bytes:
    """A non-negative INTEGER (a leading zero octet when the top bit is set)."""
    if n < 0:
        raise ValueError(f"integer() builds non-negative INTEGERs, not {n}")
    return tlv(0x02, n.to_bytes(n.bit_length() // 8 + 1, "big"))


def sequence(*items: bytes) -> bytes:
    """A SEQUENCE of already encoded elements."""
    return tlv(0x30, b"".join(items))


def octet_string(content: bytes) -> bytes:
    return tlv(0x04, content)


def bit_string(content: bytes) -> bytes:
    """A BIT STRING of whole octets (no unused bits)."""
    return tlv(0x03, b"\0" + content)


def oid(dotted: str) -> bytes:
    """An OBJECT IDENTIFIER from its dotted form (``"1.2.840.113549.1.1.1"``)."""
    arcs = [int(arc) for arc in dotted.split(".")]
    body = bytearray()
    for arc in (40 * arcs[0] + arcs[1], *arcs[2:]):
        septets = [arc & 0x7F]
        arc >>= 7
        while arc:
            septets.append(0x80 | (arc & 0x7F))
            arc >>= 7
        body += bytes(reversed(septets))
    return tlv(0x06, bytes(body))


# --- the model ------------------------------------------------------------------------------------


class TagClass(enum.IntEnum):
    """The class of a tag: the top two bits of its first octet."""

    UNIVERSAL = 0
    APPLICATION = 1
    CONTEXT = 2
    PRIVATE = 3


@dataclass(slots=True, eq=False, repr=False)
class Node:
    """One element, or (with an empty ``tag``) raw bytes that could not be parsed.

    ``length`` holds the length octets to write, true or not; ``None`` means
    "the correct ones", computed when serialised.  The content is ``content``
    when ``children`` is ``None``, else ``prefix`` followed by the children.
    Nodes compare by identity: compare :func:`serialise` results for equality.
    """

    tag: bytes
    length: bytes | None = None
    content: bytes = b""
    children: list[Node] | None = None
    prefix: bytes = b""

    @classmethod
    def raw(cls, data: bytes) -> Node:
        """Bytes carried verbatim: an unparsable remainder, or a copy spliced in."""
        return cls(b"", content=data)

    @property
    def is_raw(self) -> bool:
        return not self.tag

    @property
    def tag_class(self) -> TagClass | None:
        """The tag's class (``None`` for a raw node)."""
        return TagClass(self.tag[0] >> 6) if self.tag else None

    @property
    def constructed(self) -> bool:
        """Whether the tag says constructed (bit 6 of its first octet)."""
        return bool(self.tag) and bool(self.tag[0] & 0x20)

    @property
    def tag_number(self) -> int | None:
        """The tag number, from the low bits or the base-128 octets that follow.

        ``None`` for a raw node, or a multi-byte tag whose last octet says more
        follow (only a hand-built node can have one).
        """
        if not self.tag:
            return None
        low = self.tag[0] & 0x1F
        if low != 0x1F:
            return low
        if len(self.tag) < 2 or self.tag[-1] & 0x80:
            return None
        number = 0
        for octet in self.tag[1:]:
            number = (number << 7) | (octet & 0x7F)
        return number

    @property
    def universal(self) -> int | None:
        """The tag number of a single-octet universal tag, else ``None``."""
        if len(self.tag) != 1 or self.tag[0] >> 6 or self.tag[0] & 0x1F == 0x1F:
            return None
        return self.tag[0] & 0x1F

    def content_octets(self) -> bytes:
        """The content as serialised (``prefix`` and the children, or ``content``)."""
        if self.children is None:
            return self.content
        return self.prefix + serialise(self.children)

    def __repr__(self) -> str:
        # Not the dataclass repr: that one recurses, and trees can be deep.
        if not self.tag:
            return f"Node.raw({len(self.content)} octets)"
        length = "auto" if self.length is None else self.length.hex()
        if self.children is None:
            body = f"{len(self.content)} octets"
        else:
            body = f"{len(self.children)} children"
        return f"Node(tag={self.tag.hex()}, length={length}, {body})"


def _is_eoc(node: Node) -> bool:
    return node.tag == _EOC and node.length == _EOC and not node.content and not node.children


def _eoc() -> Node:
    return Node(_EOC, _EOC)


def _header(buf: bytes, pos: int, end: int) -> tuple[int, int, int] | None:
    """Where the tag and length octets at ``pos`` end, and the length (-1: indefinite).

    ``None`` when they don't fit before ``end``, the tag is too long, or the
    length octet is the reserved ``0xFF``.
    """
    if pos >= end:
        return None
    p = pos + 1
    if buf[pos] & 0x1F == 0x1F:  # high tag number form: base-128 octets follow
        limit = min(end, p + MAX_TAG_OCTETS)
        while True:
            if p >= limit:
                return None
            p += 1
            if not buf[p - 1] & 0x80:
                break
    tag_end = p
    if p >= end:
        return None
    first = buf[p]
    p += 1
    if first < 0x80:
        return tag_end, p, first
    if first == 0x80:
        return tag_end, p, -1
    if first == 0xFF:
        return None
    count = first & 0x7F
    if p + count > end:
        return None
    return tag_end, p + count, int.from_bytes(buf[p : p + count], "big")


def _wraps_der(buf: bytes, start: int, end: int, budget: list[int]) -> bool:
    """Whether ``buf[start:end]`` is exactly one element of strict DER.

    A linear scan with a stack of where open constructed elements end; no node
    is built.  Each header costs one unit of ``budget``.
    """
    if end - start < 2:
        return False
    open_ends: list[int] = []
    pos, limit = start, end
    while True:
        if budget[0] <= 0:
            return False
        budget[0] -= 1
        header = _header(buf, pos, limit)
        if header is None or buf[pos] == 0:  # tag 0 is end-of-contents, never DER content
            return False
        tag_end, length_end, size = header
        if size < 0 or buf[tag_end:length_end] != encode_length(size):
            return False
        element_end = length_end + size
        if element_end > limit or (pos == start and element_end != end):
            return False
        if buf[pos] & 0x20:
            open_ends.append(element_end)
            pos = length_end
        else:
            pos = element_end
        while open_ends and pos == open_ends[-1]:
            open_ends.pop()
        if not open_ends:
            return pos == end
        limit = open_ends[-1]


class _Frame:
    """One level being parsed: where its nodes go, the span still to read, its owner."""

    __slots__ = ("depth", "end", "indefinite", "out", "owner", "pos", "start")

    def __init__(
        self, owner: Node | None, out: list[Node], pos: int, end: int, depth: int, indefinite: bool
    ) -> None:
        self.owner = owner
        self.out = out
        self.start = pos
        self.pos = pos
        self.end = end
        self.depth = depth
        self.indefinite = indefinite


class _Parsed:
    """A parse with what it learnt on the way: every node, its offset and content size.

    The offsets and sizes let :func:`mutate` copy untouched nodes straight from
    the input instead of walking them again.  They are keyed by ``id``, so
    ``nodes`` keeps every parsed node alive (an ``id`` is unique only among
    live objects).
    """

    __slots__ = ("data", "nodes", "offsets", "roots", "sizes")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.roots: list[Node] = []
        self.nodes: list[Node] = []
        self.offsets: dict[int, int] = {}
        self.sizes: dict[int, int] = {}


def _add(parsed: _Parsed, out: list[Node], node: Node, offset: int, size: int) -> None:
    out.append(node)
    parsed.nodes.append(node)
    parsed.offsets[id(node)] = offset
    parsed.sizes[id(node)] = size


def _parse(data: bytes) -> _Parsed:
    buf = data
    parsed = _Parsed(buf)
    sizes = parsed.sizes
    budget = [MAX_NODES]
    # An explicit stack instead of recursion: nesting depth is the input's choice.
    frames = [_Frame(None, parsed.roots, 0, len(buf), 0, False)]
    while frames:
        frame = frames[-1]
        pos, end, out = frame.pos, frame.end, frame.out
        if pos >= end or budget[0] <= 0:
            if pos < end:  # out of budget: the rest of this level stays bytes
                _add(parsed, out, Node.raw(buf[pos:end]), pos, end - pos)
            frames.pop()
            if frame.indefinite and frame.owner is not None:
                # Unterminated: it took everything up to the end of its parent.
                sizes[id(frame.owner)] = end - frame.start
                frames[-1].pos = end
            continue
        header = _header(buf, pos, end)
        if header is None:
            _add(parsed, out, Node.raw(buf[pos:end]), pos, end - pos)
            frame.pos = end
            continue
        budget[0] -= 1
        tag_end, length_end, size = header
        tag, length = buf[pos:tag_end], buf[tag_end:length_end]
        if frame.indefinite and frame.owner is not None and tag == _EOC and length == _EOC:
            _add(parsed, out, _eoc(), pos, 0)
            frames.pop()
            # Only now is it known where the indefinite node ends and its parent goes on.
            sizes[id(frame.owner)] = length_end - frame.start
            frames[-1].pos = length_end
            continue
        node = Node(tag, length)
        constructed = bool(buf[pos] & 0x20)
        deeper = frame.depth < MAX_DEPTH
        if size < 0 and constructed and deeper:
            node.children = []
            _add(parsed, out, node, pos, end - length_end)  # size corrected at its end
            frame.pos = end  # likewise
            frames.append(_Frame(node, node.children, length_end, end, frame.depth + 1, True))
            continue
        # A length past the end (or 0x80 on a primitive) takes what there is.
        content_end = end if size < 0 else min(length_end + size, end)
        _add(parsed, out, node, pos, content_end - length_end)
        frame.pos = content_end
        if constructed and deeper:
            node.children = []
            inner = _Frame(node, node.children, length_end, content_end, frame.depth + 1, False)
            frames.append(inner)
            continue
        skip = 1 if tag == b"\x03" else 0  # a BIT STRING's unused-bits octet
        if (
            deeper
            and tag in (b"\x03", b"\x04")
            and content_end == length_end + size
            and buf[length_end : length_end + skip] == b"\x00" * skip
            and _wraps_der(buf, length_end + skip, content_end, budget)
        ):
            node.children = []
            node.prefix = buf[length_end : length_end + skip]
            start = length_end + skip
            inner = _Frame(node, node.children, start, content_end, frame.depth + 1, False)
            frames.append(inner)
            continue
        node.content = buf[length_end:content_end]
    return parsed


def parse(data: bytes) -> list[Node]:
    """``data`` read as far as it goes into top-level nodes; lossless, never raises.

    See the module docstring for the rules and the bounds.
    """
    return _parse(bytes(data)).roots


def _length_octets(node: Node, size: int) -> bytes:
    return encode_length(size) if node.length is None else node.length


def _sizes(
    roots: Iterable[Node], known: dict[int, int] | None = None, dirty: frozenset[int] = frozenset()
) -> dict[int, int]:
    """The content size of every node under ``roots``, by ``id`` (post-order, no recursion).

    With ``known`` (sizes from the parse, updated in place), a node found there
    and not ``dirty`` is taken as it was and not walked into.
    """
    sizes: dict[int, int] = {} if known is None else known
    stack: list[tuple[Node, bool]] = [(node, False) for node in roots]
    while stack:
        node, ready = stack.pop()
        key = id(node)
        children = node.children
        if ready:
            assert children is not None
            sizes[key] = len(node.prefix) + sum(_outer(c, sizes) for c in children)
        elif known is not None and key in known and key not in dirty:
            continue
        elif children is None:
            sizes[key] = len(node.content)
        else:
            stack.append((node, True))
            stack.extend((child, False) for child in children)
    return sizes


def _outer(node: Node, sizes: Mapping[int, int]) -> int:
    """The serialised size of ``node``, header included."""
    size = sizes[id(node)]
    if not node.tag:
        return size
    return len(node.tag) + len(_length_octets(node, size)) + size


def _emit(
    roots: list[Node], sizes: Mapping[int, int], parsed: _Parsed | None, dirty: frozenset[int]
) -> bytes:
    """The bytes of ``roots``; with ``parsed``, nodes it holds that aren't ``dirty`` are
    copied from its input in one slice per run, so untouched subtrees cost nothing.
    """
    chunks: list[bytes] = []
    offsets = parsed.offsets if parsed is not None else {}
    data = parsed.data if parsed is not None else b""
    run_start = run_end = 0  # the pending run of input bytes to copy
    stack = roots[::-1]
    while stack:
        node = stack.pop()
        key = id(node)
        if key in offsets and key not in dirty:
            start = offsets[key]
            if start != run_end:
                chunks.append(data[run_start:run_end])
                run_start = start
            run_end = start + _outer(node, sizes)
            continue
        chunks.append(data[run_start:run_end])
        run_start = run_end = 0
        if node.tag:
            chunks.append(node.tag)
            chunks.append(_length_octets(node, sizes[key]))
        if node.children is None:
            chunks.append(node.content)
        else:
            chunks.append(node.prefix)
            stack.extend(reversed(node.children))
    chunks.append(data[run_start:run_end])
    return b"".join(chunks)


def serialise(nodes: Iterable[Node]) -> bytes:
    """The bytes of ``nodes``: octets as stored, computed lengths where ``length`` is ``None``."""
    roots = list(nodes)
    return _emit(roots, _sizes(roots), None, frozenset())


def fix_lengths(nodes: Iterable[Node]) -> None:
    """Make every length under ``nodes`` correct DER, in place.

    Each length becomes "computed" (``None``); an indefinite node loses the
    end-of-contents it ends with.  A primitive node's content is left alone.
    """
    stack = list(nodes)
    while stack:
        node = stack.pop()
        if not node.tag:
            continue
        if node.children is not None:
            if node.length == _INDEFINITE and node.children and _is_eoc(node.children[-1]):
                node.children.pop()
            stack.extend(node.children)
        node.length = None


def _refresh(node: Node) -> None:
    """Make one ancestor's length agree with its (changed) content again.

    An indefinite node still closed by its end-of-contents is consistent as it
    is, so it keeps its BER form; anything else gets the computed length.
    """
    if node.tag and not (
        node.length == _INDEFINITE and node.children and _is_eoc(node.children[-1])
    ):
        node.length = None


# --- sites and the registry -----------------------------------------------------------------------


class Site:
    """A node as a mutation sees it: where it sits (list, index, parent) and its sizes."""

    __slots__ = ("container", "depth", "index", "node", "parent", "tree")

    def __init__(
        self,
        node: Node,
        container: list[Node],
        index: int,
        parent: Site | None,
        depth: int,
        tree: _Parsed,
    ) -> None:
        self.node = node
        self.container = container
        self.index = index
        self.parent = parent
        self.depth = depth
        self.tree = tree

    @property
    def size(self) -> int:
        """The content size, as parsed (before the mutation)."""
        return self.tree.sizes[id(self.node)]

    @property
    def outer_size(self) -> int:
        """The serialised size with the header, as parsed."""
        return _outer(self.node, self.tree.sizes)

    @property
    def offset(self) -> int:
        """Where the node starts in the input."""
        return self.tree.offsets[id(self.node)]

    def encoded(self, node: Node | None = None) -> bytes:
        """The input bytes of this node (or of ``node``, another one parsed with it)."""
        node = self.node if node is None else node
        start = self.tree.offsets[id(node)]
        return self.tree.data[start : start + _outer(node, self.tree.sizes)]

    def ancestors(self) -> Iterator[Site]:
        site = self.parent
        while site is not None:
            yield site
            site = site.parent


def _sites(tree: _Parsed) -> list[Site]:
    """Every node of ``tree`` in document order (pre-order), without recursion."""
    sites: list[Site] = []
    stack: list[tuple[list[Node], int, Site | None, int]] = [
        (tree.roots, i, None, 0) for i in reversed(range(len(tree.roots)))
    ]
    while stack:
        container, index, parent, depth = stack.pop()
        site = Site(container[index], container, index, parent, depth, tree)
        sites.append(site)
        children = site.node.children
        if children:
            stack.extend((children, i, site, depth + 1) for i in reversed(range(len(children))))
    return sites


#: What a mutation does at a site: change the tree in place (``None``), or
#: return the whole output itself (truncation).
ApplyFn: TypeAlias = Callable[[Site, Choices], bytes | None]


@dataclass(frozen=True, slots=True)
class Mutation:
    """One named mutation: whether it ``applies`` at a site, and what it does there."""

    name: str
    description: str
    applies: Callable[[Site], bool]
    apply: ApplyFn


_REGISTRY: dict[str, Mutation] = {}

#: Every mutation by name, in registry order (simplest first).
MUTATIONS: Final[Mapping[str, Mutation]] = MappingProxyType(_REGISTRY)

#: The fallback mutation's name (see the module docstring).
RAW_BYTES: Final = "raw-bytes"


def _mutation(applies: Callable[[Site], bool]) -> Callable[[ApplyFn], ApplyFn]:
    """Register ``_some_name`` as ``some-name``; its docstring's first line describes it."""

    def register(fn: ApplyFn) -> ApplyFn:
        name = fn.__name__.strip("_").replace("_", "-")
        description = (fn.__doc__ or "").strip().splitlines()[0]
        _REGISTRY[name] = Mutation(name, description, applies, fn)
        return fn

    return register


def _set_content(node: Node, content: bytes) -> None:
    """New primitive content; the node's own length follows (it's not a length mutation)."""
    node.content = content
    node.children = None
    node.prefix = b""
    node.length = None


def _long_form(value: int, octets: int) -> bytes:
    return bytes([0x80 | octets]) + value.to_bytes(octets, "big")


def _value_octets(value: int) -> int:
    return max(1, (value.bit_length() + 7) // 8)


def _lie(node: Node, claimed: int) -> None:
    octets = encode_length(claimed)
    if octets == node.length:  # the input told this very lie already: tell it differently
        needed = _value_octets(claimed)
        octets = _long_form(claimed, needed + 1) if needed < 126 else encode_length(claimed - 1)
    node.length = octets


def _base128(value: int) -> bytes:
    out = [value & 0x7F]
    value >>= 7
    while value:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    return bytes(reversed(out))


def _element(site: Site) -> bool:
    return bool(site.node.tag)


def _with_content(site: Site) -> bool:
    return bool(site.node.tag) and site.size > 0


def _leaf_of(*numbers: int) -> Callable[[Site], bool]:
    """Primitive single-octet universal nodes with one of these numbers, content not parsed."""

    def applies(site: Site) -> bool:
        node = site.node
        return node.children is None and not node.constructed and node.universal in numbers

    return applies


_is_integer: Final = _leaf_of(_INTEGER, _ENUMERATED)
_is_oid: Final = _leaf_of(_OID, _RELATIVE_OID)
_is_time: Final = _leaf_of(_UTC_TIME, _GENERALIZED_TIME)


def _is_bit_string(site: Site) -> bool:
    return not site.node.constructed and site.node.universal == _BIT_STRING


# --- lengths --------------------------------------------------------------------------------------


@_mutation(_with_content)
def _length_too_short(site: Site, choices: Choices) -> None:
    """The length octets claim fewer octets than the content holds."""
    _lie(site.node, site.size - choices.integer(1, site.size))


@_mutation(_element)
def _length_too_long(site: Site, choices: Choices) -> None:
    """The length octets claim more octets than there are (up to 2**1008 - 1)."""
    size = site.size
    how = choices.choice(("one", "some", "many", "int32", "uint32", "uint64", "most"))
    if how == "one":
        claimed = size + 1
    elif how == "some":
        claimed = size + choices.integer(2, 127)
    elif how == "many":
        claimed = size + choices.integer(128, 1 << 24)
    elif how == "int32":  # the sizes where signed and unsigned length arithmetic overflows
        claimed = max(size + 1, (1 << 31) - 1)
    elif how == "uint32":
        claimed = max(size + 1, (1 << 32) - 1)
    elif how == "uint64":
        claimed = max(size + 1, (1 << 64) - 1)
    else:
        claimed = (1 << (8 * 126)) - 1  # the most 126 length octets can say
    _lie(site.node, claimed)


def _short_content(site: Site) -> bool:
    return bool(site.node.tag) and site.size < 0x80 and site.node.length != bytes([0x81, site.size])


@_mutation(_short_content)
def _length_long_form(site: Site, choices: Choices) -> None:
    """A length below 128 in the long form (``81 nn``), which DER forbids."""
    site.node.length = bytes([0x81, site.size])


@_mutation(_element)
def _length_leading_zeros(site: Site, choices: Choices) -> None:
    """The length in long form with leading zero octets (over-long length octets)."""
    size = site.size
    needed = _value_octets(size)
    site.node.length = _long_form(size, needed + choices.integer(1, 126 - needed))


def _definite(site: Site) -> bool:
    return bool(site.node.tag) and site.node.length != _INDEFINITE


@_mutation(_definite)
def _length_indefinite(site: Site, choices: Choices) -> None:
    """The indefinite length ``0x80`` (BER), closed by end-of-contents or not."""
    node = site.node
    node.length = _INDEFINITE
    if choices.boolean():  # left open: the reader runs into what follows
        return
    if node.children is not None:
        node.children.append(_eoc())
    else:
        node.content += _EOC + _EOC


# --- structure ------------------------------------------------------------------------------------


@_mutation(_element)
def _truncate_at_node(site: Site, choices: Choices) -> bytes:
    """The input cut at a node boundary: before the node, after its header, or after it."""
    start = site.offset
    node = site.node
    header = len(node.tag) + len(_length_octets(node, site.size))
    data = site.tree.data
    cuts = [c for c in (start, start + header, start + header + site.size) if c < len(data)]
    return data[: choices.choice(cuts)]


@_mutation(_element)
def _drop_node(site: Site, choices: Choices) -> None:
    """The node removed from its parent (or from the top level)."""
    del site.container[site.index]


def _copyable(site: Site) -> bool:
    return bool(site.node.tag) and site.outer_size <= MAX_COPY


@_mutation(_copyable)
def _duplicate_node(site: Site, choices: Choices) -> None:
    """The node twice in a row (nodes up to MAX_COPY bytes)."""
    site.container.insert(site.index + 1, Node.raw(site.encoded()))


def _has_children(site: Site) -> bool:
    children = site.node.children
    return children is not None and len(children) >= 2


@_mutation(_has_children)
def _reorder_children(site: Site, choices: Choices) -> None:
    """Two children that differ swapped (SEQUENCE order, sorted SET OF)."""
    children = site.node.children
    assert children is not None  # the predicate saw to it
    i = choices.integer(0, len(children) - 2)
    j = choices.integer(i + 1, len(children) - 1)
    first = site.encoded(children[i])
    if site.encoded(children[j]) == first:  # a swap of equals changes nothing: find another
        j = next((k for k, c in enumerate(children) if site.encoded(c) != first), j)
    children[i], children[j] = children[j], children[i]


def _top_level(site: Site) -> bool:
    return site.depth == 0 and bool(site.node.tag)


@_mutation(_top_level)
def _trailing_data(site: Site, choices: Choices) -> None:
    """Extra data right after a top-level element (the outer SEQUENCE)."""
    how = choices.choice(("zero", "end-of-contents", "null", "copy", "blob"))
    if how == "zero":
        extra = b"\x00"
    elif how == "end-of-contents":
        extra = _EOC + _EOC
    elif how == "null":
        extra = tlv(0x05, b"")
    elif how == "copy" and site.outer_size <= MAX_COPY:
        extra = site.encoded()
    else:
        extra = choices.blob(1, 64)
    site.container.insert(site.index + 1, Node.raw(extra))


# --- tags -----------------------------------------------------------------------------------------

# Universal types a parser might confuse, each with what it becomes.
_SWAPS: Final[Mapping[int, tuple[int, ...]]] = {
    _SEQUENCE: (_SET,),
    _SET: (_SEQUENCE,),
    _INTEGER: (_ENUMERATED, _BOOLEAN),
    _ENUMERATED: (_INTEGER,),
    _BOOLEAN: (_INTEGER,),
    _NULL: (_BOOLEAN, _OCTET_STRING),
    _BIT_STRING: (_OCTET_STRING,),
    _OCTET_STRING: (_BIT_STRING,),
    _OID: (_RELATIVE_OID,),
    _RELATIVE_OID: (_OID,),
    _UTC_TIME: (_GENERALIZED_TIME,),
    _GENERALIZED_TIME: (_UTC_TIME,),
    _UTF8_STRING: (_PRINTABLE, _IA5, _BMP, _T61),
    _PRINTABLE: (_UTF8_STRING, _IA5, _BMP, _T61),
    _IA5: (_UTF8_STRING, _PRINTABLE, _BMP, _T61),
    _BMP: (_UTF8_STRING, _PRINTABLE, _IA5, _T61),
    _T61: (_UTF8_STRING, _PRINTABLE, _IA5, _BMP),
}


def _swappable(site: Site) -> bool:
    return site.node.universal in _SWAPS


@_mutation(_swappable)
def _tag_swap_universal(site: Site, choices: Choices) -> None:
    """A universal type swapped for a kindred one (SEQUENCE/SET, INTEGER/ENUMERATED, ...)."""
    node = site.node
    number = node.universal
    assert number is not None  # the predicate saw to it
    node.tag = bytes([(node.tag[0] & 0xE0) | choices.choice(_SWAPS[number])])


@_mutation(_element)
def _tag_flip_constructed(site: Site, choices: Choices) -> None:
    """The constructed bit flipped (a primitive SEQUENCE, a constructed INTEGER)."""
    node = site.node
    node.tag = bytes([node.tag[0] ^ 0x20]) + node.tag[1:]


@_mutation(_element)
def _tag_context_specific(site: Site, choices: Choices) -> None:
    """The tag turned into a context-specific ``[n]`` (n up to 40: high form above 30)."""
    node = site.node
    form = node.tag[0] & 0x20
    number = choices.integer(0, 40)
    tag = bytes([0x80 | form | number]) if number < 31 else bytes([0x9F | form, number])
    if tag == node.tag:
        tag = bytes([0x80 | form | ((number + 1) % 31)])
    node.tag = tag


def _low_form(site: Site) -> bool:
    return len(site.node.tag) == 1 and site.node.tag[0] & 0x1F != 0x1F


@_mutation(_low_form)
def _tag_high_form(site: Site, choices: Choices) -> None:
    """A tag number below 31 written in the multi-byte form, maybe with 0x80 padding."""
    node = site.node
    padding = b"\x80" * choices.integer(0, 4)
    node.tag = bytes([node.tag[0] | 0x1F]) + padding + bytes([node.tag[0] & 0x1F])


@_mutation(_element)
def _nest_deep(site: Site, choices: Choices) -> None:
    """The node wrapped in 1 to MAX_WRAP SEQUENCEs (nesting limits, recursion)."""
    # The wrappers' headers as one raw node before the node: the same bytes as
    # that many nested nodes, without a tree as deep as MAX_WRAP to walk.
    size = site.outer_size
    headers: list[bytes] = []
    for _ in range(choices.integer(1, MAX_WRAP)):
        header = b"\x30" + encode_length(size)
        headers.append(header)
        size += len(header)
    site.container.insert(site.index, Node.raw(b"".join(reversed(headers))))


# --- INTEGER / ENUMERATED -------------------------------------------------------------------------


def _nonzero_integer(site: Site) -> bool:
    return _is_integer(site) and site.node.content != b"\x00"


@_mutation(_nonzero_integer)
def _integer_zero(site: Site, choices: Choices) -> None:
    """An INTEGER (or ENUMERATED) set to zero (a zero serial, version, modulus)."""
    _set_content(site.node, b"\x00")


def _nonempty_integer(site: Site) -> bool:
    return _is_integer(site) and bool(site.node.content)


@_mutation(_nonempty_integer)
def _integer_empty(site: Site, choices: Choices) -> None:
    """An INTEGER with no content octets at all."""
    _set_content(site.node, b"")


@_mutation(_is_integer)
def _integer_negative(site: Site, choices: Choices) -> None:
    """An INTEGER made negative: -1, or its sign bit set."""
    old = site.node.content
    if choices.choice(("minus-one", "sign-bit")) == "minus-one" and old != b"\xff":
        new = b"\xff"
    elif old and not old[0] & 0x80:
        new = bytes([old[0] | 0x80]) + old[1:]
    else:  # negative already (or empty): more negative
        new = b"\x80" + old
    _set_content(site.node, new)


@_mutation(_is_integer)
def _integer_leading_zeros(site: Site, choices: Choices) -> None:
    """An INTEGER with 1 to 8 redundant leading octets (0x00, or 0xFF when negative)."""
    old = site.node.content
    fill = b"\x00"
    if choices.choice(("zeros", "sign")) == "sign" and old and old[0] & 0x80:
        fill = b"\xff"  # the same negative value, non-minimally
    _set_content(site.node, fill * choices.integer(1, 8) + old)


@_mutation(_is_integer)
def _integer_huge(site: Site, choices: Choices) -> None:
    """An INTEGER of 1000 to MAX_HUGE_INTEGER octets (bignum limits)."""
    size = choices.integer(1000, MAX_HUGE_INTEGER)
    pattern = choices.choice(("one-then-zeros", "largest", "all-ones", "zeros"))
    if pattern == "one-then-zeros":
        new = b"\x01" + bytes(size - 1)
    elif pattern == "largest":
        new = b"\x7f" + b"\xff" * (size - 1)
    elif pattern == "all-ones":
        new = b"\xff" * size  # -1, non-minimally
    else:
        new = bytes(size)  # 0, non-minimally
    _set_content(site.node, new)


# --- OBJECT IDENTIFIER ----------------------------------------------------------------------------


def _nonempty_oid(site: Site) -> bool:
    return _is_oid(site) and bool(site.node.content)


@_mutation(_nonempty_oid)
def _oid_empty(site: Site, choices: Choices) -> None:
    """An OBJECT IDENTIFIER with no content octets."""
    _set_content(site.node, b"")


@_mutation(_is_oid)
def _oid_bad_continuation(site: Site, choices: Choices) -> None:
    """Bad base-128: the last arc never ends, or an arc padded with a leading 0x80."""
    old = site.node.content
    if choices.choice(("unterminated", "padded")) == "unterminated":
        ends = bool(old) and not old[-1] & 0x80
        new = old[:-1] + bytes([old[-1] | 0x80]) if ends else old + b"\x80"
    else:
        # Arcs start at 0 and after each octet without the continuation bit.
        starts = [0] + [i + 1 for i, octet in enumerate(old[:64]) if not octet & 0x80]
        at = choices.choice(starts)
        new = old[:at] + b"\x80" + old[at:]
    _set_content(site.node, new)


@_mutation(_is_oid)
def _oid_unknown_arc(site: Site, choices: Choices) -> None:
    """An OBJECT IDENTIFIER made unknown by one more arc (0 to 2**32 - 1)."""
    old = site.node.content
    _set_content(site.node, old + _base128(choices.integer(0, (1 << 32) - 1)))


@_mutation(_is_oid)
def _oid_long_arc(site: Site, choices: Choices) -> None:
    """An arc of 10 to 160 base-128 octets appended (far past 64 bits)."""
    octets = choices.integer(10, 160)
    _set_content(site.node, site.node.content + _base128(1 << (7 * (octets - 1))))


# --- BIT STRING -----------------------------------------------------------------------------------


@_mutation(_is_bit_string)
def _bitstring_unused_over_7(site: Site, choices: Choices) -> None:
    """A BIT STRING whose unused-bits octet says 8 to 255."""
    node = site.node
    unused = choices.integer(8, 255)
    if node.children is not None:  # keep the wrapped DER, change the octet before it
        node.prefix = bytes([unused])
        return
    old = node.content
    if old[:1] == bytes([unused]):
        unused = 8 if unused != 8 else 9
    _set_content(node, bytes([unused]) + old[1:])


@_mutation(_is_bit_string)
def _bitstring_unused_no_data(site: Site, choices: Choices) -> None:
    """A BIT STRING with 1 to 7 unused bits and no data octets (or no octet at all)."""
    old = site.node.content_octets()
    if choices.choice(("unused-only", "empty")) == "unused-only" or not old:
        unused = choices.integer(1, 7)
        new = bytes([unused])
        if new == old:
            new = bytes([unused % 7 + 1])
    else:
        new = b""
    _set_content(site.node, new)


# --- UTCTime / GeneralizedTime --------------------------------------------------------------------


def _month_at(node: Node) -> int:
    return 2 if node.universal == _UTC_TIME else 4  # YYMMDD... or YYYYMMDD...


def _zulu(site: Site) -> bool:
    return _is_time(site) and site.node.content.endswith(b"Z")


@_mutation(_zulu)
def _time_no_z(site: Site, choices: Choices) -> None:
    """A time without its ``Z``: local time, an offset, or a lower-case ``z``."""
    old = site.node.content[:-1]
    suffix = choices.choice((b"", b"+0000", b"-0130", b"z"))
    _set_content(site.node, old + suffix)


def _has_digit(site: Site) -> bool:
    return _is_time(site) and any(0x30 <= c <= 0x39 for c in site.node.content[:64])


@_mutation(_has_digit)
def _time_bad_digits(site: Site, choices: Choices) -> None:
    """A digit of a time replaced by a non-digit."""
    old = site.node.content
    at = choices.choice([i for i, c in enumerate(old[:64]) if 0x30 <= c <= 0x39])
    bad = choices.choice((b"a", b" ", b"/", b":", b"\x00", b"\xff"))
    _set_content(site.node, old[:at] + bad + old[at + 1 :])


def _month_not_13(site: Site) -> bool:
    if not _is_time(site):
        return False
    at = _month_at(site.node)
    return site.node.content[at : at + 2] != b"13"


@_mutation(_month_not_13)
def _time_month_13(site: Site, choices: Choices) -> None:
    """A time in month 13."""
    old = site.node.content
    at = _month_at(site.node)
    _set_content(site.node, old[:at].ljust(at, b"0") + b"13" + old[at + 2 :])


@_mutation(_is_time)
def _time_feb_30(site: Site, choices: Choices) -> None:
    """A time on February 30 (or 31)."""
    old = site.node.content
    at = _month_at(site.node)
    day = choices.choice((b"30", b"31"))
    new = old[:at].ljust(at, b"0") + b"02" + day + old[at + 4 :]
    if new == old:
        new = new[: at + 2] + (b"31" if day == b"30" else b"30") + new[at + 4 :]
    _set_content(site.node, new)


@_mutation(_is_time)
def _time_fraction(site: Site, choices: Choices) -> None:
    """A time with fractional seconds (none in UTCTime; no trailing zeros in DER)."""
    old = site.node.content
    fraction = choices.choice((b".5", b".0", b".000", b".", b",5", b".123456789"))
    at = old.rfind(b"Z")
    at = len(old) if at < 0 else at
    _set_content(site.node, old[:at] + fraction + old[at:])


# --- raw bytes ------------------------------------------------------------------------------------


def _raw_edit(data: bytes, choices: Choices) -> bytes:
    """``data`` with a byte flipped, a span (up to 64) deleted or bytes (up to 16) inserted."""
    how = choices.choice(("flip", "delete", "insert")) if data else "insert"
    if how == "flip":
        at = choices.integer(0, len(data) - 1)
        return data[:at] + bytes([data[at] ^ choices.integer(1, 255)]) + data[at + 1 :]
    if how == "delete":
        at = choices.integer(0, len(data) - 1)
        return data[:at] + data[at + choices.integer(1, min(64, len(data) - at)) :]
    at = choices.integer(0, len(data))
    return data[:at] + choices.blob(1, 16) + data[at:]


def _is_raw(site: Site) -> bool:
    return not site.node.tag


@_mutation(_is_raw)
def _raw_bytes(site: Site, choices: Choices) -> None:
    """Bytes flipped, deleted or inserted (unparsable input, and the fallback)."""
    site.node.content = _raw_edit(site.node.content, choices)


# --- mutate ---------------------------------------------------------------------------------------


def _selected(mutations: Sequence[str] | None) -> list[Mutation]:
    if mutations is None:
        return list(_REGISTRY.values())
    if isinstance(mutations, str | bytes):
        raise ValueError(f"mutations takes a sequence of names, not the string {mutations!r}")
    unknown = [name for name in mutations if name not in _REGISTRY]
    if unknown:
        raise ValueError(f"unknown DER mutations {unknown}; known: {', '.join(_REGISTRY)}")
    if not mutations:
        raise ValueError("mutations is empty: select at least one mutation (or pass None)")
    chosen = set(mutations)
    return [m for m in _REGISTRY.values() if m.name in chosen]  # registry order, no repeats


def mutate(
    data: bytes, choices: Choices, *, mutations: Sequence[str] | None = None
) -> tuple[bytes, str]:
    """``data`` with one DER mutation applied, and the mutation's name.

    ``mutations`` restricts the choice to those names (all of :data:`MUTATIONS`
    by default); an unknown name is a ``ValueError``.  Never raises otherwise,
    for any ``data``, and always returns bytes that differ from ``data``
    (falling back to ``raw-bytes``); see the module docstring for the bounds.
    """
    allowed = _selected(mutations)
    data = bytes(data)
    tree = _parse(data)
    candidates = [s for s in _sites(tree) if any(m.applies(s) for m in allowed)]
    if candidates:
        site = candidates[choices.integer(0, len(candidates) - 1)]
        mutation = choices.choice([m for m in allowed if m.applies(site)])
        out = mutation.apply(site, choices)
        if out is None:
            # Only the node and its ancestors changed; everything else is copied
            # from the input as it was (see _emit).
            path = [site, *site.ancestors()]
            for ancestor in path[1:]:
                _refresh(ancestor.node)
            dirty = frozenset(id(s.node) for s in path)
            out = _emit(tree.roots, _sizes(tree.roots, tree.sizes, dirty), tree, dirty)
        if out != data:
            return out, mutation.name
    return _raw_edit(data, choices), RAW_BYTES
