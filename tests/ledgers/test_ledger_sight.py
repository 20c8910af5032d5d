"""counts_allocation: whether a ledger sees an allocator, tried with one object.

Positive control: an object made through the binding the object ledger
counts.  Negative control: the same object made through the system libcrypto
with ctypes, past that binding, which it cannot see.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from cryptography.hazmat.bindings.openssl.binding import Binding

from tlsleak.ledgers import FdLedger, OpenSSLObjectLedger, counts_allocation
from tlsleak.openssl.errors import SYSTEM_LIBCRYPTO

lib: Any = Binding.lib  # a module global: rebound to the ledger's proxy while it counts


@pytest.fixture
def objects() -> Iterator[OpenSSLObjectLedger]:
    ledger = OpenSSLObjectLedger()
    ledger.start()
    yield ledger
    ledger.stop()


def _binding_bio() -> Callable[[], None]:
    bio = lib.BIO_new(lib.BIO_s_mem())
    return lambda: lib.BIO_free(bio)


def _ctypes_bio() -> Callable[[], None]:
    system = ctypes.CDLL(SYSTEM_LIBCRYPTO)
    system.BIO_s_mem.restype = ctypes.c_void_p
    system.BIO_new.restype = ctypes.c_void_p
    system.BIO_new.argtypes = [ctypes.c_void_p]
    system.BIO_free.argtypes = [ctypes.c_void_p]
    bio = system.BIO_new(system.BIO_s_mem())
    return lambda: system.BIO_free(bio)


def test_the_object_ledger_sees_the_binding_and_not_a_c_call(
    objects: OpenSSLObjectLedger,
) -> None:
    before = objects.snapshot()
    assert counts_allocation(objects, _binding_bio) is True
    assert counts_allocation(objects, _ctypes_bio) is False
    assert objects.snapshot() == before  # the probes' objects were freed


def test_the_probe_object_is_freed_even_when_the_snapshot_fails() -> None:
    freed: list[bool] = []

    class Broken:
        name = "broken"
        calls = 0

        def start(self) -> None: ...

        def stop(self) -> None: ...

        def snapshot(self) -> dict[str, int]:
            self.calls += 1
            if self.calls > 1:
                raise RuntimeError("gone")
            return {}

    with pytest.raises(RuntimeError, match="gone"):
        counts_allocation(Broken(), lambda: lambda: freed.append(True))
    assert freed == [True]


def test_which_ledgers_are_bound_to_one_stack() -> None:
    assert OpenSSLObjectLedger.stack_bound is True
    assert not getattr(FdLedger(), "stack_bound", False)  # descriptors: the whole process
    assert "cryptography's binding" in OpenSSLObjectLedger.scope
