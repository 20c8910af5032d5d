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

It is opt-in (``--ledger pyobjects``), not a default ledger of any target:
every attempt grows it once (the outcome the target returns is alive when
the attempt ends), so the oracle runs each case once more between two
collections to see it net zero, about 2x the oracle's time on ``pyopenssl``
and ``control-fixed`` (6x when every case went to replays), for no false
finding on either.
"""

from __future__ import annotations

import sys

from tlsleak.ledgers.base import Counts, LedgerUnavailable

__all__ = ["PyObjectsLedger"]


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
