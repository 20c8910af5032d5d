"""The text report of ``tlsleak check``: one row per distinct finding, sites, a replay line."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from tlsleak.cases.case import InitCase
from tlsleak.check.oracle import Finding, FindingKind
from tlsleak.ledgers.base import Site
from tlsleak.reports.text import SITES_SHOWN, check_report
from tlsleak.targets.base import Outcome, Status

CORPUS = Path("/corpus")


def _leak(step: str, *, sites: tuple[Site, ...] = ()) -> Finding:
    return Finding(
        FindingKind.LEAK,
        "control-leaky",
        InitCase(cert=b"x"),
        Outcome(Status.REJECTED, step=step, message="bad"),
        delta={"SSL_CTX": 1, "SSL": 1},
        sites=sites,
    )


def test_a_clean_run_is_two_lines() -> None:
    files = [CORPUS / "a", CORPUS / "b"]
    text = check_report("pyopenssl", files, Counter(accepted=1, rejected=1), [], 0.3)
    assert text.splitlines() == [
        "pyopenssl: 2 cases in 0.3s (1 accepted, 1 rejected)",
        "no findings: every live count returned to its baseline",
    ]


def test_findings_with_one_signature_are_one_row_with_every_step() -> None:
    findings = [
        (CORPUS / "k1", _leak("key")),
        (CORPUS / "c1", _leak("certificate")),
        (CORPUS / "k2", _leak("key")),
    ]
    text = check_report("control-leaky", [p for p, _ in findings], Counter(rejected=3), findings, 1)
    lines = text.splitlines()
    assert lines[1] == "3 findings, 1 distinct:"
    header, row = lines[3], lines[4]
    assert header.split() == ["KIND", "STEP", "CASES", "WHAT", "EXAMPLE"]
    # Most frequent step first; the example is the first case that showed it.
    assert row.split() == ["leak", "key,certificate", "3", "SSL_CTX", "+1,", "SSL", "+1", "k1"]
    assert lines[-1] == "replay one: tlsleak check control-leaky /corpus/EXAMPLE"
    assert "where the blocks" not in text


def test_sites_shown_are_capped_and_the_rest_counted() -> None:
    sites = tuple(Site(f"ssl/f{i}.c", i, 1, 8 * i) for i in range(1, SITES_SHOWN + 3))
    findings = [(CORPUS / "k1", _leak("key", sites=sites))]
    text = check_report("control-leaky", [CORPUS / "k1"], Counter(rejected=1), findings, 1)
    assert "where the blocks of the leak at key were allocated (example k1):" in text
    assert "  ssl/f1.c:1  1 blocks, 8 bytes" in text.splitlines()
    assert f"ssl/f{SITES_SHOWN}.c" in text
    assert f"ssl/f{SITES_SHOWN + 1}.c" not in text
    assert "  ... 2 more sites in the JSON report" in text.splitlines()
