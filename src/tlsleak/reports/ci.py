"""What the CI reports (:mod:`~tlsleak.reports.sarif`, :mod:`~tlsleak.reports.summary`) show.

``check`` and ``fuzz`` know their findings differently: ``check`` holds every
:class:`~tlsleak.check.oracle.Finding` with the case file that showed it, a
campaign one :class:`~tlsleak.fuzz.stats.FindingRecord` per signature with the
folder it stored.  Both become :class:`Distinct`: one per signature (one root
cause, one row, one SARIF result), with what a reader needs to act on it: the
caller stack where the ledgers named one, the reproducer, the replay command.
:class:`RunInfo` says what ran and what the exit status means.
"""

from __future__ import annotations

import shlex
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tlsleak.check.findings import FindingError, load_stored
from tlsleak.check.oracle import Finding, format_delta
from tlsleak.fuzz.stats import FindingRecord

__all__ = ["Distinct", "RunInfo", "exit_meaning", "from_campaign", "from_check", "growth"]


@dataclass(frozen=True)
class Distinct:
    """One distinct finding (one signature) of a run, however many cases showed it."""

    signature: str
    kind: str
    target: str
    #: The failing steps, most frequent first ("-" for an accepted attempt).
    steps: tuple[str, ...]
    #: How many cases (check) or inputs (fuzz) showed it.
    cases: int
    #: What grew or went wrong, short: ``SSL_CTX +1, SSL +1``, the errors left, the message.
    what: str
    #: :meth:`Finding.summary`: one line for humans.
    summary: str
    #: Replay it: ``tlsleak replay FOLDER``, or ``tlsleak check TARGET FILE``.
    replay: str
    #: The stored folder, or the case file that showed it; None when neither is known.
    reproducer: Path | None = None
    #: The target's own frame that made the first thing lost (``file:LINE (function)``).
    caller: str | None = None
    #: That thing's whole stack, innermost frame first.
    stack: tuple[str, ...] = ()


@dataclass(frozen=True)
class RunInfo:
    """What ran, how it went, and what its exit status means."""

    command: str
    target: str
    #: One line: what was run, on what (``6 cases, ledgers heap, fds, 3 replays``).
    ran: str
    #: Counts worth a glance: outcome statuses (check), executions and corpus (fuzz).
    outcomes: Mapping[str, int]
    exit_status: int
    #: Why the asked work was not done (the worker died, nothing executed), if so.
    problem: str | None = None
    #: Anything else the text report said about the run (blind ledgers, network).
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def succeeded(self) -> bool:
        """Whether the asked work was done (findings or not)."""
        return self.problem is None and self.exit_status in (0, 1)


def exit_meaning(status: int) -> str:
    """What the exit status of ``check`` or ``fuzz`` says, in a few words."""
    if status == 0:
        return "clean: the work was done and nothing failing the gate (--fail-on) was found"
    if status == 1:
        return "findings: at least one of a kind that fails the gate (--fail-on)"
    if status == 2:
        return "usage error, or the asked work was not done"
    if status > 128:
        return f"stopped by signal {status - 128}"
    return "unknown"


def growth(finding: Finding) -> str:
    """What grew (a leak's deltas), what was left (error-queue), or what went wrong."""
    if finding.delta:
        return format_delta(finding.delta)
    if finding.errors_left:
        return "; ".join(sorted({str(e) for e in finding.errors_left}))
    return finding.what


def from_check(
    findings: Sequence[tuple[Path, Finding]], folder_for: Callable[[Finding], Path] | None
) -> list[Distinct]:
    """The distinct findings of a check, in the order first found.

    ``folder_for`` names the stored folder of a finding (``check --out``);
    without it the first case file that showed a finding is its reproducer.
    """
    groups: dict[str, list[tuple[Path, Finding]]] = {}
    for path, finding in findings:
        groups.setdefault(finding.signature, []).append((path, finding))
    made = []
    for group in groups.values():
        path, first = group[0]
        steps = Counter(str(f.step or "-") for _p, f in group)
        if folder_for is not None:
            reproducer = folder_for(first)
            replay = f"tlsleak replay {shlex.quote(str(reproducer))}"
        else:
            reproducer = path
            extra = " --fail-alloc" if first.fail_at is not None else ""
            replay = f"tlsleak check {shlex.quote(first.target)} {shlex.quote(str(path))}{extra}"
        made.append(
            Distinct(
                signature=first.signature,
                kind=str(first.kind),
                target=first.target,
                steps=tuple(s for s, _n in steps.most_common()),
                cases=len(group),
                what=growth(first),
                summary=first.summary(),
                replay=replay,
                reproducer=reproducer,
                caller=first.caller,
                stack=first.stack,
            )
        )
    return made


def from_campaign(records: Sequence[FindingRecord], target: str) -> list[Distinct]:
    """The distinct findings of a campaign; the stored folder gives each its stack.

    A folder that can't be read (removed meanwhile, written by a later
    version) leaves the finding with what the campaign itself knows.  An
    unconfirmed record (no fresh worker gave it alone) is no result.
    """
    made = []
    for record in records:
        if record.unconfirmed:
            continue
        stored: Finding | None = None
        if record.folder is not None:
            try:
                stored = load_stored(record.folder).finding
            except FindingError:
                stored = None
        folder = record.folder
        made.append(
            Distinct(
                signature=record.signature,
                kind=record.kind,
                target=target,
                steps=tuple((record.step_list() or "-").split(",")),
                cases=record.count,
                what=growth(stored) if stored is not None else record.summary,
                summary=record.summary,
                replay=f"tlsleak replay {shlex.quote(str(folder))}" if folder else "-",
                reproducer=folder,
                caller=None if stored is None else stored.caller,
                stack=() if stored is None else stored.stack,
            )
        )
    return made
