"""Every OpenSSL error state of the process, cleared between what is measured.

A process can hold several libcryptos: cryptography's wheel links its own
OpenSSL (pyOpenSSL's), Python's ``ssl`` and C libraries use the system one,
and other wheels bring private copies (``libcrypto-<hash>.so``).  Each keeps a
per-thread error queue whose entries own heap buffers: an entry a target
popped keeps its data buffer until the queue is cleared, and OpenSSL 3.0's
16-slot ring allocates a slot's buffer the first time the slot is used.  If
the oracle cleared only the target's own queue, and only before an attempt,
those buffers would be freed *after* every "after" snapshot: a heap ledger
would see a few blocks more per attempt, a false leak (240 of 246 rejected
pyopenssl cases did, measured with a process-wide heap counter).

:class:`ErrorStates` finds the libcryptos loaded so far (never loading one)
and clears all their queues in the calling thread.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Final

from tlsleak.openssl.errors import binding_error_queue

__all__ = ["ErrorStates", "loaded_libcryptos"]

_MAPS: Final = Path("/proc/self/maps")
#: cryptography's Rust extension, which links its own OpenSSL statically.
_BINDING_MODULE: Final = "cryptography.hazmat.bindings._rust"
# Looking again costs a read of /proc/self/maps: do it for the first attempts
# (a target loads its stack lazily) and then now and then.
_EARLY: Final = 4
_EVERY: Final = 256


def loaded_libcryptos() -> list[str]:
    """Paths of the shared libcryptos mapped into this process (none where /proc is missing)."""
    try:
        text = _MAPS.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    found: dict[str, None] = {}
    for line in text.splitlines():
        fields = line.split(maxsplit=5)  # address perms offset dev inode [path]
        path = fields[5].strip() if len(fields) == 6 else ""
        name = os.path.basename(path)
        if name.startswith("libcrypto") and ".so" in name:
            found[path] = None
    return list(found)


def _clearer(path: str) -> Callable[[], None] | None:
    # RTLD_NOLOAD: a handle to a library already loaded, never a new load
    # (which would run its constructors and add allocations of its own).
    try:
        lib = ctypes.CDLL(path, mode=os.RTLD_NOLOAD | os.RTLD_LAZY)
        clear = lib.ERR_clear_error
    except (OSError, AttributeError):
        return None
    clear.argtypes = []
    clear.restype = None
    return clear


class ErrorStates:
    """The error queues of every libcrypto loaded so far, cleared together."""

    def __init__(self) -> None:
        self._seen: set[str] = set()
        self._clears: list[Callable[[], None]] = []
        self._binding = False
        self._calls = 0

    def refresh(self) -> None:
        """Look for libcryptos loaded since the last look."""
        if not self._binding and _BINDING_MODULE in sys.modules:
            self._binding = True
            self._clears.append(binding_error_queue().clear)
        for path in loaded_libcryptos():
            if path not in self._seen:
                self._seen.add(path)
                clear = _clearer(path)
                if clear is not None:
                    self._clears.append(clear)

    @property
    def libraries(self) -> int:
        """How many error states are cleared (cryptography's counts as one)."""
        return len(self._clears)

    def clear(self) -> None:
        """Clear every known queue in this thread (looking for new ones now and then)."""
        if self._calls < _EARLY or self._calls % _EVERY == 0:
            self.refresh()
        self._calls += 1
        for clear in self._clears:
            clear()
