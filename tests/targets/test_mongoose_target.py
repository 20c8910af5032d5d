"""The mongoose target: Mongoose's built-in TLS through cymongoose, in this process and checked."""

from __future__ import annotations

import ctypes
import json
import os
import sys
from pathlib import Path

import pytest

from tlsleak.cases.case import InitCase, Mode
from tlsleak.cases.files import bundled_corpus, load_cases, write_case
from tlsleak.cases.material import KeyFormat, KeyType, cert_bytes, identity, key_bytes
from tlsleak.cli import main
from tlsleak.targets import TARGETS, Status, Step, resolve_target
from tlsleak.targets.probe import survey

cymongoose = pytest.importorskip("cymongoose")

from tlsleak.targets.mongoose import MongooseTarget  # noqa: E402  (after the skip)

GARBAGE_PEM = b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n"
DSA_KEY = b"-----BEGIN DSA PRIVATE KEY-----\nAAAA\n-----END DSA PRIVATE KEY-----\n"


@pytest.fixture(scope="module")
def target() -> MongooseTarget:
    made = resolve_target("mongoose")
    assert isinstance(made, MongooseTarget)
    return made


def _ec_server(**changes: bytes) -> InitCase:
    ident = identity(KeyType.EC_P256, issued=False)
    blobs = {"cert": cert_bytes(ident.leaf), "key": key_bytes(ident.key, KeyFormat.SEC1)}
    blobs.update(changes)
    return InitCase(Mode.SERVER, **blobs)


def _ca_bundle_server() -> InitCase:
    """A server with a CA bundle of two certificates: Mongoose keeps the first one only."""
    ident = identity(KeyType.EC_P256)
    return _ec_server(ca=cert_bytes(ident.root) + cert_bytes(ident.chain[0]))


def test_mongoose_is_a_builtin_target(target: MongooseTarget) -> None:
    assert "mongoose" in TARGETS
    assert target.name == "mongoose"
    assert target.ledgers == ("heap", "fds")
    assert target.error_queue() is None


@pytest.mark.parametrize("mode", [Mode.SERVER, Mode.CLIENT])
def test_valid_material_is_accepted(target: MongooseTarget, mode: Mode) -> None:
    ident = identity(KeyType.EC_P256)
    case = InitCase(
        mode,
        ca=cert_bytes(ident.root),
        cert=cert_bytes(ident.leaf),
        key=key_bytes(ident.key, KeyFormat.SEC1),
        server_name=b"localhost" if mode is Mode.CLIENT else b"",
    )
    assert target.run(case).status is Status.ACCEPTED


@pytest.mark.parametrize(
    ("case", "step", "message"),
    [
        (_ec_server(key=b"junk"), Step.KEY, "EC private key: invalid ASN.1"),
        (_ec_server(key=b""), Step.KEY, "Certificate provided without a private key"),
        (
            _ec_server(key=DSA_KEY),
            Step.KEY,
            "Expected EC PRIVATE KEY, RSA PRIVATE KEY, or PRIVATE KEY (PKCS#",
        ),
        # Only logged by Mongoose: no MG_EV_ERROR, init just stops.
        (_ec_server(ca=GARBAGE_PEM), Step.CA, "Failed to load CA certificate"),
        (_ec_server(cert=GARBAGE_PEM), Step.CERTIFICATE, "Failed to load certificate"),
        (InitCase(Mode.CLIENT, server_name=b"h" * 300), Step.SERVER_NAME, "hostname too long"),
    ],
)
def test_refusals_map_to_their_steps(
    target: MongooseTarget,
    case: InitCase,
    step: Step,
    message: str,
    capfd: pytest.CaptureFixture[str],
) -> None:
    outcome = target.run(case)
    assert (outcome.status, outcome.step) == (Status.REJECTED, step)
    assert outcome.message.startswith(message)
    out, err = capfd.readouterr()
    assert (out, err) == ("", "")  # Mongoose's log goes to the target, not to the terminal


def test_what_mongoose_does_not_check_at_init_is_accepted(target: MongooseTarget) -> None:
    other = identity(KeyType.EC_P256, slot=1)
    mismatched = _ec_server(key=key_bytes(other.key, KeyFormat.SEC1))
    key_only = InitCase(Mode.SERVER, key=b"junk")
    assert target.run(mismatched).status is Status.ACCEPTED
    assert target.run(key_only).status is Status.ACCEPTED


def test_a_connection_mongoose_cannot_make_is_a_rejection(
    target: MongooseTarget, monkeypatch: pytest.MonkeyPatch
) -> None:
    # mg_connect returns NULL (cymongoose raises RuntimeError) on a loopback
    # address only when its calloc fails: what --fail-alloc makes happen.
    class NoConnections:
        def __init__(self, manager: object) -> None:
            self.manager = manager

        def connect(self, url: str, http: bool) -> object:
            raise RuntimeError(f"Failed to connect to '{url}'")

        def __getattr__(self, name: str) -> object:
            return getattr(self.manager, name)

    monkeypatch.setattr(target, "_manager", NoConnections(target._manager))
    outcome = target.run(_ec_server())
    assert (outcome.status, outcome.step) == (Status.REJECTED, Step.CONNECTION)
    assert outcome.message.startswith("Failed to connect")


