"""Structure-aware mutation of whole cases: the fuzzer's custom mutator.

libFuzzer's byte mutations work on the encoded case: an inserted byte shifts
every field after it, and a DER length that no longer matches is rejected by
the first length check of the parser.  :func:`mutate_case` decodes the input
into an :class:`~tlsleak.cases.case.InitCase` instead, changes it the way a broken
configuration is broken, and encodes it again:

- ``pem:<name>`` / ``der:<name>``: one blob (CA, certificate or key) through
  the PEM-level mutations of :mod:`tlsleak.cases.pem`, whose ``der`` mutation runs
  the DER-level ones of :mod:`tlsleak.cases.der` on a block's decoded body; a blob
  without PEM armor goes to :mod:`tlsleak.cases.der` directly when it looks like
  DER (it starts with a SEQUENCE), else to :mod:`tlsleak.cases.pem` (which can
  armor it);
- ``material:<field>``: a blob replaced with valid material from
  :mod:`tlsleak.cases.material` (a certificate chain, a key in some format, a CA),
  so the search can get past one step and fail at the next: a valid
  certificate with a broken key reaches the key and key-check steps, which no
  damaged certificate does;
- ``crossover:<field>`` and ``splice:<field>``: a blob taken from another case,
  or one of its PEM blocks appended (chains that mix identities, a key after
  a certificate);
- ``mode``, ``password`` and ``server-name``: the small fields;
- ``fail-alloc:set``, ``fail-alloc:nudge``, ``fail-alloc:new`` and
  ``fail-alloc:clear``: the allocation the run makes fail
  (:attr:`~tlsleak.cases.case.InitCase.fail_alloc`), only when asked for
  (``fail_alloc=True``: ``tlsleak fuzz --fail-alloc``), in one mutation out of
  :data:`FAIL_ALLOC_SHARE`.  A new point is one of the first or the last few
  allocations (where constructors and error paths allocate) or anywhere in
  a long run; a nudge moves it by a few, so the search walks along the run
  from a point that found something new.  Without ``fail_alloc`` the other
  operations are drawn exactly as before and a point is kept as it is by
:func:`mutate_case`, and dropped by :func:`custom_mutator` and
:func:`custom_crossover`, so that a campaign without ``--fail-alloc`` makes
exactly the inputs it made before points existed.

The output is always a canonical encoding (``encode(decode(out)) == out``),
never longer than ``max_size`` when that is given (a result that would be is
replaced by a plain truncation-free retry, then by the input itself), and
:func:`mutate_case` is total: any bytes in, whatever they decode to.  Its cost
is bounded by :mod:`tlsleak.cases.pem`'s and :mod:`tlsleak.cases.der`'s bounds (a few
milliseconds for a 1 MiB blob) plus one decode and one encode.

:func:`custom_mutator` and :func:`custom_crossover` are what atheris calls
(``atheris.Setup(..., custom_mutator=..., custom_crossover=...)``): a seeded
``random.Random`` makes the choices, and one mutation in :data:`BYTE_SHARE`
is left to libFuzzer's own byte mutator so that nothing the byte mutations
would reach is lost.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import replace
from functools import cache
from typing import Final

from tlsleak.cases import der, pem
from tlsleak.cases.case import MAX_FAIL_ALLOC, InitCase, Mode, decode
from tlsleak.cases.choices import Choices, RandomChoices
from tlsleak.cases.material import (
    Encoding,
    KeyFormat,
    KeyType,
    cert_bytes,
    identity,
    key_bytes,
)

__all__ = [
    "BLOBS",
    "BYTE_SHARE",
    "FAIL_ALLOC_DESCRIPTION",
    "FAIL_ALLOC_SHARE",
    "OPERATIONS",
    "OPERATION_DESCRIPTIONS",
    "custom_crossover",
    "custom_mutator",
    "mutate_blob",
    "mutate_case",
    "mutate_fail_alloc",
]

#: The fields holding certificates and keys, simplest to damage first.
BLOBS: Final = ("cert", "key", "ca")
#: The kinds of change :func:`mutate_case` makes, simplest first, described.
OPERATION_DESCRIPTIONS: Final = {
    "blob": "One certificate or key blob through a PEM-level or DER-level mutation.",
    "material": "A blob replaced by valid material (a chain, a key in some format, a CA).",
    "crossover": "A blob taken from another input.",
    "splice": "A PEM block of another blob (or input) appended to a blob.",
    "mode": "Server mode swapped for client mode, or back.",
    "password": "The key's password replaced (empty, the material's, over-long, a NUL).",
    "server-name": "The server name replaced (empty, over-long, embedded NUL, not UTF-8).",
}
OPERATIONS: Final = tuple(OPERATION_DESCRIPTIONS)
_WITHOUT_DONOR: Final = tuple(op for op in OPERATIONS if op != "crossover")
#: One custom mutation in this many is libFuzzer's own byte mutation instead.
BYTE_SHARE: Final = 5
#: With ``fail_alloc``, one structure-aware mutation in this many changes the fail point.
FAIL_ALLOC_SHARE: Final = 4
FAIL_ALLOC_DESCRIPTION: Final = (
    "The allocation to make fail set (one of the first or last few, or anywhere), "
    "moved by a few, or cleared (only with --fail-alloc)."
)
# New points: within this many of either end of the run, or anywhere up to _FAR.
_NEAR: Final = 64
_FAR: Final = 4096
_NUDGE: Final = 8

# A password that the material's encrypted keys use, and a few that are not.
_PASSWORDS: Final = (b"", b"tlsleak", b"x" * 1025, b"\x00")
_SERVER_NAMES: Final = (b"", b"localhost", b"a" * 256, b"x\x00y", b"\xff\xfe", b".")


def _looks_der(blob: bytes) -> bool:
    return blob[:1] == b"\x30"


def mutate_blob(blob: bytes, choices: Choices) -> tuple[bytes, str]:
    """One structure-aware mutation of a certificate or key blob: (new blob, name)."""
    if blob and b"-----BEGIN" not in blob and _looks_der(blob):
        out, name = der.mutate(blob, choices)
        return out, f"der:{name}"
    out, name = pem.mutate(blob, choices, body_mutator=der.mutate)
    return out, name if name.startswith("der:") else f"pem:{name}"


@cache
def _material(field: str) -> tuple[bytes, ...]:
    """Valid blobs for ``field``: a few shapes of each key type (made once per process)."""
    found: list[bytes] = []
    for key_type in KeyType:
        ident = identity(key_type)
        if field == "cert":
            chain = b"".join(cert_bytes(c) for c in (ident.leaf, *ident.chain))
            found += [chain, cert_bytes(ident.leaf, Encoding.DER)]
        elif field == "ca":
            found.append(cert_bytes(ident.root))
        else:
            for key_format in (KeyFormat.PKCS8, KeyFormat.PKCS1, KeyFormat.SEC1):
                if key_format.fits(key_type):
                    found.append(key_bytes(ident.key, key_format))
            found.append(key_bytes(ident.key, KeyFormat.PKCS8, Encoding.DER))
    return tuple(found)


def _with(case: InitCase, name: str, blob: bytes) -> InitCase:
    changes: dict[str, bytes] = {name: blob}
    return replace(case, **changes)  # type: ignore[arg-type]


def _pick_blob(case: InitCase, choices: Choices) -> str:
    filled = [f for f in BLOBS if getattr(case, f)]
    return choices.choice(filled or list(BLOBS))


def _new_fail_point(choices: Choices) -> int:
    where = choices.integer(0, 2)
    if where == 0:
        return choices.integer(1, _NEAR)  # the constructors the path starts with
    if where == 1:
        return -choices.integer(1, _NEAR)  # the error path and teardown it ends with
    return choices.integer(1, _FAR)


def mutate_fail_alloc(case: InitCase, choices: Choices) -> tuple[InitCase, str]:
    """Set, move or clear the allocation ``case`` makes fail: (the new case, its name)."""
    point = case.fail_alloc
    if point is None:
        return replace(case, fail_alloc=_new_fail_point(choices)), "fail-alloc:set"
    how = choices.integer(0, 3)
    if how == 0:
        return case.without_fail_alloc(), "fail-alloc:clear"
    if how == 1:
        return replace(case, fail_alloc=_new_fail_point(choices)), "fail-alloc:new"
    step = choices.integer(1, _NUDGE) * (1 if choices.boolean() else -1)
    moved = point + step
    if moved == 0 or (moved > 0) != (point > 0) or abs(moved) > MAX_FAIL_ALLOC:
        moved = point - step  # stay anchored at the same end of the run, and in range
    return replace(case, fail_alloc=moved), "fail-alloc:nudge"


def mutate_case(
    data: bytes, choices: Choices, *, other: bytes | None = None, fail_alloc: bool = False
) -> tuple[InitCase, str]:
    """Decode ``data``, make one structure-aware change, return (the new case, its name).

    ``other`` is a second input for crossover and splicing (without it those
    operations take the case's own blobs).  Labels are kept as they were, and
    so is the fail point, unless ``fail_alloc`` (see the module docstring).
    """
    case = decode(data)
    if fail_alloc and choices.integer(1, FAIL_ALLOC_SHARE) == 1:
        return mutate_fail_alloc(case, choices)
    donor = decode(other) if other is not None else case
    # Crossing a case over with itself changes nothing: without a donor,
    # splicing (one of its own blocks into another blob) is all there is.
    op = choices.choice(OPERATIONS if other is not None else _WITHOUT_DONOR)
    if op == "blob":
        name = _pick_blob(case, choices)
        blob, how = mutate_blob(getattr(case, name), choices)
        return _with(case, name, blob), f"{how}@{name}"
    if op == "material":
        name = choices.choice(BLOBS)
        return _with(case, name, choices.choice(_material(name))), f"material:{name}"
    if op == "crossover":
        name = choices.choice(BLOBS)
        return _with(case, name, getattr(donor, name)), f"crossover:{name}"
    if op == "splice":
        name = choices.choice(BLOBS)
        source = getattr(donor, choices.choice(BLOBS))
        blocks = [p for p in pem.split(source) if isinstance(p, pem.Block)]
        if not blocks:
            return _with(case, name, getattr(donor, name)), f"crossover:{name}"
        extra = pem.join([choices.choice(blocks)])
        return _with(case, name, getattr(case, name) + extra), f"splice:{name}"
    if op == "mode":
        mode = Mode.CLIENT if case.mode is Mode.SERVER else Mode.SERVER
        return replace(case, mode=mode), "mode"
    if op == "password":
        return replace(case, password=choices.choice(_PASSWORDS)), "password"
    return replace(case, server_name=choices.choice(_SERVER_NAMES)), "server-name"


def _fit(case: InitCase, fallback: bytes, max_size: int) -> bytes:
    out = case.encode()
    return out if len(out) <= max_size else fallback


def custom_mutator(
    data: bytes,
    max_size: int,
    seed: int,
    *,
    byte_mutate: Callable[[bytes, int], bytes] | None = None,
    fail_alloc: bool = False,
) -> bytes:
    """atheris's custom mutator: one structure-aware change (or a byte mutation).

    ``fail_alloc``: the fail point is one of the things changed (bind it with
    :func:`functools.partial` for atheris); without it, a point the input
    carries (a byte flip set it) is dropped, so the output is what it was
    before points existed.  libFuzzer's own byte mutations reach it either
    way: flag bit 1 and the varint after the labels are bytes too.
    """
    rng = random.Random(seed)
    if byte_mutate is None:
        byte_mutate = _atheris_mutate()
    if rng.randrange(BYTE_SHARE) == 0:
        return byte_mutate(data, max_size)
    case, _name = mutate_case(data, RandomChoices(rng), fail_alloc=fail_alloc)
    return _fit(
        case if fail_alloc else case.without_fail_alloc(), byte_mutate(data, max_size), max_size
    )


def custom_crossover(
    data1: bytes, data2: bytes, max_out_size: int, seed: int, *, fail_alloc: bool = False
) -> bytes:
    """atheris's custom crossover: a blob of ``data2`` into ``data1``'s case.

    The result keeps ``data1``'s fail point with ``fail_alloc``, and drops
    it without (as :func:`custom_mutator` does).
    """
    rng = random.Random(seed)
    choices = RandomChoices(rng)
    case = decode(data1)
    for _ in range(3):  # "splice" or "crossover" only; "blob" etc. would ignore data2
        mutated, name = mutate_case(data1, choices, other=data2)
        if name.startswith(("crossover", "splice")):
            case = mutated
            break
    return _fit(
        case if fail_alloc else case.without_fail_alloc(), data1[:max_out_size], max_out_size
    )


def _atheris_mutate() -> Callable[[bytes, int], bytes]:
    import atheris

    mutate: Callable[[bytes, int], bytes] = atheris.Mutate
    return mutate
