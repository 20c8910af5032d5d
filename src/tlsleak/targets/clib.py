"""C library targets: a shared library's own init path, given as ``c:PATH`` or ``c:PATH:SYMBOL``.

The library exports one function with this ABI (see ``docs/c-abi.md``)::

    int tls_init_once(const unsigned char *ca, size_t ca_len,
                      const unsigned char *cert, size_t cert_len,
                      const unsigned char *key, size_t key_len,
                      int is_client);

It returns 0 when TLS init succeeded, 1 when the input was rejected, and a
negative value for an error of the harness itself.  An empty blob is passed as
NULL with length 0.  Before returning, the function releases everything its
library is supposed to release, on every path: that is what is checked.  An
optional ``const char *tls_last_error(void)`` gives the library's error text,
which becomes the outcome's message.  The ABI carries no password and no
server name: an encrypted key is loaded without a password.

The library is loaded when the target is made, so a path that is not a
loadable library, or a missing or wrong symbol, is reported as one line before
any case runs.  Resources are counted by the process heap ledger (``heap``:
every malloc, whatever TLS stack the library uses, where the interposer is
preloaded), the OpenSSL heap ledger (the system libcrypto's allocations, with
their OpenSSL file:line sites) and the fd ledger; the Python object ledger
can't see into C.  That the OpenSSL heap ledger sees the library is tried
when an oracle starts (:meth:`CLibraryTarget.probe`): a library on an
OpenSSL of its own (linked statically, or another build), or on none, is
invisible to it.
"""

from __future__ import annotations

import ctypes
import os
import re
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from tlsleak.cases.case import InitCase, Mode
from tlsleak.ledgers import heap_available
from tlsleak.ledgers.symbols import DlInfo
from tlsleak.openssl.errors import (
    SYSTEM_LIBCRYPTO,
    ErrorQueue,
    SystemErrorQueue,
    system_error_queue,
)
from tlsleak.targets.base import Outcome, Probe, Status, Step, UnknownTarget

__all__ = ["C_PREFIX", "DEFAULT_SYMBOL", "ERROR_TEXT_SYMBOL", "CLibraryTarget", "c_library_target"]

#: How a target spec names a C library.
C_PREFIX: Final = "c:"
#: The init function looked up when the spec names none.
DEFAULT_SYMBOL: Final = "tls_init_once"
#: The optional function that returns the library's last error text.
ERROR_TEXT_SYMBOL: Final = "tls_last_error"

_C_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Messages from the library end up in one-line reports.
_MAX_MESSAGE: Final = 300

# ELF symbol types (elf.h) that name data, not code: calling one jumps into
# data and crashes.  STT_NOTYPE is allowed: hand-written assembly often leaves
# its functions untyped.
_STT_OBJECT: Final = 1
_STT_COMMON: Final = 5
_STT_TLS: Final = 6
_DATA_SYMBOL_TYPES: Final = frozenset({_STT_OBJECT, _STT_COMMON, _STT_TLS})
_RTLD_DL_SYMENT: Final = 1


class _Elf64Sym(ctypes.Structure):
    _fields_ = [
        ("st_name", ctypes.c_uint32),
        ("st_info", ctypes.c_ubyte),
        ("st_other", ctypes.c_ubyte),
        ("st_shndx", ctypes.c_uint16),
        ("st_value", ctypes.c_uint64),
        ("st_size", ctypes.c_uint64),
    ]


class _Elf32Sym(ctypes.Structure):
    _fields_ = [
        ("st_name", ctypes.c_uint32),
        ("st_value", ctypes.c_uint32),
        ("st_size", ctypes.c_uint32),
        ("st_info", ctypes.c_ubyte),
        ("st_other", ctypes.c_ubyte),
        ("st_shndx", ctypes.c_uint16),
    ]


