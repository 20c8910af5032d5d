"""Minimising findings, the findings store, and `check --out` / `replay`."""

from __future__ import annotations

import json
import os
import shutil
import stat
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from tlsleak.cases.case import InitCase
from tlsleak.cases.files import write_case
from tlsleak.check.findings import (
    FailPoint,
    FindingError,
    FindingStore,
    library_record,
    load_finding,
    load_stored,
)
from tlsleak.check.minimize import minimize, signature_predicate
from tlsleak.check.oracle import Finding, Oracle
from tlsleak.cli import main
from tlsleak.targets import resolve_target


@pytest.fixture(scope="module")
def leaky() -> Iterator[Oracle]:
    with Oracle(resolve_target("control-leaky")) as oracle:
        yield oracle


@pytest.fixture(scope="module")
def fixed() -> Iterator[Oracle]:
    with Oracle(resolve_target("control-fixed")) as oracle:
        yield oracle


def _leak(oracle: Oracle, case: InitCase) -> Finding:
    findings = oracle.check(case).findings
    assert len(findings) == 1, findings
    return findings[0]


def _counting(
    predicate: Callable[[InitCase], bool],
) -> tuple[list[int], Callable[[InitCase], bool]]:
    calls = [0]

    def counted(case: InitCase) -> bool:
        calls[0] += 1
        return predicate(case)

    return calls, counted


# --- minimize ---------------------------------------------------------------------------


def test_minimize_shrinks_a_leak_and_keeps_its_signature(
    leaky: Oracle, bad_cert_case: InitCase
) -> None:
    case = bad_cert_case.with_labels("garbage-cert")
    finding = _leak(leaky, case)
    small = minimize(case, signature_predicate(leaky, finding.signature), budget=60)
    assert len(small.encode()) < len(case.encode())
    assert small.size < case.size
    assert small.labels == case.labels
    assert small.mode is case.mode
    assert _leak(leaky, small).signature == finding.signature


@pytest.mark.parametrize("budget", [0, 1, 3, 7])
def test_minimize_never_exceeds_the_budget(
    leaky: Oracle, bad_key_case: InitCase, budget: int
) -> None:
    finding = _leak(leaky, bad_key_case)
    calls, predicate = _counting(signature_predicate(leaky, finding.signature))
    small = minimize(bad_key_case, predicate, budget=budget)
    assert calls[0] <= budget
    if budget == 0:
        assert small == bad_key_case


def test_minimize_is_deterministic_and_keeps_the_case_when_nothing_smaller_fails(
    bad_cert_case: InitCase,
) -> None:
    # A pure predicate: "the certificate blob still holds a BEGIN line".
    def predicate(case: InitCase) -> bool:
        return b"-----BEGIN" in case.cert

    first = minimize(bad_cert_case, predicate, budget=500)
    assert first == minimize(bad_cert_case, predicate, budget=500)
    assert first.cert == b"-----BEGIN"
    assert not first.ca
    assert not first.key
    assert minimize(bad_cert_case, lambda _case: False) == bad_cert_case


def test_predicate_is_false_on_the_fixed_control(
    leaky: Oracle, fixed: Oracle, bad_cert_case: InitCase
) -> None:
    signature = _leak(leaky, bad_cert_case).signature
    assert fixed.check(bad_cert_case).clean
    assert not signature_predicate(fixed, signature)(bad_cert_case)
    # Positive control: the same predicate holds on the leaky target.
    assert signature_predicate(leaky, signature)(bad_cert_case)


# --- FindingStore -----------------------------------------------------------------------


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_store_new_then_repeat_bumps_the_count_only(
    tmp_path: Path, leaky: Oracle, bad_cert_case: InitCase, valid_case: InitCase
) -> None:
    store = FindingStore(tmp_path / "findings")
    finding = _leak(leaky, bad_cert_case)
    small = InitCase(cert=b"-")
    folder, new = store.add(finding, small, Path("corpus/abc"))
    assert new
    assert folder.parent == tmp_path / "findings"
    assert folder.name.startswith("leak-SSL+SSL_CTX-")
    assert sorted(p.name for p in folder.iterdir()) == [
        "finding.json",
        "original",
        "reproducer",
        "summary.txt",
    ]
    for name in ("reproducer", "original", "finding.json"):
        assert _mode(folder / name) == 0o600
    assert (folder / "reproducer").read_bytes() == small.encode()
    assert (folder / "original").read_bytes() == bad_cert_case.encode()
    data = json.loads((folder / "finding.json").read_text())
    assert data["count"] == 1
    assert data["original_file"] == "corpus/abc"
    assert data["signature"] == finding.signature
    assert "tlsleak replay" in (folder / "summary.txt").read_text()

    # The same bug again, from another case: count bumped, reproducer kept.
    again, new = store.add(finding, valid_case)
    assert (again, new) == (folder, False)
    data = json.loads((folder / "finding.json").read_text())
    assert data["count"] == 2
    assert data["last_seen"] >= data["first_seen"]
    assert (folder / "reproducer").read_bytes() == small.encode()
    assert _mode(folder / "finding.json") == 0o600
    assert not [p for p in (tmp_path / "findings").rglob(".*")]  # no temporaries left

    loaded, case = load_finding(folder)
    assert case == small
    assert loaded.signature == finding.signature


