"""A findings folder: one sub-folder per distinct bug, with a minimised reproducer.

Layout of ``FindingStore(folder)``::

    folder/
      <kind>-<where>-<sha12>/    where: the step, or for a leak the outermost leaked
                                 object types; sha12: 12 hex digits of sha256(signature)
        reproducer               the minimised case, encoded        (0600)
        original                 the case as it was found, encoded  (0600)
        finding.json             ``"format": "tlsleak-finding/1"``, then
                                 Finding.to_json() of the reproducer's finding,
                                 plus count, first_seen, last_seen and, when
                                 known, original_file; for a C library its
                                 absolute path and sha256 (``library``); for
                                 an allocation failure the warm-up count
                                 (``fail_point``)                    (0600)
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

What replay needs beyond the finding is recorded with it, so that a folder
replays the same from any directory (:class:`StoredFinding`): a ``c:`` target's
library by absolute path and sha256 (:class:`LibraryRecord`), and where an
allocation was made to fail, counted after a warm-up run whose own count is
kept so that a numbering that drifted is noticed (:class:`FailPoint`).

``finding.json`` names its format (:data:`FORMAT`, docs/formats.md); a folder
stored before the field existed has none and reads as version 1, and one
written by a later major version is refused in one line (:func:`format_refusal`).
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
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from tlsleak._fs import fsync_dir, write_atomically
from tlsleak.cases.case import InitCase
from tlsleak.cases.files import CorpusError, load_case
from tlsleak.check.oracle import Finding, FindingKind, format_delta, root_counters

__all__ = [
    "FORMAT",
    "FailPoint",
    "FindingError",
    "FindingStore",
    "LibraryRecord",
    "StoredFinding",
    "file_sha256",
    "folder_name",
    "format_refusal",
    "library_record",
    "load_finding",
    "load_stored",
]

#: The ``format`` of ``finding.json``: a name, then the major version of its fields.
FORMAT: Final = "tlsleak-finding/1"

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


@dataclass(frozen=True)
class FailPoint:
    """Where an allocation-failure finding made an allocation fail, as replay must redo it.

    ``fail_at`` counts the allocations of the failing run from its start, in
    a process where the case has just run once clean (the warm-up: one-time
    initialisation of OpenSSL and of the library happens in a process's first
    runs, and would shift the numbering); ``warmup_allocations`` is what that
    warm-up run counted.  A replay whose warm-up counts differently is not
    failing the same allocation, and says so instead of calling the bug gone.
    """

    fail_at: int
    warmup_allocations: int

    @property
    def from_end(self) -> int:
        """Allocations the warm-up made after this one (0: the last): a tail anchor."""
        return self.warmup_allocations - self.fail_at

    def to_json(self) -> dict[str, int]:
        return {"fail_at": self.fail_at, "warmup_allocations": self.warmup_allocations}


@dataclass(frozen=True)
class LibraryRecord:
    """The shared library of a ``c:`` target, as it was when the finding was stored."""

    #: Absolute path, so that the folder replays from any directory.
    path: str
    symbol: str
    #: Hex sha256 of the file: a different one means the library was rebuilt.
    sha256: str

    @property
    def spec(self) -> str:
        """The target spec that loads this library from anywhere."""
        from tlsleak.targets.clib import C_PREFIX, DEFAULT_SYMBOL

        tail = "" if self.symbol == DEFAULT_SYMBOL else f":{self.symbol}"
        return f"{C_PREFIX}{self.path}{tail}"

    def to_json(self) -> dict[str, str]:
        return {"path": self.path, "symbol": self.symbol, "sha256": self.sha256}


def file_sha256(path: Path) -> str:
    """Hex sha256 of the file at ``path`` (``OSError`` if it can't be read)."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def library_record(target: str) -> LibraryRecord | None:
    """The library a ``c:PATH`` or ``c:PATH:SYMBOL`` target loads, read now; else None.

    PATH is resolved against the current directory, the one the target was
    loaded from.  The split follows :func:`tlsleak.targets.clib.c_library_target`:
    a PATH that exists is taken whole, otherwise a last ``:NAME`` is the symbol.
    """
    from tlsleak.targets.clib import C_PREFIX, DEFAULT_SYMBOL

    if not target.startswith(C_PREFIX):
        return None
    path, symbol = target.removeprefix(C_PREFIX), DEFAULT_SYMBOL
    if not os.path.exists(os.path.expanduser(path)):
        head, sep, tail = path.rpartition(":")
        if sep and head:
            path, symbol = head, tail
    try:
        file = Path(path).expanduser().resolve()
        return LibraryRecord(str(file), symbol, file_sha256(file))
    except (OSError, ValueError):
        return None  # not a file any more: nothing to record


@dataclass(frozen=True)
class StoredFinding:
    """A finding folder, read back: what :func:`load_stored` returns."""

    folder: Path
    #: The finding the reproducer gave when it was stored.
    finding: Finding
    reproducer: InitCase
    #: For a ``c:`` target, its library (none in folders stored by earlier versions).
    library: LibraryRecord | None = None
    #: For an allocation-failure finding, the point and its warm-up count
    #: (None for other findings, and for folders stored without a warm-up).
    fail_point: FailPoint | None = None


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


def format_refusal(data: Any, expected: str) -> str | None:
    """Why a JSON object's ``format`` can't be read as ``expected`` (``name/major``), or None.

    No ``format`` at all is a file written before the field existed: it reads
    as version 1.  Another name is another kind of file; a later major version
    changed fields this version would misread, so it is refused rather than
    guessed at.  (Minor additions never change the major version.)
    """
    found = data.get("format") if isinstance(data, dict) else None
    if found is None:
        return None
    name, _sep, major = expected.rpartition("/")
    found_name, sep, found_major = str(found).rpartition("/")
    if not sep or found_name != name or not found_major.isdigit():
        return f"format {found!r} is not {name}"
    if int(found_major) > int(major):
        return (
            f"format {found} is newer than this tlsleak reads ({expected}): "
            "upgrade tlsleak to read it"
        )
    return None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _json_bytes(payload: dict[str, Any]) -> bytes:
    return (json.dumps(payload, indent=2) + "\n").encode("utf-8")


def _summary(
    folder: Path, finding: Finding, original: InitCase, fail_point: FailPoint | None
) -> str:
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
    if fail_point is not None:
        lines.append(
            f"allocation: number {fail_point.fail_at} made to fail, counted after a warm-up "
            f"run that made {fail_point.warmup_allocations}"
        )
    elif finding.fail_at is not None:
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
        fail_point: FailPoint | None = None,
    ) -> tuple[Path, bool]:
        """Record ``finding`` (as found); ``(folder, True)`` when its signature is new.

        ``reproducer_case`` is what to store as the reproducer (the minimised
        case, or ``finding.case``).  ``reproducer_finding`` is the finding the
        reproducer itself gave, when known; otherwise ``finding`` with its case
        replaced is recorded.  ``fail_point`` is where the reproducer's
        allocation failure is (its ``fail_at`` is recorded as the finding's).
        A known signature only gets its count bumped.
        """
        target = self.path_for(finding)
        try:
            if (target / FINDING_JSON).is_file():
                self._bump(target, variant=finding.variant)
                return target, False
            self.folder.mkdir(parents=True, exist_ok=True)
            recorded = reproducer_finding or replace(finding, case=reproducer_case)
            if fail_point is not None:
                recorded = replace(recorded, fail_at=fail_point.fail_at)
            created = self._create(
                target, finding, reproducer_case, original_file, recorded, fail_point
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
        fail_point: FailPoint | None,
    ) -> bool:
        stamp = _now()
        payload = {"format": FORMAT, **recorded.to_json()}
        payload.update(count=1, first_seen=stamp, last_seen=stamp, variants={finding.variant: 1})
        if original_file is not None:
            payload["original_file"] = str(original_file)
        library = library_record(recorded.target)
        if library is not None:
            payload["library"] = library.to_json()
        if fail_point is not None:
            payload["fail_point"] = fail_point.to_json()
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=self.folder))
        try:
            write_atomically(tmp / REPRODUCER, reproducer_case.encode())
            write_atomically(tmp / ORIGINAL, finding.case.encode())
            write_atomically(tmp / FINDING_JSON, _json_bytes(payload))
            summary = _summary(target.absolute(), recorded, finding.case, fail_point)
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
    stored = load_stored(folder)
    return stored.finding, stored.reproducer


