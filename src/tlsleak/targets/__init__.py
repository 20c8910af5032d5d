"""Targets: TLS init paths under test.  See :mod:`tlsleak.targets.base`."""

from __future__ import annotations

from collections.abc import Callable

from tlsleak.targets.base import Outcome, Rejected, Status, Step, Target, UnknownTarget
from tlsleak.targets.callable import CallableTarget, load_callable

__all__ = [
    "TARGETS",
    "CallableTarget",
    "Outcome",
    "Rejected",
    "Status",
    "Step",
    "Target",
    "UnknownTarget",
    "resolve_target",
]


def _pyopenssl() -> Target:
    from tlsleak.targets.pyopenssl import PyOpenSSLTarget

    return PyOpenSSLTarget()


def _ssl() -> Target:
    from tlsleak.targets.stdlib_ssl import StdlibSSLTarget

    return StdlibSSLTarget()


def _control(leaky: bool) -> Callable[[], Target]:
    def make() -> Target:
        from tlsleak.targets.control import ControlTarget

        return ControlTarget(leaky=leaky)

    return make


#: Built-in targets by name; the first is the default.
TARGETS: dict[str, Callable[[], Target]] = {
    "pyopenssl": _pyopenssl,
    "ssl": _ssl,
    "control-leaky": _control(True),
    "control-fixed": _control(False),
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
