"""Targets: TLS init paths under test.  See :mod:`tlsleak.targets.base`."""

from __future__ import annotations

import sys
from collections.abc import Callable

from tlsleak.targets.base import (
    Outcome,
    Rejected,
    Status,
    Step,
    Target,
    TargetUnavailable,
    UnknownTarget,
)
from tlsleak.targets.callable import CallableTarget, load_callable

__all__ = [
    "TARGETS",
    "CallableTarget",
    "Outcome",
    "Rejected",
    "Status",
    "Step",
    "Target",
    "TargetUnavailable",
    "UnknownTarget",
    "resolve_target",
]


def _pyopenssl() -> Target:
    from tlsleak.targets.pyopenssl import PyOpenSSLTarget

    return PyOpenSSLTarget()


def _ssl() -> Target:
    from tlsleak.targets.stdlib_ssl import StdlibSSLTarget

    return StdlibSSLTarget()


def _grpc() -> Target:
    from tlsleak.targets.grpc_target import GrpcTarget

    return GrpcTarget()


def _mbedtls() -> Target:
    from tlsleak.targets.mbedtls import MbedTLSTarget

    return MbedTLSTarget()


def _control(leaky: bool) -> Callable[[], Target]:
    def make() -> Target:
        from tlsleak.targets.control import ControlTarget

        return ControlTarget(leaky=leaky)

    return make


def _mongoose() -> Target:
    from tlsleak.targets.mongoose import MongooseTarget

    return MongooseTarget()


def _needs(extra: str, package: str, make: Callable[[], Target]) -> Callable[[], Target]:
    """``make``, for a target whose stack comes with ``pip install 'tlsleak[EXTRA]'``.

    When the stack's top-level ``package`` is missing, making the target
    raises :class:`TargetUnavailable` saying how to install it, which
    ``tlsleak targets`` lists and ``check`` reports in one line.  Any other
    import error is a bug, and is not hidden.
    """

    def made() -> Target:
        try:
            return make()
        except ModuleNotFoundError as exc:
            if (exc.name or "").partition(".")[0] != package:
                raise
            raise TargetUnavailable(f"not installed: pip install 'tlsleak[{extra}]'") from None

    return made


#: What pip installs each top-level module as, for the targets on cryptography's binding.
_DISTRIBUTIONS = {"OpenSSL": "pyOpenSSL", "cryptography": "cryptography"}


def _on_binding(*packages: str, make: Callable[[], Target]) -> Callable[[], Target]:
    """``make``, for a target on pyOpenSSL or cryptography's binding.

    Those are tlsleak's own dependencies, but a worker run under another
    interpreter (``--python``, docs/python.md) sees only that interpreter's
    packages: a missing one is one line naming it and the interpreter.
    """

    def made() -> Target:
        try:
            return make()
        except ModuleNotFoundError as exc:
            if (exc.name or "").partition(".")[0] not in packages:
                raise
            # The first package brings the others (pyOpenSSL needs cryptography).
            name = _DISTRIBUTIONS[packages[0]]
            raise TargetUnavailable(
                f"{name} is not installed for {sys.executable}: pip install {name}"
            ) from None

    return made


#: Built-in targets by name; the first is the default.
TARGETS: dict[str, Callable[[], Target]] = {
    "pyopenssl": _on_binding("OpenSSL", "cryptography", make=_pyopenssl),
    "ssl": _ssl,
    "mbedtls": _needs("mbedtls", "mbedtls", _mbedtls),
    "grpc": _needs("grpc", "grpc", _grpc),
    "mongoose": _needs("mongoose", "cymongoose", _mongoose),
    "control-leaky": _on_binding("cryptography", make=_control(True)),
    "control-fixed": _on_binding("cryptography", make=_control(False)),
}


def resolve_target(spec: str) -> Target:
    """A built-in target by name, a user callable as ``package.module:function``, or a C library.

    A C library is given as ``c:PATH`` or ``c:PATH:SYMBOL`` (see
    :mod:`tlsleak.targets.clib`): ``c:`` is reserved for it, so a Python module
    named ``c`` can't be a target.
    """
    if spec in TARGETS:
        return TARGETS[spec]()
    if spec.startswith("c:"):
        from tlsleak.targets.clib import c_library_target

        return c_library_target(spec)
    if ":" in spec:
        try:
            return CallableTarget(load_callable(spec), name=spec)
        except ValueError as exc:
            raise UnknownTarget(str(exc)) from None
    raise UnknownTarget(
        f"unknown target {spec!r} (built in: {', '.join(TARGETS)}; "
        "or give your own as package.module:function or c:PATH)"
    )
