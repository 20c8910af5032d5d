"""check's bad inputs: one clear line and exit status 2, before any case runs, never a traceback."""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from tlsleak.cli import main

CCompiler = Callable[..., Path]


def _one_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("/proc/version", "cannot write in /proc"),  # a file of /proc: can't be replaced
        ("/proc/self/report.json", "cannot write in /proc/self"),  # a folder that takes no file
        ("folder", "is a folder"),
    ],
)
def test_json_report_where_it_cannot_go_is_refused_before_running(
    where: str, message: str, small_corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "folder").mkdir()
    report = Path(where) if where.startswith("/") else tmp_path / where
    assert main(["check", "control-fixed", str(small_corpus), "--json", str(report)]) == 2
    captured = capsys.readouterr()
    line = _one_line(captured.err)
    assert message in line
    assert line.startswith(f"tlsleak: error: --json {report}")
    assert captured.out == ""  # refused before any case ran


def test_json_report_to_a_stream_is_written_in_place(
    small_corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A FIFO (a pipe to jq, /dev/stdout) gets the report; renaming a file over
    # it would have replaced it, and over /dev/null, as root, the device.
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()))
    reader.start()
    assert main(["check", "control-fixed", str(small_corpus), "--json", str(fifo)]) == 0
    reader.join(timeout=60)
    assert fifo.is_fifo()  # still a FIFO
    assert received
    assert received[0].startswith(b"{")
    assert main(["check", "control-fixed", str(small_corpus), "--json", "/dev/null"]) == 0
    assert Path("/dev/null").is_char_device()
    capsys.readouterr()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes in a read-only folder anyway")
def test_json_report_into_a_read_only_folder_is_refused(
    small_corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "ro"
    folder.mkdir(mode=0o500)
    assert main(["check", "control-fixed", str(small_corpus), "--json", str(folder / "r.json")])
    assert "cannot write in" in _one_line(capsys.readouterr().err)


def test_json_report_into_a_writable_folder_still_works(
    small_corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = tmp_path / "r.json"
    report.write_text("old")
    assert main(["check", "control-fixed", str(small_corpus), "--json", str(report)]) == 0
    assert report.read_text().startswith("{")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no probe left


def test_json_report_names_the_blind_ledgers_with_why(
    small_corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # control-fixed runs on cryptography's OpenSSL: the shim on the system
    # libcrypto sees nothing of it, is dropped, and the JSON says so and why.
    report = tmp_path / "r.json"
    ledgers = ["--ledger", "openssl-heap", "--ledger", "openssl-objects"]
    args = ["check", "control-fixed", str(small_corpus), *ledgers, "--json", str(report)]
    assert main(args) == 0
    data = json.loads(report.read_text())
    assert set(data["blind"]) == {"openssl-heap"}
    assert data["ledgers"] == ["openssl-objects"]
    assert "cannot see target control-fixed" in data["blind"]["openssl-heap"]
    # A ledger that sees the target is not named blind.
    assert (
        main(
            [
                "check",
                "control-fixed",
                str(small_corpus),
                "--ledger",
                "openssl-objects",
                "--json",
                str(report),
            ]
        )
        == 0
    )
    assert json.loads(report.read_text())["blind"] == {}
    capsys.readouterr()


@pytest.mark.parametrize("kind", ["folder", "file"])
def test_a_corpus_path_where_the_target_goes_says_the_target_comes_first(
    kind: str,
    small_corpus: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(small_corpus.parent)
    path = "corpus/" if kind == "folder" else f"corpus/{next(small_corpus.iterdir()).name}"
    assert main(["check", path]) == 2
    line = _one_line(capsys.readouterr().err)
    assert f"{path} is a {kind}, not a target: tlsleak check TARGET PATH..." in line


def test_a_target_that_is_also_a_path_name_is_still_a_target(
    small_corpus: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Negative control: a built-in name wins over a folder of that name.
    monkeypatch.chdir(small_corpus.parent)
    (small_corpus.parent / "control-fixed").mkdir()
    assert main(["check", "control-fixed", "corpus"]) == 0
    capsys.readouterr()


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("mylib.tls:", "'mylib.tls:' is not of the form package.module:function"),
        (":init", "':init' is not of the form package.module:function"),
        ("json:no_such_function", "'json' has no attribute 'no_such_function'"),
        ("no_such_module_xyz:f", "cannot import 'no_such_module_xyz': No module named"),
    ],
)
def test_target_specs_keep_their_quotes_in_messages(
    target: str, message: str, small_corpus: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check", target, str(small_corpus)]) == 2
    line = _one_line(capsys.readouterr().err)
    assert message in line
    assert line.count("'") % 2 == 0  # no quote lost at either end


# --- --fail-alloc on a target whose allocations its ledgers can't fail ---------------

NO_OPENSSL_ALLOCATIONS = """
#include <stddef.h>
#include <openssl/crypto.h>
/* Linked with libcrypto (so a ledger sees the library), but its init path
 * refuses every input before calling anything that allocates. */
int tls_init_once(const unsigned char *ca, size_t ca_len, const unsigned char *cert,
                  size_t cert_len, const unsigned char *key, size_t key_len, int is_client) {
    (void)ca; (void)ca_len; (void)cert; (void)cert_len; (void)key; (void)key_len;
    (void)is_client;
    return OPENSSL_version_major() > 0 ? 1 : -1;
}
"""


def test_fail_alloc_that_can_fail_nothing_is_a_usage_error(
    c_compiler: CCompiler, small_corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "refuse.c"
    source.write_text(NO_OPENSSL_ALLOCATIONS)
    library = c_compiler(source, tmp_path / "refuse.so")
    target = f"c:{library}"
    assert main(["check", target, str(small_corpus)]) == 0  # nothing to find, truly
    capsys.readouterr()
    assert main(["check", target, str(small_corpus), "--fail-alloc"]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "--fail-alloc" in line
    assert "made no allocation" in line


def test_fail_alloc_on_a_callable_without_openssl_is_a_usage_error(
    small_corpus: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "plain_init_xyz.py").write_text("def init(case):\n    return len(case.cert)\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    status = main(["check", "plain_init_xyz:init", str(small_corpus), "--fail-alloc"])
    line = _one_line(capsys.readouterr().err)
    assert status == 2
    assert "--fail-alloc" in line


def test_fail_alloc_on_a_target_that_allocates_is_no_usage_error(
    c_controls: dict[str, Path], small_corpus: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Negative control of the probe: the fixed control allocates plenty.
    target = f"c:{c_controls['fixed']}"
    status = main(["check", target, str(small_corpus), "--fail-alloc", "--fail-budget", "8"])
    assert status in (0, 1)
    assert "made no allocation" not in capsys.readouterr().err
