"""The ``mbedtls`` target: python-mbedtls's configuration, contexts and buffers, step by step.

End to end it runs in ``tlsleak check``'s worker with the heap ledger:
negative control, the target itself over the bundled corpus (no findings);
positive control, a user callable that runs a variant of the target keeping
what a rejected attempt made, which the heap ledger must catch.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from tlsleak.cases.case import InitCase, Mode
from tlsleak.cases.files import write_case
from tlsleak.cases.material import KeyFormat, KeyType, cert_bytes, identity, key_bytes
from tlsleak.cli import main
from tlsleak.targets import resolve_target
from tlsleak.targets.base import Status, Step
from tlsleak.targets.probe import survey

pytest.importorskip("mbedtls")

# After the skip: the extra may be missing.
from mbedtls import x509

from tlsleak.targets import mbedtls as mbedtls_target
from tlsleak.targets.mbedtls import MbedTLSTarget

GARBAGE = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"


@pytest.fixture
def target() -> MbedTLSTarget:
    return MbedTLSTarget()


def _case(key_type: KeyType = KeyType.EC_P256, mode: Mode = Mode.SERVER, **fields: Any) -> InitCase:
    """A valid case of ``key_type`` (root CA, leaf and intermediate, key), ``fields`` replaced."""
    ident = identity(key_type)
    valid = InitCase(
        mode=mode,
        ca=cert_bytes(ident.root),
        cert=cert_bytes(ident.leaf) + b"".join(cert_bytes(c) for c in ident.chain),
        key=key_bytes(ident.key),
        server_name=b"localhost",
    )
    return replace(valid, **fields)


def test_mbedtls_is_a_builtin_target() -> None:
    made = resolve_target("mbedtls")
    assert isinstance(made, MbedTLSTarget)
    assert made.error_queue() is None  # Mbed TLS keeps no error queue
    assert "fds" in made.ledgers


@pytest.mark.parametrize("mode", list(Mode))
@pytest.mark.parametrize("key_type", [KeyType.RSA2048, KeyType.EC_P256, KeyType.EC_P384])
def test_valid_cases_are_accepted(target: MbedTLSTarget, key_type: KeyType, mode: Mode) -> None:
    assert target.run(_case(key_type, mode)).status is Status.ACCEPTED


def test_edwards_certificates_are_refused_by_mbedtls_2(target: MbedTLSTarget) -> None:
    outcome = target.run(_case(KeyType.ED25519))
    assert (outcome.status, outcome.step) == (Status.REJECTED, Step.CA)
    assert "0x262E" in outcome.message  # X509 - Signature algorithm (oid) is unsupported


@pytest.mark.parametrize(
    ("fields", "step"),
    [
        ({"ca": GARBAGE}, Step.CA),
        ({"ca": b"not der"}, Step.CA),
        ({"cert": GARBAGE}, Step.CERTIFICATE),
        ({"cert": cert_bytes(identity(KeyType.EC_P256).leaf) + GARBAGE}, Step.CHAIN),
        ({"key": key_bytes(identity(KeyType.EC_P256).key)[:-40]}, Step.KEY),
    ],
)
def test_bad_blobs_are_rejected_at_their_step(
    target: MbedTLSTarget, fields: dict[str, Any], step: Step
) -> None:
    outcome = target.run(_case(**fields))
    assert (outcome.status, outcome.step) == (Status.REJECTED, step)
    assert outcome.message.startswith("[0x")  # Mbed TLS's code and text


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"AAA\n", "not base64"),  # binascii.Error from the binding's PEM_to_DER
        (b"", "empty buffer"),  # its ValueError, before Mbed TLS sees it
        ("é\n".encode(), "not ASCII"),  # its UnicodeEncodeError
        (b"\xff\n", "not UTF-8"),  # from_PEM takes str: refused before the call
    ],
)
def test_the_bindings_own_pem_decoding_refusals_are_rejections(
    target: MbedTLSTarget, body: bytes, says: str
) -> None:
    blob = b"-----BEGIN CERTIFICATE-----\n" + body + b"-----END CERTIFICATE-----\n"
    outcome = target.run(InitCase(ca=blob))
    assert (outcome.status, outcome.step) == (Status.REJECTED, Step.CA)
    assert says in outcome.message


def test_the_pair_is_checked_because_the_binding_does_not(target: MbedTLSTarget) -> None:
    other = key_bytes(identity(KeyType.EC_P256, slot=1).key)
    rsa = key_bytes(identity(KeyType.RSA2048).key)
    for key, says in ((other, "does not match"), (rsa, "does not match")):
        outcome = target.run(_case(key=key))
        assert (outcome.status, outcome.step, outcome.message) == (
            Status.REJECTED,
            Step.CHECK_KEY,
            f"key {says} the certificate",
        )


def test_a_lone_certificate_or_key_is_rejected_at_check_key(target: MbedTLSTarget) -> None:
    for case in (_case(key=b""), _case(cert=b"")):
        outcome = target.run(case)
        assert (outcome.status, outcome.step) == (Status.REJECTED, Step.CHECK_KEY)


def test_a_public_key_loads_as_a_private_one_and_the_pair_check_refuses_it(
    target: MbedTLSTarget,
) -> None:
    public = (
        identity(KeyType.EC_P256)
        .key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    outcome = target.run(_case(key=public))
    assert (outcome.status, outcome.step) == (Status.REJECTED, Step.CHECK_KEY)


def _legacy_encrypted(password: bytes) -> bytes:
    """The key with PEM encryption (``Proc-Type: 4,ENCRYPTED``), which Mbed TLS 2.28 reads."""
    key = identity(KeyType.EC_P256).key
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.BestAvailableEncryption(password),
    )


@pytest.mark.parametrize(
    ("password", "status"),
    [(b"secret", Status.ACCEPTED), (b"wrong", Status.REJECTED), (b"", Status.REJECTED)],
)
def test_encrypted_key_passwords(target: MbedTLSTarget, password: bytes, status: Status) -> None:
    outcome = target.run(_case(key=_legacy_encrypted(b"secret"), password=password))
    assert outcome.status is status
    if status is Status.REJECTED:
        assert outcome.step is Step.KEY


def test_pbes2_with_aes_is_beyond_mbedtls_2_even_with_the_password(
    target: MbedTLSTarget,
) -> None:
    key = key_bytes(identity(KeyType.EC_P256).key, KeyFormat.PKCS8_ENCRYPTED, password=b"pw")
    outcome = target.run(_case(key=key, password=b"pw"))
    assert (outcome.status, outcome.step) == (Status.REJECTED, Step.KEY)


#: A child that runs the target on an encrypted key without a password while
#: its stdin is a pipe that stays open: a prompt would block it.
NO_PROMPT_CHILD = """
import sys
from pathlib import Path
from tlsleak.cases.files import load_case
from tlsleak.targets.mbedtls import MbedTLSTarget
print(MbedTLSTarget().run(load_case(Path(sys.argv[1]))).describe())
"""


def test_an_encrypted_key_without_password_never_prompts(tmp_path: Path) -> None:
    path, _ = write_case(tmp_path, _case(key=_legacy_encrypted(b"secret")))
    out, err = tmp_path / "out", tmp_path / "err"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        child = subprocess.Popen(
            [sys.executable, "-c", NO_PROMPT_CHILD, str(path)],
            stdin=subprocess.PIPE,  # kept open until it ends: a read from it would hang
            stdout=stdout,
            stderr=stderr,
        )
        try:
            child.wait(timeout=120)  # generous: it takes well under a second
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
            assert child.stdin is not None
            child.stdin.close()
    assert child.returncode == 0, err.read_text()
    assert out.read_text().startswith("rejected at key")
    assert "pass" not in err.read_text().lower()


def test_server_names(target: MbedTLSTarget) -> None:
    assert target.run(_case(mode=Mode.CLIENT, server_name=b"localhost\0junk")).status is (
        Status.ACCEPTED
    )
    long = target.run(_case(mode=Mode.CLIENT, server_name=b"a" * 300))
    assert (long.status, long.step) == (Status.REJECTED, Step.SERVER_NAME)
    assert "0x7100" in long.message  # MBEDTLS_ERR_SSL_BAD_INPUT_DATA
    text = target.run(_case(mode=Mode.CLIENT, server_name=b"\xff"))
    assert (text.status, text.step) == (Status.REJECTED, Step.SERVER_NAME)
    # A server sets no name: the same names don't matter there.
    assert target.run(_case(server_name=b"a" * 300)).status is Status.ACCEPTED


def test_unexpected_exceptions_are_errors(
    target: MbedTLSTarget, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(_pem: str) -> None:
        raise ValueError("something else")

    # The binding's types are immutable: the module's name for x509 is replaced.
    fake = SimpleNamespace(CRT=SimpleNamespace(from_PEM=broken, from_DER=x509.CRT.from_DER))
    monkeypatch.setattr(mbedtls_target, "x509", fake)
    outcome = target.run(_case())
    assert (outcome.status, outcome.step) == (Status.ERROR, Step.CA)
    assert outcome.message == "ValueError: something else"


def test_a_teardown_that_raises_is_an_error_at_teardown(
    target: MbedTLSTarget, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: MbedTLSTarget, attempt: object, *, failed: bool) -> None:
        raise RuntimeError("shutdown failed")

    monkeypatch.setattr(MbedTLSTarget, "_teardown", broken)
    outcome = target.run(_case())
    assert (outcome.status, outcome.step) == (Status.ERROR, Step.TEARDOWN)
    assert outcome.message == "RuntimeError: shutdown failed"


def test_the_probe_allocates_and_frees_through_mbedtls(target: MbedTLSTarget) -> None:
    probe = target.probe()
    assert probe.allocate is not None
    assert "Mbed TLS" in probe.stack
    probe.allocate()()


def test_the_heap_ledger_sees_the_target() -> None:
    (found,) = survey(["mbedtls"]).targets
    assert found.error == ""
    assert found.seen_by()[0] == "heap"
    assert not any(s.sees for s in found.sights if s.ledger.startswith("openssl"))


# -- end to end: tlsleak check, in the worker, with the heap ledger ------------------------


def test_no_findings_on_the_bundled_corpus(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = tmp_path / "report.json"
    assert main(["check", "mbedtls", "-q", "--json", str(report)]) == 0
    assert "no findings" in capsys.readouterr().out
    data = json.loads(report.read_text())
    assert data["ledgers"] == ["heap", "fds"]
    assert data["outcomes"]["accepted"] > 0
    assert data["outcomes"]["rejected"] > 0
    assert "error" not in data["outcomes"]


#: A user's init path: the target, but a rejected attempt keeps what it made
#: (the trust store's certificates, parsed by Mbed TLS) instead of dropping it.
LEAKY = """\
from tlsleak.targets import Rejected
from tlsleak.targets.base import Status
from tlsleak.targets.mbedtls import MbedTLSTarget

