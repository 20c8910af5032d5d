"""``stats.jsonl`` read back for ``tlsleak report --html``: lines checked, campaigns split, thinned.

A campaign appends one JSON object a line to ``OUT/stats.jsonl`` every few
seconds and a last one when it ends (:mod:`tlsleak.fuzz.stats`).  Reading it
back for a page:

- **A torn line is skipped.**  A campaign killed in the middle of a write
  (a full disk) can leave a last line without its newline; that one line is
  dropped, and the page says so.  When another campaign then used the
  folder, its first line follows the torn one on the same line: the torn
  part is dropped and the whole line after it kept (:func:`_after_torn`).
  Any other line that is not a stats object is garbage: :class:`StatsError`,
  one line naming the line.
- **One file, several campaigns.**  Every campaign on the same folder appends
  to the same file, and each starts its clock again: a line whose ``elapsed``
  goes back starts a new :class:`Run`.  The plots show the last run; earlier
  ones keep their first and last lines only, for a table.
- **Days of lines make a small page.**  :func:`downsample` keeps at most
  :data:`MAX_POINTS` points a plot (see there), whatever the file's length;
  the file is read a line at a time, and a line longer than
  :data:`MAX_LINE` is refused rather than read whole.

Fields a later minor version adds are ignored, and fields an earlier version
did not write (``format``, ``alloc_sites``) read as absent; a later major
version of the format (``tlsleak-stats/2``) is refused, not misread.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

from tlsleak.check.findings import format_refusal
from tlsleak.fuzz.stats import FORMAT

__all__ = ["MAX_LINE", "MAX_POINTS", "Point", "Run", "StatsError", "StatsFile", "downsample"]

#: Points a plot gets at most (see :func:`downsample`).
MAX_POINTS: Final = 500
#: A stats line is well under a kilobyte; one longer than this is not one.
MAX_LINE: Final = 1 << 20

#: Counters of a stats line that are plotted; absent ones read as 0.
_COUNTS: Final = (
    "corpus",
    "error_pairs",
    "alloc_buckets",
    "alloc_sites",
    "alloc_paths",
    "finding_hits",
    "restarts",
)


class StatsError(Exception):
    """A ``stats.jsonl`` that can't be read, or holds garbage; the message is one line."""


@dataclass(frozen=True, slots=True)
class Point:
    """What one stats line says, as plotted."""

    elapsed: float
    execs: int
    exec_per_s: float
    counts: dict[str, int]
    #: Distinct findings so far, by kind.
    findings: dict[str, int]


@dataclass
class Run:
    """One campaign's lines (a file holds one per campaign run on the folder)."""

    points: list[Point] = field(default_factory=list)
    #: The run's first and last lines as written (time, target, workers, no_work, ...).
    first: dict[str, Any] = field(default_factory=dict)
    last: dict[str, Any] = field(default_factory=dict)

    @property
    def ended(self) -> bool:
        """Whether the last line is a final one: every worker finished, stopped or given up.

        Lines written while the campaign runs name running, starting or
        restarting workers; a campaign killed (SIGKILL, a power cut) or
        still running has no final line.
        """
        states = [w.get("state") for w in self.last.get("workers", ()) if isinstance(w, dict)]
        return bool(states) and all(s in ("finished", "stopped", "failed") for s in states)


