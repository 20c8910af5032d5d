"""The OpenSSL heap shim (``_native/libtlsleak_heap.so``) from Python.

The shim is a plain shared library built from ``_native/heap.c`` when the
package is installed.  Its constructor hands the system libcrypto tlsleak's
own ``malloc``/``realloc``/``free`` (``CRYPTO_set_mem_functions``), which
OpenSSL accepts only before its first allocation in the process.  So it must
be loaded at process start, with ``LD_PRELOAD`` (:func:`preload_env` makes the
environment for such a child, with the ``heap`` ledger's malloc interposer
too); loaded any later, OpenSSL keeps its own
functions and the shim counts nothing.  :func:`heap` therefore refuses, with
the reason, rather than report zero.

It counts the heap of the *system* libcrypto, the one the standard library's
``ssl`` module uses.  pyOpenSSL runs on the OpenSSL that ``cryptography``'s
wheel links in statically, whose allocations the shim does not see.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Final

from tlsleak.ledgers._preload import mapped_library, preload_hint
from tlsleak.ledgers.base import LedgerUnavailable, Site
from tlsleak.ledgers.interposer import interposer_path

__all__ = [
    "SHIM_NAME",
    "Heap",
    "Site",
    "heap",
    "is_preloaded",
    "preload_env",
    "shim_path",
]

#: File name of the shim, in ``tlsleak/ledgers/_native/``.
SHIM_NAME: Final = "libtlsleak_heap.so"

_INACTIVE: Final = "the OpenSSL heap ledger is not active"


def shim_path() -> Path:
    """Where the built shim is; :class:`LedgerUnavailable` if it was not built."""
    path = Path(__file__).resolve().parent / "_native" / SHIM_NAME
    if not path.is_file():
        raise LedgerUnavailable(
            f"the OpenSSL heap shim is not built: {path} is missing. Installing tlsleak "
            "(pip install . or pip install -e .) compiles it from "
            "src/tlsleak/ledgers/_native/heap.c with a C compiler (cc): install one "
            "(Debian: apt-get install gcc) and reinstall tlsleak"
        )
    return path


def preload_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """A copy of ``env`` (default: ``os.environ``) with tlsleak's libraries first in ``LD_PRELOAD``.

    Both that are built: the malloc interposer of the ``heap`` ledger
    (:mod:`tlsleak.ledgers.interposer`), then this OpenSSL heap shim.  One
    that is missing is left out (its ledger then says it is not active);
    :class:`LedgerUnavailable` when neither is built.
    """
    paths: list[str] = []
    missing: list[LedgerUnavailable] = []
    for find in (interposer_path, shim_path):
        try:
            paths.append(str(find()))
        except LedgerUnavailable as exc:
            missing.append(exc)
    if not paths:
        raise missing[-1]
    for path in paths:
        if any(c in path for c in " :\t\n"):
            # ld.so splits LD_PRELOAD on spaces and colons, with no way to quote.
            raise LedgerUnavailable(
                f"tlsleak's preloaded library {path!r} has a space or colon in its path, "
                "which LD_PRELOAD cannot express; install tlsleak under another path"
            )
    out = dict(os.environ if env is None else env)
    others = [p for p in out.get("LD_PRELOAD", "").replace(":", " ").split() if p not in paths]
    out["LD_PRELOAD"] = " ".join([*paths, *others])
    return out


class _CSite(ctypes.Structure):
    _fields_ = (
        ("file", ctypes.c_char_p),
        ("line", ctypes.c_int64),
        ("blocks", ctypes.c_int64),
        ("bytes", ctypes.c_int64),
        ("first", ctypes.c_uint64),
    )


class Heap:
    """The shim's C API (``tlsleak_heap_*`` in ``_native/heap.c``).

    Use :func:`heap` to get one: it checks that the hooks are installed.
    Counts are of blocks and requested bytes of the system libcrypto's heap.
    """

    def __init__(self, lib: ctypes.CDLL) -> None:
        self._lib = lib
        i64p = ctypes.POINTER(ctypes.c_int64)
        u64 = ctypes.c_uint64
        for name, restype, argtypes in (
            ("installed", ctypes.c_int, []),
            ("libcrypto", ctypes.c_char_p, []),
            ("counts", None, [i64p, i64p]),
            ("allocations", u64, []),
            ("reset_allocations", None, []),
            ("fail_at", None, [u64]),
            ("failed", u64, []),
            ("foreign", u64, []),
            ("set_attribution", None, [ctypes.c_int]),
            ("mark", u64, []),
            ("sites_since", ctypes.c_int64, [u64, ctypes.POINTER(_CSite), ctypes.c_size_t]),
        ):
            fn = getattr(lib, f"tlsleak_heap_{name}")
            fn.restype = restype
            fn.argtypes = argtypes
        self._counts = lib.tlsleak_heap_counts

    @property
    def path(self) -> str:
        """The loaded shim's path."""
        return str(self._lib._name)

    def installed(self) -> bool:
        """Whether OpenSSL took the shim's hooks (and still has them)."""
        return bool(self._lib.tlsleak_heap_installed())

    def libcrypto(self) -> str | None:
        """Path of the libcrypto whose heap is counted."""
        raw: bytes | None = self._lib.tlsleak_heap_libcrypto()
        return None if raw is None else os.fsdecode(raw)

    def counts(self) -> tuple[int, int]:
        """(live blocks, live bytes).  Exact when no other thread is allocating."""
        blocks = ctypes.c_int64()
        size = ctypes.c_int64()
        self._counts(ctypes.byref(blocks), ctypes.byref(size))
        return blocks.value, size.value

    def set_attribution(self, on: bool) -> None:
        """Switch attribution (a table of live blocks by call site) on or off."""
        self._lib.tlsleak_heap_set_attribution(1 if on else 0)

    def mark(self) -> int:
        """The current allocation sequence number (see :meth:`sites_since`)."""
        return int(self._lib.tlsleak_heap_mark())

    def sites_since(self, seq: int) -> list[Site]:
        """Blocks allocated after ``seq`` with attribution on and still live, by call site.

        Largest byte total first.  A block reallocated keeps its first site.
        """
        fn = self._lib.tlsleak_heap_sites_since
        cap = 64
        while True:
            buf = (_CSite * cap)()
            total = int(fn(seq, buf, cap))
            if total < 0:
                raise MemoryError("tlsleak_heap_sites_since: out of memory")
            if total <= cap:
                return [
                    Site(
                        file="?" if s.file is None else s.file.decode("utf-8", "replace"),
                        line=int(s.line),
                        blocks=int(s.blocks),
                        bytes=int(s.bytes),
                        first=int(s.first),
                    )
                    for s in buf[:total]
                ]
            cap = total + 16  # more sites appeared meanwhile; try again

    def reset_allocations(self) -> None:
        """Restart :meth:`allocations` at zero."""
        self._lib.tlsleak_heap_reset_allocations()

    def allocations(self) -> int:
        """Allocations since :meth:`reset_allocations`.

        An allocation is a call that needs new memory: ``malloc``, ``realloc``
        of NULL, or a ``realloc`` that grows.  :meth:`fail_at` counts the same.
        """
        return int(self._lib.tlsleak_heap_allocations())

    def fail_at(self, k: int) -> None:
        """Make the ``k``-th allocation from now (1-based) return NULL, once; 0 disarms."""
        if k < 0:
            raise ValueError(f"k must be at least 0, not {k}")
        self._lib.tlsleak_heap_fail_at(k)

    def failed(self) -> int:
        """Allocation failures injected so far in this process."""
        return int(self._lib.tlsleak_heap_failed())

    def foreign(self) -> int:
        """Frees of pointers OpenSSL did not get from the shim (expected: 0)."""
        return int(self._lib.tlsleak_heap_foreign())


