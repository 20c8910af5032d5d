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
        self._dir_fd: int | None = None

    def start(self) -> None:
        if self._dir_fd is not None:
            return
        for path in _FD_DIRS:
            try:
                # Listing through an open descriptor skips the path lookup
                # (a fifth of the cost on /proc); it is part of every snapshot,
                # so it cancels out like the listing's own descriptor.
                self._dir_fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
                os.listdir(self._dir_fd)
            except OSError:
                self.stop()
                continue
            return
        raise LedgerUnavailable("no /proc/self/fd or /dev/fd to count descriptors with")

    def stop(self) -> None:
        if self._dir_fd is not None:
            os.close(self._dir_fd)
            self._dir_fd = None

    def snapshot(self) -> Counts:
        if self._dir_fd is None:
            raise RuntimeError("snapshot() of a ledger that was not started")
        return {"fd": len(os.listdir(self._dir_fd))}
