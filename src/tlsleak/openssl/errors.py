"""OpenSSL errors as values, and the error queue of the OpenSSL a target runs on.

OpenSSL reports failures by pushing entries onto a per-thread error queue.
A well-behaved init path drains the queue when it turns a failure into its own
error; one that leaves entries behind makes the *next* unrelated OpenSSL call
in that thread look like it failed (and, with ``ERR_get_error`` loops, keeps up
to 16 slots of buffers alive).  tlsleak reports a non-empty queue after the
path returned as its own kind of finding.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Any, Final, Protocol

__all__ = [
    "SYSTEM_LIBCRYPTO",
    "BindingErrorQueue",
    "ErrorQueue",
    "OpenSSLError",
    "SystemErrorQueue",
    "binding_error_queue",
    "pyopenssl_error_entries",
    "system_error_queue",
]

#: The system's libcrypto, by soname: the one Python's ``ssl`` module and C
#: libraries built with ``-lcrypto`` link on this platform (OpenSSL 3).
SYSTEM_LIBCRYPTO: Final = "libcrypto.so.3"


@dataclass(frozen=True, slots=True, order=True)
class OpenSSLError:
    """One entry of the OpenSSL error queue: the library and the reason."""

    library: str
    reason: str

    def __str__(self) -> str:
        return f"{self.library}: {self.reason}"


class ErrorQueue(Protocol):
    """The error queue of one OpenSSL instance in this process."""

    def clear(self) -> None:
        """Empty the queue, discarding its entries."""

    def drain(self) -> tuple[OpenSSLError, ...]:
        """Empty the queue and return its entries, oldest first."""


class BindingErrorQueue:
    """The error queue of the OpenSSL inside ``cryptography``'s bindings.

    pyOpenSSL and cryptography share that OpenSSL (the wheel links its own
    copy), so this is the queue their init paths leave errors on.
    """

    def __init__(self, lib: Any, ffi: Any) -> None:
        self._lib = lib
        self._ffi = ffi

    def clear(self) -> None:
        self._lib.ERR_clear_error()

    def drain(self) -> tuple[OpenSSLError, ...]:
        lib, ffi = self._lib, self._ffi
        out = []
        while code := lib.ERR_get_error():
            library = lib.ERR_lib_error_string(code)
            reason = lib.ERR_reason_error_string(code)
            out.append(
                _entry(
                    code,
                    ffi.string(library) if library else None,
                    ffi.string(reason) if reason else None,
                )
            )
        return tuple(out)


def _entry(code: int, library: bytes | None, reason: bytes | None) -> OpenSSLError:
    # OpenSSL has no string for a library or reason it was built without (or
    # whose strings were never loaded); the packed code still says which.
    return OpenSSLError(
        library.decode("ascii", "replace") if library else "unknown library",
        reason.decode("ascii", "replace") if reason else f"reason({code & 0x7FFFFF})",
    )


_binding_queue: BindingErrorQueue | None = None


def binding_error_queue() -> BindingErrorQueue:
    """The (shared) error queue of cryptography's bundled OpenSSL."""
    global _binding_queue
    if _binding_queue is None:
        from cryptography.hazmat.bindings.openssl.binding import Binding

        _binding_queue = BindingErrorQueue(Binding.lib, Binding.ffi)
    return _binding_queue


class SystemErrorQueue:
    """The error queue of a libcrypto reached through ``ctypes``: by default the system's.

    Python's ``ssl`` module and C libraries linked with ``-lcrypto`` share the
    system libcrypto (one copy per process, found by soname), so this is the
    queue their init paths leave errors on.  ``library`` may also be any
    loaded shared library: the functions resolve through its dependencies to
    the libcrypto *it* uses.
    """

    def __init__(self, library: ctypes.CDLL | None = None) -> None:
        lib = ctypes.CDLL(SYSTEM_LIBCRYPTO) if library is None else library
        # ctypes assumes int for every result: ERR_get_error's unsigned long
        # would be cut to 32 bits and the string pointers truncated on 64-bit.
        self._get_error = lib.ERR_get_error
        self._get_error.argtypes = []
        self._get_error.restype = ctypes.c_ulong
        self._lib_string = lib.ERR_lib_error_string
        self._lib_string.argtypes = [ctypes.c_ulong]
        self._lib_string.restype = ctypes.c_char_p
        self._reason_string = lib.ERR_reason_error_string
        self._reason_string.argtypes = [ctypes.c_ulong]
        self._reason_string.restype = ctypes.c_char_p
        self._clear = lib.ERR_clear_error
        self._clear.argtypes = []
        self._clear.restype = None

    def clear(self) -> None:
        self._clear()

    def drain(self) -> tuple[OpenSSLError, ...]:
        out = []
        while code := self._get_error():
            out.append(_entry(code, self._lib_string(code), self._reason_string(code)))
        return tuple(out)


_system_queue: SystemErrorQueue | None = None


def system_error_queue() -> SystemErrorQueue:
    """The (shared) error queue of the system libcrypto (``OSError`` if it can't be loaded)."""
    global _system_queue
    if _system_queue is None:
        _system_queue = SystemErrorQueue()
    return _system_queue


def pyopenssl_error_entries(exc: BaseException) -> tuple[OpenSSLError, ...]:
    """The OpenSSL errors a pyOpenSSL ``SSL.Error``/``crypto.Error`` carries.

    pyOpenSSL drains the queue into ``args[0]`` as ``[(library, function,
    reason), ...]``; OpenSSL 3 leaves the function empty.
    """
    entries = exc.args[0] if exc.args and isinstance(exc.args[0], list) else []
    return tuple(
        OpenSSLError(str(e[0]), str(e[2])) for e in entries if isinstance(e, tuple) and len(e) == 3
    )
