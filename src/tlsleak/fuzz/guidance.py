"""Error-path guidance: what an init attempt did in C, as coverage the fuzzer can see.

OpenSSL's C code is not instrumented, so libFuzzer sees only the Python lines
an input runs: every malformed certificate goes through the same
``load_certificate`` call whatever OpenSSL's parser made of it, and a plain
campaign's corpus collapses to a handful of inputs.  The error path an input
took is visible, though, in what the attempt reports:

- the failing step and each OpenSSL error on the queue, as a
  ``(step, library, reason)`` feature: ``certificate / asn1 / wrong tag`` and
  ``certificate / pem / no start line`` are different branches deep in C;
- the number of allocations the attempt made, bucketed (half an octave per
  bucket: 8-11, 12-15, 16-23, ...) per step: two inputs rejected at the same
  step with the same reason but a very different allocation count went
  different distances into the parser;
- the whole error stack of a rejection, in order, as one more feature: an
  ASN.1 failure is reported as the reason followed by one ``nested asn1
  error`` per enclosing structure, so the stack says how deep into the
  certificate or key the parser got; keeping an input that fails one level
  deeper is what walks the fuzzer into the structure;
- the kind of any finding at its step.

:func:`features` extracts them from a :class:`~tlsleak.check.oracle.Verdict`;
:class:`FeatureCounters` turns each distinct feature into a hit on a coverage
counter of its own (atheris reserves them), so an input that shows a feature
no earlier input showed is *new coverage* to libFuzzer and is kept in the
corpus.  Counters are handed out in order of first appearance; past the pool
size, features share counters by a stable hash (CRC-32, so the same feature
maps to the same counter in every worker and every run).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable, Sequence
from typing import Final

from tlsleak.check.oracle import Verdict

__all__ = [
    "POOL_SIZE",
    "Feature",
    "FeatureCounters",
    "alloc_bucket",
    "features",
    "is_alloc_bucket",
    "is_error_pair",
]

#: Coverage counters a worker reserves for features.
POOL_SIZE: Final = 4096

#: A feature, as a short text: ``"err certificate asn1 wrong tag"``.
Feature = str

_ERROR: Final = "err"
_STACK: Final = "stack"
_ALLOCS: Final = "alloc"
_FINDING: Final = "finding"


def alloc_bucket(count: int) -> int:
    """The bucket of an allocation count: half an octave wide above 3.

    0, 1, 2 and 3 are buckets of their own; above, a bucket is one of the two
    halves of a power-of-two range (4-5, 6-7, 8-11, 12-15, 16-23, ...), so a
    bucket is a relative change of at most 50%, not one more allocation.
    """
    if count < 4:
        return max(count, 0)
    top = count.bit_length() - 1
    half = (count >> (top - 1)) & 1
    return 2 * top + half


def features(verdict: Verdict) -> frozenset[Feature]:
    """The features one checked attempt shows (see the module docstring)."""
    outcome = verdict.outcome
    step = str(outcome.step or "-")
    found: set[Feature] = {f"{_ERROR} {step} {e.library} {e.reason}" for e in outcome.errors}
    if not outcome.errors:
        found.add(f"{_ERROR} {step} {outcome.status}")
    elif len(outcome.errors) > 1:
        found.add(f"{_STACK} {step} " + " > ".join(e.reason for e in outcome.errors))
    if verdict.allocations is not None:
        found.add(f"{_ALLOCS} {step} {alloc_bucket(verdict.allocations)}")
    found.update(f"{_FINDING} {f.kind} {step}" for f in verdict.findings)
    return frozenset(found)


def is_error_pair(feature: Feature) -> bool:
    """Whether ``feature`` is a ``(step, library, reason)`` pair or an outcome."""
    return feature.startswith(_ERROR + " ")


def is_alloc_bucket(feature: Feature) -> bool:
    """Whether ``feature`` is an allocation-count bucket."""
    return feature.startswith(_ALLOCS + " ")


class FeatureCounters:
    """Map features to coverage counters and hit them.

    ``pool`` are counter ids reserved up front (libFuzzer learns the counter
    array's size when fuzzing starts); ``hit`` increments one.  With atheris::

        FeatureCounters([atheris._reserve_counter() for _ in range(POOL_SIZE)],
                        atheris._trace_branch)
    """

    def __init__(self, pool: Sequence[int], hit: Callable[[int], object]) -> None:
        if not pool:
            raise ValueError("a feature counter pool can't be empty")
        self._pool = list(pool)
        self._hit = hit
        self._slots: dict[Feature, int] = {}

    def counter_for(self, feature: Feature) -> int:
        slot = self._slots.get(feature)
        if slot is None:
            if len(self._slots) < len(self._pool):
                slot = self._pool[len(self._slots)]
            else:
                slot = self._pool[zlib.crc32(feature.encode()) % len(self._pool)]
            self._slots[feature] = slot
        return slot

    def hit(self, found: Iterable[Feature]) -> None:
        for feature in found:
            self._hit(self.counter_for(feature))
