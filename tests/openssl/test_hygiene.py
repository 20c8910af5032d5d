"""Every loaded libcrypto's error queue is cleared, and none is loaded to do it."""

from __future__ import annotations

import ctypes
import ssl  # noqa: F401  (maps the system libcrypto into this process, as targets do)

from cryptography.hazmat.bindings.openssl.binding import Binding

from tlsleak.openssl.errors import SYSTEM_LIBCRYPTO, binding_error_queue, system_error_queue
from tlsleak.openssl.hygiene import ErrorStates, loaded_libcryptos


def _push_system_error() -> None:
    lib = ctypes.CDLL(SYSTEM_LIBCRYPTO)
    lib.ERR_new()
    lib.ERR_set_error.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p]
    lib.ERR_set_error(9, 108, None)  # PEM routines: no start line


def _push_binding_error() -> None:
    Binding.lib.ERR_put_error(Binding.lib.ERR_LIB_EVP, 0, 1, b"test.c", 1)


def test_the_system_libcrypto_is_found_once_loaded() -> None:
    assert any(p.endswith(SYSTEM_LIBCRYPTO) for p in loaded_libcryptos())


def test_clear_empties_every_queue() -> None:
    # Positive control: errors pushed on both libcryptos' queues are gone.
    states = ErrorStates()
    _push_system_error()
    _push_binding_error()
    states.clear()
    assert states.libraries >= 2
    assert system_error_queue().drain() == ()
    assert binding_error_queue().drain() == ()


def test_without_clearing_the_errors_stay() -> None:
    # Negative control: the pushes above really queue something.
    _push_system_error()
    _push_binding_error()
    assert system_error_queue().drain()
    assert binding_error_queue().drain()


def test_a_library_is_never_loaded_to_clear_it() -> None:
    # Only what /proc/self/maps shows is opened, and with RTLD_NOLOAD.
    before = set(loaded_libcryptos())
    ErrorStates().refresh()
    assert set(loaded_libcryptos()) == before
