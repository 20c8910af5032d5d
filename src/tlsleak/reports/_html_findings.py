"""The findings of an output folder, as rows of the ``tlsleak report --html`` table.

Each sub-folder of ``OUT/findings/`` is read with
:func:`tlsleak.check.findings.load_stored` (what replay reads) and its
``finding.json`` for the counts the store keeps beside the finding.  A folder
that can't be read, or holds values of the wrong type, is a row saying why,
not the end of the report: the page is about everything else too.  Only a
``findings/`` folder that can't be listed is an error (:class:`FindingError`).
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tlsleak.check.findings import FINDING_JSON, FindingError, load_stored
from tlsleak.check.oracle import FindingKind, format_delta

__all__ = ["FindingRow", "load_rows"]

#: Kinds in the order a reader should see them: what loses memory or a process first.
_ORDER = {str(kind): i for i, kind in enumerate(FindingKind)}


@dataclass(frozen=True)
class FindingRow:
    """One finding folder as the table shows it (plain text: the page escapes it)."""

    folder: Path
    kind: str
    step: str
    #: Sightings, as the store counted them (None when not recorded).
    count: int | None
    growth: str
    #: Blob bytes of the minimised reproducer (None when unreadable).
    size: int | None
    what: str
    #: ``lost at`` line, root site and top allocation sites, one a line.
    where: tuple[str, ...]
    stack: tuple[str, ...]
    replay: str
    first_seen: str = ""
    last_seen: str = ""
    target: str = ""
    #: The reproducer's labels: the defects that made it.
    labels: tuple[str, ...] = ()
    #: Why the folder could not be read ("" when it could).
    problem: str = ""


def load_rows(findings: Path) -> list[FindingRow]:
    """Every finding folder under ``findings`` (none if it is missing), most telling first."""
    if not findings.is_dir():
        return []
    try:
        # Dot folders are a store's temporary ones (a run killed mid-write).
        folders = [f for f in sorted(findings.iterdir()) if f.is_dir() and f.name[:1] != "."]
    except OSError as exc:
        raise FindingError(f"{findings}: cannot read: {exc.strerror or exc}") from None
    rows = [_row(folder) for folder in folders]
    rows.sort(key=lambda r: (_ORDER.get(r.kind, len(_ORDER)), -(r.count or 0), r.folder.name))
    return rows


def _row(folder: Path) -> FindingRow:
    replay = f"tlsleak replay {shlex.quote(str(folder.absolute()))}"
    try:
        return _readable_row(folder, replay)
    except FindingError as exc:
        problem = str(exc)
    except (TypeError, ValueError, AttributeError) as exc:
        # JSON that load_stored took but whose values are not what they say
        # (a delta of strings): the row says so rather than the report failing.
        problem = f"{folder / FINDING_JSON}: not a finding ({exc})"
    return FindingRow(
        folder, "unreadable", "-", None, "-", None, "-", (), (), replay, problem=problem
    )


def _readable_row(folder: Path, replay: str) -> FindingRow:
    stored = load_stored(folder)
    finding = stored.finding
    raw = _raw(folder)
    count = raw.get("count")
    if finding.kind in (FindingKind.LEAK, FindingKind.CYCLE):
        growth = f"{format_delta(finding.delta)} per attempt"
    elif finding.kind is FindingKind.ERROR_QUEUE:
        growth = "left on the queue: " + "; ".join(str(e) for e in finding.errors_left)
    else:
        growth = "-"
    where = [f"lost at {finding.caller}"] if finding.caller else []
    if finding.root_site and finding.root_site != finding.caller:
        where.append(f"root: {finding.root_site}")
    where += [f"site: {site}" for site in finding.sites[:3]]
    if stored.fail_point is not None:
        where.append(f"allocation {stored.fail_point.fail_at} made to fail")
    return FindingRow(
        folder=folder,
        kind=str(finding.kind),
        step=str(finding.step or "-"),
        count=count if isinstance(count, int) and not isinstance(count, bool) else None,
        growth=growth,
        size=stored.reproducer.size,
        what=str(finding.what),
        where=tuple(where),
        stack=tuple(str(frame) for frame in finding.stack),
        replay=replay,
        first_seen=str(raw.get("first_seen", "")),
        last_seen=str(raw.get("last_seen", "")),
        target=str(finding.target),
        labels=stored.reproducer.labels,
    )


def _raw(folder: Path) -> dict[str, Any]:
    """``finding.json`` as written (load_stored has checked that it is a finding)."""
    try:
        data = json.loads((folder / FINDING_JSON).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
