"""``corpus grow/import/merge`` into a folder that can't be read or written: one line, exit 2.

File modes only bind a process without the capabilities that override them
(root has them): the command runs in a child that gives them up, and the
test is skipped where even that child can write a read-only folder.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tlsleak.cases.case import InitCase
from tlsleak.cases.files import write_case

# <linux/prctl.h> and <linux/capability.h>.
_PR_CAPBSET_DROP = 24
_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH = 1, 2


def _drop_file_capabilities() -> None:
    """In the child, before exec: root then obeys file modes like anyone."""
    if os.geteuid() != 0:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH):
        if libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            os._exit(99)


def _run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=_drop_file_capabilities,
        check=False,
    )


def _tlsleak(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return _run([sys.executable, "-m", "tlsleak.cli", *argv], cwd)


@pytest.fixture
def folders(tmp_path: Path) -> Iterator[Path]:
    """``src`` (cases), ``blobs`` (a raw file), ``readonly`` (0555), ``closed`` (0000)."""
    write_case(tmp_path / "src", InitCase(cert=b"not a certificate"))
    (tmp_path / "blobs").mkdir()
    (tmp_path / "blobs" / "cert.pem").write_bytes(b"not a certificate either")
    (tmp_path / "readonly").mkdir(mode=0o555)
    (tmp_path / "readonly").chmod(0o555)
    (tmp_path / "closed").mkdir()
    (tmp_path / "closed").chmod(0)
    probe = [sys.executable, "-c", "open('readonly/probe', 'w')"]
    if _run(probe, tmp_path).returncode == 0:
        (tmp_path / "readonly" / "probe").unlink()
        pytest.skip("this process writes read-only folders (capabilities it cannot give up)")
    yield tmp_path
    (tmp_path / "closed").chmod(0o700)  # so that pytest can remove it


@pytest.mark.parametrize(
    ("argv", "where"),
    [
        (["corpus", "grow", "readonly", "-n", "3"], "readonly"),
        (["corpus", "grow", "closed", "-n", "3"], "closed"),
        (["corpus", "grow", "readonly/new", "-n", "3"], "readonly/new"),
        (["corpus", "grow", "closed", "--fuzz", "control-fixed", "--time", "60"], "closed"),
        (["corpus", "import", "blobs", "--as", "cert", "--into", "readonly"], "readonly"),
        (["corpus", "import", "blobs", "--as", "cert", "--into", "closed"], "closed"),
        (["corpus", "import", "closed", "--as", "cert", "--into", "new"], "closed"),
        (["corpus", "import", "--from-hypothesis", "src", "--into", "closed"], "closed"),
        (["corpus", "merge", "src", "--into", "readonly"], "readonly"),
        (["corpus", "merge", "src", "--into", "closed"], "closed"),
        (["corpus", "merge", "closed", "--into", "new"], "closed"),
    ],
)
def test_a_folder_that_cannot_be_used_is_one_line_and_exit_2(
    folders: Path, argv: list[str], where: str
) -> None:
    result = _tlsleak(*argv, cwd=folders)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"tlsleak: error: {where}: "), result.stderr
    assert "Permission denied" in result.stderr
    # Nothing was made: neither in the folders refused, nor a new destination.
    assert not (folders / "new").exists()
    assert not list((folders / "readonly").iterdir())
    assert not list((folders / "closed").iterdir())


def test_a_folder_that_fails_midway_is_one_line_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Checked before the work, a folder can still change under it (its mode,
    # a full disk): the error that brings is one line as well.
    from tlsleak.cli import corpus as corpus_cli
    from tlsleak.cli import main

    def denied(folder: Path, _case: InitCase) -> tuple[Path, bool]:
        raise PermissionError(13, "Permission denied", str(folder / "x"))

    monkeypatch.setattr(corpus_cli, "write_case", denied)
    assert main(["corpus", "grow", str(tmp_path / "grown"), "-n", "2"]) == 2
    err = capsys.readouterr().err
    assert err == f"tlsleak: error: {tmp_path / 'grown' / 'x'}: Permission denied\n"
