"""``tlsleak diff``: the command, its exit statuses, its reports, and docs/differential.md."""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tlsleak.cases.case import InitCase
from tlsleak.cases.files import write_case
from tlsleak.check.differential import FORMAT, stack_version
from tlsleak.cli import main
from tlsleak.cli.diff import split_arguments
from tlsleak.targets import TARGETS, _needs

DOC = Path(__file__).resolve().parents[2] / "docs" / "differential.md"
MARKER = "<!-- generated: everything below is the output of the command above -->\n"

CALLABLES = """
import os

def accept_all(case):
    return None

def abort_on_name(case):
    if case.server_name == b"abort":
        os.abort()
"""


@pytest.fixture
def labelled_corpus(
    tmp_path: Path, valid_case: InitCase, bad_cert_case: InitCase, bad_key_case: InitCase
) -> Path:
    folder = tmp_path / "corpus"
    write_case(folder, valid_case)
    write_case(folder, bad_cert_case.with_labels("garbage-cert"))
    write_case(folder, bad_key_case.with_labels("truncated-key"))
    return folder


@pytest.fixture
def callables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The name of a module of test init paths, in the current folder (where workers look)."""
    (tmp_path / "diffcli.py").write_text(CALLABLES)
    monkeypatch.chdir(tmp_path)
    yield "diffcli"
    sys.modules.pop("diffcli", None)


@pytest.fixture
def accept_all(callables: str) -> str:
    return f"{callables}:accept_all"


def test_disagreement_is_reported_and_gates_the_exit_status_when_asked(
    labelled_corpus: Path, accept_all: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["diff", "control-fixed", accept_all, str(labelled_corpus), "-q"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "disagreements: 2 " in out
    assert re.search(r"^\s+1\s+garbage-cert\s+rejected at \S+\s+accepted", out, re.M), out
    assert main([*argv, "--fail-on-disagreement"]) == 1


def test_stacks_that_agree_pass_the_gate(
    labelled_corpus: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["diff", "control-leaky", "control-fixed", str(labelled_corpus)]
    assert main([*argv, "--fail-on-disagreement", "-q"]) == 0
    out = capsys.readouterr().out
    assert "disagreements: 0 " in out
    assert "disagreements, by" not in out


def test_json_report(
    labelled_corpus: Path, accept_all: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = tmp_path / "diff.json"
    argv = ["diff", "control-fixed", accept_all, str(labelled_corpus), "--json", str(report)]
    assert main([*argv, "-q"]) == 0
    data = json.loads(report.read_text())
    assert data["format"] == FORMAT
    assert [t["name"] for t in data["targets"]] == ["control-fixed", accept_all]
    assert data["summary"]["cases"] == 3
    assert data["summary"]["disagreements"] == 2
    assert {g["label"] for g in data["disagreements"]} == {"garbage-cert", "truncated-key"}
    assert len(data["cases"]) == 3


def test_a_crash_is_reported_for_its_target_and_case_and_the_run_goes_on(
    tmp_path: Path, valid_case: InitCase, callables: str, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "cases"
    write_case(folder, valid_case)
    write_case(folder, InitCase(cert=valid_case.cert, key=valid_case.key, server_name=b"abort"))
    argv = ["diff", "control-fixed", f"{callables}:abort_on_name", "cases", "--json", "r.json"]
    assert main([*argv, "-q"]) == 0
    assert "disagreements: 1 " in capsys.readouterr().out
    cases = json.loads((tmp_path / "r.json").read_text())["cases"]
    statuses = sorted(c["results"][1]["status"] for c in cases)
    assert statuses == ["accepted", "crash"]


def test_arguments_split_into_targets_then_paths(tmp_path: Path) -> None:
    (tmp_path / "cases").mkdir()
    os.chdir(tmp_path)
    try:
        assert split_arguments(["ssl", "pkg.mod:f", "cases", "x"]) == (
            ["ssl", "pkg.mod:f"],
            [Path("cases"), Path("x")],
        )
        assert split_arguments(["ssl", "pyopenssl", "/no/such"]) == (
            ["ssl", "pyopenssl"],
            [Path("/no/such")],
        )
        assert split_arguments(["ssl", "c:/lib.so", "typo"]) == (["ssl", "c:/lib.so", "typo"], [])
    finally:
        os.chdir(Path(__file__).parent)


REGISTER = """
from tlsleak.targets import TARGETS, _needs

def _missing():
    raise ModuleNotFoundError("No module named 'stackx'", name="stackx")

TARGETS["stack-x"] = _needs("x", "stackx", _missing)
"""


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["diff", "pyopenssl"], "at least two targets, not 1"),
        (["diff", "pyopenssl", "CORPUS"], "at least two targets, not 1"),
        (["diff", "pyopenssl", "no-such-target", "CORPUS"], "unknown target 'no-such-target'"),
        (["diff", "pyopenssl", "ssl", "/no/such/path"], "no such file or folder"),
        (["diff", "pyopenssl", "stack-x", "CORPUS"], "not installed: pip install 'tlsleak[x]'"),
        (["diff", "pyopenssl", "ssl", "--timeout", "0"], "must be more than 0"),
    ],
)
def test_usage_errors_are_one_line_and_status_2(
    argv: list[str],
    message: str,
    labelled_corpus: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "sitecustomize.py").write_text(REGISTER)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), *sys.path]))
    monkeypatch.setitem(TARGETS, "stack-x", _needs("x", "stackx", lambda: _missing()))
    argv = [str(labelled_corpus) if a == "CORPUS" else a for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith("tlsleak: error:")
    assert message in err


def _missing() -> object:
    raise ModuleNotFoundError("No module named 'stackx'", name="stackx")


# -- docs/differential.md ---------------------------------------------------------------


def _documented() -> tuple[str, dict[str, str]]:
    """The command the document was made with, and the versions its header records."""
    generated = DOC.read_text().split(MARKER, 1)[1]
    command = re.search(r"Output of `([^`]+)`", generated)
    assert command is not None, "docs/differential.md names no command"
    versions = dict(re.findall(r"^\| (\S+) \| (.+) \|$", generated.split("\n\n### ")[0], re.M))
    return command.group(1), {k: v for k, v in versions.items() if k not in ("target", "---")}


def _changed(versions: dict[str, str]) -> str:
    """Each documented stack whose installed version differs, with both; "" when none does."""
    installed = {name: stack_version(name) for name in versions}
    return ", ".join(
        f"{name}: {installed[name]} (documented: {versions[name]})"
        for name in versions
        if installed[name] != versions[name]
    )


def test_a_stack_of_another_version_is_named_with_both_versions() -> None:
    assert _changed({"ssl": stack_version("ssl") or ""}) == ""
    changed = _changed({"ssl": "OpenSSL 0.9.8", "mbedtls": "python-mbedtls 0.1"})
    assert changed.startswith(f"ssl: {stack_version('ssl')} (documented: OpenSSL 0.9.8)")
    assert "mbedtls: " in changed


def test_docs_differential_is_up_to_date(capsys: pytest.CaptureFixture[str]) -> None:
    command, versions = _documented()
    if changed := _changed(versions):
        pytest.skip(
            f"the installed stacks are not the documented ones ({changed}): regenerate "
            f"docs/differential.md below its marker with `{command}` to compare"
        )
    argv = command.split()[1:]
    assert main([*argv, "-q"]) == 0
    assert DOC.read_text().endswith(MARKER + capsys.readouterr().out), (
        f"regenerate docs/differential.md below its marker with `{command}`"
    )
