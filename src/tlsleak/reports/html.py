"""``tlsleak report OUT --html FILE``: one self-contained HTML page of a campaign.

OUT is what ``tlsleak fuzz --out`` wrote (``stats.jsonl`` and ``findings/``)
or what ``tlsleak check --out`` wrote (``findings/`` only: the page says that
there is nothing to plot).  The page has a title block (target, duration,
executions, workers, what the campaign's exit status was), the plots of the
last campaign's figures over time (:mod:`._html_plots`, from
:mod:`._html_stats`), earlier campaigns on the same folder, and the table of
findings (:mod:`._html_findings`).  The command (:mod:`tlsleak.cli.report`)
checks FILE before :func:`build` and writes the page whole, atomically.

Self-contained and inert: the styles and the SVG plots are inline, there is
no script, and a Content-Security-Policy of ``default-src 'none'`` (inline
styles allowed) keeps the browser from loading anything, so the page opens
the same offline, from a CI artefact or a mail.  Every string that comes
from the folder (targets, messages, case labels, stack frames, file names)
is escaped: a finding's message may hold anything an init path printed.
"""

from __future__ import annotations

import html
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from tlsleak._version import __version__
from tlsleak.check.findings import FindingError
from tlsleak.reports._html_findings import FindingRow, load_rows
from tlsleak.reports._html_plots import PlottingMissing, plots, require_pygal
from tlsleak.reports._html_stats import MAX_POINTS, Run, StatsError, StatsFile, downsample

__all__ = ["Folder", "ReportError", "build", "open_folder", "prepare", "render"]

STATS: Final = "stats.jsonl"
FINDINGS: Final = "findings"

#: Inline styles only; nothing else may load (see the module docstring).
_CSP = "default-src 'none'; style-src 'unsafe-inline'"

