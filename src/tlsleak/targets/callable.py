"""Users' own init paths: any Python callable that takes an :class:`InitCase`.

The callable performs its init path and its teardown.  Returning normally means
the case was accepted.  Raising one of the *rejection* exceptions means it was
rejected - by default :class:`tlsleak.Rejected`, pyOpenSSL's ``SSL.Error`` and
``crypto.Error``, and the standard library's ``ssl.SSLError``; pass your own
with ``rejections=``.  Any other exception is reported as a finding.
"""

from __future__ import annotations

import importlib
import os
import ssl
import sys
from collections.abc import Callable, Sequence
from typing import Any

from tlsleak.cases.case import InitCase
from tlsleak.openssl.errors import ErrorQueue, OpenSSLError, pyopenssl_error_entries
from tlsleak.targets._binding import binding_ledgers, callable_error_queue
from tlsleak.targets.base import Outcome, Rejected, Status, Step
from tlsleak.targets.stdlib_ssl import ssl_error_entries

__all__ = ["DEFAULT_REJECTIONS", "CallableTarget", "load_callable"]

DEFAULT_REJECTIONS: tuple[type[BaseException], ...] = (Rejected, ssl.SSLError)
try:  # pyOpenSSL's errors, where it is installed (a --python venv may have none)
    from OpenSSL import SSL, crypto

    DEFAULT_REJECTIONS += (SSL.Error, crypto.Error)
except ImportError:
    pass


def _errors_of(exc: BaseException) -> tuple[OpenSSLError, ...]:
    if isinstance(exc, Rejected):
        return exc.errors
    if isinstance(exc, ssl.SSLError):
        return ssl_error_entries(exc)
    return pyopenssl_error_entries(exc)


class CallableTarget:
    """Wraps ``fn(case)`` as a target."""

    @property
    def ledgers(self) -> tuple[str, ...]:
        return binding_ledgers()

    def __init__(
        self,
        fn: Callable[[InitCase], Any],
        *,
        name: str | None = None,
        rejections: Sequence[type[BaseException]] = DEFAULT_REJECTIONS,
    ) -> None:
        if not callable(fn):
            raise TypeError(f"a target must be callable, not {type(fn).__name__}")
        self.fn = fn
        self.name = name or f"{getattr(fn, '__module__', '?')}:{getattr(fn, '__qualname__', fn)}"
        doc = (getattr(fn, "__doc__", None) or "").strip().splitlines()
        self.description = doc[0] if doc else "user init path"
        self.rejections = tuple(rejections)

    def error_queue(self) -> ErrorQueue:
        return callable_error_queue()

    def run(self, case: InitCase) -> Outcome:
        try:
            self.fn(case)
        except self.rejections as exc:
            step = exc.step if isinstance(exc, Rejected) else Step.INIT
            message = exc.message if isinstance(exc, Rejected) else ""
            return Outcome(Status.REJECTED, step, _errors_of(exc), message or str(exc)[:200])
        except Exception as exc:  # anything else is itself a finding
            return Outcome(Status.ERROR, Step.INIT, (), f"{type(exc).__name__}: {exc}")
        return Outcome.accepted()


def load_callable(spec: str) -> Callable[[InitCase], Any]:
    """Import ``package.module:function`` (``function`` may be dotted: ``Class.method``).

    Raises ``ValueError`` with a one-line reason when it can't.
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"{spec!r} is not of the form package.module:function")
    # Like `python -m`, look in the current folder first: a console script's
    # sys.path starts at its own bin/ folder, not where the user stands.
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import {module_name!r}: {exc}") from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(f"{module_name!r} has no attribute {attr!r}") from None
    if not callable(obj):
        raise ValueError(f"{spec!r} is not callable")
    return obj  # type: ignore[no-any-return]
