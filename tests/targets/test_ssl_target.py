"""The ssl target: Python's standard ssl module as an init path, in this process."""

from __future__ import annotations

import os
import signal
import ssl
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tlsleak.cases.case import InitCase, Mode
from tlsleak.cases.files import bundled_corpus, load_cases
from tlsleak.cases.material import Encoding, KeyFormat, KeyType, cert_bytes, identity, key_bytes
from tlsleak.openssl.errors import OpenSSLError, system_error_queue
from tlsleak.targets import TARGETS, Status, Step, resolve_target
from tlsleak.targets.base import Outcome
from tlsleak.targets.stdlib_ssl import TEMP_PREFIX, StdlibSSLTarget, sweep_scratch


@pytest.fixture(scope="module")
def target() -> StdlibSSLTarget:
    made = resolve_target("ssl")
    assert isinstance(made, StdlibSSLTarget)
    return made


def _run(target: StdlibSSLTarget, case: InitCase) -> Outcome:
    """Run ``case`` and check that the path left OpenSSL's error queue empty."""
    queue = system_error_queue()
    queue.clear()
    outcome = target.run(case)
    assert queue.drain() == ()
    return outcome


def _leftovers() -> set[str]:
    folder = Path(tempfile.gettempdir())
    return {p.name for p in folder.iterdir() if p.name.startswith(TEMP_PREFIX)}


def test_ssl_is_a_builtin_target(target: StdlibSSLTarget) -> None:
    assert "ssl" in TARGETS
    assert target.name == "ssl"
    assert target.ledgers == ("openssl-heap", "fds")
    assert target.error_queue() is system_error_queue()


# --- accepted and rejected ---------------------------------------------------------


def test_valid_cases_are_accepted(
    target: StdlibSSLTarget, valid_case: InitCase, valid_client_case: InitCase
) -> None:
    assert _run(target, valid_case).status is Status.ACCEPTED
    assert _run(target, valid_client_case).status is Status.ACCEPTED
    assert _run(target, InitCase()).status is Status.ACCEPTED


def test_bad_certificate_is_rejected_at_certificate(
    target: StdlibSSLTarget, bad_cert_case: InitCase
) -> None:
    outcome = _run(target, bad_cert_case)
    assert (outcome.status, outcome.step) == (Status.REJECTED, Step.CERTIFICATE)
    assert outcome.errors == (OpenSSLError("SSL", "PEM lib"),)
    assert "PEM lib" in outcome.message


def test_bad_key_is_rejected_at_key(target: StdlibSSLTarget, bad_key_case: InitCase) -> None:
    outcome = _run(target, bad_key_case)
    assert (outcome.status, outcome.step) == (Status.REJECTED, Step.KEY)


def test_der_files_are_rejected_because_load_cert_chain_reads_pem(
    target: StdlibSSLTarget, der_case: InitCase
) -> None:
    outcome = _run(target, der_case)
    assert (outcome.status, outcome.step) == (Status.REJECTED, Step.CERTIFICATE)


def test_mismatched_pairs_are_rejected_at_check_key(target: StdlibSSLTarget) -> None:
    leaf = cert_bytes(identity(KeyType.EC_P256).leaf)
    # Same key type: OpenSSL 3.0 refuses the key in SSL_CTX_use_PrivateKey.
    same_type = key_bytes(identity(KeyType.EC_P256, slot=1).key)
    # Another type goes into its own slot, so only the final check fails.
    other_type = key_bytes(identity(KeyType.RSA2048).key)
    for key in (same_type, other_type):
        outcome = _run(target, InitCase(cert=leaf, key=key))
        assert (outcome.status, outcome.step) == (Status.REJECTED, Step.CHECK_KEY)


