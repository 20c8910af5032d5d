"""The ``heap`` ledger: live heap blocks and bytes of the whole process, whatever TLS stack.

It reads the counters of the preloaded malloc interposer
(:mod:`tlsleak.ledgers.interposer`), which sees every ``malloc`` of the
process: the system libcrypto, the OpenSSL inside cryptography's wheel
(pyOpenSSL), BoringSSL, mbedTLS, a C library's own allocations.  It is active
only in a process started with the interposer in ``LD_PRELOAD`` (tlsleak's
workers are); anywhere else :meth:`ProcessHeapLedger.start` raises
:class:`~tlsleak.ledgers.LedgerUnavailable` saying why, never a count of zero.

Counting the whole process also counts the interpreter.  Python keeps objects
of up to 512 bytes in its own arenas, which hides most of its churn, but what
is left is noise a per-stack ledger never sees: a one-off ``realloc`` that
grows a buffer by 32 bytes, a cache that fills over a few attempts.  So the
ledger asks the oracle for two things (see :class:`~tlsleak.ledgers.Ledger`):

* ``heap.bytes`` is reported in a leak's delta but never triggers replays by
  itself (``report_only``): only new *blocks* do;
* growth is confirmed by its slope after warm-up (``slope_verdict``): two
  unjudged runs, then at least n more blocks over n more runs.

Scope: ``process`` (the default) sums every thread; ``thread`` counts what
the thread running the oracle allocated minus what it freed.  Thread scope is
wrong for stacks with threads of their own (a block freed by another thread
than the one that made it looks leaked), so it is an option, chosen with the
``TLSLEAK_HEAP_SCOPE`` environment variable (inherited by tlsleak's workers)
or the ``scope`` argument.

In the oracle's attribution replay of a leak it also records the stack of
every new block (:meth:`ProcessHeapLedger.begin_stacks`), so that the leak
names the line of the caller's code that lost it (:mod:`tlsleak.ledgers.symbols`);
where no OpenSSL site says where (a C library's own ``malloc``), the caller's
exported symbol is the leak's root in its signature (:attr:`LostStack.root`).

It also makes allocations fail (the oracle's ``FaultInjector``): the k-th
allocation of the whole process, so ``--fail-alloc`` works on any stack.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable
from typing import Final

from tlsleak.ledgers.base import Counts
from tlsleak.ledgers.interposer import Interposer, interposer, is_interposing
from tlsleak.ledgers.symbols import LostStack, symbolise

__all__ = ["SCOPES", "SCOPE_VARIABLE", "ProcessHeapLedger", "heap_available", "malloc_one"]

#: The environment variable that picks the scope when none is given.
SCOPE_VARIABLE: Final = "TLSLEAK_HEAP_SCOPE"
#: The scopes: every thread summed, or the oracle's thread alone.
SCOPES: Final = ("process", "thread")


def heap_available() -> bool:
    """Whether the ``heap`` ledger can count in this process (the interposer is malloc)."""
    return is_interposing()


def malloc_one() -> Callable[[], None]:
    """One ``malloc`` block, through whatever ``malloc`` the process resolves; returns its free.

    The heap ledger's probe for a target whose stack has nothing else to
    allocate through (a C library that links no OpenSSL): it proves the
    ledger sees the process's malloc, which every such library calls.
    """
    libc = ctypes.CDLL(None)
    malloc, free = libc.malloc, libc.free
    malloc.argtypes, malloc.restype = [ctypes.c_size_t], ctypes.c_void_p
    free.argtypes, free.restype = [ctypes.c_void_p], None
    block = malloc(64)
    if not block:
        raise MemoryError("malloc(64) returned NULL")
    return lambda: free(block)


def _scope(scope: str | None) -> str:
    chosen = scope if scope is not None else os.environ.get(SCOPE_VARIABLE, "") or "process"
    if chosen not in SCOPES:
        where = "scope" if scope is not None else SCOPE_VARIABLE
        raise ValueError(f"{where} must be one of {', '.join(SCOPES)}, not {chosen!r}")
    return chosen


class ProcessHeapLedger:
    """Live heap blocks and bytes of the process (counters ``heap.blocks``, ``heap.bytes``)."""

    name = "heap"
    #: Bytes are reported, blocks trigger replays (a realloc that grows is no new block).
    report_only: tuple[str, ...] = ("heap.bytes",)
    #: Confirmed by slope after warm-up: a process-wide count has noise.
    slope_verdict = True

    def __init__(self, scope: str | None = None) -> None:
        self.heap_scope = _scope(scope)
        self._heap: Interposer | None = None
        self._thread = self.heap_scope == "thread"

    @property
    def scope(self) -> str:
        """What is counted (for the line that says why the ledger cannot see a target)."""
        if self._thread:
            return "every malloc of the oracle's thread"
        return "every malloc of the process"

    def probe_fallback(self) -> Callable[[], None]:
        """What to allocate when a target's stack offers nothing: one plain malloc."""
        return malloc_one()

    def start(self) -> None:
        self._heap = interposer()  # raises LedgerUnavailable when not preloaded

    def stop(self) -> None:
        if self._heap is not None:
            self._heap.fail_at(0)
            self._heap.stacks_end()
            self._heap.stacks_clear()
            self._heap = None

    def snapshot(self) -> Counts:
        if self._heap is None:
            raise RuntimeError("snapshot() of a ledger that was not started")
        blocks, size = self._heap.counts(thread=self._thread)
        return {"heap.blocks": blocks, "heap.bytes": size}

    def _active(self) -> Interposer:
        return self._heap if self._heap is not None else interposer()

    # Allocation-failure injection (the oracle's FaultInjector protocol): an
    # allocation is any malloc-family call that needs new memory, in any
    # thread; a failed one returns NULL with ENOMEM, as when memory runs out.

    def reset_allocations(self) -> None:
        """Start counting allocations from zero."""
        self._active().reset_allocations()

    def allocations(self) -> int:
        """Allocations in the process since :meth:`reset_allocations`."""
        return self._active().allocations()

    def fail_at(self, k: int) -> None:
        """Make the k-th allocation from now (1-based) fail, once (0: none)."""
        self._active().fail_at(k)

    def failed(self) -> int:
        """Failures injected so far in this process."""
        return self._active().failed()

    # Caller stacks (the oracle's StackRecorder protocol): a backtrace per new
    # block, kept while the block lives; slow, for one replay of a leak.

    def begin_stacks(self) -> int:
        """Record the stack of every new block; return the mark for :meth:`end_stacks`."""
        return self._active().stacks_begin()

    def pause_stacks(self) -> None:
        """Stop recording new blocks; the recorded ones stay until freed or :meth:`end_stacks`.

        So that more runs can let the recorded runs' threads wind down (what
        they free leaves the table) without adding blocks of their own.
        """
        self._active().stacks_end()

    def end_stacks(self, mark: int) -> list[LostStack]:
        """Stop recording; the blocks recorded since ``mark`` still live, by stack, lost first.

        The table of stacks is dropped afterwards, so the hooks are fast again.
        """
        active = self._active()
        active.stacks_end()
        try:
            raw = active.stacks(mark)
        finally:
            active.stacks_clear()
        return symbolise(raw)
