"""The minimiser as it was before structure-aware shrinking (commit c93c0fc), for comparison.

``bench/bench_minimize.py`` runs it next to :func:`tlsleak.check.minimize.shrink`
on the same findings.  It is a copy of the code of that commit, kept as it was
(fields emptied, PEM blocks dropped one at a time, PEM text lines dropped,
blobs truncated, then up to 128 DER elements dropped breadth first, the
candidates derived afresh from the start after every success); only the
predicate helpers it shared with the new one are left out.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any, Final

from tlsleak.cases import der, pem
from tlsleak.cases.blobs import is_pem, pem_blocks
from tlsleak.cases.case import FIELDS, InitCase
from tlsleak.cases.material import pem_armor

__all__ = ["minimize"]

#: Predicate calls :func:`minimize` makes at most, unless told otherwise.
DEFAULT_BUDGET: Final = 200

# A base64 body line (RFC 7468 allows trailing whitespace).  Everything else
# between the armor lines is a header or stray text.
_BASE64_LINE = re.compile(rb"[A-Za-z0-9+/=]+[ \t]*\r?\n?")
_ARMOR = (b"-----BEGIN", b"-----END")


def _key(case: InitCase) -> tuple[int, bytes]:
    return case.size, case.encode()


def _text_lines(blob: bytes) -> list[int]:
    """Indexes (in ``blob.splitlines(keepends=True)``) of lines outside the base64 body."""
    lines = blob.splitlines(keepends=True)
    return [
        i
        for i, line in enumerate(lines)
        if not line.lstrip().startswith(_ARMOR) and not _BASE64_LINE.fullmatch(line)
    ]


def _without_lines(blob: bytes, drop: set[int]) -> bytes:
    return b"".join(x for i, x in enumerate(blob.splitlines(keepends=True)) if i not in drop)


def _with(case: InitCase, name: str, blob: bytes) -> InitCase:
    """``case`` with blob field ``name`` set to ``blob`` (mode and labels kept)."""
    changes: dict[str, Any] = {name: blob}
    return replace(case, **changes)


def _candidates(case: InitCase) -> Iterator[InitCase]:
    """Smaller variants of ``case``, most promising first (see the module docstring)."""
    blobs = {name: getattr(case, name) for name in FIELDS}
    present = [name for name in FIELDS if blobs[name]]
    for name in present:
        yield _with(case, name, b"")
    for name in present:
        blob = blobs[name]
        if not is_pem(blob):
            continue
        blocks = pem_blocks(blob)
        for i in range(len(blocks)):
            yield _with(case, name, b"".join(blocks[:i] + blocks[i + 1 :]))
    for name in present:
        blob = blobs[name]
        if not is_pem(blob):
            continue
        text = _text_lines(blob)
        if len(text) > 1:
            yield _with(case, name, _without_lines(blob, set(text)))
        for i in text:
            yield _with(case, name, _without_lines(blob, {i}))
    for name in present:
        blob = blobs[name]
        cut = len(blob) // 2
        while cut >= 1:
            yield _with(case, name, blob[: len(blob) - cut])
            cut //= 2
    for name in present:
        for smaller in _der_simplified(blobs[name]):
            yield _with(case, name, smaller)


#: DER elements tried for removal per blob (a certificate has about 60).
_MAX_DER_DROPS: Final = 128


def _der_simplified(blob: bytes) -> Iterator[bytes]:
    """``blob`` with one DER element removed and the lengths around it made right again.

    A DER blob is simplified directly; a PEM blob block by block, through its
    base64 body (re-armored in 64-column lines, other blocks kept as they
    were).  Outermost elements are tried first: dropping a whole extension
    or name is worth more than dropping one of its fields.
    """
    if is_pem(blob):
        blocks = pem_blocks(blob)
        for i, block in enumerate(blocks):
            body = _pem_body(block)
            if body is None:
                continue
            der_bytes, label = body
            for smaller in _der_drops(der_bytes):
                yield b"".join([*blocks[:i], pem_armor(label, smaller), *blocks[i + 1 :]])
    elif blob[:1] == b"\x30":
        yield from _der_drops(blob)


def _der_drops(data: bytes) -> Iterator[bytes]:
    count = sum(1 for _ in _elements(der.parse(data)))
    for index in range(min(count, _MAX_DER_DROPS)):
        tree = der.parse(data)  # a fresh tree per candidate: the drop edits it
        for position, (siblings, node) in enumerate(_elements(tree)):
            if position == index:
                siblings.remove(node)
                break
        der.fix_lengths(tree)
        yield der.serialise(tree)


def _elements(nodes: list[der.Node]) -> Iterator[tuple[list[der.Node], der.Node]]:
    """Every parsed element below the top level, breadth first, with the list holding it."""
    queue = [node for node in nodes if node.children is not None]
    while queue:
        parent = queue.pop(0)
        assert parent.children is not None
        for child in parent.children:
            if not child.is_raw:
                yield parent.children, child
            if child.children is not None:
                queue.append(child)


def _pem_body(block: bytes) -> tuple[bytes, bytes] | None:
    """The DER and the label of one PEM block, or None when it has headers or bad armor."""
    parsed = next((part for part in pem.split(block) if isinstance(part, pem.Block)), None)
    if parsed is None or parsed.headers or parsed.end_label != parsed.label:
        return None
    try:
        # Whitespace is line breaks; any other character outside base64 means
        # a damaged body, which is the case's point, not ours to clean.
        return base64.b64decode(b"".join(parsed.body.split()), validate=True), parsed.label
    except ValueError:
        return None


def minimize(
    case: InitCase,
    still_fails: Callable[[InitCase], bool],
    *,
    budget: int = DEFAULT_BUDGET,
    stop: Callable[[], bool] | None = None,
) -> InitCase:
    """The smallest case found for which ``still_fails`` holds, calling it at most ``budget`` times.

    ``case`` itself is assumed to fail and is returned when nothing smaller
    does.  Deterministic: the same case and predicate give the same result.
    ``stop``, when given, is asked before every call: once it says True the
    best case so far is returned (a campaign told to stop now).
    """
    if budget < 0:
        raise ValueError(f"budget must not be negative, not {budget}")
    best = case
    best_key = _key(case)
    tried = {best_key[1]}
    calls = 0
    progress = True
    while progress and calls < budget:
        progress = False
        for candidate in _candidates(best):
            key = _key(candidate)
            if key >= best_key or key[1] in tried:
                continue
            if calls >= budget or (stop is not None and stop()):
                return best
            tried.add(key[1])
            calls += 1
            if still_fails(candidate):
                best, best_key = candidate, key
                progress = True
                break  # derive candidates afresh from the smaller case
    return best
