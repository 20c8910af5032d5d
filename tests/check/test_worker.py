"""Isolation: a crash or a hang in the target is a finding, and checking goes on."""

from __future__ import annotations

from pathlib import Path

import pytest

from tlsleak import FindingKind, InitCase, Status
from tlsleak.cases.files import write_case
from tlsleak.check.worker import IsolatedOracle, WorkerError
from tlsleak.cli import main

TRAPS = """
import os, signal, time

def init(case):
    if case.cert == b"CRASH":
        os.kill(os.getpid(), signal.SIGSEGV)
    if case.cert == b"HANG":
        time.sleep(60)
"""


@pytest.fixture
def traps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "tlsleak_test_traps.py").write_text(TRAPS)
    monkeypatch.chdir(tmp_path)
    return "tlsleak_test_traps:init"


def test_crash_and_hang_are_findings_and_the_run_goes_on(traps: str) -> None:
    with IsolatedOracle(traps, timeout=2) as oracle:
        crash = oracle.check(InitCase(cert=b"CRASH"))
        after_crash = oracle.check(InitCase(cert=b"fine"))
        hang = oracle.check(InitCase(cert=b"HANG"))
        after_hang = oracle.check(InitCase(cert=b"fine"))
    [crashed] = crash.findings
    assert crashed.kind is FindingKind.CRASH
    assert "SIGSEGV" in crashed.outcome.message
    assert crashed.case.cert == b"CRASH"
    [timed_out] = hang.findings
    assert timed_out.kind is FindingKind.TIMEOUT
    assert after_crash.clean
    assert after_hang.clean
    assert after_hang.outcome.status is Status.ACCEPTED
    assert oracle.restarts == 2


def test_isolated_verdicts_match_in_process_ones(bad_cert_case: InitCase) -> None:
    with IsolatedOracle("control-leaky") as oracle:
        verdict = oracle.check(bad_cert_case)
    [finding] = verdict.findings
    assert finding.kind is FindingKind.LEAK
    assert dict(finding.delta) == {"SSL_CTX": 1, "SSL": 1}
    assert finding.case == bad_cert_case


def test_setup_errors_are_one_line() -> None:
    with pytest.raises(WorkerError, match="unknown target"):
        IsolatedOracle("no-such-target").start()


def test_check_reports_a_crash_and_keeps_going(
    traps: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "cases"
    for cert in (b"CRASH", b"ok-1", b"HANG", b"ok-2"):
        write_case(folder, InitCase(cert=cert))
    assert main(["check", traps, str(folder), "--timeout", "2"]) == 1
    out = capsys.readouterr().out
    assert "4 cases" in out
    assert "crash" in out
    assert "timeout" in out
    assert "killed by SIGSEGV" in out
