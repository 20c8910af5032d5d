"""The reports of ``tlsleak diff``: a text table, JSON, and the Markdown of docs/differential.md.

Each shows the disagreements grouped by defect label and the outcome on
every target (largest group first), then the weaker class, cases every
target rejects but at different steps, then what each target could not load
even when valid (whose cases are ``unsupported`` there, see
:mod:`tlsleak.check.capabilities`).  The Markdown holds nothing that varies
between runs on the same cases and versions (no times, no paths), so a test
can regenerate the document and compare.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations
from typing import Any

from tlsleak._version import __version__
from tlsleak.check.capabilities import Material
from tlsleak.check.differential import (
    FORMAT,
    Group,
    Kind,
    Row,
    TargetInfo,
    groups,
    summary,
)

__all__ = ["cannot_load", "json_report", "markdown_report", "text_report"]

#: Groups of each class a text report shows (the JSON report holds them all).
TEXT_GROUPS = 40

_FIELDS = ("key_type", "cert_encoding", "key_format", "key_encoding")


def _words(fields: Sequence[str], values: Sequence[str]) -> str:
    """``("key_format", "key_encoding"), ("pkcs8", "der")`` -> ``pkcs8 DER keys``."""
    shown = dict(zip(fields, values, strict=True))
    key = " ".join(
        v.upper() if f == "key_encoding" else v
        for f in ("key_type", "key_format", "key_encoding")
        if (v := shown.get(f))
    )
    cert = f"{shown['cert_encoding'].upper()} certificates" if "cert_encoding" in shown else ""
    return " with ".join(x for x in (f"{key} keys" if key else "", cert) if x)


def cannot_load(info: TargetInfo) -> str:
    """What ``info`` refused of the valid material, in as few words as it takes.

    A value, or a pair of values, every probe of which was refused (all
    Ed448 material; PKCS#8 keys in DER) is named as such, the biggest first;
    what is left is listed material by material.
    """
    refused = set(info.cannot_load())
    if not refused:
        return "nothing"
    if not any(info.loads.values()):
        return "every valid probe (every case is unsupported)"
    parts: list[str] = []
    covered: set[Material] = set()
    for size in (1, 2):
        for fields in combinations(_FIELDS, size):
            for values in sorted({tuple(getattr(m, f) for f in fields) for m in info.loads}):
                having = {m for m in info.loads if tuple(getattr(m, f) for f in fields) == values}
                if having <= refused and not having <= covered:
                    parts.append(_words(fields, values))
                    covered |= having
    parts.extend(str(m) for m in sorted(refused - covered))
    return ", ".join(parts)


def _headline(targets: Sequence[TargetInfo], rows: Sequence[Row]) -> list[str]:
    figures = summary(targets, rows)
    return [
        f"{figures['cases']} cases, {figures['supported_by_all']} supported by every target, "
        f"{figures['compared']} by at least two",
        f"disagreements: {figures['disagreements']} "
        f"({figures['disagreements_supported_by_all']} on cases every target supports); "
        f"both reject, at different steps: {figures['step_differences']}; "
        f"agreements: {figures['agreements']}",
    ]


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]


def _group_rows(found: Sequence[Group]) -> list[list[str]]:
    return [[str(len(g.cases)), g.label, *g.shown(), g.cases[0]] for g in found]


def text_report(
    targets: Sequence[TargetInfo], rows: Sequence[Row], elapsed: float | None = None
) -> str:
    """The text report, as lines without a final newline."""
    names = [t.name for t in targets]
    took = f" in {elapsed:.1f}s" if elapsed is not None else ""
    lines = [f"diff {' '.join(names)}{took}: " + _headline(targets, rows)[0]]
    lines.append(_headline(targets, rows)[1])
    for info in targets:
        if info.network is not None and (warning := info.network.warning()):
            lines.append(f"{info.name}: {warning}")
    header = ["CASES", "LABEL", *(n.upper() for n in names), "EXAMPLE"]
    for kind, title in (
        (Kind.DISAGREE, "disagreements, by defect label and outcome"),
        (Kind.STEPS, "both reject, at different steps"),
    ):
        found = groups(rows, kind)
        if not found:
            continue
        lines.append(f"\n{title} ({len(found)} groups):")
        lines.extend("  " + line for line in _table(header, _group_rows(found[:TEXT_GROUPS])))
        if len(found) > TEXT_GROUPS:
            lines.append(f"  ... {len(found) - TEXT_GROUPS} more groups in the JSON report")
    lines.append("\ncannot load, even valid (their cases are unsupported there):")
    lines.extend(f"  {info.name}: {cannot_load(info)}" for info in targets)
    return "\n".join(lines)


def json_report(targets: Sequence[TargetInfo], rows: Sequence[Row]) -> dict[str, Any]:
    """Everything: each target, the figures, every group and every case's results."""
    return {
        "format": FORMAT,
        "tool": "tlsleak",
        "version": __version__,
        "targets": [t.to_json() for t in targets],
        "summary": summary(targets, rows),
        "disagreements": [g.to_json() for g in groups(rows, Kind.DISAGREE)],
        "step_differences": [g.to_json() for g in groups(rows, Kind.STEPS)],
        "cases": [row.to_json() for row in rows],
    }


def _md_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    return [_md_row(header), _md_row(["---"] * len(header)), *(_md_row(r) for r in rows)]


def markdown_report(targets: Sequence[TargetInfo], rows: Sequence[Row], command: str) -> str:
    """The generated part of docs/differential.md: versions, figures, groups, capabilities."""
    names = [t.name for t in targets]
    lines = [
        "## Measured",
        "",
        f"Output of `{command}`. Acceptance depends on these versions; "
        "the test compares this file only when they are the ones installed.",
        "",
        *_md_table(["target", "versions"], [[t.name, t.version or "-"] for t in targets]),
        "",
        *(f"- {line}" for line in _headline(targets, rows)),
    ]
    header = ["cases", "label", *names]
    for kind, title in ((Kind.DISAGREE, "Disagreements"), (Kind.STEPS, "Different steps")):
        found = groups(rows, kind)
        lines += ["", f"### {title}", ""]
        table = [[str(len(g.cases)), g.label, *g.shown()] for g in found]
        lines += _md_table(header, table) if table else ["None."]
    lines += ["", "### Cannot load, even valid", ""]
    lines += _md_table(["target", "refused"], [[t.name, cannot_load(t)] for t in targets])
    return "\n".join(lines) + "\n"
