"""The malloc interposer (``_native/libtlsleak_malloc.so``) from Python.

The interposer is a plain shared library built from ``_native/malloc.c`` when
the package is installed.  Preloaded (``LD_PRELOAD``), it is the process's
``malloc``, ``free``, ``realloc`` and the rest of the family: every caller
reaches it, whatever TLS stack it is (the system libcrypto, the OpenSSL inside
cryptography's wheel, BoringSSL, a C library's own calls), and it forwards to
glibc after counting.  Loaded any later (with ctypes), every caller has
already bound ``malloc`` to glibc's, so it would count nothing:
:func:`interposer` then refuses, with the reason, rather than report zero.

:func:`tlsleak.ledgers.shim.preload_env` puts it in a child's ``LD_PRELOAD``
next to the OpenSSL heap shim.

Besides counting, it can record where allocations come from: the caller
stacks of live blocks (for naming a leak, :meth:`Interposer.stacks`) and,
cheaply, the distinct allocation sites of an attempt (for fuzz guidance,
:meth:`Interposer.sites`; see :mod:`tlsleak.fuzz.guidance`).  And it can
leave a callable's allocations out of the numbering that :meth:`Interposer.fail_at`
fails by (:meth:`Interposer.quiet`: a fuzzer's coverage hooks, which run in
the middle of the target's traced code).
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, NamedTuple

from tlsleak.ledgers._preload import mapped_library, preload_hint
from tlsleak.ledgers.base import LedgerUnavailable

__all__ = [
    "INTERPOSER_NAME",
    "OTHER_THREAD",
    "Interposer",
    "RawSite",
    "RawStack",
    "interposer",
    "interposer_path",
    "is_interposing",
]

#: File name of the interposer, in ``tlsleak/ledgers/_native/``.
INTERPOSER_NAME: Final = "libtlsleak_malloc.so"

_INACTIVE: Final = "the heap ledger is not active"

#: ``METH_FASTCALL`` of CPython's ``methodobject.h`` (stable since 3.7).
_METH_FASTCALL: Final = 0x0080


class _MethodDef(ctypes.Structure):
    """CPython's ``PyMethodDef``, for the function :meth:`Interposer.quiet` makes."""

    _fields_ = [
        ("ml_name", ctypes.c_char_p),
        ("ml_meth", ctypes.c_void_p),
        ("ml_flags", ctypes.c_int),
        ("ml_doc", ctypes.c_char_p),
    ]


@dataclass(frozen=True)
class RawStack:
    """Live blocks allocated with one stack (return addresses, innermost first).

    The frames start inside the interposer itself (its ``malloc``); see
    :mod:`tlsleak.ledgers.symbols` for names.
    """

    blocks: int
    bytes: int
    #: Allocation order of the earliest of these blocks (smaller: lost first).
    first: int
    frames: tuple[int, ...]


class RawSite(NamedTuple):
    """One distinct allocation site of an attempt (see ``_native/malloc.c``, "Allocation sites").

    ``site`` is the return address of the allocation call, or of the first
    frame above a registered allocator wrapper; ``caller`` the frame above
    that one (0 unless the site was found above a wrapper); ``depth`` the
    stack depth in 512-byte steps from :meth:`Interposer.sites_begin`
    (:data:`OTHER_THREAD` on another thread); ``hits`` how many allocations
    were made there.  (A tuple: hundreds are made per attempt.)
    """

    site: int
    caller: int
    depth: int
    hits: int


#: :attr:`RawSite.depth` of an allocation on another thread than the one that began.
OTHER_THREAD: Final = 0xFFFFFFFF

#: Sites one :meth:`Interposer.sites` call can return (the C table keeps at most this many).
_SITES_MAX: Final = 6144


def _group_type(depth: int) -> type[ctypes.Structure]:
    """``stack_group`` of ``_native/malloc.c``, with ``depth`` frames."""
    return type(
        "StackGroup",
        (ctypes.Structure,),
        {
            "_fields_": [
                ("blocks", ctypes.c_uint64),
                ("bytes", ctypes.c_uint64),
                ("first", ctypes.c_uint64),
                ("depth", ctypes.c_int64),
                ("frames", ctypes.c_void_p * depth),
            ]
        },
    )


def interposer_path() -> Path:
    """Where the built interposer is; :class:`LedgerUnavailable` if it was not built."""
    path = Path(__file__).resolve().parent / "_native" / INTERPOSER_NAME
    if not path.is_file():
        raise LedgerUnavailable(
            f"{_INACTIVE}: the malloc interposer is not built ({path} is missing). "
            "Installing tlsleak (pip install . or pip install -e .) compiles it from "
            "src/tlsleak/ledgers/_native/malloc.c with a C compiler (gcc); the build "
            "printed why it could not"
        )
    return path


