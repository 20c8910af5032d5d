"""Isolation: a crash, a hang or a pass-phrase prompt in the target is a finding.

Checking goes on after a crash; a worker that cannot start again after one
gives the crash finding and one line saying why checking stopped.  The
worker's stderr goes to a private log, never to the terminal.
"""

from __future__ import annotations

import stat
import tempfile
from pathlib import Path

import pytest

from tlsleak import FindingKind, InitCase, Status
from tlsleak.cases.files import write_case
from tlsleak.cases.material import KeyFormat, KeyType, identity, key_bytes
from tlsleak.check.worker import IsolatedOracle, WorkerError
from tlsleak.cli import main
from tlsleak.openssl.errors import SYSTEM_LIBCRYPTO

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
    # The worker also has the process heap (preloaded), which sees what they hold.
    typed = {k: v for k, v in finding.delta.items() if not k.startswith("heap.")}
    assert typed == {"SSL_CTX": 1, "SSL": 1}
    assert finding.delta["heap.blocks"] > 0
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


def test_a_restarted_worker_that_cannot_start_is_not_restarted_again(traps: str) -> None:
    with IsolatedOracle(traps, timeout=10) as oracle:
        oracle.check(InitCase(cert=b"CRASH"))
        assert oracle.failure is None  # the negative control: the restart worked
        assert oracle.check(InitCase(cert=b"fine")).clean


# -- a worker that died on a case and cannot start again --------------------------------

def test_a_worker_that_cannot_restart_gives_the_crash_and_one_line(brittle: str) -> None:
    with IsolatedOracle(brittle, timeout=10) as oracle:
        [crashed] = oracle.check(InitCase(cert=b"CRASH")).findings
        failure = oracle.failure
        with pytest.raises(WorkerError) as info:
            oracle.check(InitCase(cert=b"fine"))
    assert crashed.kind is FindingKind.CRASH
    assert failure is not None
    assert "\n" not in failure
    assert failure.startswith("the worker died on a case (killed by SIGSEGV) and could not be")
    assert failure.endswith("the worker died (status 1): will not start again after a crash")
    assert str(info.value) == failure


def test_check_reports_the_crash_then_stops_with_one_line(
    brittle: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "cases"
    for cert in (b"CRASH", b"ok-1", b"ok-2"):
        write_case(folder, InitCase(cert=cert))
    out_dir = tmp_path / "out"
    assert main(["check", brittle, str(folder), "--out", str(out_dir)]) == 2
    captured = capsys.readouterr()
    assert "crash" in captured.out
    assert "killed by SIGSEGV" in captured.out
    assert "1 distinct findings stored" in captured.out
    assert captured.err.count("\n") == 1
    assert "could not be restarted" in captured.err
    assert "cases checked)" in captured.err
    assert "Traceback" not in captured.err
    log = out_dir / "worker.log"
    assert "will not start again" in log.read_text()
    assert stat.S_IMODE(log.stat().st_mode) == 0o600


# -- pass-phrase prompts ----------------------------------------------------------------

PROMPTS = f"""
import ctypes
from tlsleak import Rejected

lib = ctypes.CDLL({SYSTEM_LIBCRYPTO!r})
CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_int,
                            ctypes.c_void_p)
lib.BIO_new_mem_buf.restype = ctypes.c_void_p
lib.BIO_new_mem_buf.argtypes = [ctypes.c_char_p, ctypes.c_int]
lib.PEM_read_bio_PrivateKey.restype = ctypes.c_void_p
lib.PEM_read_bio_PrivateKey.argtypes = [ctypes.c_void_p, ctypes.c_void_p, CALLBACK,
                                        ctypes.c_void_p]
lib.BIO_free.argtypes = [ctypes.c_void_p]
lib.EVP_PKEY_free.argtypes = [ctypes.c_void_p]
NO_PASS_PHRASE = CALLBACK(lambda buf, size, rwflag, userdata: 0)

def _load(case, callback):
    bio = lib.BIO_new_mem_buf(case.key, len(case.key))
    pkey = lib.PEM_read_bio_PrivateKey(bio, None, callback, None)
    lib.BIO_free(bio)
    lib.ERR_clear_error()
    if not pkey:
        raise Rejected("key", "cannot parse private key")
    lib.EVP_PKEY_free(pkey)

def prompting(case):
    _load(case, CALLBACK())  # NULL: OpenSSL's default callback asks on the terminal

def careful(case):
    _load(case, NO_PASS_PHRASE)
"""


@pytest.fixture
def prompts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "tlsleak_test_prompts.py").write_text(PROMPTS)
    monkeypatch.chdir(tmp_path)
    return "tlsleak_test_prompts"


def _encrypted(key_type: KeyType = KeyType.EC_P256) -> InitCase:
    key = key_bytes(identity(key_type).key, KeyFormat.PKCS8_ENCRYPTED, password=b"secret")
    return InitCase(key=key)


def test_a_pass_phrase_prompt_is_a_finding_and_stays_off_the_terminal(
    prompts: str, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "worker.log"
    plain = InitCase(key=key_bytes(identity(KeyType.EC_P256).key))
    with IsolatedOracle(f"{prompts}:prompting", log=log) as oracle:
        prompted = oracle.check(_encrypted())
        again = oracle.check(_encrypted(KeyType.RSA2048))
        quiet = oracle.check(plain)
    [finding] = prompted.findings
    assert finding.kind is FindingKind.PROMPT
    assert finding.step == "key"
    assert finding.signature == f"{prompts}:prompting | prompt | key"
    assert [f.signature for f in again.findings] == [finding.signature]  # one cause, one finding
    assert quiet.clean  # no prompt for a key that is not encrypted
    assert "Enter PEM pass phrase:" in log.read_text()
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    assert "pass phrase" not in capfd.readouterr().err


def test_a_callback_that_gives_no_password_is_no_prompt(prompts: str) -> None:
    with IsolatedOracle(f"{prompts}:careful") as oracle:
        verdict = oracle.check(_encrypted())
    assert verdict.outcome.status is Status.REJECTED
    assert verdict.clean


def test_the_default_log_is_private_and_removed_at_close(
    prompts: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    with IsolatedOracle(f"{prompts}:prompting") as oracle:
        assert oracle.check(_encrypted()).findings
        [log] = scratch.glob("tlsleak-worker-*.log")
        assert stat.S_IMODE(log.stat().st_mode) == 0o600
        assert "pass phrase" in log.read_text()
    assert list(scratch.iterdir()) == []