_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:1.5em auto;max-width:1400px;
padding:0 1em;color:#1d1d1f;background:#fff}
h1{font-size:1.5em;margin-bottom:.3em}h2{font-size:1.2em;margin-top:1.6em}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:.2em 1em;margin:0}
dl.facts dt{font-weight:600}dl.facts dd{margin:0}
.note{color:#555;font-size:.92em}.warn{color:#9a3412}
.plots{display:grid;grid-template-columns:repeat(auto-fill,minmax(520px,1fr));gap:1em}
figure{margin:0;border:1px solid #ddd;border-radius:6px;padding:.5em}
figure svg{width:100%;height:auto;display:block}figcaption{font-weight:600}
table{border-collapse:collapse;width:100%;font-size:.9em}
th,td{border:1px solid #ddd;padding:.3em .5em;text-align:left;vertical-align:top}
td{overflow-wrap:anywhere}table.findings td:first-child{white-space:nowrap}
table.findings td:nth-child(2){overflow-wrap:normal}
table.findings td:nth-child(7),table.findings td:nth-child(8){min-width:16em}
th{background:#f3f4f6}td.num{text-align:right;white-space:nowrap}
td.num div{white-space:normal;text-align:left}
code,pre{font-family:ui-monospace,"DejaVu Sans Mono",monospace;font-size:.95em}
td code{word-break:break-all}pre{white-space:pre-wrap;margin:.3em 0}
.kind-leak,.kind-crash{color:#b91c1c;font-weight:600}
"""


class ReportError(Exception):
    """OUT or FILE can't be used; the message is one line."""


@dataclass(frozen=True)
class Folder:
    """An output folder: a campaign's (with ``stats.jsonl``) or a check's (findings only)."""

    path: Path

    @property
    def stats(self) -> Path:
        return self.path / STATS

    @property
    def findings(self) -> Path:
        return self.path / FINDINGS

    @property
    def campaign(self) -> bool:
        return self.stats.is_file()


def open_folder(out: Path) -> Folder:
    """OUT, checked to be a campaign or check folder (:class:`ReportError` if not)."""
    if not out.exists():
        raise ReportError(f"{out}: no such folder")
    if not out.is_dir():
        raise ReportError(f"{out}: not a folder")
    folder = Folder(out)
    if not folder.campaign and not folder.findings.is_dir():
        raise ReportError(
            f"{out}: not a campaign or check folder (no {STATS} and no {FINDINGS}/: "
            "give the --out of 'tlsleak fuzz' or 'tlsleak check')"
        )
    return folder


def prepare(out: Path) -> Folder:
    """What can be refused before any work: pygal missing, OUT not an output folder."""
    try:
        require_pygal()
    except PlottingMissing as exc:
        raise ReportError(str(exc)) from None
    return open_folder(out)


def build(folder: Folder) -> tuple[str, str]:
    """Read ``folder`` and render it: the page, and a line saying what it holds."""
    try:
        stats = StatsFile.read(folder.stats) if folder.campaign else None
        rows = load_rows(folder.findings)
    except (StatsError, FindingError) as exc:
        raise ReportError(str(exc)) from None
    page = render(folder, stats, rows)
    kind = "campaign" if stats is not None else "check folder"
    return page, f"{kind} {folder.path}, {len(rows)} findings, {len(page) // 1024 + 1} KiB"


def render(folder: Folder, stats: StatsFile | None, rows: list[FindingRow]) -> str:
    """The whole page, as text."""
    run = stats.last if stats is not None else None
    if stats is None:
        title = f"tlsleak findings: {folder.path}"
    else:
        target = str(run.last.get("target", "?")) if run is not None else "?"
        title = f"tlsleak campaign: {target}"
    body = [f"<h1>{_e(title)}</h1>"]
    if stats is None:
        body += _check_header(folder, rows)
    else:
        body += _campaign_header(folder, stats, rows)
        if run is not None:
            body += _plots_section(stats, run)
            body += _earlier_runs(stats)
    body += _findings_table(rows)
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    body.append(f'<p class="note">Written by tlsleak {_e(__version__)} at {_e(stamp)}.</p>')
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head>\n<body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _facts(pairs: list[tuple[str, str]]) -> list[str]:
    """A definition list; values are HTML already (escaped by the caller)."""
    items = "".join(f"<dt>{_e(k)}</dt><dd>{v}</dd>" for k, v in pairs)
    return [f'<dl class="facts">{items}</dl>']


def _check_header(folder: Folder, rows: list[FindingRow]) -> list[str]:
    status = (
        "1 from the tlsleak check that stored these, if any is of a --fail-on kind (every kind "
        "by default)"
        if rows
        else "0 for what was stored here: no findings"
    )
    return [
        '<p class="note">A <code>tlsleak check --out</code> folder: findings only, no '
        f"<code>{STATS}</code>, so nothing to plot over time.</p>",
        *_facts(
            [
                ("Folder", f"<code>{_e(folder.path.absolute())}</code>"),
                ("Target", _e(", ".join(sorted({r.target for r in rows if r.target})) or "-")),
                ("Findings", _e(_by_kind(rows) or "none")),
                ("Exit status", _e(status)),
            ]
        ),
    ]


def _by_kind(rows: list[FindingRow]) -> str:
    kinds = Counter(r.kind for r in rows)
    return ", ".join(f"{kind} {n}" for kind, n in kinds.items())


def _campaign_header(folder: Folder, stats: StatsFile, rows: list[FindingRow]) -> list[str]:
    run = stats.last
    facts = [("Folder", f"<code>{_e(folder.path.absolute())}</code>")]
    if run is None:
        notes = [f"<code>{STATS}</code> has no lines: the campaign stopped before its first."]
        return _facts(facts) + [f'<p class="warn">{n}</p>' for n in notes]
    last, point = run.last, run.points[-1]
    workers = [w for w in last.get("workers", ()) if isinstance(w, dict)]
    states = Counter(str(w.get("state", "?")) for w in workers)
    rate = point.execs / point.elapsed if point.elapsed else 0.0
    facts += [
        ("Target", f"<code>{_e(last.get('target', '?'))}</code>"),
        ("Started", _e(run.first.get("time", "?"))),
        ("Duration", _e(f"{_duration(point.elapsed)} (last line at {last.get('time', '?')})")),
        ("Executions", _e(f"{point.execs:,} ({rate:,.1f}/s on average)")),
        ("Workers", _e(f"{len(workers)} ({', '.join(f'{s} {n}' for s, n in states.items())})")),
        ("Corpus", _e(f"{point.counts['corpus']:,} (+{int(_num(last, 'corpus_added')):,})")),
        ("Findings", _e(_findings_line(point.findings, point.counts["finding_hits"]))),
        ("Restarts", _e(f"{point.counts['restarts']:,} worker restarts")),
    ]
    network = last.get("network")
    if isinstance(network, dict):
        said = "isolated" if network.get("isolated") else f"NOT isolated ({network.get('reason')})"
        facts.append(("Network", _e(f"workers {said}")))
    facts.append(("Exit status", _e(exit_meaning(run))))
    notes = []
    if not run.ended:
        notes.append(
            "The last line is not a final one: the campaign is still running, or was killed "
            "before it could write its last line; the figures are those of that line."
        )
    if stats.torn:
        notes.append(
            f"{stats.torn} line(s) of <code>{STATS}</code> were cut short (a campaign killed "
            "while writing) and are left out."
        )
    if point.findings and not rows:
        notes.append(f"No finding folders under <code>{FINDINGS}/</code>, though stats count some.")
    unconfirmed = last.get("unconfirmed")
    if isinstance(unconfirmed, dict) and unconfirmed:
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(unconfirmed.items()))
        notes.append(
            _e(
                f"Not counted ({kinds}): findings no fresh worker gave alone (growth the "
                "worker's earlier inputs left behind); not stored, not in the figures above."
            )
        )
    return _facts(facts) + [f'<p class="warn">{n}</p>' for n in notes]


def _num(data: dict[str, object], name: str) -> float:
    value = data.get(name, 0)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def _findings_line(by_kind: dict[str, int], hits: int) -> str:
    if not by_kind:
        return "none"
    kinds = ", ".join(f"{k} {n}" for k, n in sorted(by_kind.items()))
    return f"{sum(by_kind.values())} distinct ({kinds}), seen {hits:,} times"


def exit_meaning(run: Run) -> str:
    """What the campaign's exit status was, as far as its last line tells."""
    if not run.ended:
        return "not known: no final line (still running, or killed)"
    no_work = run.last.get("no_work")
    signals = "; 130 or 143 instead if it was stopped by Ctrl-C or SIGTERM"
    if run.points[-1].findings:
        also = f" (and no work done: {no_work})" if no_work else ""
        return (
            f"1: findings{also}, with the default --fail-on (every kind); 0 if --fail-on "
            f"left out their kinds{signals}"
        )
    if no_work:
        return f"2: no work done: {no_work}"
    return f"0: the work asked for was done and nothing was found{signals}"


def _duration(seconds: float) -> str:
    whole = int(seconds)
    days, rest = divmod(whole, 86400)
    text = f"{rest // 3600}:{rest % 3600 // 60:02d}:{rest % 60:02d}"
    return f"{days}d {text}" if days else text


def _plots_section(stats: StatsFile, run: Run) -> list[str]:
    points = downsample(run.points)
    note = f"{len(run.points):,} lines of the last campaign"
    if len(points) < len(run.points):
        note += (
            f", drawn as {len(points)} points: each stands for an equal stretch of the "
            f"campaign's time (at most {MAX_POINTS}), with the counts of its last line and the "
            "mean of its lines' executions per second"
        )
    out = ["<h2>Over time</h2>", f'<p class="note">{_e(note)}.</p>', '<div class="plots">']
    for plot in plots(points):
        caption = _e(plot.title)
        if plot.note:
            caption += f' <span class="note">({_e(plot.note)})</span>'
        out.append(f'<figure class="plot"><figcaption>{caption}</figcaption>{plot.svg}</figure>')
    out.append("</div>")
    return out


def _earlier_runs(stats: StatsFile) -> list[str]:
    earlier = stats.runs[:-1]
    if not earlier:
        return []
    out = [
        "<h2>Earlier campaigns on this folder</h2>",
        "<table><tr><th>started</th><th>duration</th><th>executions</th><th>findings</th>"
        "<th>ended</th></tr>",
    ]
    for run in earlier:
        point = run.points[-1]
        out.append(
            f"<tr><td>{_e(run.first.get('time', '?'))}</td><td>{_e(_duration(point.elapsed))}</td>"
            f'<td class="num">{point.execs:,}</td>'
            f"<td>{_e(_findings_line(point.findings, point.counts['finding_hits']))}</td>"
            f"<td>{'yes' if run.ended else 'no final line'}</td></tr>"
        )
    out.append("</table>")
    return out


def _findings_table(rows: list[FindingRow]) -> list[str]:
    out = [f"<h2>Findings ({len(rows)})</h2>"]
    if not rows:
        return [*out, '<p class="note">None stored.</p>']
    out.append(
        '<table class="findings"><tr><th>kind</th><th>step</th><th>seen</th><th>growth</th>'
        "<th>reproducer</th><th>what</th><th>caller / stack</th><th>replay</th></tr>"
    )
    for r in rows:
        seen = "-" if r.count is None else f"{r.count:,}"
        if r.first_seen:
            seen = f'<span title="{_e(f"first {r.first_seen}, last {r.last_seen}")}">{seen}</span>'
        size = "-" if r.size is None else f"{r.size:,} B"
        if r.labels:
            size += f'<div class="note">{_e(", ".join(r.labels))}</div>'
        where = "".join(f"<div><code>{_e(w)}</code></div>" for w in r.where)
        if r.stack:
            frames = _e("\n".join(r.stack))
            summary = f"<summary>stack ({len(r.stack)} frames)</summary>"
            where += f"<details>{summary}<pre>{frames}</pre></details>"
        what = _e(r.problem or r.what)
        out.append(
            f'<tr class="finding"><td class="kind-{_e(r.kind)}">{_e(r.kind)}</td>'
            f"<td>{_e(r.step)}</td>"
            f'<td class="num">{seen}</td><td>{_e(r.growth)}</td><td class="num">{size}</td>'
            f"<td>{what}</td><td>{where or '-'}</td><td><code>{_e(r.replay)}</code></td></tr>"
        )
    out.append("</table>")
    return out
