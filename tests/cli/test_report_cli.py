"""``tlsleak report OUT --html FILE``: a page, or one line and exit status 2.

Bad input (OUT missing or not an output folder, garbage in ``stats.jsonl``,
FILE that can't be written, pygal missing) is one line on stderr and exit
status 2, never a traceback; FILE is checked before any work, and written
whole or not at all.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from tlsleak.cli import main

pytest.importorskip("pygal", reason="the 'report' extra (pygal) is not installed")

LINE = {
    "time": "2026-12-05T07:00:00+00:00",
    "elapsed": 10.0,
    "target": "control-leaky",
    "execs": 100,
    "exec_per_s": 10.0,
    "corpus": 5,
    "error_pairs": 3,
    "alloc_buckets": 2,
    "findings": {},
    "finding_hits": 0,
    "restarts": 0,
    "workers": [{"index": 0, "state": "finished", "execs": 100, "restarts": 0}],
}


def campaign(tmp_path: Path, text: str | None = None) -> Path:
    out = tmp_path / "out"
    out.mkdir()
    (out / "stats.jsonl").write_text(json.dumps(LINE) + "\n" if text is None else text)
    return out


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert "Traceback" not in err
    assert err.startswith("tlsleak: error: ")
    return err.strip()


def test_a_campaign_folder_becomes_a_page(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, page = campaign(tmp_path), tmp_path / "page.html"
    page.write_text("an older page")
    assert main(["report", str(out), "--html", str(page)]) == 0
    assert capsys.readouterr().out.startswith(f"{page}: campaign {out}, 0 findings")
    assert "tlsleak campaign: control-leaky" in page.read_text()
    # Written atomically: no temporary or probe file is left beside it.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "page.html"]


@pytest.mark.parametrize(
    ("make", "said"),
    [
        (lambda t: t / "missing", "no such folder"),
        (lambda t: (t / "f").write_text("x") and t / "f", "not a folder"),
        (lambda t: t, "not a campaign or check folder"),
    ],
)
def test_out_that_is_no_output_folder_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make: object, said: str
) -> None:
    folder = make(tmp_path)  # type: ignore[operator]
    assert main(["report", str(folder), "--html", str(tmp_path / "p.html")]) == 2
    assert said in one_line_error(capsys)
    assert not (tmp_path / "p.html").exists()


def test_garbage_stats_is_one_line_naming_the_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = campaign(tmp_path, json.dumps(LINE) + "\n\x00\x01 garbage\n" + json.dumps(LINE) + "\n")
    assert main(["report", str(out), "--html", str(tmp_path / "p.html")]) == 2
    assert one_line_error(capsys).endswith("stats.jsonl:2: not a stats line (not JSON)")
    assert not (tmp_path / "p.html").exists()


def test_a_torn_last_line_still_makes_a_page(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = campaign(tmp_path, json.dumps(LINE) + "\n" + json.dumps(LINE)[:40])
    assert main(["report", str(out), "--html", str(tmp_path / "p.html")]) == 0
    assert "were cut short" in (tmp_path / "p.html").read_text()


@pytest.mark.parametrize(
    ("where", "said"),
    [
        (lambda t: t / "no-such-dir" / "p.html", "folder"),
        (lambda t: t / "out" / "stats.jsonl" / "p.html", "folder"),
        (lambda t: t, "is a folder"),
    ],
)
def test_an_unwritable_file_is_refused_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], where: object, said: str
) -> None:
    # Garbage stats: had the work started, that would be the error.
    out = campaign(tmp_path, "garbage\n")
    page = where(tmp_path)  # type: ignore[operator]
    assert main(["report", str(out), "--html", str(page)]) == 2
    line = one_line_error(capsys)
    assert f"--html {page}: {said}" in line, line


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_folder_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = campaign(tmp_path)
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    assert main(["report", str(out), "--html", str(locked / "p.html")]) == 2
    assert "cannot write in" in one_line_error(capsys)


def test_dev_stdout_gets_the_page(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    # A stream is written in place (never replaced by a file), as --json /dev/stdout is.
    assert main(["report", str(campaign(tmp_path)), "--html", "/dev/stdout"]) == 0
    captured = capfd.readouterr()
    assert captured.out.startswith("<!DOCTYPE html>")
    assert captured.out.rstrip().endswith("</html>")
    assert captured.err.startswith("/dev/stdout: campaign ")
    assert Path("/dev/stdout").exists()


def test_without_pygal_one_line_says_how_to_install_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pygal", None)
    out = campaign(tmp_path)
    assert main(["report", str(out), "--html", str(tmp_path / "p.html")]) == 2
    assert one_line_error(capsys) == (
        "tlsleak: error: tlsleak report --html needs pygal: pip install 'tlsleak[report]'"
    )


def test_html_is_required(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(campaign(tmp_path))]) == 2
    assert "--html" in one_line_error(capsys)
