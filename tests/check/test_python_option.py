"""``--python PATH``: the worker runs under the user's interpreter, with tlsleak shipped to it.

Three interpreters: this one; a bare venv made here (``venv --without-pip``,
no network) where ``import cryptography`` fails, which proves that the worker
side needs only the standard library; and a venv with an *older* pyOpenSSL and
cryptography from PyPI, made by ``.ci/run`` (never by a test) and named by
``TLSLEAK_TEST_OLD_PYTHON``: skipped without it, failed without it under CI.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tlsleak.cases.case import InitCase
from tlsleak.cases.files import write_case
from tlsleak.check._ship import MIN_PYTHON, Shipment, probe_python, sweep
from tlsleak.check.worker import IsolatedOracle, WorkerError
from tlsleak.cli import main
from tlsleak.ledgers import LedgerUnavailable, OpenSSLObjectLedger
from tlsleak.ledgers.interposer import interposer_path

ROOT = Path(__file__).resolve().parents[2]

#: A user's init paths needing only the standard library (``leaky`` keeps a
#: buffer per attempt: the heap ledger's positive control).
PLAIN = '''
_kept = []

def clean(case):
    bytes(len(case.cert) + 4096)

def leaky(case):
    _kept.append(bytearray(4096))
'''

#: An init path on cryptography's binding, whichever version: it loses an
#: SSL_CTX on every attempt with a certificate (the object ledger's control).
ON_BINDING = '''
from cryptography.hazmat.bindings.openssl.binding import Binding

_lib = Binding.lib

def leaky(case):
    if case.cert:
        _lib.SSL_CTX_new(_lib.TLS_method())
'''


def heap_built() -> bool:
    """Whether the malloc interposer is built, so that the workers count the heap."""
    try:
        interposer_path()
    except LedgerUnavailable:
        return False
    return True


@pytest.fixture(scope="session")
def bare_python(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A venv without pip, cryptography or anything else: only the standard library."""
    venv = tmp_path_factory.mktemp("bare") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    found = subprocess.run([python, "-c", "import cryptography"], capture_output=True, check=False)
    assert found.returncode != 0, "the bare venv must not see cryptography"
    return python


@pytest.fixture
def user_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The user's modules in the current folder, where a callable target is looked up."""
    (tmp_path / "plain_init.py").write_text(PLAIN)
    (tmp_path / "binding_init.py").write_text(ON_BINDING)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def old_python() -> str:
    """The venv with an older pyOpenSSL and cryptography (.ci/run makes it)."""
    path = os.environ.get("TLSLEAK_TEST_OLD_PYTHON")
    if not path:
        if os.environ.get("CI"):
            pytest.fail("TLSLEAK_TEST_OLD_PYTHON is not set under CI: .ci/run makes .venv-old")
        pytest.skip("TLSLEAK_TEST_OLD_PYTHON is not set (.ci/run makes .venv-old with it)")
    return path


# -- the worker needs only the standard library ------------------------------------


def test_worker_runs_where_cryptography_is_missing(bare_python: str, user_code: Path) -> None:
    """A user callable under a Python without cryptography: checked, leak found, clean passes."""
    case = InitCase(cert=b"x")
    with IsolatedOracle("plain_init:leaky", python=bare_python) as oracle:
        assert oracle.runtime == f"Python {sys.version.split()[0]} ({bare_python})"
        assert "openssl-objects" not in (oracle.ledger_names or [])
        leaked = oracle.check(case)
    with IsolatedOracle("plain_init:clean", python=bare_python) as oracle:
        clean = oracle.check(case)
    assert not clean.findings
    if heap_built():
        assert [f.kind for f in leaked.findings] == ["leak"]
        assert any(k.startswith("heap.") for k in leaked.findings[0].delta)


def test_binding_targets_say_what_is_missing(bare_python: str, user_code: Path) -> None:
    with pytest.raises(WorkerError, match=r"^pyOpenSSL is not installed for .*: pip install"):
        IsolatedOracle("pyopenssl", python=bare_python).start()
    with pytest.raises(WorkerError, match="cryptography is not installed for"):
        IsolatedOracle("plain_init:clean", python=bare_python, ledgers=["openssl-objects"]).start()


