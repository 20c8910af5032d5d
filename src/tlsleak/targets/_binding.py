"""Cryptography's OpenSSL binding (pyOpenSSL's stack, and the controls'): its probe and ledgers.

The binding is the one of the interpreter the worker runs under, which with
``--python`` is the user's (docs/python.md): maybe an older cryptography, maybe
none at all.  This module imports without it; a user callable then runs with
the process-wide ledgers and the system libcrypto's error queue
(:func:`callable_error_queue`), and the object ledger, asked for, says
cryptography is missing.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from functools import cache
from typing import Any

from tlsleak.ledgers import heap_available
from tlsleak.openssl.errors import ErrorQueue, binding_error_queue, system_error_queue
from tlsleak.targets.base import Probe

__all__ = [
    "binding_ledgers",
    "binding_probe",
    "binding_version",
    "callable_error_queue",
    "have_binding",
    "stack_versions",
]

# A module global, as in pyOpenSSL and the controls: while the object ledger
# counts, it rebinds _lib to its counting proxy, so the probe's BIO goes
# through the same door as the targets' objects.  _REAL_LIB stays the binding.
try:
    from cryptography.hazmat.bindings.openssl.binding import Binding as _Binding

    _REAL_LIB: Any = _Binding.lib
    _ffi: Any = _Binding.ffi
except ImportError:  # an interpreter without cryptography (docs/python.md)
    _REAL_LIB = _ffi = None
_lib: Any = _REAL_LIB


def have_binding() -> bool:
    """Whether cryptography's OpenSSL binding is importable in this interpreter."""
    return _ffi is not None


def callable_error_queue() -> ErrorQueue:
    """The binding's error queue; without cryptography, the system libcrypto's (``ssl``'s)."""
    return binding_error_queue() if have_binding() else system_error_queue()


def stack_versions() -> str:
    """The interpreter and the versions of pyOpenSSL and cryptography it has loaded, one line.

    Read from what is imported (not from package metadata), so it names what
    the target really runs on: ``Python 3.11.7 (/venv/bin/python), pyOpenSSL
    23.2.0, cryptography 41.0.7``.
    """
    said = [f"Python {sys.version.split()[0]} ({sys.executable})"]
    for module, name in (("OpenSSL", "pyOpenSSL"), ("cryptography", "cryptography")):
        version = getattr(sys.modules.get(module), "__version__", None)
        if version is not None:
            said.append(f"{name} {version}")
    return ", ".join(said)


def _allocate_a_bio() -> Callable[[], None]:
    lib = _lib
    bio = lib.BIO_new(lib.BIO_s_mem())
    if not bio:
        raise MemoryError("BIO_new returned NULL")
    return lambda: lib.BIO_free(bio)


@cache
def binding_version() -> str:
    """The version text of the OpenSSL the binding runs on (the wheel's own, or the system's)."""
    lib = _REAL_LIB
    if lib is None:
        return "no cryptography installed"
    # OpenSSL_version(OPENSSL_VERSION) in every binding since OpenSSL 1.1; the
    # constant text where an older binding lacks the function.
    if hasattr(lib, "OpenSSL_version"):
        text = _ffi.string(lib.OpenSSL_version(0))
    else:
        text = getattr(lib, "OPENSSL_VERSION_TEXT", b"OpenSSL (version unknown)")
    return str(text.decode("ascii", "replace") if isinstance(text, bytes) else text)


def binding_probe(via: str = "cryptography's OpenSSL binding") -> Probe:
    """A BIO made and freed through the binding (``via`` names the stack in messages)."""
    return Probe(f"{via}, {binding_version()}", _allocate_a_bio)


@cache
def binding_ledgers() -> tuple[str, ...]:
    """The typed ledger and descriptors always; the heap ledgers where they can count.

    The process heap (``heap``) sees the binding's OpenSSL whichever it is,
    wherever the malloc interposer is preloaded (tlsleak's workers).  The
    PyPI wheels of cryptography carry an OpenSSL of their own, which the
    OpenSSL heap shim (hooked into the system libcrypto) never sees.  Where
    the binding runs on the system libcrypto (Debian's python3-cryptography,
    or a venv with system site packages) and the shim is preloaded,
    ``openssl-heap`` covers pyOpenSSL too, with its OpenSSL file:line sites:
    that is tried, not guessed.  Without cryptography (a user callable under
    ``--python``) only the process-wide ledgers are left.
    """
    heap = ("heap",) if heap_available() else ()
    if not have_binding():
        return (*heap, "fds")
    try:
        native = importlib.import_module("tlsleak.ledgers.shim")
        sees = bool(native.heap_sees(_allocate_a_bio))
    except ImportError:  # a build without the shim
        sees = False
    return ("openssl-objects", *(("openssl-heap",) if sees else ()), *heap, "fds")
