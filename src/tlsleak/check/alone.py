"""Findings that count: a process that has run nothing else gives them again.

``check`` runs every case through one worker, so a case runs after all the
cases before it.  Growth can depend on what they left behind: in gRPC, a
server that a refused case leaked (grpc/grpc#31509) makes every later client
attempt keep two more blocks, which a client case run on its own never does.
Such growth is real, but it is the earlier bug's doing; and ``replay``, which
starts afresh, would call it gone, so the stored finding and its replay would
disagree.

So the first case of each new signature is run again in a fresh worker (the
way ``replay`` runs it).  If the signature comes back, it counts, from then on
for every case that shows it.  If not, its findings are held and the next case
with the same signature is tried, up to :data:`TRIES` cases; a signature none of
them gives alone is *unconfirmed*: reported apart, and never gating the exit
status.  A fresh worker that cannot tell (it would not start) leaves the
finding counted, as found.  A fresh worker costs a fraction of a second, once per distinct finding.

Allocation-failure findings are confirmed afresh with their warm-up count
(:func:`tlsleak.check.failalloc.confirm_afresh`), and a timeout would cost its
whole timeout again: neither goes through here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from tlsleak.cases.case import InitCase
from tlsleak.check.verdict import Finding, FindingKind
from tlsleak.check.worker import IsolatedOracle, WorkerError

__all__ = ["CHECKS", "TRIES", "Alone", "gives_alone"]

#: Cases of one signature tried alone before it is called unconfirmed.
TRIES: Final = 3

#: Checks of one case in its fresh worker before it is said not to give it.
CHECKS: Final = 5

Found = tuple[Path, Finding]


def gives_alone(fresh: IsolatedOracle, case: InitCase, signature: str) -> bool | None:
    """Whether ``fresh``, a worker that has run nothing yet, finds ``signature`` on ``case``.

    Checked up to :data:`CHECKS` times in that worker: it still runs nothing
    but ``case``, and a leak of a block a run in a process whose other
    threads free blocks of their own can net nothing on one first run (gRPC's
    accepted servers: about four times in ten), so one check would call a
    real leak unconfirmed.  ``fresh`` is started and closed here.  None when
    it could not tell: the worker would not start (a target that refuses to
    load again after a crash), or died for good on the case.
    """
    try:
        fresh.start()
        for _ in range(CHECKS):
            if any(f.signature == signature for f in fresh.check(case).findings):
                return True
    except WorkerError:
        return None
    finally:
        fresh.close()
    return False


@dataclass
class Alone:
    """Decides, signature by signature, which findings count (see the module docstring)."""

    #: Makes a worker like the check's own, not started.
    fresh: Callable[[], IsolatedOracle]
    _confirmed: set[str] = field(default_factory=set)
    _tried: dict[str, int] = field(default_factory=dict)
    #: Findings of signatures not (yet) given alone, in the order found.
    held: dict[str, list[Found]] = field(default_factory=dict)

    def admit(self, path: Path, finding: Finding) -> list[Found]:
        """The findings that count now: ``finding``, and those held for its signature, or none."""
        if finding.fail_at is not None or finding.kind is FindingKind.TIMEOUT:
            return [(path, finding)]
        signature = finding.signature
        if signature in self._confirmed:
            return [(path, finding)]
        tried = self._tried.get(signature, 0)
        if tried < TRIES:
            self._tried[signature] = tried + 1
            # Could not tell (None): counted, as it was found.
            if gives_alone(self.fresh(), finding.case, signature) is not False:
                self._confirmed.add(signature)
                return [(path, finding), *self.held.pop(signature, [])]
        self.held.setdefault(signature, []).append((path, finding))
        return []

    @property
    def unconfirmed(self) -> list[Found]:
        """Every finding whose signature no case gave alone."""
        return [found for held in self.held.values() for found in held]