def load_stored(folder: Path) -> StoredFinding:
    """Everything replay needs from a finding folder (``FindingError``, one line, if bad)."""
    if not folder.is_dir():
        raise FindingError(f"{folder}: not a finding folder (no such folder)")
    data = _read_json(folder)
    if (refused := format_refusal(data, FORMAT)) is not None:
        raise FindingError(f"{folder / FINDING_JSON}: {refused}")
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
    try:
        library = _library_from(data.get("library"))
        fail_point = _fail_point_from(data.get("fail_point"))
    except (KeyError, TypeError, ValueError) as exc:
        raise FindingError(f"{folder / FINDING_JSON}: not a finding ({exc!r})") from None
    return StoredFinding(folder, finding, case, library, fail_point)


def _library_from(data: Any) -> LibraryRecord | None:
    if data is None:
        return None
    path, symbol, sha = data["path"], data["symbol"], data["sha256"]
    if not all(isinstance(x, str) for x in (path, symbol, sha)) or not os.path.isabs(path):
        raise ValueError("library: an absolute path, a symbol and a sha256 expected")
    return LibraryRecord(path, symbol, sha)


def _fail_point_from(data: Any) -> FailPoint | None:
    if data is None:
        return None
    fail_at, count = data["fail_at"], data["warmup_allocations"]
    if not (isinstance(fail_at, int) and isinstance(count, int) and fail_at > 0):
        raise ValueError("fail_point: a positive fail_at and a warm-up count expected")
    return FailPoint(fail_at, count)
