"""Targets: TLS init paths under test.  See :mod:`tlsleak.targets.base`."""

from __future__ import annotations

from collections.abc import Callable

from tlsleak.targets.base import Outcome, Rejected, Status, Step, Target
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


def _control(leaky: bool) -> Callable[[], Target]:
    def make() -> Target:
        from tlsleak.targets.control import ControlTarget

        return ControlTarget(leaky=leaky)

    return make


#: Built-in targets by name; the first is the default.
TARGETS: dict[str, Callable[[], Target]] = {
    "pyopenssl": _pyopenssl,
    "control-leaky": _control(True),
    "control-fixed": _control(False),
}


class UnknownTarget(ValueError):
    """The target name is neither built in nor ``package.module:function``."""


def resolve_target(spec: str) -> Target:
    """A built-in target by name, or a user callable given as ``package.module:function``."""
    if spec in TARGETS:
        return TARGETS[spec]()
    if ":" in spec:
        try:
            return CallableTarget(load_callable(spec), name=spec)
        except ValueError as exc:
            raise UnknownTarget(str(exc)) from None
    raise UnknownTarget(
        f"unknown target {spec!r} (built in: {', '.join(TARGETS)}; "
        "or give your own as package.module:function)"
    )