class Interposer:
    """The interposer's C API (``tlsleak_malloc_*`` in ``_native/malloc.c``).

    Use :func:`interposer` to get one: it checks that it is the process's malloc.
    Blocks and bytes are live heap blocks and their usable sizes
    (``malloc_usable_size``), of the whole process or of the calling thread.
    """

    def __init__(self, lib: ctypes.CDLL) -> None:
        self._lib = lib
        i64p = ctypes.POINTER(ctypes.c_int64)
        u64 = ctypes.c_uint64
        for name, restype, argtypes in (
            ("active", ctypes.c_int, []),
            ("counts", None, [ctypes.c_int, i64p, i64p]),
            ("allocations", u64, []),
            ("reset_allocations", None, []),
            ("fail_at", None, [u64]),
            ("failed", u64, []),
            ("stacks_begin", u64, []),
            ("stacks_end", None, []),
            ("stacks", ctypes.c_int64, [u64, ctypes.c_void_p, ctypes.c_size_t]),
            ("stacks_clear", None, []),
            ("stack_depth", ctypes.c_int, []),
            ("sites_wrap", ctypes.c_int, [ctypes.c_void_p, ctypes.c_size_t]),
            ("sites_begin", None, []),
            ("sites_end", None, []),
            ("sites", ctypes.c_int64, [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]),
            ("sites_ids", ctypes.c_int64, [ctypes.c_void_p, ctypes.c_size_t]),
            ("quiet_setup", None, [ctypes.c_void_p]),
            ("quiet", ctypes.c_int, []),
        ):
            fn = getattr(lib, f"tlsleak_malloc_{name}")
            fn.restype = restype
            fn.argtypes = argtypes
        self._counts = lib.tlsleak_malloc_counts
        # Reused: a snapshot runs twice per attempt, and new ctypes objects
        # would be Python allocations of their own inside the measured window.
        self._blocks = ctypes.c_int64()
        self._bytes = ctypes.c_int64()
        self._blocks_ref = ctypes.byref(self._blocks)
        self._bytes_ref = ctypes.byref(self._bytes)
        # Made once and grown, never per call: a ctypes type made, then
        # collected, frees its memory at a later collection, which a later
        # check would count as blocks freed by the collector (a cycle).
        self._group = _group_type(int(lib.tlsleak_malloc_stack_depth()))
        self._groups: ctypes.Array[ctypes.Structure] = (self._group * 256)()
        # The sites buffer, made once for the same reason: the whole table.
        self._sites = (ctypes.c_uint64 * (4 * _SITES_MAX))()
        self._lost = ctypes.c_uint64()
        self._lost_ref = ctypes.byref(self._lost)
        self._ids = (ctypes.c_uint64 * _SITES_MAX)()
        # The PyMethodDef of every quiet wrapper: alive as long as they are.
        self._quiet_def: _MethodDef | None = None

    @property
    def path(self) -> str:
        """The loaded interposer's path."""
        return str(self._lib._name)

    def active(self) -> bool:
        """Whether the process's ``malloc`` and ``free`` are the interposer's."""
        return bool(self._lib.tlsleak_malloc_active())

    def counts(self, *, thread: bool = False) -> tuple[int, int]:
        """(live blocks, live bytes) of the process, or allocated minus freed by this thread.

        The process's sum is exact when no other thread allocates meanwhile.
        """
        self._counts(1 if thread else 0, self._blocks_ref, self._bytes_ref)
        return self._blocks.value, self._bytes.value

    def reset_allocations(self) -> None:
        """Restart :meth:`allocations` at zero."""
        self._lib.tlsleak_malloc_reset_allocations()

    def allocations(self) -> int:
        """Allocation calls in every thread since :meth:`reset_allocations`.

        An allocation is a call that needs new memory: any malloc-family call,
        ``realloc`` of NULL, or a ``realloc`` past the block's usable size.
        :meth:`fail_at` counts the same.
        """
        return int(self._lib.tlsleak_malloc_allocations())

    def fail_at(self, k: int) -> None:
        """Make the ``k``-th allocation from now (1-based, any thread) return NULL, once.

        The failing call sets ``errno`` to ``ENOMEM``; 0 disarms.
        """
        if k < 0:
            raise ValueError(f"k must be at least 0, not {k}")
        self._lib.tlsleak_malloc_fail_at(k)

    def failed(self) -> int:
        """Allocation failures injected so far in this process."""
        return int(self._lib.tlsleak_malloc_failed())

    def quiet(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """``fn`` wrapped so that the allocations made while it runs are not numbered.

        While the wrapper runs, its thread's allocations are neither counted
        by :meth:`allocations` nor failed by :meth:`fail_at` (nor recorded as
        allocation sites); their blocks and bytes still count.  For a fuzz
        worker's coverage hooks, which allocate in the middle of the target's
        traced code (``_native/malloc.c``, "Quiet calls").  The wrapper is a
        C function (positional arguments only): it adds one C call to ``fn``
        and allocates nothing itself.
        """
        if self._quiet_def is None:
            vectorcall = ctypes.cast(ctypes.pythonapi.PyObject_VectorcallDict, ctypes.c_void_p)
            self._lib.tlsleak_malloc_quiet_setup(vectorcall)
            body = ctypes.cast(self._lib.tlsleak_malloc_quiet_call, ctypes.c_void_p)
            self._quiet_def = _MethodDef(b"quiet", body, _METH_FASTCALL, None)
        new_function = ctypes.PYFUNCTYPE(
            ctypes.py_object, ctypes.c_void_p, ctypes.py_object, ctypes.py_object
        )(("PyCFunction_NewEx", ctypes.pythonapi))
        wrapped: Callable[..., Any] = new_function(ctypes.byref(self._quiet_def), fn, None)
        return wrapped

    def in_quiet_call(self) -> bool:
        """Whether this thread is inside a :meth:`quiet` wrapper (for tests)."""
        return bool(self._lib.tlsleak_malloc_quiet())

    # Caller stacks: slow, for the oracle's one attribution replay of a leak.

    def stacks_begin(self) -> int:
        """Record the stack (``backtrace``) of every new block; return a mark for :meth:`stacks`."""
        return int(self._lib.tlsleak_malloc_stacks_begin())

    def stacks_end(self) -> None:
        """Stop recording; recorded blocks keep their stacks until freed or :meth:`stacks_clear`."""
        self._lib.tlsleak_malloc_stacks_end()

    def stacks(self, mark: int) -> list[RawStack]:
        """The blocks recorded since ``mark`` and still live, grouped by stack, lost first."""
        while True:
            cap = len(self._groups)
            n = int(self._lib.tlsleak_malloc_stacks(mark, self._groups, cap))
            if n < 0:
                raise MemoryError("the malloc interposer could not list its stacks")
            if n <= cap:
                break
            self._groups = (self._group * n)()
        found = []
        for i in range(n):
            g: Any = self._groups[i]
            frames = tuple(int(f or 0) for f in g.frames[: int(g.depth)])
            found.append(RawStack(int(g.blocks), int(g.bytes), int(g.first), frames))
        return sorted(found, key=lambda s: s.first)

    def stacks_clear(self) -> None:
        """Forget every recorded stack (the hooks go back to their fast path)."""
        self._lib.tlsleak_malloc_stacks_clear()


    # Allocation sites: cheap, for fuzz guidance (one attempt at a time).

    def sites_wrap(self, start: int, size: int = 0) -> bool:
        """Treat ``[start, start + size)`` as an allocator wrapper (see :class:`RawSite`).

        With ``size`` 0, the function holding ``start`` (its extent from the
        dynamic symbol table).  False when that is unknown or the list is full.
        """
        return bool(self._lib.tlsleak_malloc_sites_wrap(start, size))

    def sites_begin(self) -> None:
        """Forget the sites recorded so far and record from now on (depths from this thread)."""
        self._lib.tlsleak_malloc_sites_begin()

    def sites_end(self) -> None:
        """Stop recording sites; what was recorded stays readable until the next begin."""
        self._lib.tlsleak_malloc_sites_end()

    def sites(self) -> tuple[list[RawSite], int]:
        """(the distinct sites recorded since :meth:`sites_begin`, first seen first; how many
        more did not fit)."""
        n = int(self._lib.tlsleak_malloc_sites(self._sites, _SITES_MAX, self._lost_ref))
        raw = self._sites[: 4 * min(n, _SITES_MAX)]
        found = list(map(RawSite._make, zip(*[iter(raw)] * 4, strict=True)))
        return found, int(self._lost.value)

    def sites_ids(self) -> list[int]:
        """The sites of :meth:`sites`, in the same order, as one integer each.

        The high 60 bits stand for one (site, caller, depth) for the life of
        the process (see ``_native/malloc.c``); the low 4 are libFuzzer's
        bucket of the allocations made at that site in all (0 for one; 2, 3,
        4-7, ..., 128+ as 2 to 8).  A caller that has seen an id before needs
        no more than the id: one list of integers is what an attempt's
        hundreds of sites cost to read.
        """
        n = int(self._lib.tlsleak_malloc_sites_ids(self._ids, _SITES_MAX))
        return self._ids[: min(n, _SITES_MAX)]


_active: Interposer | None = None


def interposer() -> Interposer:
    """The interposer of this process; :class:`LedgerUnavailable` (saying why) otherwise.

    Either it is not loaded at all, or it was loaded after the process
    started, so that it is not the process's ``malloc``.
    """
    global _active
    if _active is not None:
        return _active
    loaded = mapped_library(INTERPOSER_NAME, interposer_path)
    if loaded is None:
        raise LedgerUnavailable(
            f"{_INACTIVE}: the malloc interposer ({INTERPOSER_NAME}) is not loaded in this "
            "process; " + preload_hint(interposer_path)
        )
    # RTLD_NOLOAD: a handle on the copy already loaded, never a second load.
    found = Interposer(ctypes.CDLL(loaded, mode=os.RTLD_NOLOAD | os.RTLD_NOW))
    if not found.active():
        raise LedgerUnavailable(
            f"{_INACTIVE}: the malloc interposer {loaded} is loaded but is not the "
            "process's malloc: it was loaded after the process started (e.g. with "
            "ctypes), when every caller had already found glibc's; "
            + preload_hint(interposer_path)
        )
    _active = found  # preloaded once, it stays the malloc for the life of the process
    return found


def is_interposing() -> bool:
    """Whether the interposer is this process's malloc (the ``heap`` ledger can count)."""
    try:
        interposer()
    except LedgerUnavailable:
        return False
    return True