_kept = []


class Leaky(MbedTLSTarget):
    def _teardown(self, attempt, *, failed):
        if failed:
            _kept.append(attempt)  # the bug: the failure path forgets its teardown
            return
        super()._teardown(attempt, failed=failed)


_TARGET = Leaky()


def init(case):
    outcome = _TARGET.run(case)
    if outcome.status is not Status.ACCEPTED:
        raise Rejected(outcome.step or "init", outcome.message)
"""


@pytest.fixture
def user_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The current folder, where ``check`` imports a user callable from."""
    folder = tmp_path / "project"
    folder.mkdir()
    monkeypatch.chdir(folder)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(folder))])
    yield folder
    for name in [n for n in sys.modules if n.startswith("mbleaky")]:
        del sys.modules[name]


def test_the_heap_ledger_finds_a_variant_that_keeps_a_rejected_attempt(
    user_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (user_folder / "mbleaky.py").write_text(LEAKY)
    corpus = tmp_path / "corpus"
    write_case(corpus, _case(cert=GARBAGE))  # CA parsed, then refused at the certificate
    report = tmp_path / "report.json"
    code = main(["check", "mbleaky:init", str(corpus), "--ledger", "heap", "--json", str(report)])
    assert code == 1, capsys.readouterr()
    (finding,) = json.loads(report.read_text())["findings"]
    assert finding["kind"] == "leak"
    assert finding["delta"]["heap.blocks"] > 0
    # The target itself, on the same case: nothing kept, nothing found.
    assert main(["check", "mbedtls", str(corpus), "--ledger", "heap", "-q"]) == 0


# -- a defect of python-mbedtls 2.10.1 that tlsleak finds ------------------------------------

#: A user's init path that hands the whole CA bundle to Mbed TLS's own parser:
#: ``CRT.from_buffer`` is ``mbedtls_x509_crt_parse``, which wants PEM to end
#: with a NUL and parses every certificate of the bundle into one chain.
BUNDLE = """\
from mbedtls import tls, x509
from mbedtls.exceptions import TLSError
from tlsleak.targets import Rejected


def init(case):
    try:
        ca = x509.CRT.from_buffer(case.ca + b"\\0")
    except TLSError as exc:
        raise Rejected("ca", str(exc)) from None
    config = tls.TLSConfiguration(trust_store=tls.TrustStore([ca]))
    tls.ClientContext(config).wrap_buffers("localhost").shutdown()
"""


def test_python_mbedtls_loses_every_certificate_after_the_first_of_a_parsed_bundle(
    user_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # CRT.__dealloc__ calls unset_next() (ctx.next = NULL) before
    # mbedtls_x509_crt_free: the certificates Mbed TLS chained after the first
    # are never freed, on every attempt, accepted or not.  Known, unfixed.
    (user_folder / "mbleaky_bundle.py").write_text(BUNDLE)
    ident = identity(KeyType.EC_P256)
    one, two = tmp_path / "one", tmp_path / "two"
    write_case(one, InitCase(mode=Mode.CLIENT, ca=cert_bytes(ident.root)))
    bundle = cert_bytes(ident.root) + cert_bytes(ident.chain[0])
    write_case(two, InitCase(mode=Mode.CLIENT, ca=bundle))
    target = "mbleaky_bundle:init"
    assert main(["check", target, str(one), "--ledger", "heap", "-q"]) == 0
    report = tmp_path / "report.json"
    code = main(["check", target, str(two), "--ledger", "heap", "-q", "--json", str(report)])
    assert code == 1, capsys.readouterr()
    (finding,) = json.loads(report.read_text())["findings"]
    assert finding["kind"] == "leak"
    assert finding["outcome"]["status"] == "accepted"
    assert finding["delta"]["heap.blocks"] > 0


def test_campaigns_do_not_trace_the_target_because_failed_mallocs_would_hit_atheris() -> None:
    # Its allocations fail through the heap interposer, the k-th malloc of the
    # whole process.  Traced, the target runs atheris's hooks, whose C++
    # allocations that failure hits: "MemoryError: std::bad_alloc" at a line
    # that allocates nothing, then "SystemError: error return without
    # exception set" and dead workers (measured: 5 false findings in a
    # 3-minute --fail-alloc campaign traced, none untraced).
    from tlsleak.fuzz.instrumentation import TARGET_MODULES

    assert "tlsleak.targets.mbedtls" not in TARGET_MODULES
