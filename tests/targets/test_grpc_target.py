"""The ``grpc`` target: steps, the probe, and the heap ledger on it (controls and known leaks)."""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from tlsleak.cases.case import InitCase, Mode
from tlsleak.cases.files import bundled_corpus, case_files, load_case, write_case
from tlsleak.cli import main
from tlsleak.targets import Status, Step, resolve_target
from tlsleak.targets.probe import survey

pytest.importorskip("grpc")

from tlsleak.targets.grpc_target import GrpcTarget

#: Cases of one mode taken from the bundled corpus for the ledger tests (runtime).
SAMPLE = 20

GARBAGE = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"


@pytest.fixture(scope="module")
def target() -> GrpcTarget:
    made = resolve_target("grpc")
    assert isinstance(made, GrpcTarget)
    return made


def _sample(folder: Path, mode: Mode, count: int = SAMPLE) -> Path:
    """``count`` cases of ``mode``, evenly spread over the bundled corpus, copied to ``folder``."""
    files = [p for p in case_files([bundled_corpus()]) if load_case(p).mode is mode]
    step = max(1, len(files) // count)
    folder.mkdir()
    for path in files[::step][:count]:
        shutil.copy(path, folder / path.name)
    return folder


def test_valid_material_is_accepted_in_both_modes(
    target: GrpcTarget, valid_case: InitCase, valid_client_case: InitCase
) -> None:
    assert target.run(valid_case).status is Status.ACCEPTED
    assert target.run(valid_client_case).status is Status.ACCEPTED


@pytest.mark.parametrize("mode", [Mode.SERVER, Mode.CLIENT])
def test_each_refusal_is_at_the_step_grpc_names(
    target: GrpcTarget, valid_case: InitCase, mode: Mode
) -> None:
    case = replace(valid_case, mode=mode)
    bad_cert = target.run(replace(case, cert=GARBAGE))
    assert (bad_cert.status, bad_cert.step) == (Status.REJECTED, Step.CERTIFICATE)
    assert bad_cert.message == "Invalid cert chain file."
    bad_key = target.run(replace(case, key=b"not a key"))
    assert (bad_key.status, bad_key.step) == (Status.REJECTED, Step.KEY)
    bad_ca = target.run(replace(case, ca=b"junk"))
    assert (bad_ca.status, bad_ca.step) == (Status.REJECTED, Step.CA)


def test_half_a_key_pair_is_refused_before_grpc_aborts(
    target: GrpcTarget, valid_client_case: InitCase
) -> None:
    # gRPC aborts the process (a CHECK failure) on a client key without a
    # certificate: reaching the assertion below means it was never called.
    key_only = target.run(replace(valid_client_case, cert=b""))
    assert (key_only.status, key_only.step) == (Status.REJECTED, Step.CHECK_KEY)
    cert_only = target.run(replace(valid_client_case, key=b""))
    assert (cert_only.status, cert_only.step) == (Status.REJECTED, Step.KEY)
    bare_server = target.run(InitCase(mode=Mode.SERVER))
    assert (bare_server.status, bare_server.step) == (Status.REJECTED, Step.CERTIFICATE)


def test_server_names(target: GrpcTarget, valid_client_case: InitCase) -> None:
    not_text = target.run(replace(valid_client_case, server_name=b"\xff\xfe"))
    assert (not_text.status, not_text.step) == (Status.REJECTED, Step.SERVER_NAME)
    # Cut at the first NUL, as a C string is.
    cut = target.run(replace(valid_client_case, server_name=b"localhost\0junk"))
    assert cut.status is Status.ACCEPTED


def test_grpc_log_lines_it_does_not_know_are_passed_on(
    target: GrpcTarget, capfd: pytest.CaptureFixture[str]
) -> None:
    from tlsleak.targets.grpc_target import _Log

    log = _Log()
    log.data = (
        b"E1205 04:32:35.153792   30060 ssl_transport_security.cc:1569] Invalid private key.\n"
        b"E1205 04:32:35.153800   30060 other.cc:12] something else\n"
    )
    assert log.refusal() == (Step.KEY, "Invalid private key.")
    assert capfd.readouterr().err == "E1205 04:32:35.153800   30060 other.cc:12] something else\n"


def test_the_heap_ledger_sees_grpc() -> None:
    (found,) = survey(["grpc"]).targets
    assert found.error == ""
    assert "heap" in found.seen_by()


def test_client_mode_is_clean_on_a_corpus_sample(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The negative control: gRPC frees a channel on its own threads after
    # close(); the target waits for that, so no attempt looks leaky.
    sample = _sample(tmp_path / "client", Mode.CLIENT)
    assert main(["check", "grpc", str(sample)]) == 0, capsys.readouterr().out
    assert "no findings" in capsys.readouterr().out


LEAKY = """
import grpc

from tlsleak.targets import Rejected, Status
from tlsleak.targets.grpc_target import GrpcTarget

_target = GrpcTarget()
_kept = []


def init(case):
    outcome = _target.run(case)
    if outcome.status is Status.REJECTED:
        # The planted bug: a channel made on the failure path and never closed.
        creds = grpc.ssl_channel_credentials(root_certificates=case.ca or None)
        _kept.append(grpc.secure_channel("127.0.0.1:9", creds))
        raise Rejected(outcome.step or "init", outcome.message)
"""


def test_a_channel_kept_on_the_failure_path_is_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "leaky_grpc.py").write_text(LEAKY)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), *sys.path]))
    sample = _sample(tmp_path / "client", Mode.CLIENT, 6)
    report = tmp_path / "report.json"
    args = ["check", "leaky_grpc:init", str(sample), "--ledger", "heap", "--json", str(report)]
    assert main(args) == 1, capsys.readouterr()
    findings = json.loads(report.read_text())["findings"]
    assert findings
    assert all(f["kind"] == "leak" for f in findings)
    assert all(f["delta"]["heap.blocks"] > 0 for f in findings)