def test_store_never_replaces_an_existing_complete_folder(
    tmp_path: Path, leaky: Oracle, bad_cert_case: InitCase
) -> None:
    store = FindingStore(tmp_path)
    finding = _leak(leaky, bad_cert_case)
    folder = store.path_for(finding)
    folder.mkdir()
    (folder / "reproducer").write_bytes(b"theirs")
    (folder / "keep-me").write_bytes(b"x")
    # A complete folder whose finding.json is theirs: only the count moves.
    (folder / "finding.json").write_text(json.dumps({**finding.to_json(), "count": 5}))
    assert store.add(finding, bad_cert_case) == (folder, False)
    assert (folder / "reproducer").read_bytes() == b"theirs"
    assert (folder / "keep-me").exists()
    assert json.loads((folder / "finding.json").read_text())["count"] == 6


def test_a_crash_before_the_folder_rename_leaves_no_partial_folder(
    tmp_path: Path, leaky: Oracle, bad_cert_case: InitCase, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = FindingStore(tmp_path)
    finding = _leak(leaky, bad_cert_case)
    real_replace = os.replace
    seen: list[Path] = []

    def replace(src: str | Path, dst: str | Path) -> None:
        if Path(src).is_dir():  # the final rename, after every file was written
            seen.append(Path(src))
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(FindingError, match="No space left"):
        store.add(finding, bad_cert_case)
    assert seen
    assert not seen[0].exists()
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    assert store.add(finding, bad_cert_case)[1]  # and a later run stores it


def test_leftover_temp_folders_are_ignored_and_stale_ones_removed(
    tmp_path: Path, leaky: Oracle, bad_cert_case: InitCase
) -> None:
    fresh = tmp_path / ".leak-x-000000000000.tmp-fresh"
    stale = tmp_path / ".leak-x-000000000000.tmp-stale"
    for leftover in (fresh, stale):
        leftover.mkdir()
        (leftover / "reproducer").write_bytes(b"half")
    os.utime(stale, (1, 1))
    store = FindingStore(tmp_path)
    assert fresh.exists()
    assert not stale.exists()
    folder, new = store.add(_leak(leaky, bad_cert_case), bad_cert_case)
    assert new
    assert {p.name for p in tmp_path.iterdir()} == {fresh.name, folder.name}


def test_load_finding_refuses_what_is_not_a_finding(tmp_path: Path) -> None:
    with pytest.raises(FindingError, match="no such folder"):
        load_finding(tmp_path / "missing")
    with pytest.raises(FindingError, match=r"no finding\.json"):
        load_finding(tmp_path)
    (tmp_path / "finding.json").write_text("{not json")
    with pytest.raises(FindingError, match="not valid JSON"):
        load_finding(tmp_path)
    (tmp_path / "finding.json").write_text('{"kind": "leak"}')
    with pytest.raises(FindingError, match="not a finding"):
        load_finding(tmp_path)


def test_a_c_target_is_stored_with_its_library_and_a_fail_point_with_its_warm_up(
    tmp_path: Path, leaky: Oracle, bad_cert_case: InitCase, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "lib.so").write_bytes(b"a build")
    finding = replace(_leak(leaky, bad_cert_case), target="c:lib.so:init2", fail_at=7)
    store = FindingStore(tmp_path / "findings")
    folder, _new = store.add(finding, bad_cert_case, fail_point=FailPoint(5, 40))
    stored = load_stored(folder)
    assert stored.library is not None
    assert stored.library.path == str(tmp_path / "lib.so")  # absolute, from the relative spec
    assert stored.library.symbol == "init2"
    assert stored.library.spec == f"c:{tmp_path / 'lib.so'}:init2"
    assert stored.library == library_record("c:lib.so:init2")  # same file, same sha256
    assert stored.fail_point == FailPoint(5, 40)
    assert stored.finding.fail_at == 5  # the recorded finding is the point's
    assert stored.fail_point.from_end == 35
    assert "warm-up run that made 40" in (folder / "summary.txt").read_text()
    (tmp_path / "lib.so").write_bytes(b"a rebuild")
    assert library_record("c:lib.so:init2") != stored.library
    # Negative control: other targets have no library, other findings no point.
    assert library_record("control-leaky") is None
    plain, _new = store.add(_leak(leaky, bad_cert_case), bad_cert_case)
    assert load_stored(plain).library is None
    assert load_stored(plain).fail_point is None


@pytest.mark.parametrize(
    "change",
    [
        {"fail_point": {"fail_at": 0, "warmup_allocations": 3}},
        {"fail_point": {"fail_at": "7"}},
        {"library": {"path": "relative/lib.so", "symbol": "f", "sha256": "00"}},
        {"library": "c:lib.so"},
    ],
)
def test_a_bad_fail_point_or_library_is_not_a_finding(
    tmp_path: Path, leaky: Oracle, bad_cert_case: InitCase, change: dict[str, object]
) -> None:
    folder, _new = FindingStore(tmp_path).add(_leak(leaky, bad_cert_case), bad_cert_case)
    data = json.loads((folder / "finding.json").read_text())
    (folder / "finding.json").write_text(json.dumps({**data, **change}))
    with pytest.raises(FindingError, match="not a finding") as raised:
        load_stored(folder)
    assert "\n" not in str(raised.value)


# --- the command line -------------------------------------------------------------------


def test_check_out_stores_minimised_findings_that_replay(
    tmp_path: Path, small_corpus: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    argv = ["check", "control-leaky", str(small_corpus), "--replays", "1"]
    assert main([*argv, "--out", str(out), "--minimize-budget", "20"]) == 1
    assert "KIND" in capsys.readouterr().out  # the summary table still prints
    folders = sorted((out / "findings").iterdir())
    # bad_cert_case and bad_key_case fail at different steps through the
    # same missing free: one bug, one folder, named by the leaked roots.
    assert [f.name.rsplit("-", 1)[0] for f in folders] == ["leak-SSL+SSL_CTX"]
    assert json.loads((folders[0] / "finding.json").read_text())["count"] == 2
    for folder in folders:
        _finding, reproducer = load_finding(folder)
        original = (folder / "original").read_bytes()
        assert len(reproducer.encode()) < len(original)
        assert main(["replay", str(folder), "--replays", "1"]) == 1
        assert "still there" in capsys.readouterr().out

    # Positive control for replay's exit 0: the same reproducer on the fixed target.
    moved = tmp_path / "moved"
    shutil.copytree(folders[0], moved)
    data = json.loads((moved / "finding.json").read_text())
    data["target"] = "control-fixed"
    (moved / "finding.json").write_text(json.dumps(data))
    assert main(["replay", str(moved), "--replays", "1"]) == 0
    assert "gone" in capsys.readouterr().out

    # A second run finds the same bugs: counts go up, nothing new is written.
    before = {f: (f / "reproducer").read_bytes() for f in folders}
    assert main([*argv, "--out", str(out)]) == 1
    assert sorted((out / "findings").iterdir()) == folders
    for folder, reproducer_bytes in before.items():
        assert (folder / "reproducer").read_bytes() == reproducer_bytes
        assert json.loads((folder / "finding.json").read_text())["count"] == 4


def test_check_out_on_the_fixed_control_writes_nothing(
    tmp_path: Path, small_corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[object] = []
    monkeypatch.setattr("tlsleak.check.minimize.minimize", lambda *a, **k: calls.append(a))
    out = tmp_path / "out"
    argv = ["check", "control-fixed", str(small_corpus), "--replays", "1", "--out", str(out)]
    assert main(argv) == 0
    assert list((out / "findings").iterdir()) == []
    assert calls == []


def test_check_out_budget_zero_stores_the_case_as_found(
    tmp_path: Path, bad_cert_case: InitCase
) -> None:
    corpus = tmp_path / "corpus"
    write_case(corpus, bad_cert_case)
    out = tmp_path / "out"
    argv = ["check", "control-leaky", str(corpus), "--replays", "1"]
    assert main([*argv, "--out", str(out), "--minimize-budget", "0"]) == 1
    (folder,) = (out / "findings").iterdir()
    assert (folder / "reproducer").read_bytes() == bad_cert_case.encode()


@pytest.mark.parametrize(
    "argv",
    [
        ["replay", "{tmp}/missing"],
        ["replay", "{tmp}"],
        ["check", "control-leaky", "{tmp}", "--out", "{tmp}/file/sub"],
        ["check", "control-leaky", "--minimize-budget", "-1"],
    ],
)
def test_bad_finding_folders_and_out_dirs_are_one_line_exit_2(
    tmp_path: Path, argv: list[str], capsys: pytest.CaptureFixture[str], bad_cert_case: InitCase
) -> None:
    write_case(tmp_path, bad_cert_case)
    (tmp_path / "file").write_bytes(b"")  # --out under a file: can't be created
    assert main([a.format(tmp=tmp_path) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tlsleak: error: ")
    assert err.count("\n") == 1
