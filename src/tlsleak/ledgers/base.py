"""What a ledger is: one way of counting live resources in this process.

A ledger knows nothing of targets.  The oracle starts it, takes snapshots
(a mapping of counter name to live count) around each attempt, and compares
them.  Counter names are unique across ledgers: the typed OpenSSL ledger uses
the OpenSSL type names (``SSL_CTX``, ``X509``, ...), the descriptor ledger uses
``fd``; ledgers added later namespace theirs (``heap.blocks``, ...).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol, TypeAlias, runtime_checkable

__all__ = [
    "Allocate",
    "Counts",
    "Ledger",
    "LedgerBlind",
    "LedgerUnavailable",
    "Site",
    "counts_allocation",
    "growth",
]

Counts = Mapping[str, int]

#: Makes one object and returns the function that frees it (see :func:`counts_allocation`).
Allocate: TypeAlias = Callable[[], Callable[[], None]]


@dataclass(frozen=True, slots=True)
class Site:
    """Live blocks allocated at one place, e.g. OpenSSL's ``../ssl/ssl_lib.c:3309``.

    What an attributing ledger reports for a leak, and what findings carry.
    """

    file: str
    line: int
    blocks: int
    bytes: int
    #: Allocation order of the site's earliest live block in the replay that
    #: found it (0: unknown).  Not part of a site's identity or its JSON: it
    #: only picks the root site of a leak (:attr:`Finding.root_site`).
    first: int = field(default=0, compare=False)

    def __str__(self) -> str:
        return f"{self.file}:{self.line} {self.blocks} blocks/{self.bytes} B"


class LedgerUnavailable(RuntimeError):
    """A ledger cannot count in this process (say why, never report zero instead)."""


class LedgerBlind(LedgerUnavailable):
    """A ledger counts in this process, but not what the target allocates (one line: why)."""


@runtime_checkable
class Ledger(Protocol):
    """A counter of live resources."""

    #: Name used on the command line, in reports and in ``Target.ledgers``.
    name: str

    # Optional, read with getattr:
    #
    # ``stack_bound`` (bool, default False): the ledger counts only what one
    # OpenSSL stack allocates (one libcrypto, one binding), so a target on
    # another stack is invisible to it.  Such a ledger is probed when an
    # oracle starts: it must count one object that the target allocates
    # through its own stack (tlsleak.targets.probe), or it is refused.
    # Ledgers of the whole process (descriptors, malloc's totals) are not.
    #
    # ``scope`` (str): what the ledger counts, for the line that says why it
    # cannot see a target ("the heap of the system libcrypto (PATH)").
    #
    # ``probe_fallback`` (an Allocate): a ledger of the whole process that is
    # still probed on each target, because a stack can escape it (the process
    # heap: a stack with an allocator of its own).  The target's probe shows
    # whether it sees the stack; this is what it allocates instead when the
    # target's stack offers nothing to allocate through (one plain malloc).
    #
    # ``report_only`` (tuple of counter names): counters reported in a leak's
    # delta whose growth alone never makes the oracle replay (heap bytes: a
    # realloc that grows a buffer once is not a leak; new blocks are).
    #
    # ``slope_verdict`` (bool, default False): the ledger's counters have
    # noise (a process-wide count), so the oracle confirms their growth by
    # slope after warm-up runs rather than by growth on every replay.

    def start(self) -> None:
        """Begin counting; raise :class:`LedgerUnavailable` if this process can't be counted."""
        ...

    def stop(self) -> None:
        """Stop counting and undo whatever :meth:`start` installed."""
        ...

    def snapshot(self) -> Counts:
        """Current live counts.  Cheap: it is taken twice per attempt."""
        ...


def counts_allocation(ledger: Ledger, allocate: Allocate) -> bool:
    """Whether ``ledger`` (started) counts the object ``allocate`` makes: tried, not assumed.

    A snapshot is taken while the object is alive and compared with one from
    before; any counter that grew means the ledger sees that allocator.  The
    object is freed before returning, whatever happens.
    """
    before = ledger.snapshot()
    free = allocate()
    try:
        during = ledger.snapshot()
    finally:
        free()
    return bool(growth(before, during))


def growth(before: Counts, after: Counts) -> dict[str, int]:
    """The counters that grew from ``before`` to ``after``, with how much.

    Shrinking counters are dropped: an attempt that frees something made
    earlier (a cache flushed, garbage collected) has not leaked.
    """
    if after == before:  # the usual case, decided in C
        return {}
    out = {}
    for name, value in after.items():
        diff = value - before.get(name, 0)
        if diff > 0:
            out[name] = diff
    return out
