"""Which ledgers see a target: tried with one allocation, never read from a table.

A ledger that cannot see a target's allocator reports every count back at its
baseline whatever the target leaks: ``control-leaky`` runs on the OpenSSL
inside cryptography's wheel, which the heap shim on the system libcrypto never
sees, and a C library's objects never pass through the cryptography binding
that the object ledger counts.  So when an oracle starts, every ledger it
started must count one object that the target allocates through its own stack
(the target's :class:`~tlsleak.targets.base.Probe`).

The rule :func:`sift` applies to the ledgers bound to one OpenSSL stack
(``stack_bound``, see :class:`~tlsleak.ledgers.Ledger`): one that counts the
object *sees* the target, one that does not is *blind*.  A ledger of the whole
process (the descriptors) is neither, and is kept.  The process heap (``heap``)
counts the whole process too, but is probed like a bound ledger
(``probe_fallback``): it sees every stack that allocates with malloc, which
the probe's object shows, or one malloc of its own where the target's stack
has nothing to allocate through (a C library without OpenSSL); only a stack
with an allocator of its own escapes it.  Blind ledgers are dropped and named
when a seeing ledger covers the target.  When none does, nothing would be
measured, and starting fails with :class:`~tlsleak.ledgers.LedgerBlind`:
one line naming the ledger, the target and why.  Targets without a probe
(user callables) are not probed.

:func:`survey` probes every ledger on a list of targets in one child process
that has the heap shim and the malloc interposer preloaded (the CLI's own
process has not), for
``tlsleak targets``.  Run as ``python -m tlsleak.targets.probe FD NAME...``,
that child writes its JSON answer to descriptor FD.  Like every worker it
first leaves the network (:func:`tlsleak._netns.isolate`): making a target
and its probe object runs the stack's init code, which must not reach out
either, and :class:`Survey` says how that went.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from tlsleak._netns import Network, isolate
from tlsleak.ledgers import (
    LEDGERS,
    Ledger,
    LedgerBlind,
    LedgerUnavailable,
    counts_allocation,
    make_ledger,
)
from tlsleak.ledgers.shim import preload_env
from tlsleak.targets import resolve_target
from tlsleak.targets.base import Probe, Probed, Target, UnknownTarget

__all__ = ["Sight", "Survey", "TargetSurvey", "sift", "sight", "survey"]

#: Seconds the survey child may take to import, make and probe every target.
SURVEY_TIMEOUT: Final = 120.0


@dataclass(frozen=True, slots=True)
class Sight:
    """What probing one ledger on one target showed."""

    ledger: str
    #: True: it counted the probe's object; False: blind; None: not probed (a
    #: ledger of the whole process, a target without a probe, an inactive ledger).
    sees: bool | None
    #: Why, for a blind or inactive ledger (one line); empty otherwise.
    why: str = ""


def _blind_line(ledger: Ledger, target: Target, probe: Probe) -> str:
    scope = getattr(ledger, "scope", "")
    counts = f"it counts {scope}; " if scope else ""
    if probe.allocate is None:
        seen = f"the target reaches no OpenSSL to allocate through ({probe.stack})"
    else:
        seen = f"an object the target made through its own stack ({probe.stack}) did not show"
    return f"ledger {ledger.name} cannot see target {target.name}: {counts}{seen}"


def sight(target: Target, ledger: Ledger, probe: Probe | None = None) -> Sight:
    """Whether ``ledger`` (started) sees ``target``, by one allocation through the target's stack.

    ``probe`` is the target's, when the caller already has it.  A ledger of
    the whole process with a ``probe_fallback`` (the process heap) is probed
    too, and when the target's stack offers nothing to allocate through, it
    is shown to count by allocating on its own (one malloc).
    """
    fallback = getattr(ledger, "probe_fallback", None)
    bound = getattr(ledger, "stack_bound", False)
    if not (bound or fallback is not None) or not isinstance(target, Probed):
        return Sight(ledger.name, None)
    if probe is None:
        probe = target.probe()
    allocate = probe.allocate or fallback
    if allocate is None:
        return Sight(ledger.name, False, _blind_line(ledger, target, probe))
    try:
        seen = counts_allocation(ledger, allocate)
    except Exception as exc:  # a probe that cannot allocate shows nothing either
        why = f"ledger {ledger.name} could not be probed on target {target.name}: {exc!r}"
        return Sight(ledger.name, False, " ".join(why.split()))
    if not seen:
        return Sight(ledger.name, False, _blind_line(ledger, target, probe))
    return Sight(ledger.name, True)


def sift(target: Target, ledgers: Sequence[Ledger]) -> tuple[list[Ledger], dict[str, str]]:
    """The ledgers (started) to count ``target`` with, and the blind ones dropped, with why.

    Raises :class:`~tlsleak.ledgers.LedgerBlind` when a ledger is blind and no
    other one sees the target: it would have measured nothing.
    """
    probe = target.probe() if isinstance(target, Probed) else None
    sights = [sight(target, ledger, probe) for ledger in ledgers]
    blind = {s.ledger: s.why for s in sights if s.sees is False}
    if blind and not any(s.sees for s in sights):
        raise LedgerBlind("; ".join(blind.values()))
    kept = [ledger for ledger, s in zip(ledgers, sights, strict=True) if s.sees is not False]
    return kept, blind


# -- the survey, for `tlsleak targets` -------------------------------------------------


@dataclass(frozen=True, slots=True)
class TargetSurvey:
    """One target as the survey child found it: its description and each ledger's sight."""

    name: str
    description: str = ""
    sights: tuple[Sight, ...] = ()
    #: Why the target could not be made, if it could not.
    error: str = ""

    def seen_by(self) -> list[str]:
        """The ledgers that count this target: the seeing ones, then the unprobed ones (fds)."""
        whole = [s.ledger for s in self.sights if s.sees is None and not s.why]
        return [s.ledger for s in self.sights if s.sees] + whole


