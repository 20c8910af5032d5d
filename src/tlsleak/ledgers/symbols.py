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
interpreter, libffi): the line of *the user's* code whose allocation was
lost, e.g. ``control_leaky.c:19 (tls_init_once)``.

Which Python extension modules are runtime (:func:`is_runtime`): the
interpreter's own, imported from the standard library's folders
(``sysconfig``'s stdlib and platstdlib, lib-dynload: ``_ssl``, which *is*
the binding of the ``ssl`` target, ``_ctypes``), and the TLS binding's, by
top-level package (:data:`_PYTHON_BINDING`: cryptography's ``_rust``, cffi's
``_cffi_backend``).  Those of every other package (in site-packages: grpcio's
``cygrpc``, python-mbedtls, cymongoose; a user's own) are code under test:
a leak's caller and root can be there.

Python stacks (the ``openssl-objects`` ledger's, of each constructor call
through cryptography's binding: :func:`python_stack`) are frames too, named
``mylib/tls.py:17 (init)`` (the path from the module's dotted name, so that
the same code run from anywhere names the same place); their runtime is the
TLS binding, the standard library and tlsleak itself (:func:`is_python_runtime`).

A caller names a line, which moves when code is edited, so it never enters
a signature.  What does, for a leak only the heap sees (a C library's own
``malloc``), is its :attr:`LostStack.root`: the caller's exported symbol
from ``dladdr``, without the offset (``malloc.so(tls_init_once)``), which a
rebuild does not move.  An extension module exports only its ``PyInit_``,
so there the root is the caller's own function (:attr:`Frame.own_name`): its
name from the symbol table (``x509.cpython-311-x86_64-linux-gnu.so(parse)``),
or, stripped, its start from the unwind tables (:mod:`tlsleak.ledgers._elf`):
``cygrpc.cpython-311-x86_64-linux-gnu.so(fn@0x8a81b0)``, which holds for that
build only, so the finding keeps the build (:attr:`LostStack.root_build`)
and a replay on another build "cannot reproduce exactly".  Which lost stack
names the leak: :func:`root_stack`.  A frame where Python entered an
extension module also shows the name Python calls it by
(:mod:`tlsleak.ledgers._entries`): ``cygrpc...so+0x904fe6 [cygrpc.Server()]``.
"""

from __future__ import annotations

import ctypes
import functools
import itertools
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import types
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Final, Protocol, runtime_checkable

from tlsleak.ledgers._elf import function_table
from tlsleak.ledgers._entries import python_names
from tlsleak.ledgers.interposer import RawStack

__all__ = [
    "DlInfo",
    "Frame",
    "LostStack",
    "StackRecorder",
    "addr2line_missing",
    "is_python_runtime",
    "is_runtime",
    "python_stack",
    "root_stack",
    "several_entries",
    "symbolise",
]

#: Shared objects that are never "the caller": TLS libraries, libc and the
#: loader, tlsleak's shims, the interpreter, libffi.
_RUNTIME: Final = re.compile(
    r"^(libcrypto|libssl|libgnutls|libmbed|libwolfssl|libboringssl"
    r"|libc[.-]|libc$|ld-linux|ld-|libdl[.-]|libpthread[.-]|libgcc_s|libstdc\+\+"
    r"|libtlsleak_|libpython|python[0-9.]*$|libffi)"
)
#: The C library, whose ``start_thread`` calls a thread's function.
_LIBC: Final = re.compile(r"^libc[.-]|^libc$")
#: A Python extension module (a shared object ``import`` loads).
_EXTENSION: Final = re.compile(r"\.cpython-.*\.so$|\.abi3\.so$")

#: Seconds one ``addr2line`` call may take (a big library with debug info).
_ADDR2LINE_TIMEOUT: Final = 60.0

#: Top-level Python packages of the TLS binding: never the caller (nor
#: their extension modules: cryptography's ``_rust``, cffi's ``_cffi_backend``).
#: Nor is atheris, the fuzz workers' harness: a worker's call enters through
#: its ``TestOneInput``, which a checker's or replay's never does, so as a
#: root it would give one leak two signatures (fuzz.desk confirms alone).
_PYTHON_BINDING: Final = frozenset(
    {"OpenSSL", "cryptography", "cffi", "_cffi_backend", "ssl", "_ssl", "atheris"}
)


def _stdlib_roots() -> frozenset[str]:
    """The folders the interpreter's own modules are imported from (real paths)."""
    paths = sysconfig.get_paths()
    roots = {paths["stdlib"], paths["platstdlib"]}
    roots |= {os.path.join(r, "lib-dynload") for r in list(roots)}
    roots |= {p for p in sys.path if p and os.path.basename(p) == "lib-dynload"}
    return frozenset(os.path.realpath(r) for r in roots)


def _extension_is_runtime(path: str) -> bool:
    """Whether the extension module at ``path`` is the interpreter's or the TLS binding's.

    Imported from a folder on ``sys.path`` (the longest that holds it: a
    virtualenv's site-packages lies inside its stdlib folder): the
    interpreter's when that folder is the standard library's (``_ssl`` in
    lib-dynload), the binding's when its top-level package is one of
    :data:`_PYTHON_BINDING`.  Anywhere else (a folder the process added by
    hand), by its folders' names: one called ``lib-dynload`` or after the
    binding.  Every other extension module is code under test.
    """
    real = os.path.realpath(path)
    entries = [os.path.realpath(p) for p in sys.path if p]
    within = [e for e in entries if real.startswith(e.rstrip(os.sep) + os.sep)]
    if within:
        root = max(within, key=len)
        if root in _stdlib_roots():
            return True
        top = os.path.relpath(real, root).split(os.sep)[0]
        return top.partition(".")[0] in _PYTHON_BINDING
    folders = real.split(os.sep)
    return "lib-dynload" in folders or any(
        part.partition(".")[0] in _PYTHON_BINDING for part in folders
    )


@functools.lru_cache(maxsize=1024)
def is_runtime(path: str) -> bool:
    """Whether frames in the object at ``path`` are the runtime's, not the caller's."""
    base = os.path.basename(path)
    if _RUNTIME.search(base):
        return True
    return bool(_EXTENSION.search(base)) and _extension_is_runtime(path)


def is_python_runtime(module: str) -> bool:
    """Whether frames of the Python module ``module`` are the runtime's, not the caller's.

    The runtime is the TLS binding (pyOpenSSL, cryptography, cffi, ``ssl``),
    the standard library and tlsleak itself, except ``tlsleak.targets``: a
    built-in target (``pyopenssl``, the planted controls) *is* the code under
    test, so its own line is the caller, as a user's module is for
    ``pkg.mod:func`` (whose frames come first, innermost first, anyway).
    """
    top = module.partition(".")[0]
    if top == "tlsleak":
        return not module.startswith("tlsleak.targets.")
    return top in _PYTHON_BINDING or top in sys.stdlib_module_names


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
    #: A Python frame: ``object`` is its module's dotted name and ``file``
    #: the path made from it (``mylib/tls.py``); ``address`` is 0.
    python: bool = False
    #: For a C frame outside the runtime: the enclosing function's start
    #: and size in the object (from its unwind tables, stripped or not)...
    start: int | None = None
    size: int | None = None
    #: ... the object's build (:attr:`tlsleak.ledgers._elf.FunctionTable.build`),
    #: and the function's own name from its symbol table, when it has one
    #: (a static function, which ``dladdr`` cannot name; not inlined callees).
    build: str | None = None
    static: str | None = None
    #: What Python calls that function by, when Python calls it (an
    #: extension module's function or method: :mod:`tlsleak.ledgers._entries`).
    python_name: str | None = None

    @property
    def own_name(self) -> str | None:
        """``name`` or ``fn@0x5a1f30``: the function, named without ``dladdr``.

        The static function's name where the object has a symbol table (a
        rebuild does not move it); else, stripped, its start: the same for
        one build wherever it is loaded, another for another build.
        """
        if self.static:
            return self.static
        return None if self.start is None else f"fn@{self.start:#x}"

    @property
    def location(self) -> str | None:
        """``control_leaky.c:19``: file base name and line, or None without debug info.

        The base name, so that the same code built elsewhere names the same
        place (a Python frame's path is already relative to its package).
        """
        if self.file is None or self.line is None:
            return None
        return f"{self.file if self.python else os.path.basename(self.file)}:{self.line}"

    @property
    def runtime(self) -> bool:
        """Whether this frame is the runtime's (never the caller)."""
        return is_python_runtime(self.object) if self.python else is_runtime(self.object)

    def __str__(self) -> str:
        where = self.location
        name = self.function or self.symbol
        if where is not None:
            return f"{where} ({name})" if name else where
        base = os.path.basename(self.object) or "?"
        entered = f" [{self.python_name}]" if self.python_name else ""
        if self.symbol:
            return f"{base}({self.symbol}+{self.offset:#x}){entered}"
        return f"{base}+{self.offset:#x}{entered}"


@dataclass(frozen=True)
class LostStack:
    """Live blocks allocated with one stack, symbolised (innermost frame first)."""

    blocks: int
    bytes: int
    first: int
    #: The stack, without the interposer's own frames.
    frames: tuple[Frame, ...]

    @property
    def python(self) -> bool:
        """Whether these are Python frames (a typed object's constructor call)."""
        return bool(self.frames) and self.frames[0].python

    @property
    def caller(self) -> Frame | None:
        """The first frame outside the runtime (see :attr:`Frame.runtime`), if any."""
        return next((f for f in self.frames if not f.runtime), None)

    @property
    def thread_storage(self) -> bool:
        """Whether this is a thread's storage for thread-local variables, made on first use.

        ``__tls_get_addr`` allocates it for the thread that touched the
        variable, and the thread's exit frees it: a thread of the last run
        still winding down (gRPC's) holds one, which names no bug.  (A
        thread never joined is seen where it was created.)
        """
        inner = itertools.takewhile(lambda f: f.runtime, self.frames)
        return any(f.symbol == "__tls_get_addr" for f in inner if not f.python)

    @property
    def threaded(self) -> bool:
        """Whether the caller's code was entered by a thread's start (libc), not a call.

        A library's own threads (gRPC's pollers and executors) allocate what
        they need while they live, and those of the case's last runs may
        still be winding down: such blocks name the case's leak only when
        nothing that the case's call entered is lost.
        """
        outside = itertools.dropwhile(lambda f: f.runtime, self.frames)
        after = next(itertools.dropwhile(lambda f: not f.runtime, outside), None)
        return after is not None and bool(_LIBC.search(os.path.basename(after.object)))

    @property
    def entry(self) -> tuple[str, str] | None:
        """(object, function) where the caller's code was entered: the group of a lost block.

        The outermost frame of the run of frames outside the runtime that
        starts at the :attr:`caller` (the function the interpreter, a thread
        or the dynamic loader called into that code), named by its symbol
        or its own name (:attr:`Frame.own_name`); None for Python stacks, and
        when that run goes on to the last frame recorded: a stack cut at the
        interposer's depth, whose entry is further out and unknown.
        """
        if self.python:
            return None
        outside = list(itertools.dropwhile(lambda f: f.runtime, self.frames))
        run = list(itertools.takewhile(lambda f: not f.runtime, outside))
        if not run or len(run) == len(outside):
            return None
        frame = run[-1]
        name = frame.symbol or frame.own_name or f"+{frame.offset:#x}"
        return os.path.basename(frame.object), name

    @property
    def root(self) -> str | None:
        """What a signature may say of this stack: ``object(symbol)``, stable across rebuilds.

        The first C frame outside the runtime that ``dladdr`` names by an
        exported symbol (a static function has none: its exported caller
        is named instead), without the offset, which moves when any code
        before it changes; with the object's base name, not its folder.  None
        for Python stacks (a line is all they have, and lines move).

        Where no caller exports anything (an extension module exports only
        its ``PyInit_``), the first caller's own function (:attr:`Frame.own_name`):
        ``_x509.cpython-311-x86_64-linux-gnu.so(parse_crt)`` from the symbol
        table, ``cygrpc.cpython-311-x86_64-linux-gnu.so(fn@0x8a81b0)`` when
        stripped, skipping an allocation wrapper (:func:`_wrapper`).
        """
        for frame in self.frames:
            if frame.python:
                return None
            if frame.symbol and not frame.runtime:
                return f"{os.path.basename(frame.object)}({frame.symbol})"
        found = self._own_root()
        return None if found is None else f"{os.path.basename(found.object)}({found.own_name})"

    @property
    def root_build(self) -> str | None:
        """The build of the object a stripped root names a function of by its start, else None.

        Such a root holds for that build only: another build of the object
        may put the same function elsewhere (see :meth:`Finding.other_build
        <tlsleak.check.verdict.Finding.other_build>`).
        """
        if any(f.symbol and not f.runtime for f in self.frames if not f.python):
            return None
        found = self._own_root()
        return None if found is None or found.static else found.build

    def _own_root(self) -> Frame | None:
        """The frame a root of an object exporting nothing names (see :attr:`root`)."""
        if self.python:
            return None
        frames = self.frames
        for i, frame in enumerate(frames):
            if frame.runtime or frame.own_name is None:
                continue
            if not _wrapper(frames, i):
                return frame
        return None


#: Bytes a function may have and still be an allocation wrapper.
_WRAPPER_SIZE: Final = 64


def _wrapper(frames: Sequence[Frame], i: int) -> bool:
    """Whether ``frames[i]`` is an allocation wrapper: a frame a root should look past.

    ``gpr_malloc`` (malloc, abort on NULL: 48 bytes) allocates for all of
    gRPC, so naming a leak after it would name every leak alike.  A wrapper
    is told by its place and size, since a stripped object has no names:
    it called the allocator itself (the frame before it is the runtime's,
    or there is none), it is tiny (at most :data:`_WRAPPER_SIZE` bytes), and
    its own caller is in the same object, and is named after that caller.
    """
    frame = frames[i]
    if frame.size is None or frame.size > _WRAPPER_SIZE or i + 1 >= len(frames):
        return False
    if i > 0 and not frames[i - 1].runtime:
        return False
    return frames[i + 1].object == frame.object


def root_stack(stacks: Iterable[LostStack], attempts: int = 1) -> LostStack | None:
    """The stack that names the leak: what the bug lost first.

    Stacks without a caller are the interpreter's own blocks (a cache that
    grew during the replay), which name no bug, nor do a thread's own
    (:attr:`LostStack.thread_storage`).  A lost typed object (a
    Python stack, from ``openssl-objects``) comes before any heap block: the
    object holds blocks, not the other way round, and the two ledgers number
    their stacks independently.

    Heap stacks recorded over ``attempts`` runs of the case: those that lost
    a block on every run are the leak (a block that a thread of the last run
    frees later, a cache, lose one); none doing so, no stack names it (the
    growth came from the state of the process, not from a path of the case:
    naming whatever was left over would name noise).  They are
    grouped by their entry point (:attr:`LostStack.entry`: the function the
    interpreter, a thread or the binding called; stacks cut before it count
    only when no other has one); among those the case's call entered (a
    thread's come last: :attr:`LostStack.threaded`), the group that lost the
    most blocks is the leak (a case can take two paths that leak: gRPC's
    refused server loses its credentials' array, one block, and the
    never-started server, twenty), the earliest one on a tie, and its
    earliest stack names it.  A C library's leaks share one entry point, its
    init function, so there it is the earliest stack, as ever.
    """
    named = [s for s in stacks if s.caller is not None and not s.thread_storage]
    python = [s for s in named if s.python]
    if python or not named:
        return min(python, key=lambda s: s.first, default=None)
    kept = [s for s in named if s.blocks >= attempts]
    if not kept:
        return None
    groups: dict[tuple[str, str] | None, list[LostStack]] = {}
    for stack in sorted(kept, key=lambda s: s.first):
        groups.setdefault(stack.entry, []).append(stack)
    if len(groups) > 1:
        groups.pop(None, None)  # cut stacks: their entry is unknown
    biggest = max(
        groups.values(),
        key=lambda g: (not g[0].threaded, sum(s.blocks for s in g), -g[0].first),
    )
    return biggest[0]


def several_entries(stacks: Iterable[LostStack]) -> bool:
    """Whether :func:`root_stack` must choose between entry points: record more runs.

    No lost typed object (that would name the leak), and the heap stacks
    with a caller were entered from more than one place.
    """
    named = [s for s in stacks if s.caller is not None and not s.thread_storage]
    if any(s.python for s in named):
        return False
    return len({s.entry for s in named}) > 1


#: Python frames kept per stack, innermost first (a test runner's are deep).
_PYTHON_DEPTH: Final = 48


def _python_path(module: str, filename: str) -> str:
    """``mylib/tls.py`` for module ``mylib.tls``: the same wherever the code is run from."""
    base = os.path.basename(filename)
    parts = module.split(".") if module else []
    stem = os.path.splitext(base)[0]
    if parts and stem == "__init__":
        return "/".join([*parts, base])
    if parts and parts[-1] == stem:
        return "/".join([*parts[:-1], base])
    return base


def python_stack(frame: types.FrameType | None) -> tuple[Frame, ...]:
    """The Python stack from ``frame`` outwards, named (innermost first).

    Slow next to the call it describes (a walk of every frame): for the
    attribution replay only.
    """
    frames: list[Frame] = []
    while frame is not None and len(frames) < _PYTHON_DEPTH:
        code = frame.f_code
        module = str(frame.f_globals.get("__name__") or "")
        spec = frame.f_globals.get("__spec__")
        if module == "__main__" and spec is not None:
            module = str(spec.name)  # ``python -m tlsleak...``: its real name
        path = _python_path(module, code.co_filename)
        frames.append(Frame(0, module, None, 0, code.co_qualname, path, frame.f_lineno, True))
        frame = frame.f_back
    return tuple(frames)


@runtime_checkable
class StackRecorder(Protocol):
    """A ledger that can say with which stacks the blocks live since a mark were allocated."""

    def begin_stacks(self) -> int:
        """Start recording the stack of every new block; return a mark."""
        ...

    def end_stacks(self, mark: int) -> Sequence[LostStack]:
        """Stop recording; the blocks recorded since ``mark`` still live, by stack."""
        ...


class DlInfo(ctypes.Structure):
    """glibc's ``Dl_info``, what ``dladdr`` fills in (also used by the C targets and guidance)."""

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
        fn.argtypes = [ctypes.c_void_p, ctypes.POINTER(DlInfo)]
        fn.restype = ctypes.c_int
        _dladdr_fn = fn
    info = DlInfo()
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


def _own_function(frame: Frame, path: str, vaddr: int) -> Frame:
    """``frame`` with its enclosing function from the ELF file (:mod:`tlsleak.ledgers._elf`).

    The function's start and size from the unwind tables, and its name
    from the symbol table when there is one (not ``addr2line``'s: in a
    stripped object it names every address after the nearest *exported*
    symbol, ``PyInit_cygrpc``, whatever function holds it).
    """
    table = function_table(path)
    if table is None:
        return frame
    static = table.symbol(vaddr)
    span = table.enclosing(vaddr)
    if static is not None:
        name, start, size = static
        return replace(frame, start=start, size=size, build=table.build, static=name)
    if span is None:
        return frame
    return replace(frame, start=span[0], size=span[1] - span[0], build=table.build)


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
    bases: dict[str, int] = {}
    for address in {a for stack in raw for a in stack.frames} - named.keys():
        # A return address points past the call: look up the call itself.
        path, base, symbol, saddr = _dladdr(address - 1)
        offset = address - saddr if symbol and saddr else address - base
        named[address] = Frame(address, path, symbol, offset)
        if path and not is_runtime(path):
            lookup = address - 1 if _is_exec(path) else address - 1 - base
            wanted.setdefault(path, {})[lookup] = address
            bases[path] = base
    for path, by_offset in wanted.items():
        entries = python_names(path, bases[path])
        for lookup, at in by_offset.items():
            frame = _own_function(named[at], path, lookup)
            if frame.start is not None and frame.start in entries:
                frame = replace(frame, python_name=entries[frame.start])
            named[at] = frame
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
