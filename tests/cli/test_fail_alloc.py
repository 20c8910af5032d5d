"""check --fail-alloc: which allocations the sweep fails, and the tail bugs it must find."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from tlsleak.cases.case import InitCase
from tlsleak.cases.files import write_case
from tlsleak.check.failalloc import failure_points, tail_size
from tlsleak.cli import main


def test_every_allocation_when_the_budget_allows() -> None:
    assert failure_points(InitCase(cert=b"x"), 5, 64) == [1, 2, 3, 4, 5]
    assert failure_points(InitCase(cert=b"x"), 64, 64) == list(range(1, 65))


@pytest.mark.parametrize(("count", "budget"), [(65, 64), (1000, 64), (30000, 64), (500, 8)])
def test_the_sweep_keeps_its_budget_and_prefers_the_tail(count: int, budget: int) -> None:
    case = InitCase(cert=b"some certificate")
    points = failure_points(case, count, budget)
    assert len(points) == budget
    assert points == sorted(set(points))
    assert points == failure_points(case, count, budget)  # seeded by the case
    assert points[0] == 1
    tail = tail_size(count, budget)
    assert tail == budget // 4
    assert points[-tail:] == list(range(count - tail + 1, count + 1))


def test_the_rest_is_spread_one_point_per_stratum() -> None:
    count, budget = 10_000, 64
    points = failure_points(InitCase(key=b"k"), count, budget)
    middle = points[1 : -tail_size(count, budget)]
    gaps = [b - a for a, b in itertools.pairwise(middle)]
    stratum = (count - tail_size(count, budget)) / len(middle)
    assert max(gaps) < 2 * stratum + 1  # no stretch of the run left out
    assert failure_points(InitCase(key=b"other"), count, budget) != points


# --- the tail bug: the NULL of a failed BIO_new, used at the end of a refused input ----


def _crashed_files(report: Path) -> set[str]:
    findings = json.loads(report.read_text())["findings"]
    return {f["file"] for f in findings if f["kind"] == "crash"}


def test_the_default_sweep_finds_a_late_bio_new_on_every_case_that_reaches_it(
    c_controls: dict[str, Path],
    bad_cert_case: InitCase,
    bad_key_case: InitCase,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    folder = tmp_path / "refused"
    for case in (bad_cert_case, bad_key_case, InitCase(ca=b"not a certificate")):
        write_case(folder, case)
    target = f"c:{c_controls['bionull']}"
    assert main(["check", target, str(folder)]) == 0  # no input reaches the crash alone
    capsys.readouterr()
    report = tmp_path / "r.json"
    assert main(["check", target, str(folder), "--fail-alloc", "--json", str(report)]) == 1
    assert "killed by SIGSEGV" in capsys.readouterr().out
    assert len(_crashed_files(report)) == 3  # every refused case: each one reaches it
    crashes = [f for f in json.loads(report.read_text())["findings"] if f["kind"] == "crash"]
    assert len(crashes) == 3  # one finding per case, not one per failing allocation


def test_the_late_bio_new_is_never_reached_by_an_accepted_case(
    c_controls: dict[str, Path],
    valid_case: InitCase,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Negative control: a valid input never fails a step, so no single
    # failing allocation leaves BIO_new to fail too: no crash.
    folder = tmp_path / "valid"
    write_case(folder, valid_case)
    report = tmp_path / "r.json"
    target = f"c:{c_controls['bionull']}"
    main(["check", target, str(folder), "--fail-alloc", "--json", str(report)])
    capsys.readouterr()
    assert _crashed_files(report) == set()


def test_a_stored_tail_crash_replays(
    c_controls: dict[str, Path],
    bad_cert_case: InitCase,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    folder = tmp_path / "refused"
    write_case(folder, bad_cert_case)
    out = tmp_path / "out"
    target = f"c:{c_controls['bionull']}"
    argv = ["check", target, str(folder), "--fail-alloc", "--out", str(out)]
    assert main([*argv, "--minimize-budget", "5"]) == 1
    (crash,) = (out / "findings").glob("crash-*")
    capsys.readouterr()
    assert main(["replay", str(crash)]) == 1
    assert "killed by SIGSEGV" in capsys.readouterr().out
