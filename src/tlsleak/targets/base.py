"""What a target is: a TLS init path that takes an :class:`InitCase` and reports an outcome.

A target performs the init path *and its normal teardown* in one call: after
``run`` returns, everything the path is supposed to release has been
released.  A target knows nothing of oracles or campaigns, and of ledgers
only that one may ask it (:class:`Probe`) to allocate one object, to show
whether that ledger sees the target at all.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from tlsleak.cases.blobs import c_string
from tlsleak.cases.case import InitCase, Step
from tlsleak.ledgers.base import Allocate
from tlsleak.openssl.errors import ErrorQueue, OpenSSLError

__all__ = [
    "Outcome",
    "Probe",
    "Probed",
    "Rejected",
    "Status",
    "Step",
    "Target",
    "UnknownTarget",
]


class Status(enum.StrEnum):
    """How an init attempt ended."""

    ACCEPTED = "accepted"
    REJECTED = "rejected"
    #: A Python exception that is not a documented rejection: a finding by itself.
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class Outcome:
    """The result of one init attempt (after teardown)."""

    status: Status
    step: str | None = None
    errors: tuple[OpenSSLError, ...] = ()
    message: str = ""

    @classmethod
    def accepted(cls) -> Outcome:
        return cls(Status.ACCEPTED)

    def describe(self) -> str:
        """A one-line summary for humans."""
        if self.status is Status.ACCEPTED:
            return "accepted"
        where = f" at {self.step}" if self.step else ""
        detail = "; ".join(str(e) for e in self.errors) or self.message
        return f"{self.status}{where}" + (f": {detail}" if detail else "")


class Rejected(Exception):
    """Raise from your own init path to say "this input was rejected".

    ``step`` names where (free text), ``errors`` carries OpenSSL errors if any.
    """

    def __init__(self, step: str, message: str = "", errors: Sequence[OpenSSLError] = ()) -> None:
        super().__init__(f"{step}: {message}" if message else step)
        self.step = step
        self.message = message
        self.errors = tuple(errors)


@runtime_checkable
class Target(Protocol):
    """A TLS init path under test."""

    #: Short name used on the command line and in reports.
    name: str
    #: One line saying what the path does.
    description: str

    @property
    def ledgers(self) -> tuple[str, ...]:
        """The ledgers (by name) that can see this target's resources."""
        ...

    def run(self, case: InitCase) -> Outcome:
        """Initialise with ``case``, tear down, and say how it ended."""
        ...

    def error_queue(self) -> ErrorQueue | None:
        """The OpenSSL error queue this path uses, if it uses OpenSSL."""
        ...


@dataclass(frozen=True, slots=True)
class Probe:
    """One allocation through a target's own stack: how a ledger is shown to see the target.

    ``allocate`` makes one OpenSSL object the way the target's init path makes
    its objects (same library, same binding, same module globals) and
    returns the function that frees it; None when the target's stack reaches
    no OpenSSL at all, which no OpenSSL ledger can then see.  ``stack``
    names that stack for the line that says why a ledger is blind.
    """

    stack: str
    allocate: Allocate | None


@runtime_checkable
class Probed(Protocol):
    """A target that can show, by allocating, which ledgers see it (optional for targets).

    Targets without :meth:`probe` (user callables, whose stack only their
    author knows) are counted with the ledgers asked for, unprobed.
    """

    def probe(self) -> Probe:
        """The :class:`Probe` of this target's stack."""
        ...


class UnknownTarget(ValueError):
    """The target name is neither built in nor ``package.module:function``."""


class TargetUnavailable(UnknownTarget):
    """A built-in target whose TLS stack is not installed; the message says how to get it."""


def server_name_text(case: InitCase) -> str | None:
    """The case's server name as text, up to its first NUL as C reads it; None when empty.

    Raises :class:`Rejected` at ``server-name`` when it is not UTF-8: the
    Python APIs of the stacks take the name as ``str``.
    """
    name = c_string(case.server_name)
    if not name:
        return None
    try:
        return name.decode("utf-8")
    except UnicodeDecodeError:
        raise Rejected(Step.SERVER_NAME, "server name is not UTF-8 text") from None
