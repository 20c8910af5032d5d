"""The text report of ``tlsleak check``: a table of the distinct findings.

Findings that share a signature (one missing free, say) are one row, however
many cases and steps show them; the allocation sites of each distinct leak
follow the table (first the target's own line that lost the first block,
"lost at ...", when the caller stacks of the ``heap`` or the
``openssl-objects`` ledger name it), and the last line
says how to re-run one example.  When the worker could not be taken off the
network, a line after the first says so (nothing is added when it was: the
usual report stays as it is).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from tlsleak._netns import Network
from tlsleak.check.oracle import Finding

__all__ = ["SITES_SHOWN", "check_report", "unconfirmed_lines"]

#: Allocation sites printed per distinct finding (all are in the JSON report).
SITES_SHOWN = 6


def check_report(
    target: str,
    files: Sequence[Path],
    statuses: Counter[str],
    findings: Sequence[tuple[Path, Finding]],
    elapsed: float,
    *,
    network: Network | None = None,
) -> str:
    """The report of a check of ``files`` on ``target``, as lines without a final newline.

    ``network`` is the worker's (:attr:`IsolatedOracle.network
    <tlsleak.check.worker.IsolatedOracle.network>`): one line when it was not isolated.
    """
    outcome_text = ", ".join(f"{n} {s}" for s, n in sorted(statuses.items()))
    lines = [f"{target}: {len(files)} cases in {elapsed:.1f}s ({outcome_text})"]
    if network is not None and (warning := network.warning()):
        lines.append(warning)
    if not findings:
        lines.append("no findings: every live count returned to its baseline")
        return "\n".join(lines)
    groups: dict[str, list[tuple[Path, Finding]]] = {}
    for path, finding in findings:
        groups.setdefault(finding.signature, []).append((path, finding))
    lines.append(f"{len(findings)} findings, {len(groups)} distinct:\n")
    lines.extend(_table(groups.values()))
    for group in groups.values():
        lines.extend(_sites(group))
    example = findings[0][0]
    lines.append(f"\nreplay one: tlsleak check {target} {example.parent}/EXAMPLE")
    return "\n".join(lines)


def _table(groups: Iterable[Sequence[tuple[Path, Finding]]]) -> list[str]:
    """One row per distinct finding: kind, steps, how many cases, what is left, an example."""
    header = ("KIND", "STEP", "CASES", "WHAT", "EXAMPLE")
    rows = []
    for group in groups:
        path, first = group[0]
        if first.delta:
            what = ", ".join(f"{k} {v:+d}" for k, v in first.delta.items())
        elif first.errors_left:
            what = "; ".join(sorted({str(e) for e in first.errors_left}))
        else:
            what = first.what  # the outcome's message, or what a prompt means
        rows.append((str(first.kind), _steps(group), str(len(group)), what[:60], path.name))
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]


def _steps(group: Sequence[tuple[Path, Finding]]) -> str:
    """The failing steps of a group of findings, most frequent first.

    One leak signature covers every step its missing free shows behind.
    """
    counts = Counter(str(f.step or "-") for _path, f in group)
    return ",".join(step for step, _n in counts.most_common())


def _sites(group: Sequence[tuple[Path, Finding]]) -> list[str]:
    """Where the blocks of a group's first finding were allocated, if the ledgers say.

    First the line of the target's own code that allocated the first block
    lost (its caller, from the ``heap`` ledger's C stacks or the
    ``openssl-objects`` ledger's Python ones), then the
    library-internal sites (``openssl-heap``), biggest first.
    """
    example, first = group[0]
    if not first.sites and first.caller is None:
        return []
    where = f"{first.kind} at {first.step or '-'}"
    lines = [f"\nwhere the blocks of the {where} were allocated (example {example.name}):"]
    if first.caller is not None:
        lines.append(f"  lost at {first.caller}")
    for site in first.sites[:SITES_SHOWN]:
        lines.append(f"  {site.file}:{site.line}  {site.blocks} blocks, {site.bytes} bytes")
    if len(first.sites) > SITES_SHOWN:
        lines.append(f"  ... {len(first.sites) - SITES_SHOWN} more sites in the JSON report")
    return lines


def unconfirmed_lines(unconfirmed: Sequence[tuple[Path, Finding]]) -> str:
    """What was found only after other cases ran in the same worker (check.alone), not counted."""
    by_signature: dict[str, list[Path]] = {}
    for path, finding in unconfirmed:
        by_signature.setdefault(finding.signature, []).append(path)
    n = len(unconfirmed)
    lines = [
        f"\nnot counted: {n} finding{'s' if n > 1 else ''} that a fresh worker did not give "
        "alone (growth left by the cases run before, such as what another finding lost; "
        "replay would call them gone):"
    ]
    for signature, paths in by_signature.items():
        cases = f"{len(paths)} case{'s' if len(paths) > 1 else ''}"
        lines.append(f"  {signature}: {cases}, e.g. {paths[0].name}")
    return "\n".join(lines)
