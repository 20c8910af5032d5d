"""A findings folder: one sub-folder per distinct bug, with a minimised reproducer.

Layout of ``FindingStore(folder)``::

    folder/
      <kind>-<where>-<sha12>/    where: the step, or for a leak the outermost leaked
                                 object types; sha12: 12 hex digits of sha256(signature)
        reproducer               the minimised case, encoded        (0600)
        original                 the case as it was found, encoded  (0600)
        finding.json             Finding.to_json() of the reproducer's finding,
                                 plus count, first_seen, last_seen and, when
                                 known, original_file                (0600)
        summary.txt              a short summary for humans, with the
                                 command that replays it             (0600)

Cases hold private keys, and ``finding.json`` holds the case again as
``case_hex``, so every file is created private (0600) and the sub-folder 0700.

A sub-folder appears complete or not at all: it is written as a temporary
folder ``.<name>.tmp-*`` next to it, each file fsynced, and then renamed into
place.  An existing complete folder is never replaced; a known signature seen
again only has its ``finding.json`` rewritten (atomically: temporary file in
the same folder, fsync, ``os.replace``) with the count and ``last_seen``
bumped, and its reproducer is kept.  A run killed mid-write leaves a
temporary folder behind, which readers ignore; a store opened on the same
folder later removes those older than an hour (younger ones may belong to a
run still writing).

Two processes adding to the same store may lose a count bump to each other
(read, bump, replace is not locked); they can't corrupt a file or a folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from tlsleak._fs import fsync_dir, write_atomically
from tlsleak.cases.case import InitCase
from tlsleak.cases.files import CorpusError, load_case
from tlsleak.check.oracle import Finding, FindingKind, format_delta, root_counters

__all__ = ["FindingError", "FindingStore", "folder_name", "load_finding"]

REPRODUCER: Final = "reproducer"
ORIGINAL: Final = "original"
FINDING_JSON: Final = "finding.json"
SUMMARY: Final = "summary.txt"

#: Distinct variants (error lists, deltas) counted by name in ``finding.json``;
#: beyond that they are counted together, so the file stays small.
MAX_VARIANTS: Final = 64
OTHER_VARIANTS: Final = "(other variants)"

#: Leftover temporary folders older than this are removed by the next store.
STALE_SECONDS: Final = 3600.0

_UNSAFE = re.compile(r"[^A-Za-z0-9_.+-]+")


class FindingError(Exception):
    """A findings folder that can't be read or written; the message is one line."""


def folder_name(finding: Finding) -> str:
    """``<kind>-<where>-<first 12 hex of sha256(signature)>``.

    ``where`` is the step for most kinds, what left the errors for an
    error-queue finding (:attr:`Finding.left_by`), and the outermost leaked
    object types for a leak or a cycle (whose signature names no step).
    """
    digest = hashlib.sha256(finding.signature.encode("utf-8")).hexdigest()[:12]
    if finding.kind in (FindingKind.LEAK, FindingKind.CYCLE):
        where = "+".join(root_counters(finding.delta)) or "none"
    elif finding.kind is FindingKind.ERROR_QUEUE:
        where = finding.left_by
    else:
        where = str(finding.step) if finding.step else "none"
    # Steps of user targets are free text: keep the name one safe path component.
    return f"{finding.kind}-{_UNSAFE.sub('_', where)}-{digest}"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _json_bytes(payload: dict[str, Any]) -> bytes:
    return (json.dumps(payload, indent=2) + "\n").encode("utf-8")


def _summary(folder: Path, finding: Finding, original: InitCase) -> str:
    lines = [
        f"{finding.kind} in {finding.target} at step {finding.step or '-'}",
        f"outcome:    {finding.outcome.describe()}",
    ]
    if finding.delta:
        lines.append(f"deltas:     {format_delta(finding.delta)}")
    if finding.errors_left:
        lines.append("error queue: " + "; ".join(str(e) for e in finding.errors_left))
    for site in finding.sites[:3]:
        lines.append(f"site:       {site}")
    if finding.fail_at is not None:
        lines.append(f"allocation: number {finding.fail_at} made to fail")
    lines += [
        f"signature:  {finding.signature}",
        f"reproducer: {finding.case.size} blob bytes (as found: {original.size})",
        f"replay:     tlsleak replay {folder}",
    ]
    return "\n".join(lines) + "\n"


