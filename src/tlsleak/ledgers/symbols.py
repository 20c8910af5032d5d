"""Names for the return addresses of the malloc interposer's caller stacks.

The interposer (:mod:`tlsleak.ledgers.interposer`) records raw return
addresses of each block allocated during the oracle's attribution replay.
Here they become frames a maintainer can act on:

* ``dladdr`` (glibc, through ctypes) gives each address its shared object and
  nearest exported symbol: ``libssl.so.3(SSL_CTX_new+0x2a)``;
* where the object has debug info, binutils' ``addr2line`` gives the source
  file and line (inlined calls resolved to the innermost one):
  ``control_leaky.c:19 (tls_init_once)``.

Why ``addr2line`` and not a DWARF library (pyelftools, ...): it adds no Python
dependency to a tool that must install next to any project's test suite, it
is on every machine that has the C compiler the package already needs to
build its shims (Debian's ``binutils`` comes with ``gcc``), and one call per
library resolves every address of a finding at once.  Without it a frame
keeps its symbol and offset, and :func:`addr2line_missing` says why.

A leak is named by its **caller**: the first frame outside the runtime (the
TLS library, libc, the dynamic loader, tlsleak's own shims, the Python
interpreter and its extension modules, libffi): the line of *the user's*
code whose allocation was lost, e.g. ``control_leaky.c:19 (tls_init_once)``.
"""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Final, Protocol, runtime_checkable

from tlsleak.ledgers.interposer import RawStack

__all__ = [
    "Frame",
    "LostStack",
    "StackRecorder",
    "addr2line_missing",
    "is_runtime",
    "root_stack",
    "symbolise",
]

#: Shared objects that are never "the caller": TLS libraries, libc and the
#: loader, tlsleak's shims, the interpreter, its extension modules, libffi.
_RUNTIME: Final = re.compile(
    r"^(libcrypto|libssl|libgnutls|libmbed|libwolfssl|libboringssl"
    r"|libc[.-]|libc$|ld-linux|ld-|libdl[.-]|libpthread[.-]|libgcc_s|libstdc\+\+"
    r"|libtlsleak_|libpython|python[0-9.]*$|libffi)"
    r"|\.cpython-.*\.so$|\.abi3\.so$"
)

#: Seconds one ``addr2line`` call may take (a big library with debug info).
_ADDR2LINE_TIMEOUT: Final = 60.0


def is_runtime(path: str) -> bool:
    """Whether frames in the object at ``path`` are the runtime's, not the caller's."""
    return bool(_RUNTIME.search(os.path.basename(path)))


@dataclass(frozen=True)
class Frame:
    """One return address, named as well as the object allows."""

    address: int
    #: Path of the shared object (or executable) holding the address.
    object: str
    #: Nearest dynamic symbol at or below the address, and the offset past it.
    symbol: str | None = None
    offset: int = 0
    #: From the debug info, when there is some.
    function: str | None = None
    file: str | None = None
    line: int | None = None

    @property
    def location(self) -> str | None:
        """``control_leaky.c:19``: file base name and line, or None without debug info.

        The base name, so that the same code built elsewhere names the same place.
        """
        if self.file is None or self.line is None:
            return None
        return f"{os.path.basename(self.file)}:{self.line}"

    def __str__(self) -> str:
        where = self.location
        name = self.function or self.symbol
        if where is not None:
            return f"{where} ({name})" if name else where
        base = os.path.basename(self.object) or "?"
        if self.symbol:
            return f"{base}({self.symbol}+{self.offset:#x})"
        return f"{base}+{self.offset:#x}"


@dataclass(frozen=True)
class LostStack:
    """Live blocks allocated with one stack, symbolised (innermost frame first)."""

    blocks: int
    bytes: int
    first: int
    #: The stack, without the interposer's own frames.
    frames: tuple[Frame, ...]

    @property
    def caller(self) -> Frame | None:
        """The first frame outside the runtime (see :func:`is_runtime`), if any."""
        return next((f for f in self.frames if not is_runtime(f.object)), None)


def root_stack(stacks: Iterable[LostStack]) -> LostStack | None:
    """The earliest lost stack that has a caller: what the bug lost first.

    Stacks without a caller are the interpreter's own blocks (a cache that
    grew during the replay), which name no bug.
    """
    named = [s for s in stacks if s.caller is not None]
    return min(named, key=lambda s: s.first, default=None)


@runtime_checkable
class StackRecorder(Protocol):
    """A ledger that can say with which stacks the blocks live since a mark were allocated."""

    def begin_stacks(self) -> int:
        """Start recording the stack of every new block; return a mark."""
        ...

    def end_stacks(self, mark: int) -> Sequence[LostStack]:
        """Stop recording; the blocks recorded since ``mark`` still live, by stack."""
        ...


class _DlInfo(ctypes.Structure):
    _fields_ = [
        ("dli_fname", ctypes.c_char_p),
        ("dli_fbase", ctypes.c_void_p),
        ("dli_sname", ctypes.c_char_p),
        ("dli_saddr", ctypes.c_void_p),
    ]


