"""tlsleak check on C libraries, end to end: worker process, preloaded heap shim, sites.

These go through the command line, so the heap ledger runs for real in a worker
started with the shim preloaded (pytest's own process is not preloaded).
"""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from tlsleak.cases.case import InitCase
from tlsleak.cases.files import write_case
from tlsleak.cli import main


def test_leaky_c_control_is_reported_with_sites(
    c_controls: dict[str, Path],
    small_corpus: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    report = tmp_path / "report.json"
    assert (
        main(["check", f"c:{c_controls['leaky']}", str(small_corpus), "--json", str(report)]) == 1
    )
    out = capsys.readouterr().out
    assert "heap.blocks" in out
    assert "ssl/ssl_lib.c" in out  # SSL_CTX_new's and SSL_new's allocations
    findings = json.loads(report.read_text())["findings"]
    assert {f["step"] for f in findings} == {"certificate", "key"}
    for finding in findings:
        assert finding["kind"] == "leak"
        assert finding["delta"]["heap.blocks"] > 100  # the SSL_CTX and SSL, every attempt
        assert any("ssl_lib.c" in site[0] for site in finding["sites"])


def test_fixed_c_control_is_clean(
    c_controls: dict[str, Path], small_corpus: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check", f"c:{c_controls['fixed']}", str(small_corpus)]) == 0
    assert "no findings" in capsys.readouterr().out


def test_ssl_target_is_clean_on_the_bundled_corpus(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "ssl"]) == 0
    assert "no findings" in capsys.readouterr().out


def test_sslnew_leak_is_found_only_by_allocation_failure(
    c_controls: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # An empty case: the init path is SSL_CTX_new and SSL_new alone, small
    # enough to fail every one of its allocations in turn.
    folder = tmp_path / "empty"
    write_case(folder, InitCase())
    target = f"c:{c_controls['sslnew']}"
    assert main(["check", target, str(folder)]) == 0
    capsys.readouterr()
    assert main(["check", target, str(folder), "--fail-alloc", "--fail-budget", "5000"]) == 1
    out = capsys.readouterr().out
    assert "leak         connection" in out or "leak  connection" in out
    assert "ssl/ssl_lib.c" in out


def test_crashing_c_control_does_not_stop_check(
    c_controls: dict[str, Path],
    tmp_path: Path,
    valid_case: InitCase,
    capsys: pytest.CaptureFixture[str],
) -> None:
    folder = tmp_path / "traps"
    for case in (InitCase(cert=b"CRASH"), valid_case, InitCase(cert=b"HANG")):
        write_case(folder, case)
    target = f"c:{c_controls['crash']}"
    assert main(["check", target, str(folder), "--timeout", "3"]) == 1
    out = capsys.readouterr().out
    assert "3 cases" in out
    assert "1 accepted" in out  # the valid case, after the crash
    assert "killed by SIGSEGV" in out
    assert "timeout" in out


@pytest.mark.parametrize(
    ("library", "message"),
    [("missing.so", "no such file"), ("text.so", "not a loadable shared library")],
)
def test_bad_c_targets_are_one_line_errors(
    library: str,
    message: str,
    small_corpus: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "text.so").write_text("not an ELF file")
    assert main(["check", f"c:{tmp_path / library}", str(small_corpus)]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.count("\n") == 1
    assert "Traceback" not in err


def test_library_crashing_on_load_is_one_line(
    c_compiler,
    tmp_path: Path,
    small_corpus: Path,
    capsys: pytest.CaptureFixture[str],  # type: ignore[no-untyped-def]
) -> None:
    source = tmp_path / "crash_on_load.c"
    source.write_text(
        "#include <signal.h>\n#include <stddef.h>\n"
        "__attribute__((constructor)) static void boom(void) { raise(SIGSEGV); }\n"
        "int tls_init_once(const unsigned char *a, size_t b, const unsigned char *c, size_t d,\n"
        "                  const unsigned char *e, size_t f, int g) { return 0; }\n"
    )
    library = c_compiler(source, tmp_path / "crash_on_load.so")
    assert main(["check", f"c:{library}", str(small_corpus)]) == 2
    err = capsys.readouterr().err
    assert "could not be set up" in err
    assert "SIGSEGV" in err
    assert err.count("\n") == 1


# -- pass-phrase prompts ------------------------------------------------------------------


def test_a_library_that_makes_openssl_prompt_gets_one_prompt_finding(
    c_controls: dict[str, Path],
    encrypted_keys: Path,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    out_dir = tmp_path / "out"
    target = f"c:{c_controls['prompt']}"
    assert main(["check", target, str(encrypted_keys), "--out", str(out_dir)]) == 1
    captured = capfd.readouterr()
    assert "2 findings, 1 distinct" in captured.out
    [row] = [line for line in captured.out.splitlines() if line.startswith("prompt")]
    assert row.split()[:3] == ["prompt", "key", "2"]
    assert "pass phrase" not in captured.err  # the worker's stderr is not the terminal
    log = out_dir / "worker.log"
    assert log.read_text().count("Enter PEM pass phrase:") >= 2
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    assert main(["check", target, str(encrypted_keys), "--fail-on", "leak"]) == 0
    assert main(["check", target, str(encrypted_keys), "--fail-on", "prompt"]) == 1


def test_a_library_that_gives_no_password_does_not_prompt(
    c_controls: dict[str, Path], encrypted_keys: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    assert main(["check", f"c:{c_controls['prompt-fixed']}", str(encrypted_keys)]) == 0
    captured = capfd.readouterr()
    assert "no findings" in captured.out
    assert "pass phrase" not in captured.err