def test_key_without_certificate_and_certificate_without_key(
    target: StdlibSSLTarget, valid_case: InitCase
) -> None:
    alone = _run(target, InitCase(key=valid_case.key))
    assert (alone.status, alone.step) == (Status.REJECTED, Step.CHECK_KEY)
    # load_cert_chain(certfile) looks for the key in the certificate file.
    bare = _run(target, InitCase(cert=valid_case.cert))
    assert (bare.status, bare.step) == (Status.REJECTED, Step.KEY)
    combined = _run(target, InitCase(cert=valid_case.cert + valid_case.key))
    assert combined.status is Status.ACCEPTED


def test_without_stage_lines_every_load_failure_is_at_certificate(
    bad_key_case: InitCase, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tlsleak.targets.stdlib_ssl as module

    monkeypatch.setattr(module, "_calibrate_stages", dict)
    outcome = StdlibSSLTarget().run(bad_key_case)
    assert (outcome.status, outcome.step) == (Status.REJECTED, Step.CERTIFICATE)


# --- CA data -------------------------------------------------------------------------


def test_ca_as_pem_text_and_as_der(target: StdlibSSLTarget) -> None:
    root = identity(KeyType.EC_P256).root
    for blob in (cert_bytes(root), cert_bytes(root, Encoding.DER)):
        for mode in Mode:
            assert _run(target, InitCase(mode=mode, ca=blob)).status is Status.ACCEPTED


def test_garbage_ca_is_rejected_at_ca(target: StdlibSSLTarget, bad_cert_case: InitCase) -> None:
    pem = _run(target, InitCase(ca=bad_cert_case.cert))
    assert (pem.status, pem.step) == (Status.REJECTED, Step.CA)
    der = _run(target, InitCase(ca=b"\x30\x03abc"))
    assert (der.status, der.step) == (Status.REJECTED, Step.CA)
    # CPython makes this error up itself: no OpenSSL library or reason.
    assert der.errors == ()
    assert "cadata does not contain a certificate" in der.message


def test_non_ascii_pem_ca_is_a_rejection_not_a_type_error(target: StdlibSSLTarget) -> None:
    root = cert_bytes(identity(KeyType.EC_P256).root)
    outcome = _run(target, InitCase(ca="# Zertifikat für Tests\n".encode() + root))
    assert (outcome.status, outcome.step) == (Status.REJECTED, Step.CA)
    assert "not ASCII" in outcome.message


def test_encrypted_pem_ca_is_not_run_because_it_would_prompt(target: StdlibSSLTarget) -> None:
    lines = cert_bytes(identity(KeyType.EC_P256).root).splitlines(keepends=True)
    headers = b"Proc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00112233445566778899AABBCCDDEEFF\n\n"
    outcome = _run(target, InitCase(ca=lines[0] + headers + b"".join(lines[1:])))
    assert (outcome.status, outcome.step) == (Status.ERROR, Step.CA)
    assert outcome.message.startswith("would prompt")


# --- passwords --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("password", "status"),
    [
        (b"secret", Status.ACCEPTED),
        (b"wrong", Status.REJECTED),
        (b"", Status.REJECTED),  # never a prompt on the terminal
        (b"x" * 2000, Status.REJECTED),  # CPython's ValueError: longer than OpenSSL's buffer
    ],
)
def test_encrypted_key_passwords(target: StdlibSSLTarget, password: bytes, status: Status) -> None:
    ident = identity(KeyType.EC_P256)
    key = key_bytes(ident.key, KeyFormat.PKCS8_ENCRYPTED, password=b"secret")
    outcome = _run(target, InitCase(cert=cert_bytes(ident.leaf), key=key, password=password))
    assert outcome.status is status
    if status is Status.REJECTED:
        assert outcome.step == Step.KEY


