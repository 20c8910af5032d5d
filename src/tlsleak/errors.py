"""OpenSSL errors as values, and the error queue of the OpenSSL a target runs on.

OpenSSL reports failures by pushing entries onto a per-thread error queue.
A well-behaved init path drains the queue when it turns a failure into its own
error; one that leaves entries behind makes the *next* unrelated OpenSSL call
in that thread look like it failed (and, with ``ERR_get_error`` loops, keeps up
to 16 slots of buffers alive).  tlsleak reports a non-empty queue after the
path returned as its own kind of finding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["BindingErrorQueue", "ErrorQueue", "OpenSSLError", "binding_error_queue"]


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
                OpenSSLError(
                    ffi.string(library).decode("ascii", "replace")
                    if library
                    else "unknown library",
                    ffi.string(reason).decode("ascii", "replace")
                    if reason
                    else f"reason({code & 0x7FFFFF})",
                )
            )
        return tuple(out)


_binding_queue: BindingErrorQueue | None = None


def binding_error_queue() -> BindingErrorQueue:
    """The (shared) error queue of cryptography's bundled OpenSSL."""
    global _binding_queue
    if _binding_queue is None:
        from cryptography.hazmat.bindings.openssl.binding import Binding

        _binding_queue = BindingErrorQueue(Binding.lib, Binding.ffi)
    return _binding_queue