def test_known_server_leaks_are_found(
    tmp_path: Path, valid_case: InitCase, capsys: pytest.CaptureFixture[str]
) -> None:
    # Known findings of grpcio 1.85.3 (docs/grpc.md): ssl_server_credentials
    # never frees its key-pair array (one block on every server case), and a
    # server whose add_secure_port refused the material, never started, is
    # not freed by stop() (grpc/grpc#31509: some 24 blocks more).
    folder = tmp_path / "server"
    write_case(folder, valid_case)
    write_case(folder, replace(valid_case, cert=GARBAGE))
    report = tmp_path / "report.json"
    assert main(["check", "grpc", str(folder), "--json", str(report)]) == 1
    findings = json.loads(report.read_text())["findings"]
    blocks = {f["outcome"]["status"]: f["delta"]["heap.blocks"] for f in findings}
    assert blocks.keys() == {"accepted", "rejected"}, findings
    assert blocks["accepted"] == 1  # the pair array alone
    assert blocks["rejected"] > 10  # and the server


class _FakeHeap:
    """Live block counts read one after another, the last one repeated."""

    def __init__(self, counts: list[int]) -> None:
        self.counts_left = counts
        self.reads = 0

    def counts(self) -> tuple[int, int]:
        self.reads += 1
        value = self.counts_left[0]
        if len(self.counts_left) > 1:
            self.counts_left.pop(0)
        return value, 0


def test_the_teardown_wait_ends_when_the_count_is_back() -> None:
    from tlsleak.targets.grpc_target import _Teardown

    teardown = _Teardown()
    heap = _FakeHeap([300, 250, 101, 90])
    teardown._heap = heap  # type: ignore[assignment]
    teardown.wait(100)
    assert heap.counts_left == [90]  # it stopped at 101: within the slack of 100
    assert heap.reads == 3


def test_the_teardown_wait_ends_when_the_count_stays_put() -> None:
    # What a leaking attempt keeps never goes: the wait ends once the count
    # has not moved for a while, instead of waiting for it.
    from tlsleak.targets.grpc_target import _Teardown

    teardown = _Teardown()
    heap = _FakeHeap([300, 250])
    teardown._heap = heap  # type: ignore[assignment]
    teardown.wait(100)
    assert heap.counts_left == [250]
    assert heap.reads > 2
