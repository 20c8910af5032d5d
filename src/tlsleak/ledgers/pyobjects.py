"""The ``pyobjects`` ledger: live blocks of Python's own allocator (pymalloc).

Python keeps objects of up to 512 bytes in its own arenas, carved from a few
large ``malloc`` blocks, so a leak of small Python objects (an init function
that appends each attempt's context wrapper to a module-level list) moves no
malloc count: the ``heap`` ledger cannot see it.  ``sys.getallocatedblocks()``
counts the blocks pymalloc has handed out and not taken back, which is that
leak's count (counter ``pyobjects.blocks``).

It counts the whole interpreter, so it is noisy: the oracle confirms its
growth by slope after warm-up (``slope_verdict``), like the ``heap`` ledger.
In an interpreter that does not use pymalloc (``PYTHONMALLOC=malloc``, a
debug build's other allocators) the count stays at zero whatever leaks, so
:meth:`PyObjectsLedger.start` raises :class:`~tlsleak.ledgers.LedgerUnavailable`.

:func:`live_types` counts the objects the collector tracks by type, for the
attribution replay: what was left behind, by type name (``+1 list, +3 dict``).
"""

from __future__ import annotations

import gc
import sys
from collections import Counter

from tlsleak.ledgers.base import Counts, LedgerUnavailable

__all__ = ["PyObjectsLedger", "live_types", "type_growth"]


def live_types() -> Counter[str]:
    """Objects the cyclic collector tracks, counted by type name (after a collection)."""
    gc.collect()
    return Counter(type(x).__name__ for x in gc.get_objects())


def type_growth(before: Counter[str], after: Counter[str]) -> dict[str, int]:
    """Types with more live objects in ``after`` than in ``before``, most grown first."""
    grown = {k: v - before.get(k, 0) for k, v in after.items() if v > before.get(k, 0)}
    return dict(sorted(grown.items(), key=lambda kv: (-kv[1], kv[0])))


class PyObjectsLedger:
    """Live pymalloc blocks of the interpreter (counter ``pyobjects.blocks``)."""

    name = "pyobjects"
    scope = "every block of Python's small-object allocator"
    #: Confirmed by slope after warm-up: the interpreter's own churn is noise.
    slope_verdict = True
    #: Growth that a collection undoes is garbage awaiting the collector, not a finding.
    judges_cycles = False

    def __init__(self) -> None:
        self._started = False

    def start(self) -> None:
        if sys.getallocatedblocks() <= 0:
            raise LedgerUnavailable(
                "ledger pyobjects needs Python's small-object allocator (pymalloc), "
                "which this interpreter does not use (PYTHONMALLOC=malloc?)"
            )
        self._started = True

    def stop(self) -> None:
        self._started = False

    def snapshot(self) -> Counts:
        if not self._started:
            raise RuntimeError("snapshot() of a ledger that was not started")
        return {"pyobjects.blocks": sys.getallocatedblocks()}
