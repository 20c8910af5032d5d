"""What the two preloaded libraries (the OpenSSL heap shim, the malloc interposer) share.

Whether a library is mapped into this process, and what to tell a user whose
process was not started with it.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable
from pathlib import Path

from tlsleak.ledgers.base import LedgerUnavailable

__all__ = ["mapped_library", "preload_hint"]


def mapped_library(name: str, built: Callable[[], Path]) -> str | None:
    """The path of a library called ``name`` mapped into this process, if any.

    ``built`` gives tlsleak's own build of it: where ``/proc`` is missing, the
    dynamic linker is asked about that one (``RTLD_NOLOAD``: never a new load).
    """
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            for line in maps:
                path = line.rstrip("\n").partition("/")[2]
                if path and Path("/" + path).name == name:
                    return "/" + path
    except OSError:
        try:
            path = str(built())
            ctypes.CDLL(path, mode=os.RTLD_NOLOAD | os.RTLD_NOW)
        except (OSError, LedgerUnavailable):
            return None
        return path
    return None


def preload_hint(built: Callable[[], Path]) -> str:
    """How to get the library ``built`` finds into a process (or build it first)."""
    try:
        where = str(built())
    except LedgerUnavailable as exc:
        return f"build it first ({exc})"
    return f"start the process with LD_PRELOAD={where} (tlsleak does this for its workers)"
