"""The command line: exit statuses, reports, and one clear line for bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tlsleak.cases.case import InitCase, decode
from tlsleak.cases.files import write_case
from tlsleak.cli import main


def test_targets_lists_builtins(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["targets"]) == 0
    out = capsys.readouterr().out
    for name in ("pyopenssl", "control-leaky", "control-fixed", "openssl-objects"):
        assert name in out


def test_check_leaky_exits_1_and_names_the_types(
    small_corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = tmp_path / "report.json"
    assert main(["check", "control-leaky", str(small_corpus), "--json", str(report)]) == 1
    out = capsys.readouterr().out
    assert "SSL_CTX +1, SSL +1" in out
    assert "2 findings, 1 distinct" in out  # bad cert and bad key: one missing free
    data = json.loads(report.read_text())
    assert data["cases"] == 3
    assert {f["step"] for f in data["findings"]} == {"certificate", "key"}
    for f in data["findings"]:  # the typed objects, and the process heap's blocks
        assert {k: v for k, v in f["delta"].items() if k in ("SSL_CTX", "SSL")} == {
            "SSL_CTX": 1,
            "SSL": 1,
        }
        assert f["delta"]["heap.blocks"] > 0
    assert decode(Path(data["findings"][0]["file"]).read_bytes()).cert


@pytest.mark.parametrize("target", ["control-fixed", "pyopenssl"])
def test_check_clean_targets_exit_0(
    target: str, small_corpus: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check", target, str(small_corpus)]) == 0
    assert "no findings" in capsys.readouterr().out


USER_MODULE = """
import OpenSSL.SSL
kept = []

def leaky_init(case):
    kept.append(OpenSSL.SSL.Context(OpenSSL.SSL.TLS_METHOD))

def tidy_init(case):
    OpenSSL.SSL.Context(OpenSSL.SSL.TLS_METHOD)
"""


@pytest.mark.parametrize(("function", "status"), [("leaky_init", 1), ("tidy_init", 0)])
def test_check_user_callable_from_the_current_folder(
    function: str,
    status: int,
    small_corpus: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / f"userinit_{function}.py").write_text(USER_MODULE)
    monkeypatch.chdir(project)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(project))])
    assert main(["check", f"userinit_{function}:{function}", str(small_corpus)]) == status
    out = capsys.readouterr().out
    assert ("SSL_CTX +1" in out) == (status == 1)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["check", "no-such-target"], "unknown target"),
        (["check", "pyopenssl", "/no/such/path"], "no such file"),
        (["check", "pyopenssl", "--replays", "zero"], "not a whole number"),
        (["check", "pyopenssl", "--ledger", "nope"], "invalid choice"),
        (["check", "json:no_such_function"], "has no attribute"),
        (["check", "no_such_module_xyz:f"], "cannot import"),
        (["corpus", "show", "/no/such/file"], "no such file"),
        (["frobnicate"], "invalid choice"),
        ([], "required"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.count("\n") == 1
    assert "Traceback" not in err


def test_empty_folder_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "pyopenssl", str(tmp_path)]) == 2
    assert "holds no case files" in capsys.readouterr().err


def test_json_report_to_missing_folder_is_refused_before_running(
    small_corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(["check", "pyopenssl", str(small_corpus), "--json", str(tmp_path / "no" / "r.json")])
        == 2
    )
    assert "does not exist" in capsys.readouterr().err


def test_existing_report_survives_a_failed_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = tmp_path / "r.json"
    report.write_text("keep me")
    assert main(["check", "pyopenssl", str(tmp_path / "missing"), "--json", str(report)]) == 2
    assert report.read_text() == "keep me"


def test_corpus_show_describes_blobs(
    small_corpus: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["corpus", "show", str(small_corpus)]) == 0
    out = capsys.readouterr().out
    assert "PEM" in out
    assert "certificate" in out
    assert "private key EC secp256r1" in out
    assert "does not parse" in out  # the damaged ones say so


def test_corpus_show_on_random_bytes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "noise"
    f.write_bytes(bytes(range(256)) * 3)
    assert main(["corpus", "show", str(f)]) == 0
    assert "mode:" in capsys.readouterr().out


def test_console_script_bad_input_has_no_traceback(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "tlsleak.cli", "check", "pyopenssl", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("tlsleak: error:")
    assert "Traceback" not in proc.stderr


def test_defects_lists_the_catalogue(capsys: pytest.CaptureFixture[str]) -> None:
    from tlsleak.cases.defects import DEFECTS

    assert main(["defects"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == list(DEFECTS)


def test_docs_defect_table_is_up_to_date(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["defects", "--markdown"]) == 0
    table = capsys.readouterr().out
    docs = Path(__file__).resolve().parents[2] / "docs" / "defects.md"
    assert docs.read_text().endswith(table), "regenerate docs/defects.md (see its header)"


def test_fail_alloc_finds_the_leak_only_allocation_failure_reaches(
    tmp_path: Path, valid_case: InitCase, capsys: pytest.CaptureFixture[str]
) -> None:
    # control-leaky leaks its SSL_CTX when SSL_new fails: no malformed blob
    # gets there, a valid case with an injected failure does.
    folder = tmp_path / "valid"
    write_case(folder, valid_case)
    assert main(["check", "control-leaky", str(folder)]) == 0
    capsys.readouterr()
    assert main(["check", "control-leaky", str(folder), "--fail-alloc"]) == 1
    out = capsys.readouterr().out
    assert "connection" in out  # the SSL_new step
    assert "SSL_CTX +1" in out
    assert main(["check", "control-fixed", str(folder), "--fail-alloc"]) == 0


def test_fail_budget_samples_deterministically() -> None:
    from tlsleak.cli.check import failure_points

    case = InitCase(cert=b"x")
    points = failure_points(case, 1000, 10)
    assert len(points) == 10
    assert points[0] == 1
    assert points[-1] == 1000
    assert points == failure_points(case, 1000, 10)
    assert failure_points(case, 5, 10) == [1, 2, 3, 4, 5]


def test_docs_mutation_tables_are_up_to_date(capsys: pytest.CaptureFixture[str]) -> None:
    from tlsleak.cases import der, mutator, pem

    assert main(["mutations"]) == 0
    names = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert len(names) == len(pem.MUTATIONS) + len(der.MUTATIONS) + len(mutator.OPERATIONS)
    assert main(["mutations", "--markdown"]) == 0
    tables = capsys.readouterr().out
    docs = Path(__file__).resolve().parents[2] / "docs" / "mutations.md"
    assert docs.read_text().endswith(tables), "regenerate docs/mutations.md (see its header)"


def test_fuzz_without_atheris_says_how_to_get_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # atheris is the `fuzz` extra: a missing one is one line and exit 2, and
    # no campaign folder is made.
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "atheris" else real(name, *a)
    )
    out = tmp_path / "out"
    assert main(["fuzz", "control-fixed", "--time", "1", "--out", str(out)]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert "pip install 'tlsleak[fuzz]'" in line
    assert not out.exists()
