"""What the oracle says about a case: findings, their kinds and signatures, verdicts.

A :class:`Finding` is one thing wrong with one case on one target; its
:attr:`~Finding.signature` names the root cause (what was lost, or what left
the errors), never what varies with the input, so one bug is one finding
however often and however differently it shows (see docs/findings.md).  A
:class:`Verdict` is everything the oracle found on one case.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Final

from tlsleak.cases.case import InitCase, decode
from tlsleak.ledgers import Site
from tlsleak.openssl.errors import OpenSSLError
from tlsleak.targets import Outcome, Status

__all__ = [
    "OWNERSHIP",
    "PROMPTED",
    "Finding",
    "FindingKind",
    "Verdict",
    "format_delta",
    "root_counters",
]


class FindingKind(enum.StrEnum):
    """What is wrong."""

    #: Live counts grew on every replay and the collector did not free them.
    LEAK = "leak"
    #: Counts grew on every replay, and only the garbage collector freed them.
    CYCLE = "cycle"
    #: The path returned with entries left on OpenSSL's error queue.
    ERROR_QUEUE = "error-queue"
    #: The path raised an exception that is not a documented rejection.
    EXCEPTION = "exception"
    #: The process running the path died on a signal (isolated runs only).
    CRASH = "crash"
    #: The path did not return in time (isolated runs only).
    TIMEOUT = "timeout"
    #: OpenSSL asked for a pass phrase on the terminal: no password callback
    #: was given (isolated runs only, where the worker's stderr is read).
    PROMPT = "prompt"


#: What a ``prompt`` finding says went wrong.
#: (A program that does this stops and waits for someone to type.)
PROMPTED: Final = "OpenSSL prompted for a pass phrase: no password callback"


#: OpenSSL object types, owners before what they own: a leaked SSL keeps its
#: SSL_CTX (a reference) and BIOs alive, a leaked SSL_CTX its store, certificate
#: and key.  See :func:`root_counters`.
OWNERSHIP: Final = (
    "SSL",
    "SSL_CTX",
    "X509_STORE_CTX",
    "X509_STORE",
    "SSL_SESSION",
    "X509",
    "X509_CRL",
    "EVP_PKEY",
    "EC_KEY",
    "DH",
    "X509_NAME",
    "BIO",
)


def root_counters(delta: Mapping[str, int]) -> list[str]:
    """The counters of ``delta`` that name the bug rather than its consequences.

    When typed objects leaked, the outermost ones in :data:`OWNERSHIP` order
    (the first leaked type and any other of the two outermost levels seen:
    SSL and SSL_CTX both, when both leaked); the heap's blocks and bytes and
    the file descriptors are then what those objects hold.  Without typed
    objects, every counter.  Mongoose's bug leaked SSL_CTX and SSL after a bad
    CA, and SSL_CTX, SSL and the X509 it already held after a bad key: the
    same missing free, so the same roots.
    """
    typed = [name for name in OWNERSHIP if name in delta]
    if not typed:
        if any(name.startswith("heap.") for name in delta):
            # Every OpenSSL heap block is a malloc block too: with both heap
            # ledgers on, one loss is counted twice, and the process heap's
            # names (the ones either ledger alone used to give) name it.
            names = [name for name in delta if not name.startswith("openssl-heap.")]
            if "heap.blocks" not in delta and len(names) > 1:
                # Bytes without a new block: a buffer that grew (a list of
                # leaked Python objects), never a root by itself.
                names.remove("heap.bytes")
            return sorted(names)
        return sorted(delta)
    outer = OWNERSHIP.index(typed[0])
    return sorted(name for name in typed if OWNERSHIP.index(name) <= outer + 1)


def format_delta(delta: Mapping[str, int]) -> str:
    """``{"SSL_CTX": 1, "SSL": 1}`` -> ``"SSL_CTX +1, SSL +1"``."""
    return ", ".join(f"{name} {value:+d}" for name, value in delta.items())


@dataclass(frozen=True)
class Finding:
    """One thing wrong with one case on one target."""

    kind: FindingKind
    target: str
    case: InitCase
    outcome: Outcome
    #: Growth per counter that recurred on every replay (leak and cycle).
    delta: Mapping[str, int] = field(default_factory=dict)
    #: Entries left on the OpenSSL error queue (error-queue).
    errors_left: tuple[OpenSSLError, ...] = ()
    #: How many replays confirmed it (0 for findings that need none).
    replays: int = 0
    #: Where the leaked heap blocks were allocated, biggest first (heap leaks
    #: replayed in attribution mode).
    sites: tuple[Site, ...] = ()
    #: The allocation made to fail (allocation-failure injection), if any.
    fail_at: int | None = None
    #: Where the first block still live after the attribution replay was
    #: allocated (``file:line``): what was lost first, which is what the bug
    #: lost.  What hangs off it, and so the ranking of :attr:`sites` by bytes,
    #: varies with the input (a bigger certificate, a longer chain).  Without
    #: an OpenSSL site (a leak only the ``heap`` ledger sees: a C library's own
    #: ``malloc``), the exported symbol of the C caller of that block, without
    #: its offset: ``malloc.so(tls_init_once)``, which a rebuild does not move
    #: (:attr:`tlsleak.ledgers.symbols.LostStack.root`).
    root_site: str | None = None
    #: The build of the object when :attr:`root_site` names a function by its
    #: start in a stripped object (``cygrpc...so(fn@0x8a81b0)``), which holds
    #: for that build only (:attr:`tlsleak.ledgers.symbols.LostStack.root_build`).
    root_build: str | None = None
    #: The first frame outside the runtime in the stack of the first thing
    #: lost (leaks replayed with caller stacks): the line of the target's own
    #: code that made it.  A C frame for a heap block (outside the TLS
    #: library, libc, tlsleak's shims and the interpreter), e.g.
    #: ``control_leaky.c:19 (tls_init_once)``; a Python frame for a typed
    #: object (``openssl-objects``: outside the TLS binding, the standard
    #: library and tlsleak), e.g. ``mylib/tls.py:17 (init)`` (see
    #: :mod:`tlsleak.ledgers.symbols`).  Not part of the signature: lines move.
    caller: str | None = None
    #: That block's or object's whole stack, innermost frame first (without
    #: the interposer).
    stack: tuple[str, ...] = ()

    @property
    def step(self) -> str | None:
        """The step where the path failed (None if it was accepted)."""
        return self.outcome.step

    @property
    def signature(self) -> str:
        """Stable identity: the same bug found twice has the same signature.

        Target, kind and (for allocation-failure findings) that fact, then:
        for a leak or a cycle, the outermost leaked object types
        (:func:`root_counters`) and the :attr:`root_site`, but not the step:
        one missing free in an error path shows behind every step that fails
        after the allocation, and counter *names* and the first lost block
        only, since a leak's size and what hangs off its root vary with the
        input.  For the other kinds the step comes next,
        then what went wrong there (the exception's type, the signal); a
        prompt by its step alone (the prompt is always the same).  An
        error-queue finding is placed by :attr:`left_by`, not by the errors'
        text: one missing ``ERR_clear_error`` leaves whatever the input made
        the parser say (:attr:`variant`).
        """
        parts = [self.target, str(self.kind)]
        if self.kind is FindingKind.ERROR_QUEUE:
            parts.append(self.left_by)
        elif self.kind not in (FindingKind.LEAK, FindingKind.CYCLE):
            parts.append(str(self.step or "-"))
        if self.fail_at is not None:
            parts.append("allocation failure")
        if self.kind in (FindingKind.LEAK, FindingKind.CYCLE):
            parts.append(", ".join(root_counters(self.delta)))
            if self.root_site is not None:
                parts.append(self.root_site)
        elif self.kind not in (FindingKind.ERROR_QUEUE, FindingKind.PROMPT):
            parts.append(self.outcome.message.split(":", 1)[0])
        return " | ".join(parts)

    @property
    def left_by(self) -> str:
        """Which part of the path left the errors of an error-queue finding.

        The failing step when what was left includes that step's own errors
        (its error path returns without clearing them), or when the target
        does not say which errors are its own (a C library reports only its
        step); else ``"success"``: a call that succeeded queued them
        (X509_STORE_add_cert's "invalid certificate"), whatever step the
        attempt later failed at, if any.
        """
        errors = self.outcome.errors
        if self.step and (not errors or set(errors) & set(self.errors_left)):
            return str(self.step)
        return "success"

    @property
    def variant(self) -> str:
        """What differs between findings of one signature: the errors left, the deltas."""
        if self.kind is FindingKind.ERROR_QUEUE:
            return "; ".join(str(e) for e in self.errors_left)
        return format_delta(self.delta)

    @property
    def what(self) -> str:
        """What went wrong, short: the outcome's message, or what a prompt means."""
        return PROMPTED if self.kind is FindingKind.PROMPT else self.outcome.message

    def summary(self) -> str:
        """One line for humans."""
        if self.kind is FindingKind.LEAK:
            what = f"{format_delta(self.delta)} per attempt, never freed"
            if self.caller is not None:
                what += f", lost at {self.caller}"
        elif self.kind is FindingKind.CYCLE:
            what = f"{format_delta(self.delta)} per attempt, freed only by the garbage collector"
        elif self.kind is FindingKind.ERROR_QUEUE:
            what = "left on the error queue: " + "; ".join(str(e) for e in self.errors_left)
        else:
            what = self.what
        if self.sites:
            what += " (" + ", ".join(str(s) for s in self.sites[:3]) + ")"
        if self.fail_at is not None:
            what += f" [allocation {self.fail_at} made to fail]"
        if what.startswith(self.outcome.message) and self.outcome.message:
            # An exception, a crash or a hang: the outcome already says it all.
            rest = what[len(self.outcome.message) :]
            return f"{self.kind} in {self.target}: {self.outcome.describe()}{rest}"
        return f"{self.kind} in {self.target} ({self.outcome.describe()}): {what}"

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (the case is given as its hex encoding)."""
        return {
            "kind": str(self.kind),
            "target": self.target,
            "step": None if self.step is None else str(self.step),
            "signature": self.signature,
            "outcome": {
                "status": str(self.outcome.status),
                "errors": [[e.library, e.reason] for e in self.outcome.errors],
                "message": self.outcome.message,
            },
            "delta": dict(self.delta),
            "errors_left": [[e.library, e.reason] for e in self.errors_left],
            "replays": self.replays,
            "sites": [[s.file, s.line, s.blocks, s.bytes] for s in self.sites],
            "fail_at": self.fail_at,
            # Only where known, so reports without heap attribution keep their form.
            **({"root_site": self.root_site} if self.root_site is not None else {}),
            **({"root_build": self.root_build} if self.root_build is not None else {}),
            **({"caller": self.caller} if self.caller is not None else {}),
            **({"stack": list(self.stack)} if self.stack else {}),
            "labels": list(self.case.labels),
            "case_hex": self.case.encode().hex(),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Finding:
        """The inverse of :meth:`to_json` (reports read back, worker replies)."""
        outcome = data["outcome"]
        return cls(
            kind=FindingKind(data["kind"]),
            target=data["target"],
            case=decode(bytes.fromhex(data["case_hex"])),
            outcome=Outcome(
                Status(outcome["status"]),
                data["step"],
                tuple(OpenSSLError(a, b) for a, b in outcome["errors"]),
                outcome["message"],
            ),
            delta=dict(data["delta"]),
            errors_left=tuple(OpenSSLError(a, b) for a, b in data["errors_left"]),
            replays=data["replays"],
            sites=tuple(Site(f, ln, b, n) for f, ln, b, n in data.get("sites", ())),
            fail_at=data.get("fail_at"),
            root_site=data.get("root_site"),
            root_build=data.get("root_build"),
            caller=data.get("caller"),
            stack=tuple(data.get("stack", ())),
        )

    def reproduces(self, recorded: Finding) -> bool:
        """Whether this fresh finding is the bug that ``recorded`` (a stored one) stands for.

        Equal signatures, or for a leak stored without a root site, equal
        signatures but for the root site: stored before leaks were named by
        their root site (its signature ranked the top sites by bytes, which
        this one no longer keeps), or a heap-only leak stored before its C
        caller's symbol became its root.
        """
        if self.signature == recorded.signature:
            return True
        legacy = recorded.root_site is None and self.root_site is not None
        return legacy and replace(self, root_site=None).signature == recorded.signature

    def other_build(self, recorded: Finding) -> bool:
        """Whether this fresh finding may be ``recorded``'s bug in another build of its object.

        ``recorded`` was named by a function's start in a stripped object
        (:attr:`root_build`), and this one differs from it only in the root,
        found in another build (or named otherwise): the same function may
        start elsewhere there, so neither "still there" nor "gone" can be
        said: "cannot reproduce exactly".  In the same build another start
        is another function, so that bug is gone.
        """
        if recorded.root_build is None or self.root_build == recorded.root_build:
            return False
        unrooted = replace(self, root_site=None, root_build=None)
        return unrooted.signature == replace(recorded, root_site=None, root_build=None).signature


@dataclass(frozen=True)
class Verdict:
    """What the oracle made of one case."""

    case: InitCase
    outcome: Outcome
    findings: tuple[Finding, ...] = ()
    #: Allocations the first run made, when a ledger counts them (the
    #: fuzzer's guidance buckets it: a new count is a new path through C).
    allocations: int | None = None

    @property
    def clean(self) -> bool:
        return not self.findings
