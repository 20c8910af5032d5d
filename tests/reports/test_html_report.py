"""The HTML page of an output folder: stats read back, escaped, thinned, self-contained.

Folders here are made by hand (a ``stats.jsonl`` written line by line, findings
stored through :class:`FindingStore`), so nothing runs a target; a real
campaign's page, opened in a browser, is tests/reports/test_html_browser.py.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from tlsleak.cases.case import InitCase
from tlsleak.check.findings import FindingStore
from tlsleak.check.oracle import Finding, FindingKind
from tlsleak.reports import html as html_report
from tlsleak.reports._html_stats import MAX_POINTS, Point, StatsError, StatsFile, downsample
from tlsleak.reports.html import ReportError, open_folder, prepare, render
from tlsleak.targets.base import Outcome, Status

pytest.importorskip("pygal", reason="the 'report' extra (pygal) is not installed")

HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'


def stats_line(elapsed: float, execs: int, **extra: Any) -> dict[str, Any]:
    """A stats line as tlsleak.fuzz.stats writes it (the fields the page reads)."""
    line: dict[str, Any] = {
        "time": "2026-12-05T07:00:00+00:00",
        "elapsed": elapsed,
        "target": "control-leaky",
        "execs": execs,
        "exec_per_s": 100.0,
        "corpus": execs // 10,
        "corpus_added": execs // 20,
        "features": 10,
        "error_pairs": 5 + execs // 100,
        "alloc_buckets": 3,
        "alloc_sites": 0,
        "alloc_paths": 0,
        "findings": {"leak": 1} if execs > 50 else {},
        "finding_hits": execs // 2,
        "restarts": 0,
        "workers": [{"index": 0, "state": "running", "execs": execs, "restarts": 0}],
    }
    line.update(extra)
    return line


def write_stats(out: Path, lines: list[dict[str, Any]], tail: str = "") -> Path:
    out.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(line) + "\n" for line in lines) + tail
    (out / "stats.jsonl").write_text(text)
    return out


def final(elapsed: float, execs: int, **extra: Any) -> dict[str, Any]:
    workers = [{"index": 0, "state": "finished", "execs": execs, "restarts": 0}]
    return stats_line(elapsed, execs, workers=workers, **extra)


def store_finding(
    out: Path,
    message: str = "bad key",
    kind: FindingKind = FindingKind.EXCEPTION,
    label: str = "key-truncated",
    **fields: Any,
) -> Path:
    finding = Finding(
        kind,
        "control-leaky",
        InitCase(key=b"k" * 7, labels=(label,)),
        Outcome(Status.ERROR, step="key", message=message),
        **fields,
    )
    folder, created = FindingStore(out / "findings").add(finding, finding.case)
    assert created
    return folder


def page_of(out: Path) -> str:
    folder = open_folder(out)
    stats = StatsFile.read(folder.stats) if folder.campaign else None
    return render(folder, stats, html_report.load_rows(folder.findings))


# --- stats.jsonl read back -----------------------------------------------------------------


def test_a_torn_last_line_is_skipped_and_said(tmp_path: Path) -> None:
    lines = [stats_line(5.0, 10), stats_line(10.0, 60)]
    out = write_stats(tmp_path / "out", lines, tail='{"time":"2026-12-05T07:00:15+00:00","elap')
    stats = StatsFile.read(out / "stats.jsonl")
    assert stats.torn == 1
    assert stats.lines == 2
    assert [p.execs for p in stats.runs[0].points] == [10, 60]
    assert "were cut short" in page_of(out)
    # Negative control: the same file whole has nothing torn to say.
    whole = write_stats(tmp_path / "whole", lines)
    assert not StatsFile.read(whole / "stats.jsonl").torn
    assert "were cut short" not in page_of(whole)


def test_a_torn_line_then_a_new_campaign_keeps_both(tmp_path: Path) -> None:
    # Killed mid-write, then a new campaign appended its first line after the torn one.
    first = [stats_line(5.0, 10), stats_line(10.0, 60)]
    torn = json.dumps(stats_line(15.0, 90))[:70]
    second = [stats_line(2.0, 3), final(9.0, 120)]
    out = write_stats(tmp_path / "out", first)
    text = (out / "stats.jsonl").read_text() + torn + "".join(json.dumps(x) + "\n" for x in second)
    (out / "stats.jsonl").write_text(text)
    stats = StatsFile.read(out / "stats.jsonl")
    assert stats.torn == 1
    assert stats.lines == 4
    assert [[p.execs for p in run.points] for run in stats.runs] == [[10, 60], [3, 120]]
    assert "1 line(s) of <code>stats.jsonl</code> were cut short" in page_of(out)


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        ("this is not json\n", "not JSON"),
        ("[1, 2]\n", "not a JSON object"),
        ('{"execs": 3}\n', "no 'elapsed'"),
        ('{"elapsed": "soon", "execs": 3}\n', "'elapsed' is not a number"),
        ('{"elapsed": 1, "execs": -3}\n', "'execs' is negative"),
        (
            '{"elapsed": 1, "execs": 3, "findings": {"leak": "many"}}\n',
            "'findings' is not counts by kind",
        ),
        ('{"elapsed": NaN, "execs": 3}\n', "'elapsed' is not a number"),
        (
            '{"format": "tlsleak-stats/2", "elapsed": 1, "execs": 3}\n',
            "format tlsleak-stats/2 is newer than this tlsleak reads (tlsleak-stats/1): "
            "upgrade tlsleak to read it",
        ),
        ('{"format": "tlsleak-check/1", "elapsed": 1, "execs": 3}\n', "is not tlsleak-stats"),
    ],
)
def test_garbage_is_refused_with_its_line(tmp_path: Path, bad: str, why: str) -> None:
    # Garbage in the middle, or a whole last line (it has its newline): not torn.
    for where, lines in (("middle", [stats_line(5.0, 10)]), ("last", [])):
        out = tmp_path / where
        out.mkdir()
        text = json.dumps(stats_line(1.0, 1)) + "\n" + bad + "".join(
            json.dumps(line) + "\n" for line in lines
        )
        (out / "stats.jsonl").write_text(text)
        with pytest.raises(StatsError) as caught:
            StatsFile.read(out / "stats.jsonl")
        assert str(caught.value).startswith(f"{out / 'stats.jsonl'}:2: not a stats line (")
        assert str(caught.value).endswith(f"{why})")


def test_a_line_too_long_is_refused_not_read_whole(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "stats.jsonl").write_bytes(b"x" * (2 << 20))
    with pytest.raises(StatsError, match=r"stats.jsonl:1: not a stats line \(over 1 MiB long\)"):
        StatsFile.read(out / "stats.jsonl")


def test_later_and_earlier_fields_are_tolerated(tmp_path: Path) -> None:
    # A "format" field (a later version) and no allocation-site fields (an earlier one).
    newer = final(10.0, 100, format="tlsleak-stats/1", something_new={"a": 1})
    older = {k: v for k, v in stats_line(5.0, 10).items() if not k.startswith("alloc_s")}
    out = write_stats(tmp_path / "out", [older, newer])
    stats = StatsFile.read(out / "stats.jsonl")
    assert [p.counts["alloc_sites"] for p in stats.runs[0].points] == [0, 0]
    assert "tlsleak campaign: control-leaky" in page_of(out)


def test_each_campaign_on_a_folder_is_a_run_and_the_last_is_plotted(tmp_path: Path) -> None:
    first = [stats_line(5.0, 10), stats_line(10.0, 20), final(12.0, 25)]
    second = [stats_line(5.0, 7), final(9.0, 90)]
    out = write_stats(tmp_path / "out", first + second)
    stats = StatsFile.read(out / "stats.jsonl")
    assert len(stats.runs) == 2
    assert [p.execs for p in stats.runs[0].points] == [10, 25]  # first and last only
    assert [p.execs for p in stats.runs[1].points] == [7, 90]
    page = page_of(out)
    assert "Earlier campaigns on this folder" in page
    assert "Executions</dt><dd>90 " in page


# --- days of lines make a small page --------------------------------------------------------


def test_downsample_keeps_the_first_the_counts_and_the_mean_rate() -> None:
    points = [
        Point(float(i), i * 10, float(i % 2) * 100, {"corpus": i}, {"leak": i // 500})
        for i in range(5000)
    ]
    thin = downsample(points, 100)
    assert len(thin) <= 101
    assert thin[0] == points[0]
    assert thin[-1].execs == points[-1].execs
    assert thin[-1].findings == points[-1].findings
    # Each point of the middle stands for some 50 lines, half at 0/s and half at 100/s.
    assert all(45 <= p.exec_per_s <= 55 for p in thin[1:-1])
    assert downsample(points[:100], 100) == points[:100]  # under the limit: unchanged


def test_a_huge_stats_file_makes_a_page_as_small_as_a_short_one(tmp_path: Path) -> None:
    def page(name: str, count: int) -> str:
        lines = [stats_line(5.0 * i, 10 * i) for i in range(1, count + 1)]
        return page_of(write_stats(tmp_path / name, lines))

    def drawn(text: str) -> int:
        """Points of the first plotted line (pygal: ``M x y L x y x y ...``)."""
        path = re.search(r'<path d="M([^"]*)" class="line reactive nofill"', text)
        assert path, "no plotted line"
        return len(path.group(1).replace("L", "").split()) // 2

    short, huge = page("short", MAX_POINTS), page("huge", 20 * MAX_POINTS)
    assert drawn(short) == MAX_POINTS
    assert MAX_POINTS // 2 < drawn(huge) <= MAX_POINTS + 1
    assert len(huge) < len(short) * 1.2, (len(short), len(huge))
    assert "drawn as" in huge
    assert "drawn as" not in short
    # Positive control: below the limit every line is a point.
    assert drawn(page("half", MAX_POINTS // 2)) == MAX_POINTS // 2


# --- what the page says ----------------------------------------------------------------------


def test_every_string_from_the_folder_is_escaped(tmp_path: Path) -> None:
    out = write_stats(
        tmp_path / "out",
        [final(10.0, 100, target=HOSTILE, findings={HOSTILE: 1}, no_work=HOSTILE)],
    )
    store_finding(
        out, message=HOSTILE, label=HOSTILE, stack=(HOSTILE, "b.c:2 (f)"), caller=HOSTILE
    )
    page = page_of(out)
    assert "<script" not in page.lower()
    assert "<img" not in page.lower()
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    # Positive control: the strings reached the page, as text: the title (twice), the
    # exit status, the table's what, label, caller and stack (the plot's legend is SVG text).
    assert page.count("&lt;script&gt;alert(&quot;x&quot;)") >= 7, page


def test_the_page_loads_nothing_and_runs_nothing(tmp_path: Path) -> None:
    out = write_stats(tmp_path / "out", [stats_line(5.0 * i, 100 * i) for i in range(1, 30)])
    store_finding(out)
    page = page_of(out)
    assert "default-src 'none'" in page
    for loader in ("<script", "src=", "href=", "url(", "@import", "<link"):
        assert loader not in page.lower(), loader
    assert page.count('class="pygal-chart"') >= 4


def test_the_findings_table_has_a_row_per_folder(tmp_path: Path) -> None:
    out = write_stats(tmp_path / "out", [final(10.0, 100, findings={"exception": 1, "leak": 1})])
    store_finding(out, "bad key")
    store_finding(
        out,
        "rejected",
        kind=FindingKind.LEAK,
        delta={"SSL_CTX": 1, "heap.blocks": 3},
        replays=3,
        caller="control_leaky.c:19 (tls_init_once)",
        stack=("malloc.so(x)", "control_leaky.c:19 (tls_init_once)"),
    )
    broken = out / "findings" / "exception-key-000000000000"
    broken.mkdir()
    (broken / "finding.json").write_text("{ torn")
    # JSON that reads as a finding, with a delta that is not counts.
    odd = store_finding(out, "odd", kind=FindingKind.LEAK, delta={"SSL": 1})
    data = json.loads((odd / "finding.json").read_text())
    data["delta"] = {"SSL": "many"}
    (odd / "finding.json").write_text(json.dumps(data))
    page = page_of(out)
    rows = re.findall(r'<tr class="finding">(.*?)</tr>', page, re.DOTALL)
    assert len(rows) == 4
    assert "not a finding (" in rows[3]
    # Leaks first, then exceptions; the unreadable folder last, saying why.
    assert "SSL_CTX +1, heap.blocks +3 per attempt" in rows[0]
    assert "lost at control_leaky.c:19 (tls_init_once)" in rows[0]
    assert "stack (2 frames)" in rows[0]
    assert "bad key" in rows[1]
    assert "7 B" in rows[1]
    assert "key-truncated" in rows[1]
    assert "not valid JSON" in rows[2]
    for row in rows:
        assert "tlsleak replay " in row


def test_the_exit_status_is_told_as_the_last_line_tells_it(tmp_path: Path) -> None:
    def status(name: str, *lines: dict[str, Any]) -> str:
        page = page_of(write_stats(tmp_path / name, list(lines)))
        found = re.search(r"<dt>Exit status</dt><dd>(.*?)</dd>", page)
        assert found, page
        return found.group(1)

    assert status("findings", final(10.0, 100)).startswith("1: findings")
    assert status("clean", final(10.0, 40)).startswith("0: the work asked for was done")
    idle = final(10.0, 0, no_work="no input was executed within --time 5s")
    assert status("idle", idle) == "2: no work done: no input was executed within --time 5s"
    assert status("killed", stats_line(10.0, 100)).startswith("not known: no final line")


def test_a_check_folder_has_findings_and_says_there_is_nothing_to_plot(tmp_path: Path) -> None:
    out = tmp_path / "checked"
    store_finding(out)
    page = page_of(out)
    assert "findings only" in page
    assert "<dt>Target</dt><dd>control-leaky</dd>" in page
    assert 'class="pygal-chart"' not in page
    assert len(re.findall(r'<tr class="finding">', page)) == 1


def test_an_empty_stats_file_is_a_campaign_that_stopped_before_its_first_line(
    tmp_path: Path,
) -> None:
    out = write_stats(tmp_path / "out", [])
    assert "has no lines" in page_of(out)


def test_folders_that_are_not_output_folders_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="no such folder"):
        open_folder(tmp_path / "missing")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ReportError, match="not a folder"):
        open_folder(tmp_path / "file")
    with pytest.raises(ReportError, match="not a campaign or check folder"):
        open_folder(tmp_path)


def test_without_pygal_the_report_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = write_stats(tmp_path / "out", [final(10.0, 100)])
    monkeypatch.setitem(sys.modules, "pygal", None)  # import pygal now raises ImportError
    with pytest.raises(ReportError, match=r"needs pygal: pip install 'tlsleak\[report\]'"):
        prepare(out)
