"""Ledgers: ways of counting live resources.  See :mod:`tlsleak.ledgers.base`."""

from __future__ import annotations

from collections.abc import Callable

from tlsleak.ledgers.base import (
    Allocate,
    Counts,
    Ledger,
    LedgerBlind,
    LedgerUnavailable,
    Site,
    counts_allocation,
    growth,
)
from tlsleak.ledgers.fds import FdLedger
from tlsleak.ledgers.heap import HeapLedger
from tlsleak.ledgers.objects import OpenSSLObjectLedger
from tlsleak.ledgers.process_heap import ProcessHeapLedger, heap_available
from tlsleak.ledgers.pyobjects import PyObjectsLedger

__all__ = [
    "LEDGERS",
    "Allocate",
    "Counts",
    "FdLedger",
    "HeapLedger",
    "Ledger",
    "LedgerBlind",
    "LedgerUnavailable",
    "OpenSSLObjectLedger",
    "ProcessHeapLedger",
    "PyObjectsLedger",
    "Site",
    "counts_allocation",
    "growth",
    "heap_available",
    "make_ledger",
]

#: Ledger factories by name (the names targets list in ``Target.ledgers``).
LEDGERS: dict[str, Callable[[], Ledger]] = {
    OpenSSLObjectLedger.name: OpenSSLObjectLedger,
    FdLedger.name: FdLedger,
    HeapLedger.name: HeapLedger,
    ProcessHeapLedger.name: ProcessHeapLedger,
    PyObjectsLedger.name: PyObjectsLedger,
}


def make_ledger(name: str) -> Ledger:
    """A new ledger by name; ``KeyError`` with the known names if there is none."""
    try:
        factory = LEDGERS[name]
    except KeyError:
        raise KeyError(f"unknown ledger {name!r} (known: {', '.join(sorted(LEDGERS))})") from None
    return factory()
