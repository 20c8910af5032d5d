"""Cryptography's OpenSSL binding (pyOpenSSL's stack, and the controls'): its probe and ledgers."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from functools import cache
from typing import Any

from cryptography.hazmat.bindings.openssl.binding import Binding

from tlsleak.ledgers import heap_available
from tlsleak.targets.base import Probe

__all__ = ["binding_ledgers", "binding_probe", "binding_version"]

# A module global, as in pyOpenSSL and the controls: while the object ledger
# counts, it rebinds this name to its counting proxy, so the probe's BIO goes
# through the same door as the targets' objects.
_lib: Any = Binding.lib
_ffi: Any = Binding.ffi


def _allocate_a_bio() -> Callable[[], None]:
    lib = _lib
    bio = lib.BIO_new(lib.BIO_s_mem())
    if not bio:
        raise MemoryError("BIO_new returned NULL")
    return lambda: lib.BIO_free(bio)


@cache
def binding_version() -> str:
    """The version text of the OpenSSL the binding runs on (the wheel's own, or the system's)."""
    return str(_ffi.string(Binding.lib.OpenSSL_version(0)).decode("ascii", "replace"))


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
    that is tried, not guessed.
    """
    try:
        native = importlib.import_module("tlsleak.ledgers.shim")
        sees = bool(native.heap_sees(_allocate_a_bio))
    except ImportError:  # a build without the shim
        sees = False
    heap = ("heap",) if heap_available() else ()
    return ("openssl-objects", *(("openssl-heap",) if sees else ()), *heap, "fds")
