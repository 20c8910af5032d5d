"""The file-descriptor ledger: open descriptors of this process."""

from __future__ import annotations

import os

from tlsleak.ledgers.base import Counts, LedgerUnavailable

__all__ = ["FdLedger"]

# Linux lists a process's descriptors in /proc/self/fd; the BSDs and macOS
# have /dev/fd.  Listing it opens one descriptor of its own, the same one
# each time, so it cancels out of every difference.
_FD_DIRS = ("/proc/self/fd", "/dev/fd")


class FdLedger:
    """Open file descriptors (counter ``fd``)."""

    name = "fds"

    def __init__(self) -> None:
        self._dir: str | None = None

    def start(self) -> None:
        for path in _FD_DIRS:
            try:
                os.listdir(path)
            except OSError:
                continue
            self._dir = path
            return
        raise LedgerUnavailable("no /proc/self/fd or /dev/fd to count descriptors with")

    def stop(self) -> None:
        self._dir = None

    def snapshot(self) -> Counts:
        if self._dir is None:
            raise RuntimeError("snapshot() of a ledger that was not started")
        return {"fd": len(os.listdir(self._dir))}