class FindingStore:
    """Distinct findings under ``folder``, one sub-folder each (see the module docstring)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._clean_stale()

    def _clean_stale(self) -> None:
        if not self.folder.is_dir():
            return
        cutoff = time.time() - STALE_SECONDS
        for entry in self.folder.glob(".*.tmp-*"):
            with contextlib.suppress(OSError):
                if entry.is_dir() and entry.stat().st_mtime < cutoff:
                    shutil.rmtree(entry)

    def path_for(self, finding: Finding) -> Path:
        return self.folder / folder_name(finding)

    def has(self, finding: Finding) -> bool:
        """Whether a complete folder for ``finding``'s signature exists."""
        return (self.path_for(finding) / FINDING_JSON).is_file()

    def add(
        self,
        finding: Finding,
        reproducer_case: InitCase,
        original_file: Path | None = None,
        *,
        reproducer_finding: Finding | None = None,
    ) -> tuple[Path, bool]:
        """Record ``finding`` (as found); ``(folder, True)`` when its signature is new.

        ``reproducer_case`` is what to store as the reproducer (the minimised
        case, or ``finding.case``).  ``reproducer_finding`` is the finding the
        reproducer itself gave, when known; otherwise ``finding`` with its case
        replaced is recorded.  A known signature only gets its count bumped.
        """
        target = self.path_for(finding)
        try:
            if (target / FINDING_JSON).is_file():
                self._bump(target, variant=finding.variant)
                return target, False
            self.folder.mkdir(parents=True, exist_ok=True)
            created = self._create(
                target,
                finding,
                reproducer_case,
                original_file,
                reproducer_finding or replace(finding, case=reproducer_case),
            )
            if not created:
                self._bump(target, variant=finding.variant)
            return target, created
        except OSError as exc:
            raise FindingError(f"{target}: cannot write: {exc.strerror or exc}") from None

    def _create(
        self,
        target: Path,
        finding: Finding,
        reproducer_case: InitCase,
        original_file: Path | None,
        recorded: Finding,
    ) -> bool:
        stamp = _now()
        payload = recorded.to_json()
        payload.update(count=1, first_seen=stamp, last_seen=stamp, variants={finding.variant: 1})
        if original_file is not None:
            payload["original_file"] = str(original_file)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=self.folder))
        try:
            write_atomically(tmp / REPRODUCER, reproducer_case.encode())
            write_atomically(tmp / ORIGINAL, finding.case.encode())
            write_atomically(tmp / FINDING_JSON, _json_bytes(payload))
            summary = _summary(target.absolute(), recorded, finding.case)
            write_atomically(tmp / SUMMARY, summary.encode())
            fsync_dir(tmp)
            if target.exists():
                return False  # another run got there first: keep what it wrote
            try:
                # On POSIX a directory rename fails when the destination is a
                # non-empty directory, so a complete folder is never replaced
                # even if it appeared since the check above.
                os.replace(tmp, target)
            except OSError:
                if (target / FINDING_JSON).is_file():
                    return False
                raise
            fsync_dir(self.folder)
            return True
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    def add_repeats(self, finding: Finding, times: int) -> Path:
        """Count ``times`` more sightings of ``finding``'s (stored) signature.

        A campaign sees a known leak hundreds of times a second; it counts
        them in memory and calls this now and then, one rewrite per call.
        """
        target = self.path_for(finding)
        if times > 0:
            try:
                self._bump(target, times)
            except OSError as exc:
                raise FindingError(f"{target}: cannot write: {exc.strerror or exc}") from None
        return target

    def _bump(self, target: Path, times: int = 1, variant: str | None = None) -> None:
        payload = _read_json(target)
        count = payload.get("count", 1)
        payload["count"] = (count if isinstance(count, int) else 1) + times
        payload["last_seen"] = _now()
        variants = payload.get("variants")
        if variant is not None and isinstance(variants, dict):
            if variant not in variants and len(variants) >= MAX_VARIANTS:
                variant = OTHER_VARIANTS
            variants[variant] = int(variants.get(variant, 0)) + times
        write_atomically(target / FINDING_JSON, _json_bytes(payload))


def _read_json(folder: Path) -> dict[str, Any]:
    path = folder / FINDING_JSON
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FindingError(f"{folder}: not a finding folder (no {FINDING_JSON})") from None
    except OSError as exc:
        raise FindingError(f"{path}: cannot read: {exc.strerror}") from None
    except (ValueError, UnicodeDecodeError):
        raise FindingError(f"{path}: not valid JSON") from None
    if not isinstance(data, dict):
        raise FindingError(f"{path}: not a finding (expected a JSON object)")
    return data


def load_finding(folder: Path) -> tuple[Finding, InitCase]:
    """The recorded finding and the reproducer case of a finding folder."""
    if not folder.is_dir():
        raise FindingError(f"{folder}: not a finding folder (no such folder)")
    data = _read_json(folder)
    try:
        finding = Finding.from_json(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise FindingError(f"{folder / FINDING_JSON}: not a finding ({exc!r})") from None
    if not (folder / REPRODUCER).is_file():
        raise FindingError(f"{folder}: not a finding folder (no {REPRODUCER})")
    try:
        case = load_case(folder / REPRODUCER)
    except CorpusError as exc:
        raise FindingError(str(exc)) from None
    return finding, case