_dladdr_fn: ctypes._NamedFuncPointer | None = None


def _dladdr(address: int) -> tuple[str, int, str | None, int]:
    """(object path, object base, symbol or None, symbol address) of ``address``."""
    global _dladdr_fn
    if _dladdr_fn is None:
        fn = ctypes.CDLL(None).dladdr  # glibc 2.34+ has it in libc, older in libdl
        fn.argtypes = [ctypes.c_void_p, ctypes.POINTER(_DlInfo)]
        fn.restype = ctypes.c_int
        _dladdr_fn = fn
    info = _DlInfo()
    if not _dladdr_fn(address, ctypes.byref(info)) or not info.dli_fname:
        return "", 0, None, 0
    name = info.dli_sname.decode(errors="replace") if info.dli_sname else None
    return info.dli_fname.decode(errors="replace"), info.dli_fbase or 0, name, info.dli_saddr or 0


def _is_exec(path: str) -> bool:
    """Whether ``path`` is a non-PIE executable (ELF type ET_EXEC: absolute addresses)."""
    try:
        with open(path, "rb") as elf:
            header = elf.read(18)
    except OSError:
        return False
    return len(header) == 18 and header[:4] == b"\x7fELF" and header[16] == 2


def addr2line_missing() -> str | None:
    """Why frames get no file:line, if ``addr2line`` is not installed; else None."""
    if shutil.which("addr2line") is None:
        return (
            "addr2line is not installed (Debian: apt-get install binutils): "
            "frames are named by symbol and offset, without file:line"
        )
    return None


def _addr2line(path: str, offsets: Sequence[int]) -> dict[int, tuple[str | None, str, int]]:
    """(function, file, line) per offset in ``path``'s debug info; what it cannot say is left out.

    One call for every offset (``-a`` prints each address before its lines,
    since ``-i`` gives an inlined call more than one function/line pair; the
    first pair is the innermost, the line of the call itself).
    """
    tool = shutil.which("addr2line")
    if tool is None or not offsets:
        return {}
    command = [tool, "-a", "-f", "-C", "-i", "-e", path, *(f"{o:#x}" for o in offsets)]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=_ADDR2LINE_TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return {}
    found: dict[int, tuple[str | None, str, int]] = {}
    blocks: list[list[str]] = []
    for text in done.stdout.splitlines():
        if text.startswith("0x"):
            blocks.append([text])
        elif blocks:
            blocks[-1].append(text)
    for block in blocks:
        if len(block) < 3:
            continue
        # block[1:3] is the innermost (function, file:line); the outer
        # functions of an inlined call follow.
        function, place = block[1], block[2].partition(" (")[0]
        file, _, line = place.rpartition(":")
        if file and file != "??" and line.isdigit() and int(line) > 0:
            found[int(block[0], 16)] = (None if function == "??" else function, file, int(line))
    return found


#: Frames named so far in this process, by address: a worker checks case
#: after case on one target, whose libraries stay where they were loaded, and
#: naming the same addresses again (dladdr, an addr2line process) took ~10 ms
#: of every leak's attribution.
_named: dict[int, Frame] = {}
_CACHE_LIMIT: Final = 100_000


def symbolise(raw: Sequence[RawStack]) -> list[LostStack]:
    """Name every frame of ``raw``: dladdr for all, addr2line for the callers' objects.

    Only objects outside the runtime go to ``addr2line`` (system libraries
    have no debug info, and reading libcrypto's symbols costs time for
    nothing); their addresses are batched, one call per object.  Names are
    kept for the life of the process (a library unloaded and another loaded
    at its address would keep the old names: tlsleak loads a target once).
    """
    if len(_named) > _CACHE_LIMIT:
        _named.clear()
    named = _named
    wanted: dict[str, dict[int, int]] = {}  # object -> lookup offset -> address
    for address in {a for stack in raw for a in stack.frames} - named.keys():
        # A return address points past the call: look up the call itself.
        path, base, symbol, saddr = _dladdr(address - 1)
        offset = address - saddr if symbol and saddr else address - base
        named[address] = Frame(address, path, symbol, offset)
        if path and not is_runtime(path):
            lookup = address - 1 if _is_exec(path) else address - 1 - base
            wanted.setdefault(path, {})[lookup] = address
    for path, by_offset in wanted.items():
        for lookup, (function, file, line) in _addr2line(path, sorted(by_offset)).items():
            if lookup in by_offset:
                at = by_offset[lookup]
                named[at] = replace(named[at], function=function, file=file, line=line)
    stacks = []
    for stack in raw:
        frames = [named[a] for a in stack.frames]
        while frames and os.path.basename(frames[0].object).startswith("libtlsleak_malloc"):
            frames.pop(0)  # the interposer's own malloc (and backtrace's caller)
        stacks.append(LostStack(stack.blocks, stack.bytes, stack.first, tuple(frames)))
    return stacks