def test_time_is_known_so_no_sntp_query_is_started(target: MongooseTarget) -> None:
    # With a CA, verification on and mg_boot_timestamp_ms == 0, mg_tls_init would
    # connect to time.google.com (through a DNS query to 8.8.8.8).
    lib = ctypes.CDLL(cymongoose._mongoose.__file__)
    boot = ctypes.c_uint64.in_dll(lib, "mg_boot_timestamp_ms")
    saved = boot.value
    boot.value = 0
    try:
        ident = identity(KeyType.EC_P256)
        case = InitCase(Mode.CLIENT, ca=cert_bytes(ident.root), server_name=b"localhost")
        assert target.run(case).status is Status.ACCEPTED
        assert boot.value != 0
    finally:
        if boot.value == 0:
            boot.value = saved


def test_every_bundled_case_runs_to_an_outcome_and_closes(target: MongooseTarget) -> None:
    cases = [case for _, case in load_cases([bundled_corpus()])][::4]
    outcomes = [target.run(case) for case in cases]
    assert all(o.status is not Status.ERROR for o in outcomes), [
        o.describe() for o in outcomes if o.status is Status.ERROR
    ]
    # Both ends of every attempt closed: only the listener is left.
    assert len(target._manager.connections) == 1


def test_the_heap_ledger_sees_mongoose() -> None:
    (found,) = survey(["mongoose"]).targets
    assert found.error == ""
    assert "heap" in found.seen_by()


# --- tlsleak check: the known finding, and the controls -----------------------------


def _sample(folder: Path, cases: list[InitCase]) -> Path:
    for case in cases:
        write_case(folder, case)
    return folder


def _clean_sample() -> list[InitCase]:
    """Every 6th bundled case, without the server CA bundles of the known leak."""
    cases = [case for _, case in load_cases([bundled_corpus()])][::6]
    return [c for c in cases if c.mode is Mode.CLIENT or c.ca.count(b"-----BEGIN") < 2]


def test_check_is_clean_on_a_corpus_sample(tmp_path: Path) -> None:
    sample = _sample(tmp_path / "sample", _clean_sample())
    report = tmp_path / "report.json"
    ledgers = ["--ledger", "heap", "--ledger", "fds", "--ledger", "pyobjects"]
    assert main(["check", "mongoose", str(sample), *ledgers, "--json", str(report), "-q"]) == 0
    assert json.loads(report.read_text())["findings"] == []


def test_check_finds_the_lost_ca_bundle_certificates(tmp_path: Path) -> None:
    # A real leak of Mongoose 7.23's built-in TLS (docs/mongoose.md): on a
    # server, mg_tls_init keeps the first DER of a CA bundle and frees the
    # array, not the other certificates' DER buffers.
    sample = _sample(tmp_path / "sample", [_ca_bundle_server(), _ec_server()])
    report = tmp_path / "report.json"
    assert main(["check", "mongoose", str(sample), "--json", str(report), "-q"]) == 1
    (finding,) = json.loads(report.read_text())["findings"]
    assert finding["kind"] == "leak"
    assert finding["outcome"]["status"] == "accepted"
    assert finding["delta"]["heap.blocks"] >= 1
    lost_der = len(cert_bytes(identity(KeyType.EC_P256).chain[0])) // 2  # PEM to DER, at least
    assert finding["delta"]["heap.bytes"] >= lost_der


LEAKY = """
from tlsleak.cases.case import InitCase
from tlsleak.targets.base import Rejected, Status
from tlsleak.targets.mongoose import MongooseTarget


class LeakyMongoose(MongooseTarget):
    # The planted bug: a refused init keeps a block of Mongoose's allocator
    # (mg_calloc) it should have freed, as a lost struct tls_data would be.
    def __init__(self):
        super().__init__()
        self.kept = []
        self._allocate = self.probe().allocate

    def run(self, case):
        outcome = super().run(case)
        if outcome.status is Status.REJECTED:
            self.kept.append(self._allocate())  # its free function, never called
        return outcome


_target = LeakyMongoose()


def run(case: InitCase) -> None:
    outcome = _target.run(case)
    if outcome.status is Status.REJECTED:
        raise Rejected(outcome.step or "", outcome.message)
"""


def test_check_finds_a_planted_leak_on_the_failure_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "leaky_mongoose.py").write_text(LEAKY)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), *sys.path]))
    sample = _sample(tmp_path / "sample", [_ec_server(key=b"junk"), _ec_server()])
    report = tmp_path / "report.json"
    args = ["check", "leaky_mongoose:run", str(sample), "--ledger", "heap", "--json", str(report)]
    assert main([*args, "-q"]) == 1
    (finding,) = json.loads(report.read_text())["findings"]
    assert (finding["kind"], finding["step"]) == ("leak", "key")
    assert finding["delta"]["heap.blocks"] >= 1


MANAGER_PER_ATTEMPT = """
import cymongoose
from tlsleak.cases.case import InitCase


def run(case: InitCase) -> None:
    manager = cymongoose.Manager(None)
    manager.close()  # mg_mgr_free runs; the Python object is never freed
"""


def test_a_manager_per_attempt_leaks_in_cymongoose(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The known binding defect that makes the target keep one manager
    # (docs/mongoose.md): Manager.__cinit__ takes a reference to itself that
    # only __dealloc__ drops.  When cymongoose fixes it, this fails: then a
    # manager per attempt is possible again.
    (tmp_path / "manager_per_attempt.py").write_text(MANAGER_PER_ATTEMPT)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), *sys.path]))
    sample = _sample(tmp_path / "sample", [InitCase()])
    report = tmp_path / "report.json"
    args = ["check", "manager_per_attempt:run", str(sample), "--ledger", "heap"]
    assert main([*args, "--json", str(report), "-q"]) == 1
    (finding,) = json.loads(report.read_text())["findings"]
    assert finding["kind"] == "leak"
    assert finding["delta"]["heap.blocks"] >= 1
