"""How a campaign shows itself: a live status line, plain periodic lines, a summary table.

On a terminal the status line is redrawn in place (rich's ``Live``), and
messages (a worker given up, a full disk) are printed above it.  Anywhere else
(CI logs, ``| tee``) a plain line is printed every few seconds, so a log holds
a readable history rather than control characters.  Both start at launch
(``starting:`` while no input has run) and go on while the findings still
queued are minimised at the end (``stopping:``).  Both go to stderr; the
summary table goes to stdout, after the campaign.
"""

from __future__ import annotations

from typing import TextIO

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from tlsleak.fuzz.stats import CampaignStatus

__all__ = [
    "LiveDisplay",
    "PlainDisplay",
    "status_line",
    "summary_table",
    "summary_title",
    "unconfirmed_lines",
]


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 3600:
        return f"{seconds // 60}:{seconds % 60:02d}"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _restarts(status: CampaignStatus, noun: str = "restarts") -> str:
    """``146 restarts (73.0/min)``: a target that keeps killing its workers shows here."""
    minutes = status.elapsed / 60
    rate = f" ({status.restarts / minutes:,.1f}/min)" if minutes > 0 else ""
    return f"{status.restarts:,} {noun}{rate}"


def _workers(status: CampaignStatus) -> str:
    running = sum(w.state == "running" for w in status.workers)
    line = f"workers {running}/{len(status.workers)} running"
    others = [
        f"w{w.index} {w.state}" + (f" ({w.message})" if w.message else "")
        for w in status.workers
        if w.state != "running"
    ]
    if status.restarts:
        line += f", {_restarts(status)}"
    if others and not status.stopping:
        line += " [" + "; ".join(others) + "]"
    return line


def status_line(status: CampaignStatus) -> str:
    """One line: elapsed, speed, corpus, coverage, findings by kind, worker health."""
    kinds = status.findings_by_kind()
    findings = ", ".join(f"{kind} {n}" for kind, n in sorted(kinds.items())) or "none"
    if status.unconfirmed:  # apart: not counted (tlsleak.check.alone)
        findings += f" (+{len(status.unconfirmed)} unconfirmed)"
    head = "stopping: " if status.stopping else "starting: " if status.starting else ""
    return (
        f"{head}{_duration(status.elapsed)} {status.target}: "
        f"{status.execs:,} execs ({status.exec_rate:,.0f}/s), "
        f"corpus {status.corpus:,} (+{status.corpus_added:,}), "
        f"cov {status.error_pairs} errors/{status.alloc_buckets} alloc buckets"
        f"{f'/{status.alloc_sites:,} sites' if status.alloc_sites else ''}, "
        f"findings: {findings}, {_workers(status)}"
    )


class PlainDisplay:
    """A line every ``every`` seconds (the campaign calls :meth:`update` on its own clock)."""

    def __init__(self, out: TextIO) -> None:
        self.out = out

    def update(self, status: CampaignStatus) -> None:
        print(status_line(status), file=self.out, flush=True)

    def message(self, text: str) -> None:
        print(f"tlsleak: {text}", file=self.out, flush=True)

    def close(self) -> None:
        pass


class LiveDisplay:
    """A status line redrawn in place on a terminal."""

    def __init__(self, out: TextIO) -> None:
        self.console = Console(file=out, highlight=False)
        self.live = Live(Text(""), console=self.console, auto_refresh=False, transient=True)
        self.live.start()

    def update(self, status: CampaignStatus) -> None:
        self.live.update(Text(status_line(status), overflow="ellipsis", no_wrap=True), refresh=True)

    def message(self, text: str) -> None:
        self.console.print(f"tlsleak: {text}", markup=False)

    def close(self) -> None:
        self.live.stop()


def summary_title(status: CampaignStatus) -> str:
    """The end-of-campaign totals, one line."""
    rate = status.execs / status.elapsed if status.elapsed > 0 else 0.0
    restarts = f", {_restarts(status, 'worker restarts')}" if status.restarts else ""
    return (
        f"{status.target}: {status.execs:,} executions in {_duration(status.elapsed)} "
        f"({rate:,.0f}/s on {len(status.workers)} workers){restarts}, corpus "
        f"{status.corpus:,} (+{status.corpus_added:,}), {status.error_pairs} error pairs, "
        f"{status.alloc_buckets} allocation buckets"
        + (f", {status.alloc_sites:,} allocation sites" if status.alloc_sites else "")
    )


def summary_table(status: CampaignStatus) -> Table:
    """One row per distinct finding (printed after :func:`summary_title`)."""
    table = Table(expand=False)
    table.add_column("kind")
    table.add_column("step")
    table.add_column("seen", justify="right")
    table.add_column("what")
    table.add_column("reproducer")
    for record in sorted(status.findings, key=lambda r: (r.kind, r.step, r.signature)):
        where = str(record.folder) if record.folder is not None else "(not stored)"
        if record.folder is not None and not record.minimized:
            where += " (not minimised)"
        table.add_row(record.kind, record.step_list(), f"{record.count:,}", record.summary, where)
    if not status.findings:
        table.add_row("-", "-", "0", "no findings", "-")
    return table


def unconfirmed_lines(status: CampaignStatus) -> str:
    """The findings no fresh checker gave alone, apart from the table ("" if none).

    A worker found them after other inputs, and none of the inputs tried in a
    process that had run nothing else gave them (tlsleak.check.alone): growth
    the earlier inputs left behind.  No folder; they don't set the exit status.
    """
    if not status.unconfirmed:
        return ""
    n = len(status.unconfirmed)
    lines = [
        f"not counted: {n} finding{'s' if n > 1 else ''} that a fresh worker did not give "
        "alone (growth left by the worker's earlier inputs, such as what another finding "
        "lost; replay would call them gone), not stored:"
    ]
    for record in sorted(status.unconfirmed, key=lambda r: (r.kind, r.signature)):
        lines.append(f"  {record.kind} {record.signature}: seen {record.count:,} times")
    return "\n".join(lines)