@dataclass(frozen=True, slots=True)
class Survey:
    """What the survey child found: each target, and whether the child was off the network."""

    targets: tuple[TargetSurvey, ...]
    network: Network | None


def survey(names: Sequence[str], *, timeout: float = SURVEY_TIMEOUT) -> Survey:
    """Every registered ledger probed on each target of ``names``, in one preloaded child.

    Raises ``RuntimeError`` (one line) when the child gives no answer.
    """
    try:
        env = preload_env()
    except LedgerUnavailable:  # no shim built: the heap ledger will say it is inactive
        env = dict(os.environ)
    answer, write = os.pipe()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tlsleak.targets.probe", str(write), *names],
            env=env,
            pass_fds=(write,),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,  # no pass-phrase prompt or warning on the terminal
            start_new_session=True,
        )
    finally:
        os.close(write)
    try:
        data = _read_all(answer, time.monotonic() + timeout)
    finally:
        os.close(answer)
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    try:
        found = json.loads(data)
    except ValueError:
        raise RuntimeError(
            f"probing the targets' ledgers failed: the probe process exited with status "
            f"{proc.returncode} and no answer"
        ) from None
    targets = tuple(
        TargetSurvey(
            t["name"], t["description"], tuple(Sight(**s) for s in t["sights"]), t["error"]
        )
        for t in found["targets"]
    )
    return Survey(targets, Network.from_json(found.get("network")))


def _read_all(fd: int, deadline: float) -> bytes:
    chunks: list[bytes] = []
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return b""  # no answer in time
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _survey_one(name: str) -> TargetSurvey:
    try:
        target = resolve_target(name)
    except (UnknownTarget, ImportError, OSError) as exc:
        return TargetSurvey(name, error=" ".join(str(exc).split()))
    probe = target.probe() if isinstance(target, Probed) else None
    sights = []
    for ledger_name in LEDGERS:
        ledger = make_ledger(ledger_name)
        try:
            ledger.start()
        except LedgerUnavailable as exc:
            sights.append(Sight(ledger_name, None, f"not active: {' '.join(str(exc).split())}"))
            continue
        try:
            sights.append(sight(target, ledger, probe))
        finally:
            ledger.stop()
    return TargetSurvey(target.name, target.description, tuple(sights))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the survey child (``python -m tlsleak.targets.probe FD NAME...``)."""
    # Off the network while this is one thread, before any target is made.
    network = isolate()
    fd, *names = sys.argv[1:] if argv is None else argv
    found = [_survey_one(name) for name in names]
    targets = [
        {
            "name": t.name,
            "description": t.description,
            "sights": [{"ledger": s.ledger, "sees": s.sees, "why": s.why} for s in t.sights],
            "error": t.error,
        }
        for t in found
    ]
    data = json.dumps({"network": network.to_json(), "targets": targets}).encode()
    view = memoryview(data)
    while view:
        view = view[os.write(int(fd), view) :]
    return 0


if __name__ == "__main__":
    sys.exit(main())