_active: Heap | None = None


def heap() -> Heap:
    """The shim of this process, hooks installed; :class:`LedgerUnavailable` otherwise.

    Says which: the shim is not loaded at all, or it was loaded after OpenSSL's
    first allocation, so OpenSSL refused its hooks.
    """
    global _active
    if _active is not None:
        return _active
    loaded = mapped_library(SHIM_NAME, shim_path)
    if loaded is None:
        raise LedgerUnavailable(
            f"{_INACTIVE}: the shim ({SHIM_NAME}) is not loaded in this process; "
            + preload_hint(shim_path)
        )
    # RTLD_NOLOAD: a handle on the copy already loaded, never a second load.
    found = Heap(ctypes.CDLL(loaded, mode=os.RTLD_NOLOAD | os.RTLD_NOW))
    if not found.installed():
        raise LedgerUnavailable(
            f"{_INACTIVE}: the shim {loaded} is loaded, but OpenSSL refused its memory "
            "hooks (installation failed) because OpenSSL had already allocated memory "
            "when the shim was loaded, e.g. with ctypes after importing ssl or hashlib; "
            + preload_hint(shim_path)
        )
    _active = found  # once installed, the hooks stay for the life of the process
    return found


def is_preloaded() -> bool:
    """Whether the shim is loaded in this process with its hooks installed."""
    try:
        heap()
    except LedgerUnavailable:
        return False
    return True


def heap_sees(allocate: Callable[[], Callable[[], None]]) -> bool:
    """Whether the heap ledger counts what ``allocate`` allocates.

    ``allocate`` makes one object and returns a function that frees it.  Used
    to find out, by trying, whether an OpenSSL binding runs on the hooked
    system libcrypto (Debian's python3-cryptography, a venv with system site
    packages) or on a copy of its own (the PyPI wheels): version strings can
    match by chance, a counted allocation cannot.
    """
    try:
        counter = heap()
    except LedgerUnavailable:
        return False
    before, _ = counter.counts()
    free = allocate()
    grew = counter.counts()[0] > before
    free()
    return grew
