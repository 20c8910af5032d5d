"""The JSON report of ``tlsleak check``: every finding, with the file that showed it."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from tlsleak._version import __version__
from tlsleak.cases.case import InitCase
from tlsleak.check.oracle import Finding, FindingKind
from tlsleak.reports.json_report import check_report, encode
from tlsleak.targets.base import Outcome, Status


def test_report_holds_the_run_and_every_finding() -> None:
    finding = Finding(
        FindingKind.LEAK,
        "control-leaky",
        InitCase(cert=b"x"),
        Outcome(Status.REJECTED, step="certificate", message="bad"),
        delta={"SSL_CTX": 1},
        replays=3,
    )
    files = [Path("/c/a"), Path("/c/b")]
    report = check_report(
        "control-leaky",
        ledgers=["openssl-objects", "fds"],
        replays=3,
        files=files,
        statuses=Counter(accepted=1, rejected=1),
        findings=[(Path("/c/b"), finding)],
    )
    assert report == {
        "format": "tlsleak-check/1",
        "tool": "tlsleak",
        "version": __version__,
        "target": "control-leaky",
        "ledgers": ["openssl-objects", "fds"],
        "blind": {},
        "replays": 3,
        "cases": 2,
        "outcomes": {"accepted": 1, "rejected": 1},
        "findings": [{**finding.to_json(), "file": "/c/b"}],
    }
    data = encode(report)
    assert data.endswith(b"}\n")
    assert json.loads(data) == report
    assert data.decode().startswith('{\n  "format": "tlsleak-check/1",\n  "tool": "tlsleak",')