def test_shipment_is_private_holds_tlsleak_only_and_goes(bare_python: str) -> None:
    oracle = IsolatedOracle("ssl", python=bare_python, ledgers=[])
    with oracle:
        shipment = oracle._shipment
        assert shipment is not None
        assert shipment.folder is not None
        folder = shipment.folder
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        assert [p.name for p in folder.iterdir() if p.name != "__pycache__"] == ["tlsleak"]
        native = folder / "tlsleak" / "ledgers" / "_native"
        if heap_built():
            assert list(native.glob("*.so"))
    assert not folder.exists()


def test_shipped_env_keeps_the_users_path_not_this_environment() -> None:
    import sysconfig

    shipment = Shipment()
    try:
        ours = sysconfig.get_path("purelib")
        env = shipment.env({"PYTHONPATH": f"/my/src{os.pathsep}{ours}", "PYTHONHOME": "/x"})
        assert env["PYTHONPATH"].split(os.pathsep) == [str(shipment.folder), "/my/src"]
        assert "PYTHONHOME" not in env
    finally:
        shipment.remove()


def test_sweep_removes_the_folder_of_a_killed_process(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f"tlsleak-ship-{dead.pid}-abc"
    (stale / "tlsleak").mkdir(parents=True)
    live = tmp_path / f"tlsleak-ship-{os.getpid()}-abc"
    live.mkdir()
    assert sweep(tmp_path) == [stale]
    assert live.exists()
    assert not stale.exists()


# -- the path is checked: one line, exit 2 -----------------------------------------


def _fake(tmp_path: Path, name: str, body: str, mode: int = 0o755) -> Path:
    path = tmp_path / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(mode)
    return path


def test_bad_interpreters_are_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cases = {
        str(tmp_path / "nothing"): "no such file",
        str(tmp_path): "not an executable file",
        str(_fake(tmp_path, "plain", "exit 0", 0o644)): "not an executable file",
        str(_fake(tmp_path, "shell", "echo hello")): "not a Python interpreter",
        str(_fake(tmp_path, "py39", "echo 'tlsleak-python 3 9 18'")): (
            "Python 3.9.18; tlsleak needs 3.11 or newer"
        ),
    }
    for path, said in cases.items():
        assert main(["check", "--python", path, "ssl"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1, err
        assert said in err
        assert "Traceback" not in err


def test_tlsleak_python_is_the_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TLSLEAK_PYTHON", str(tmp_path / "nothing"))
    assert main(["check", "ssl"]) == 2
    assert "--python" in capsys.readouterr().err


def test_tlsleak_python_runs_the_worker_there(
    bare_python: str,
    user_code: Path,
    small_corpus: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("TLSLEAK_PYTHON", bare_python)
    assert main(["check", "plain_init:clean", str(small_corpus), "-q"]) == 0
    assert f"({bare_python})" in capsys.readouterr().out
    monkeypatch.setenv("TLSLEAK_PYTHON", "")  # empty: this Python, and no python line
    assert main(["check", "plain_init:clean", str(small_corpus), "-q"]) == 0
    assert "python: " not in capsys.readouterr().out


def test_the_minimum_is_pyprojects() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["project"]["requires-python"] == ">=" + ".".join(map(str, MIN_PYTHON))
    assert probe_python(sys.executable).version[:2] == sys.version_info[:2]


# -- check and replay through the command line -------------------------------------


def test_check_and_replay_under_another_python(
    bare_python: str, user_code: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if not heap_built():
        pytest.skip("the heap ledger is not built: a pure-Python leak is not counted")
    corpus = user_code / "corpus"
    write_case(corpus, InitCase(cert=b"x"))
    out = user_code / "out"
    argv = ["--python", bare_python, "--minimize-budget", "0", "--out", str(out)]
    assert main(["check", "plain_init:leaky", str(corpus), *argv]) == 1
    said = capsys.readouterr().out
    assert f"python: Python {sys.version.split()[0]} ({bare_python})" in said
    (folder,) = (p for p in (out / "findings").iterdir() if p.is_dir())
    assert main(["replay", str(folder), "--python", bare_python]) == 1
    assert "still there" in capsys.readouterr().out
    assert main(["replay", str(folder), "--python", str(user_code / "nothing")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["check", "plain_init:clean", str(corpus), "--python", bare_python]) == 0


# -- an older pyOpenSSL and cryptography, from PyPI --------------------------------


def _check_json(argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[
    int, str, dict[str, object]
]:
    report = tmp_path / f"report-{len(list(tmp_path.glob('report-*')))}.json"
    code = main(["check", *argv, "--json", str(report), "-q"])
    data: dict[str, object] = json.loads(report.read_text())
    return code, capsys.readouterr().out, data


def test_older_pyopenssl_is_the_one_tested(
    old_python: str, small_corpus: Path, user_code: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """pyOpenSSL 23 on cryptography 41: their versions named, heap counted, leaks found."""
    code, said, data = _check_json(
        ["pyopenssl", str(small_corpus), "--python", old_python], user_code, capsys
    )
    assert code == 0, said
    line = next(x for x in said.splitlines() if x.startswith("python: "))
    pyopenssl = re.search(r"pyOpenSSL (\d+)\.", line)
    cryptography = re.search(r"cryptography (\d+)\.", line)
    assert pyopenssl, line
    assert cryptography, line
    import OpenSSL

    assert pyopenssl.group(1) != OpenSSL.__version__.split(".")[0], "not the older pyOpenSSL"
    assert int(pyopenssl.group(1)) < 24, line
    assert int(cryptography.group(1)) < 44, line
    ledgers = data["ledgers"]
    assert isinstance(ledgers, list)
    assert "openssl-objects" in ledgers
    if heap_built():
        assert "heap" in ledgers

    # The planted leaks are found through the older binding; the fixed control is clean.
    code, said, data = _check_json(
        ["binding_init:leaky", str(small_corpus), "--python", old_python], user_code, capsys
    )
    assert code == 1, said
    assert "SSL_CTX" in json.dumps(data["findings"])
    code, said, _ = _check_json(
        ["control-leaky", str(small_corpus), "--python", old_python], user_code, capsys
    )
    assert code == 1, said
    code, said, _ = _check_json(
        ["control-fixed", str(small_corpus), "--python", old_python], user_code, capsys
    )
    assert code == 0, said


# -- the object ledger on a binding that lacks functions ---------------------------


class _Lacking:
    """cryptography's binding less some functions, as an older or trimmed binding is."""

    def __init__(self, *missing: str) -> None:
        from cryptography.hazmat.bindings.openssl.binding import Binding

        self._real = Binding.lib
        self._missing = missing

    def __getattr__(self, name: str) -> object:
        if name in self._missing:
            raise AttributeError(name)
        return getattr(self._real, name)


def test_object_ledger_is_blind_without_essential_functions() -> None:
    ledger = OpenSSLObjectLedger(_Lacking("SSL_CTX_free"))
    with pytest.raises(LedgerUnavailable, match="lacks SSL_CTX_free"):
        ledger.start()


def test_object_ledger_leaves_out_what_it_cannot_count() -> None:
    ledger = OpenSSLObjectLedger(_Lacking("DH_free"))
    ledger.start()
    try:
        counts = ledger.snapshot()
    finally:
        ledger.stop()
    assert "DH" not in counts  # not shown as 0
    assert counts["SSL_CTX"] == 0


# -- pyOpenSSL is the pyopenssl target's need, not the core's ----------------------

WITHOUT_PYOPENSSL = """
import sys
sys.modules["OpenSSL"] = None  # as if it were not installed
import tlsleak.check.worker, tlsleak.cli, tlsleak.targets.callable
from tlsleak.targets import TargetUnavailable, resolve_target
resolve_target("control-fixed")
try:
    resolve_target("pyopenssl")
except TargetUnavailable as exc:
    print(exc)
"""


def test_only_the_pyopenssl_target_needs_pyopenssl() -> None:
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_PYOPENSSL], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("pyOpenSSL is not installed for "), done.stdout


def test_diff_runs_every_target_under_another_python(
    bare_python: str, user_code: Path, small_corpus: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """ssl (stdlib only) and a user callable, compared under a Python without cryptography."""
    corpus = str(small_corpus)
    assert main(["diff", "ssl", "plain_init:clean", corpus, "--python", bare_python]) == 0
    assert f"python: Python {sys.version.split()[0]} ({bare_python})" in capsys.readouterr().out
    assert main(["diff", "ssl", "pyopenssl", corpus, "--python", bare_python]) == 2
    assert "pyOpenSSL is not installed for" in capsys.readouterr().err