@dataclass
class StatsFile:
    """A whole ``stats.jsonl``: its runs, oldest first, and what reading it skipped."""

    path: Path
    runs: list[Run]
    lines: int
    #: Lines cut short that were skipped (a campaign killed mid-write).
    torn: int = 0

    @property
    def last(self) -> Run | None:
        return self.runs[-1] if self.runs else None

    @classmethod
    def read(cls, path: Path) -> StatsFile:
        """Read and check every line of ``path`` (:class:`StatsError` on garbage)."""
        runs: list[Run] = []
        number = lines = torn = 0
        try:
            with path.open("rb") as file:
                while raw := file.readline(MAX_LINE + 1):
                    number += 1
                    if len(raw) > MAX_LINE:
                        raise StatsError(f"{path}:{number}: not a stats line (over 1 MiB long)")
                    try:
                        data, point = _parse(raw)
                    except ValueError as exc:
                        if not raw.endswith(b"\n"):  # readline stopped at the end of the file
                            torn += 1  # the last line, cut short: a campaign killed writing
                            break
                        rest = _after_torn(raw)
                        if rest is None:
                            raise StatsError(f"{path}:{number}: not a stats line ({exc})") from None
                        torn += 1
                        data, point = rest
                    lines += 1
                    if not runs or point.elapsed < runs[-1].points[-1].elapsed:
                        if runs:
                            runs[-1].points[1:-1] = []  # earlier runs: first and last only
                        runs.append(Run(first=data))
                    if runs[-1].points and point.findings == runs[-1].points[-1].findings:
                        # Findings change rarely: one dict for the lines that agree (memory).
                        point = replace(point, findings=runs[-1].points[-1].findings)
                    runs[-1].points.append(point)
                    runs[-1].last = data
        except OSError as exc:
            raise StatsError(f"{path}: cannot read: {exc.strerror or exc}") from None
        return cls(path, runs, lines, torn)


def _after_torn(raw: bytes) -> tuple[dict[str, Any], Point] | None:
    """The whole stats line at the end of ``raw``, if a torn one comes before it; else None.

    A campaign killed in the middle of a line leaves the start of an object
    without its end; the next campaign on the folder appends its first line
    right after it, so both read as one line.  The later part, from a ``{"``
    on, is that whole line.
    """
    if not raw.startswith(b'{"'):
        return None
    start = raw.find(b'{"', 1)
    while start > 0:
        try:
            return _parse(raw[start:])
        except ValueError:
            start = raw.find(b'{"', start + 1)
    return None


def _parse(raw: bytes) -> tuple[dict[str, Any], Point]:
    """One line: its object and its point (``ValueError``, saying why, if it is not one)."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ValueError("not JSON") from None
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    refusal = format_refusal(data, FORMAT)
    if refusal is not None:
        raise ValueError(refusal)
    elapsed = _number(data, "elapsed")
    execs = _number(data, "execs")
    counts = {name: int(_number(data, name, 0)) for name in _COUNTS}
    findings = data.get("findings", {})
    if not isinstance(findings, dict) or not all(
        isinstance(k, str) and _is_count(v) for k, v in findings.items()
    ):
        raise ValueError("'findings' is not counts by kind")
    workers = data.get("workers", [])
    if not isinstance(workers, list):
        raise ValueError("'workers' is not a list")
    rate = _number(data, "exec_per_s", 0)
    return data, Point(elapsed, int(execs), rate, counts, dict(findings))


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _number(data: dict[str, Any], name: str, default: float | None = None) -> float:
    value = data.get(name, default)
    if value is None:
        raise ValueError(f"no {name!r}")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name!r} is not a number")
    if value < 0:
        raise ValueError(f"{name!r} is negative")
    return value


def downsample(points: list[Point], limit: int = MAX_POINTS) -> list[Point]:
    """At most ``limit`` points (and the first) standing for ``points``.

    Over the limit, the run's time is cut into ``limit`` equal stretches;
    each stretch that has lines gives one point, at its last line, with that
    line's counts (they only grow, so the last is what the stretch ended
    with) and the mean of its lines' executions per second (a rate: one
    line's figure would be as noisy as the machine).  The first line is
    always kept, so the plots start where the campaign did.
    """
    if len(points) <= limit:
        return points
    start, span = points[0].elapsed, points[-1].elapsed - points[0].elapsed
    width = span / limit if span > 0 else 1.0
    out = [points[0]]
    bucket: list[Point] = []
    current = 0
    for point in points[1:]:
        index = min(int((point.elapsed - start) / width), limit - 1)
        if bucket and index != current:
            out.append(_merged(bucket))
            bucket = []
        current = index
        bucket.append(point)
    if bucket:
        out.append(_merged(bucket))
    return out


def _merged(bucket: list[Point]) -> Point:
    rate = sum(p.exec_per_s for p in bucket) / len(bucket)
    return replace(bucket[-1], exec_per_s=rate)
