"""The Markdown summary for CI (``check``/``fuzz --summary-md FILE``).

It is appended to FILE (``$GITHUB_STEP_SUMMARY`` collects every step's), says
what ran and the outcome counts, has one row per distinct finding, and says
what the exit status means.  (The campaign's summary is tested with its SARIF
log in test_sarif.py, one campaign for both.)
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tlsleak.cases.case import InitCase
from tlsleak.cases.files import write_case
from tlsleak.cases.material import KeyType, cert_bytes, identity, key_bytes
from tlsleak.cli import main
from tlsleak.reports.ci import Distinct, RunInfo
from tlsleak.reports.summary import summary_markdown

GARBAGE_CERT = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"


def _corpus(folder: Path) -> Path:
    ident = identity(KeyType.EC_P256)
    ca, cert, key = cert_bytes(ident.root), cert_bytes(ident.leaf), key_bytes(ident.key)
    for case in (
        InitCase(ca=ca, cert=cert, key=key),
        InitCase(ca=ca, cert=GARBAGE_CERT, key=key),
        InitCase(ca=ca, cert=cert, key=key[:-40]),
    ):
        write_case(folder, case)
    return folder


def _distinct(**overrides: Any) -> Distinct:
    base: dict[str, Any] = {
        "signature": "t | leak | SSL, SSL_CTX",
        "kind": "leak",
        "target": "t",
        "steps": ("key", "certificate"),
        "cases": 2,
        "what": "SSL_CTX +1, SSL +1",
        "summary": "leak in t",
        "replay": "tlsleak replay out/findings/leak-SSL+SSL_CTX-85baa8c9c147",
    }
    return Distinct(**{**base, **overrides})


def _table_rows(text: str) -> list[list[str]]:
    """The cells of the findings table's body (header and rule left out)."""
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    # A cell boundary is a pipe not escaped by a backslash.
    return [[c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]] for line in lines[2:]]


def test_one_row_per_distinct_finding_with_pipes_escaped() -> None:
    run = RunInfo("check", "t", "3 cases, ledgers fds, 3 replays", {"rejected": 2}, 1)
    crash = _distinct(
        signature="t | crash | key | SIGSEGV", kind="crash", steps=("key",), cases=1, what="a|b"
    )
    text = summary_markdown(run, [_distinct(), crash])
    assert text.startswith("### tlsleak check `t`\n")
    assert text.endswith("\n")
    assert "- ran: 3 cases, ledgers fds, 3 replays" in text
    assert "- outcomes: 2 rejected" in text
    assert "**2 distinct findings** (3 cases or inputs showed them)" in text
    rows = _table_rows(text)
    assert [r[:3] for r in rows] == [["leak", "key,certificate", "2"], ["crash", "key", "1"]]
    assert rows[0][4] == r"`t \| leak \| SSL, SSL_CTX`"
    assert rows[1][3] == r"a\|b"
    assert rows[0][5] == "`tlsleak replay out/findings/leak-SSL+SSL_CTX-85baa8c9c147`"
    assert "Exit status 1: findings" in text


def test_no_findings_and_a_run_that_did_not_do_its_work() -> None:
    run = RunInfo("fuzz", "t", "0 inputs", {"inputs": 0}, 2, problem="no input was executed")
    text = summary_markdown(run, [])
    assert "No findings." in text
    assert "| kind |" not in text
    assert "- **not done:** no input was executed" in text
    assert "Exit status 2: usage error, or the asked work was not done" in text


def test_check_appends_to_the_summary_file(tmp_path: Path) -> None:
    corpus = _corpus(tmp_path / "corpus")
    summary = tmp_path / "step_summary.md"
    summary.write_text("## build\nok\n")
    argv = ["check", "control-leaky", str(corpus), "-q", "--summary-md", str(summary)]
    assert main(argv) == 1
    assert main(["check", "control-fixed", str(corpus), "-q", "--summary-md", str(summary)]) == 0
    text = summary.read_text()
    assert text.startswith("## build\nok\n### tlsleak check `control-leaky`\n")  # kept
    leaky, fixed = text.split("### tlsleak check `control-fixed`")
    assert "- outcomes: 1 accepted, 2 rejected" in leaky
    ((kind, steps, cases, growth, signature, replay),) = _table_rows(leaky)
    assert (kind, set(steps.split(",")), cases) == ("leak", {"certificate", "key"}, "2")
    assert growth.startswith(r"SSL\_CTX +1, SSL +1")
    assert signature == r"`control-leaky \| leak \| SSL, SSL_CTX`"
    assert replay.startswith(f"`tlsleak check control-leaky {corpus}/")
    assert "Exit status 1" in leaky
    assert "No findings." in fixed
    assert "Exit status 0: clean" in fixed


def test_a_summary_file_that_cannot_be_written_is_refused_first(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    corpus = _corpus(tmp_path / "corpus")
    out = tmp_path / "out"
    argv = ["check", "control-leaky", str(corpus), "--summary-md", str(tmp_path), "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"--summary-md {tmp_path}: is a folder" in err
    assert not out.exists()