# --- server names ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "status"),
    [
        (b"localhost", Status.ACCEPTED),
        (b"localhost\0junk", Status.ACCEPTED),  # cut at the NUL, as a C string
        ("bücher.example".encode(), Status.ACCEPTED),  # IDNA
        (b"127.0.0.1", Status.ACCEPTED),
        (b"\xff\xfe", Status.REJECTED),  # not UTF-8
        (b"a..b", Status.REJECTED),  # empty label: UnicodeError from the idna codec
        (b".leading", Status.REJECTED),
        (b"x" * 64, Status.REJECTED),  # label too long
        (b".".join([b"a" * 60] * 5), Status.REJECTED),  # over 255 bytes: OpenSSL refuses
    ],
)
def test_server_names(
    target: StdlibSSLTarget, valid_client_case: InitCase, name: bytes, status: Status
) -> None:
    case = InitCase(mode=Mode.CLIENT, ca=valid_client_case.ca, server_name=name)
    outcome = _run(target, case)
    assert outcome.status is status
    if status is Status.REJECTED:
        assert outcome.step == Step.SERVER_NAME


def test_over_long_name_carries_openssls_reason(target: StdlibSSLTarget) -> None:
    case = InitCase(mode=Mode.CLIENT, server_name=b".".join([b"a" * 60] * 5))
    outcome = _run(target, case)
    assert outcome.errors == (OpenSSLError("SSL", "SSL3_EXT_INVALID_SERVERNAME"),)


def test_server_mode_ignores_the_server_name(target: StdlibSSLTarget) -> None:
    assert _run(target, InitCase(server_name=b"a..b")).status is Status.ACCEPTED


