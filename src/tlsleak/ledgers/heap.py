"""The OpenSSL heap ledger: live blocks and bytes of the system libcrypto's heap.

It reads the counters of the preloaded shim (:mod:`tlsleak.ledgers.shim`), so it is
active only in a process started with the shim in ``LD_PRELOAD``; anywhere
else :meth:`HeapLedger.start` raises :class:`~tlsleak.ledgers.LedgerUnavailable`
saying why, never a count of zero.  It sees what the standard library's ``ssl`` module
(and anything else on the system libcrypto) allocates, not pyOpenSSL, which
runs on the OpenSSL inside ``cryptography``'s wheel.

Beyond counting, the ledger can say *where* leaked blocks come from:
:meth:`HeapLedger.begin_attribution` switches the shim's slow attribution mode
on and returns a mark; :meth:`HeapLedger.end_attribution` lists the blocks
allocated since that mark that are still live, grouped by the OpenSSL source
line that allocated them, and switches the mode off again.
"""

from __future__ import annotations

# The module, not its names: tlsleak.ledgers.shim imports tlsleak.ledgers.base, so
# whichever of the two is imported first finds the other half-initialised.
from tlsleak.ledgers import shim
from tlsleak.ledgers.base import Counts

__all__ = ["HeapLedger"]


class HeapLedger:
    """Live OpenSSL heap blocks and bytes (``openssl-heap.blocks``, ``openssl-heap.bytes``).

    Named apart from the ``heap`` ledger's ``heap.*``: the two count the same
    OpenSSL blocks when both run (every OpenSSL block is a malloc block too).
    """

    name = "openssl-heap"
    #: It counts the system libcrypto only: probed on each target (see Ledger).
    stack_bound = True
    #: Bytes are reported, blocks trigger replays: a one-off realloc that grows
    #: a buffer is no leak, and replaying for it cost ~20% on the ssl target.
    report_only: tuple[str, ...] = ("openssl-heap.bytes",)

    def __init__(self) -> None:
        self._heap: shim.Heap | None = None

    @property
    def scope(self) -> str:
        """What is counted: the heap of the libcrypto the shim hooked (named once started)."""
        where = self._heap.libcrypto() if self._heap is not None else None
        return "the heap of the system libcrypto" + (f" ({where})" if where else "")

    def start(self) -> None:
        self._heap = shim.heap()  # raises LedgerUnavailable when the shim is inactive

    def stop(self) -> None:
        if self._heap is not None:
            self._heap.set_attribution(False)
            self._heap = None

    def snapshot(self) -> Counts:
        if self._heap is None:
            raise RuntimeError("snapshot() of a ledger that was not started")
        blocks, size = self._heap.counts()
        return {"openssl-heap.blocks": blocks, "openssl-heap.bytes": size}

    def _active(self) -> shim.Heap:
        return self._heap if self._heap is not None else shim.heap()

    # Allocation-failure injection (the oracle's FaultInjector protocol): an
    # allocation is a malloc, or a realloc that needs new memory, in the
    # system libcrypto; a failed one returns NULL as when memory runs out.

    def reset_allocations(self) -> None:
        """Start counting allocations from zero."""
        self._active().reset_allocations()

    def allocations(self) -> int:
        """Allocations since :meth:`reset_allocations`."""
        return self._active().allocations()

    def fail_at(self, k: int) -> None:
        """Make the k-th allocation from now (1-based) fail, once (0: none)."""
        self._active().fail_at(k)

    def failed(self) -> int:
        """Failures injected so far in this process."""
        return self._active().failed()

    def begin_attribution(self) -> int:
        """Switch attribution on; return the mark to pass to :meth:`end_attribution`.

        Attribution keeps a locked table of every block allocated while it is
        on: much slower than counting, meant for replaying one case.
        """
        active = self._active()
        active.set_attribution(True)
        return active.mark()

    def end_attribution(self, mark: int) -> list[shim.Site]:
        """Blocks allocated since ``mark`` and still live, by site; attribution off."""
        active = self._active()
        try:
            return active.sites_since(mark)
        finally:
            active.set_attribution(False)