def _one_line(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= _MAX_MESSAGE else line[: _MAX_MESSAGE - 3] + "..."


def _address(fn: Any) -> int | None:
    value: int | None = ctypes.cast(fn, ctypes.c_void_p).value
    return value


def _symbol_origin(fn: Any) -> tuple[str | None, int | None]:
    """(file that defines ``fn``, its ELF symbol type), each None where the platform can't say.

    ``dlsym`` on a library handle also searches the library's dependencies, so
    ``c:lib.so:SSL_new`` would find libssl's ``SSL_new``; and it returns data
    symbols as readily as functions.  ``dladdr1`` (glibc) tells both apart.
    """
    try:
        process = ctypes.CDLL(None)
        dladdr1 = process.dladdr1
    except (OSError, AttributeError):
        return None, None  # not glibc: the checks are a courtesy, skip them
    dladdr1.argtypes = [ctypes.c_void_p, ctypes.POINTER(DlInfo), ctypes.c_void_p, ctypes.c_int]
    dladdr1.restype = ctypes.c_int
    info = DlInfo()
    entry = ctypes.c_void_p()
    if not dladdr1(_address(fn), ctypes.byref(info), ctypes.byref(entry), _RTLD_DL_SYMENT):
        return "", None  # the address is in no loaded object (a thread-local variable)
    fname = os.fsdecode(info.dli_fname) if info.dli_fname else None
    kind = None
    if entry.value:
        sym_type = _Elf64Sym if ctypes.sizeof(ctypes.c_void_p) == 8 else _Elf32Sym
        kind = ctypes.cast(entry, ctypes.POINTER(sym_type)).contents.st_info & 0xF
    return fname, kind


def _library_file(spec: str, path: str) -> Path:
    """``path`` as a regular file, or ``UnknownTarget`` saying why it can't be one."""
    file = Path(path).expanduser()
    try:
        is_file = stat.S_ISREG(file.stat().st_mode)
    except FileNotFoundError:
        raise UnknownTarget(f"{spec}: no such file: {path}") from None
    except OSError as exc:
        raise UnknownTarget(f"{spec}: cannot read {path}: {exc.strerror}") from None
    except ValueError:  # a NUL byte: no file can have that name
        raise UnknownTarget(f"{spec}: no such file: {path!r}") from None
    if not is_file:
        raise UnknownTarget(f"{spec}: not a file: {path}")
    return file


def _exists(path: str) -> bool:
    return os.path.exists(os.path.expanduser(path))  # False for any path that can't be read


def _same_file(a: str, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


_STEPS: Final = frozenset(step.value for step in Step)


def _step_of(text: str) -> str:
    """The step a library names in front of its error text (``"key: ..."``), else ``init``.

    The ABI has no step, but a library that starts its error text with one of
    tlsleak's step names gets findings grouped by step, like the Python targets.
    """
    head, sep, _ = text.partition(":")
    return head if sep and head in _STEPS else Step.INIT


class CLibraryTarget:
    """A shared library's init path, called through ``ctypes``.

    Raises :class:`~tlsleak.targets.UnknownTarget` (one line) when ``path`` is
    not a loadable shared library or does not define ``symbol`` as a function.
    """

    def __init__(self, path: str, symbol: str = DEFAULT_SYMBOL, *, name: str | None = None) -> None:
        spec = name or (
            f"{C_PREFIX}{path}" if symbol == DEFAULT_SYMBOL else f"{C_PREFIX}{path}:{symbol}"
        )
        self.name = spec
        self.path = path
        self.symbol = symbol
        self.description = f"C library {path}: {symbol}()"
        if not _C_NAME.fullmatch(symbol):
            raise UnknownTarget(f"{spec}: {symbol!r} is not a C function name")
        # An absolute path: given a bare name, dlopen would search the system's
        # library folders instead of the current one.
        self._file = _library_file(spec, path).resolve()
        try:
            self._lib = ctypes.CDLL(str(self._file))
        except OSError as exc:
            raise UnknownTarget(f"{spec}: not a loadable shared library ({exc})") from None
        self._init = self._function(symbol, required=True)
        assert self._init is not None
        self._init.argtypes = [
            ctypes.c_char_p,
            ctypes.c_size_t,
            ctypes.c_char_p,
            ctypes.c_size_t,
            ctypes.c_char_p,
            ctypes.c_size_t,
            ctypes.c_int,
        ]
        self._init.restype = ctypes.c_int
        self._last_error = self._function(ERROR_TEXT_SYMBOL, required=False)
        if self._last_error is not None:
            self._last_error.argtypes = []
            self._last_error.restype = ctypes.c_char_p
        self._queue = self._find_queue()

    def _function(self, symbol: str, *, required: bool) -> Any:
        """The library's own function ``symbol``; None for a missing optional one."""
        try:
            fn = getattr(self._lib, symbol)
        except AttributeError:
            if not required:
                return None
            raise UnknownTarget(f"{self.name}: {self.path} does not export {symbol}()") from None
        origin, kind = _symbol_origin(fn)
        if origin is not None and not _same_file(origin, self._file):
            if not required:
                return None  # a dependency's function of that name is not ours to call
            where = f"to {origin}" if origin else "outside any loaded library"
            raise UnknownTarget(
                f"{self.name}: {symbol} resolves {where}, not to {self.path} itself"
            )
        if kind in _DATA_SYMBOL_TYPES:
            raise UnknownTarget(
                f"{self.name}: {symbol} in {self.path} is a variable, not a function"
            )
        return fn

    def _find_queue(self) -> ErrorQueue | None:
        # The queue to check is that of the libcrypto the library itself
        # calls: dlsym through its handle finds it among its dependencies.
        # That is the system's for a library built with -lcrypto; a library
        # that does not reach OpenSSL's libcrypto has no queue to check.
        try:
            own = _address(self._lib.ERR_get_error)
        except AttributeError:
            return None
        try:
            system = _address(ctypes.CDLL(SYSTEM_LIBCRYPTO).ERR_get_error)
        except (OSError, AttributeError):
            system = None
        if own == system:
            return system_error_queue()
        return SystemErrorQueue(self._lib)  # its own (e.g. statically linked) OpenSSL

    @property
    def ledgers(self) -> tuple[str, ...]:
        """The OpenSSL heap, the process heap where preloaded (any allocator), descriptors.

        ``openssl-heap`` is refused at start on a library that does not call
        the system libcrypto; ``heap`` sees its malloc calls whatever it is.
        """
        return ("openssl-heap", "heap", "fds") if heap_available() else ("openssl-heap", "fds")

    def error_queue(self) -> ErrorQueue | None:
        return self._queue

    def probe(self) -> Probe:
        """A BIO made and freed through the libcrypto this library calls.

        Looked up through the library's own handle, as ``_find_queue`` finds
        its error queue: the system's libcrypto for a library built with
        ``-lcrypto``, its own copy for one that carries OpenSSL inside.
        """
        try:
            new, mem, free = self._lib.BIO_new, self._lib.BIO_s_mem, self._lib.BIO_free
        except AttributeError:
            return Probe(f"{self.path} links no OpenSSL libcrypto (no BIO_new)", None)
        mem.argtypes, mem.restype = [], ctypes.c_void_p
        new.argtypes, new.restype = [ctypes.c_void_p], ctypes.c_void_p
        free.argtypes, free.restype = [ctypes.c_void_p], ctypes.c_int
        origin, _kind = _symbol_origin(new)

        def allocate() -> Callable[[], None]:
            bio = new(mem())
            if not bio:
                raise MemoryError("BIO_new returned NULL")
            return lambda: free(bio)

        return Probe(f"the libcrypto it calls, {origin or 'found through its handle'}", allocate)

    def _error_text(self) -> str:
        if self._last_error is None:
            return ""
        text = self._last_error()
        return _one_line(text.decode("utf-8", "replace")) if text else ""

    def run(self, case: InitCase) -> Outcome:
        # ctypes passes a bytes object's own buffer (no copy); an empty blob
        # goes as NULL with length 0, as the ABI says.
        code = self._init(
            case.ca or None,
            len(case.ca),
            case.cert or None,
            len(case.cert),
            case.key or None,
            len(case.key),
            1 if case.mode is Mode.CLIENT else 0,
        )
        if code == 0:
            return Outcome.accepted()
        if code == 1:
            # The library's queue entries are left where they are: a careful
            # library drains them itself, and the oracle reports any it left
            # behind.  Draining them here would hide exactly that.
            text = self._error_text()
            return Outcome(Status.REJECTED, _step_of(text), (), text)
        text = self._error_text()
        message = f"harness returned {code}" + (f": {text}" if text else "")
        return Outcome(Status.ERROR, Step.INIT, (), message)


def c_library_target(spec: str) -> CLibraryTarget:
    """The target for ``c:PATH`` or ``c:PATH:SYMBOL`` (``UnknownTarget`` if it can't be loaded).

    A PATH that exists is taken whole, so a path holding a colon needs no
    quoting; otherwise a last ``:NAME`` is the symbol.
    """
    rest = spec.removeprefix(C_PREFIX)
    if not rest:
        raise UnknownTarget(f"{spec!r}: give a shared library as c:PATH or c:PATH:SYMBOL")
    if _exists(rest):
        return CLibraryTarget(rest, name=spec)
    head, sep, tail = rest.rpartition(":")
    if sep and head and _exists(head):
        return CLibraryTarget(head, tail, name=spec)
    return CLibraryTarget(rest, name=spec)  # reports the missing file
