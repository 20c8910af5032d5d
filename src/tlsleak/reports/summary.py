"""A short Markdown summary of a run for CI (``check``/``fuzz --summary-md FILE``).

Made for ``$GITHUB_STEP_SUMMARY``, which collects the summaries of every step
of a job: the command appends to FILE, never replaces it.  It says what ran,
the outcome counts, one table row per distinct finding (kind, steps, cases,
growth, signature, replay command), and what the exit status means.  Cells are
escaped so that a signature's ``|`` or a path's backtick can't break the table.
"""

from __future__ import annotations

from collections.abc import Sequence

from tlsleak.reports.ci import Distinct, RunInfo, exit_meaning

__all__ = ["summary_markdown"]

#: Characters of a cell's text kept (a long growth list, a long message).
CELL_CHARS = 120


def summary_markdown(run: RunInfo, findings: Sequence[Distinct]) -> str:
    """The summary, ending with a newline, headed so that several runs stay apart."""
    outcomes = ", ".join(f"{n} {name}" for name, n in run.outcomes.items()) or "none"
    lines = [
        f"### tlsleak {run.command} {_inline_code(run.target)}",
        "",
        f"- ran: {_text(run.ran)}",
        f"- outcomes: {outcomes}",
    ]
    lines += [f"- {_text(note)}" for note in run.notes]
    if run.problem is not None:
        lines.append(f"- **not done:** {_text(run.problem)}")
    lines.append("")
    if findings:
        cases = sum(f.cases for f in findings)
        plural = "s" if len(findings) > 1 else ""
        shown = f"**{len(findings)} distinct finding{plural}** ({cases} cases or inputs showed"
        shown += " it):" if len(findings) == 1 else " them):"
        lines += [shown, ""]
        lines += _table(findings)
    else:
        lines.append("No findings.")
    lines += [
        "",
        f"Exit status {run.exit_status}: {exit_meaning(run.exit_status)}. "
        "(0 clean, 1 findings, 2 usage error or no work done.)",
        "",
    ]
    return "\n".join(lines)


def _table(findings: Sequence[Distinct]) -> list[str]:
    header = ["kind", "step", "cases", "growth", "signature", "replay"]
    rows = [
        [
            f.kind,
            _text(",".join(f.steps)),
            str(f.cases),
            _text(_cut(f.what)),
            _inline_code(f.signature),
            _inline_code(f.replay),
        ]
        for f in findings
    ]
    return [
        _row(header),
        _row(["---", "---", "---:", "---", "---", "---"]),
        *(_row(r) for r in rows),
    ]


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _cut(text: str) -> str:
    return text if len(text) <= CELL_CHARS else text[: CELL_CHARS - 3] + "..."


def _text(text: str) -> str:
    """Plain text in a table cell or a list item: one line, Markdown's specials escaped."""
    flat = " ".join(text.split())
    for char in "\\`*_[]<>|":
        flat = flat.replace(char, "\\" + char)
    return flat


def _inline_code(text: str) -> str:
    """``text`` as inline code in a table: pipes escaped (GFM), fenced past its backticks."""
    flat = " ".join(text.split()).replace("|", "\\|")
    fence = "`"
    while fence in flat:
        fence += "`"
    pad = " " if flat.startswith("`") or flat.endswith("`") else ""
    return f"{fence}{pad}{flat}{pad}{fence}"
