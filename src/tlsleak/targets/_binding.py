"""Which ledgers see code that calls cryptography's OpenSSL binding (pyOpenSSL, the controls)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from functools import cache
from typing import Any


def _allocate_a_bio() -> Callable[[], None]:
    from cryptography.hazmat.bindings.openssl.binding import Binding

    lib: Any = Binding.lib
    bio = lib.BIO_new(lib.BIO_s_mem())
    return lambda: lib.BIO_free(bio)


@cache
def binding_ledgers() -> tuple[str, ...]:
    """The typed ledger and descriptors always; the heap ledger too when it can see the binding.

    The PyPI wheels of cryptography carry an OpenSSL of their own, which the
    heap shim (hooked into the system libcrypto) never sees.  Where the
    binding runs on the system libcrypto (Debian's python3-cryptography, or
    a venv with system site packages) and the shim is preloaded, the heap
    ledger covers pyOpenSSL too: that is tried, not guessed.
    """
    try:
        native = importlib.import_module("tlsleak.ledgers.shim")
        sees = bool(native.heap_sees(_allocate_a_bio))
    except ImportError:  # a build without the shim
        sees = False
    return ("openssl-objects", "openssl-heap", "fds") if sees else ("openssl-objects", "fds")
