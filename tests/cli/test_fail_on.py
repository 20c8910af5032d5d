"""--fail-on KINDS: the exit status gates on the kinds a project cares about."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tlsleak.cli import main


def _report(path: Path) -> list[str]:
    return [f["kind"] for f in json.loads(path.read_text())["findings"]]


def test_check_exits_clean_when_only_ungated_kinds_are_found(
    c_controls: dict[str, Path],
    small_corpus: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    target = f"c:{c_controls['fixed-keep-errors']}"
    report = tmp_path / "r.json"
    args = ["check", target, str(small_corpus), "--json", str(report)]
    assert main([*args, "--fail-on", "leak,crash"]) == 0
    assert "error-queue" in capsys.readouterr().out  # still reported
    assert set(_report(report)) == {"error-queue"}
    # Negative controls: the default gates on every kind, and so does naming it.
    assert main(args) == 1
    assert main([*args, "--fail-on", "error-queue"]) == 1


def test_check_still_fails_on_a_gated_kind(
    c_controls: dict[str, Path], small_corpus: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = f"c:{c_controls['leaky']}"
    assert main(["check", target, str(small_corpus), "--fail-on", "leak,crash"]) == 1
    assert main(["check", target, str(small_corpus), "--fail-on", "crash,timeout"]) == 0
    capsys.readouterr()


def test_replay_gates_on_the_stored_kind(
    c_controls: dict[str, Path],
    small_corpus: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "out"
    target = f"c:{c_controls['leaky']}"
    main(["check", target, str(small_corpus), "--out", str(out), "--minimize-budget", "0"])
    (folder,) = (out / "findings").iterdir()
    assert main(["replay", str(folder)]) == 1
    assert main(["replay", str(folder), "--fail-on", "error-queue"]) == 0
    assert "still there" in capsys.readouterr().out


@pytest.mark.parametrize("bad", ["bogus", "leak,nope", ","])
def test_an_unknown_kind_is_a_usage_error(bad: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "control-fixed", "--fail-on", bad]) == 2
    err = capsys.readouterr().err
    assert "is not a finding kind" in err
    assert len(err.strip().splitlines()) == 1
