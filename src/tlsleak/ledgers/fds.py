"""The file-descriptor ledger: open descriptors of this process."""

from __future__ import annotations

import os

from tlsleak.ledgers.base import Counts, LedgerUnavailable

__all__ = ["FdLedger"]

# Linux lists a process's descriptors in /proc/self/fd; the BSDs and macOS
# have /dev/fd.
_FD_DIRS = ("/proc/self/fd", "/dev/fd")


class FdLedger:
    """Open file descriptors (counter ``fd``).

    On Linux 6.2 and later, ``stat`` of ``/proc/self/fd`` reports the number of
    open descriptors as its size ("proc: report open files as size in stat()
    for /proc/pid/fd"): one ``fstat`` of an open
    handle on that folder, about 2 us, instead of listing it, 5-15 us, which was
    the largest single cost the oracle added to a pyOpenSSL init.  Where the
    size is not the count (older kernels report 0, other systems something
    else), the folder is listed.  Either way the ledger's own handle is part of
    every snapshot, so it cancels out of every difference.
    """

    name = "fds"
    # Not stack_bound (see Ledger): a descriptor is the kernel's, whichever
    # library opened it, so no target can hide one and none is probed.

    def __init__(self) -> None:
        self._dir_fd: int | None = None
        self._size_is_count = False

    def start(self) -> None:
        if self._dir_fd is not None:
            return
        for path in _FD_DIRS:
            try:
                self._dir_fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
                listed = len(os.listdir(self._dir_fd))
                # listdir() works on a duplicate of the handle: one more entry.
                self._size_is_count = os.fstat(self._dir_fd).st_size == listed - 1
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
        if self._size_is_count:
            return {"fd": os.fstat(self._dir_fd).st_size}
        return {"fd": len(os.listdir(self._dir_fd))}