def test_unexpected_exceptions_are_errors(
    target: StdlibSSLTarget, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(ssl.SSLContext, "wrap_bio", broken)
    outcome = target.run(InitCase())
    assert (outcome.status, outcome.step) == (Status.ERROR, Step.CONNECTION)
    assert outcome.message == "RuntimeError: boom"


# --- temporary files -----------------------------------------------------------------------


def _spy_on_load_cert_chain(
    monkeypatch: pytest.MonkeyPatch, seen: list[tuple[str, int]], fail: bool = False
) -> None:
    original: Callable[..., None] = ssl.SSLContext.load_cert_chain

    def spy(self: ssl.SSLContext, certfile: str, keyfile: str | None = None, *rest: Any) -> None:
        # The files and their folder, with their modes, while they exist.
        for path in (certfile, keyfile, os.path.dirname(certfile)):
            if path is not None:
                seen.append((path, stat.S_IMODE(os.stat(path).st_mode)))
        if fail:
            raise RuntimeError("load_cert_chain blew up")
        original(self, certfile, keyfile, *rest)

    monkeypatch.setattr(ssl.SSLContext, "load_cert_chain", spy)


@pytest.mark.parametrize("case_name", ["valid_case", "bad_cert_case", "bad_key_case"])
def test_key_files_are_private_and_removed(
    target: StdlibSSLTarget,
    case_name: str,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    case: InitCase = request.getfixturevalue(case_name)
    before = _leftovers()
    seen: list[tuple[str, int]] = []
    _spy_on_load_cert_chain(monkeypatch, seen)
    target.run(case)
    [(_, cert_mode), (_, key_mode), (folder, folder_mode)] = seen
    assert (cert_mode, key_mode, folder_mode) == (0o600, 0o600, 0o700)
    assert os.path.basename(folder).startswith(TEMP_PREFIX)
    assert os.path.dirname(folder) == tempfile.gettempdir()
    assert not os.path.exists(folder)
    assert _leftovers() == before


def test_files_are_removed_whatever_happens(
    target: StdlibSSLTarget,
    valid_case: InitCase,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    known = tmp_path / "known"

    def mkdtemp(*args: Any, **kwargs: Any) -> str:
        known.mkdir(mode=0o700)
        return str(known)

    monkeypatch.setattr(tempfile, "mkdtemp", mkdtemp)
    seen: list[tuple[str, int]] = []
    _spy_on_load_cert_chain(monkeypatch, seen, fail=True)
    outcome = target.run(valid_case)
    assert outcome.status is Status.ERROR
    assert outcome.message == "RuntimeError: load_cert_chain blew up"
    assert [path for path, _mode in seen] == [
        str(known / "cert.pem"),
        str(known / "key.pem"),
        str(known),
    ]
    assert [mode for _path, mode in seen[:2]] == [0o600, 0o600]
    assert not known.exists()


# --- the corpus --------------------------------------------------------------------------


def test_corpus_gives_no_errors_and_leaves_no_files(target: StdlibSSLTarget) -> None:
    before = _leftovers()
    queue = system_error_queue()
    outcomes = []
    for _path, case in load_cases([bundled_corpus()]):
        queue.clear()
        outcomes.append(target.run(case))
        assert queue.drain() == (), case.labels
    assert [o for o in outcomes if o.status is Status.ERROR] == []
    assert {o.status for o in outcomes} == {Status.ACCEPTED, Status.REJECTED}
    assert _leftovers() == before


def test_an_ssl_error_without_library_or_reason_has_no_entries() -> None:
    # CPython raises some SSLErrors (out of memory among them) without the
    # library/reason attributes; reading them must not fail the target.
    from tlsleak.targets.stdlib_ssl import ssl_error_entries

    bare = ssl.SSLError("out of memory")
    assert not hasattr(bare, "library")
    assert ssl_error_entries(bare) == ()


# --- scratch left by killed workers -------------------------------------------------------


def _dead_pid() -> int:
    """The id of a process that has exited (and was reaped)."""
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_scratch_folders_name_their_owner(
    target: StdlibSSLTarget, valid_case: InitCase, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[str, int]] = []
    _spy_on_load_cert_chain(monkeypatch, seen)
    target.run(valid_case)
    folder = os.path.basename(seen[-1][0])
    assert folder.startswith(f"{TEMP_PREFIX}{os.getpid()}-")


def test_folders_of_dead_owners_are_swept_and_the_rest_kept(tmp_path: Path) -> None:
    dead = tmp_path / f"{TEMP_PREFIX}{_dead_pid()}-abc"
    alive = tmp_path / f"{TEMP_PREFIX}{os.getpid()}-def"
    old_unowned = tmp_path / f"{TEMP_PREFIX}ghijkl"
    new_unowned = tmp_path / f"{TEMP_PREFIX}mnopqr"
    other = tmp_path / "someone-elses-12-folder"
    for folder in (dead, alive, old_unowned, new_unowned, other):
        folder.mkdir(mode=0o700)
        (folder / "key.pem").write_bytes(b"secret")
    a_file = tmp_path / f"{TEMP_PREFIX}1-file"
    a_file.write_bytes(b"")
    two_hours_ago = time.time() - 7200
    os.utime(old_unowned, (two_hours_ago, two_hours_ago))
    removed = sweep_scratch(str(tmp_path))
    assert sorted(removed) == sorted([str(dead), str(old_unowned)])
    assert {p.name for p in tmp_path.iterdir()} == {
        alive.name,
        new_unowned.name,
        other.name,
        a_file.name,
    }


def test_making_the_target_sweeps_what_a_killed_worker_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    left = tmp_path / f"{TEMP_PREFIX}{_dead_pid()}-xyz"
    left.mkdir(mode=0o700)
    (left / "key.pem").write_bytes(b"secret")
    StdlibSSLTarget()
    assert not left.exists()
    assert list(tmp_path.iterdir()) == []  # the calibration's own folder is gone too


def test_a_killed_worker_leaves_a_folder_that_the_next_start_removes(tmp_path: Path) -> None:
    # A worker killed inside load_cert_chain: stood in for by a process that
    # makes its scratch folder the way the target does, then dies by SIGKILL.
    code = (
        "import os, signal, tempfile\n"
        f"tempfile.tempdir = {str(tmp_path)!r}\n"
        "from tlsleak.targets.stdlib_ssl import _scratch\n"
        "folder = _scratch()\n"
        "open(os.path.join(folder, 'key.pem'), 'wb').close()\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], check=False)
    assert proc.returncode == -signal.SIGKILL
    [left] = tmp_path.iterdir()
    assert stat.S_IMODE(left.stat().st_mode) == 0o700
    assert sweep_scratch(str(tmp_path)) == [str(left)]
