"""Signatures name the root cause: one bug is one finding, whatever the input adds.

Positive controls: the leaky C control (one missing free) and the control that
keeps OpenSSL's errors queued (one missing ERR_clear_error per failing step)
each give one signature over the whole bundled corpus, although what hangs off
the leaked SSL_CTX and what the parser said vary with the input.  Negative
controls: different roots, different error sources, give different signatures.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tlsleak.cases.case import InitCase, Step
from tlsleak.check.findings import MAX_VARIANTS, OTHER_VARIANTS, FindingStore
from tlsleak.check.oracle import Finding, FindingKind
from tlsleak.cli import main
from tlsleak.ledgers.base import Site
from tlsleak.openssl.errors import OpenSSLError
from tlsleak.targets import Outcome, Status

PEM_ERR = OpenSSLError("PEM routines", "no start line")
ASN1_ERR = OpenSSLError("asn1 encoding routines", "not enough data")
V3_ERR = OpenSSLError("X509 V3 routines", "invalid certificate")
SNI_ERR = OpenSSLError("SSL routines", "invalid server name")


def _leak(sites: tuple[Site, ...], root: str | None, delta: int = 300) -> Finding:
    outcome = Outcome(Status.REJECTED, Step.KEY, (ASN1_ERR,), "bad key")
    return Finding(
        FindingKind.LEAK,
        "c:lib.so",
        InitCase(),
        outcome,
        delta={"heap.blocks": delta, "heap.bytes": 100 * delta},
        replays=3,
        sites=sites,
        root_site=root,
    )


Errors = tuple[OpenSSLError, ...]


def _stale(step: str | None, own: Errors, left: Errors) -> Finding:
    status = Status.ACCEPTED if step is None else Status.REJECTED
    outcome = Outcome(status, step, own, "refused" if step else "")
    return Finding(FindingKind.ERROR_QUEUE, "t", InitCase(), outcome, errors_left=left)


SMALL = (Site("../ssl/ssl_lib.c", 691, 1, 7608), Site("../ssl/ssl_lib.c", 3214, 1, 1616))
BIG = (Site("../crypto/asn1/tasn_new.c", 135, 90, 9000), *SMALL)


def test_a_leak_is_named_by_its_root_site_not_by_what_hangs_off_it() -> None:
    small = _leak(SMALL, "../ssl/ssl_lib.c:3214", delta=300)
    big = _leak(BIG, "../ssl/ssl_lib.c:3214", delta=470)
    assert small.signature == big.signature
    assert "ssl_lib.c:3214" in small.signature
    assert "tasn_new" not in big.signature  # the ranking by bytes is no part of it
    # Negative control: another root is another bug.
    assert _leak(SMALL, "../ssl/ssl_lib.c:691").signature != small.signature


def test_the_root_site_survives_json() -> None:
    finding = _leak(BIG, "../ssl/ssl_lib.c:3214")
    assert Finding.from_json(finding.to_json()).signature == finding.signature
    without = _leak((), None).to_json()
    assert "root_site" not in without  # reports without attribution keep their form


def test_a_stored_leak_of_the_old_scheme_still_reproduces() -> None:
    fresh = _leak(BIG, "../ssl/ssl_lib.c:3214")
    legacy = _leak(SMALL, None)  # stored before root sites: top sites instead
    assert fresh.signature != legacy.signature
    assert fresh.reproduces(legacy)
    assert fresh.reproduces(fresh)
    # Negative control: other roots, or no sites at all to excuse the difference.
    other = _leak(SMALL, None, delta=1)
    other = Finding(
        FindingKind.LEAK, "c:other.so", other.case, other.outcome, delta=other.delta, sites=SMALL
    )
    assert not fresh.reproduces(other)
    assert not fresh.reproduces(_stale(Step.KEY, (ASN1_ERR,), (ASN1_ERR,)))


def test_errors_left_by_a_failing_step_are_one_finding_whatever_they_say() -> None:
    a = _stale(Step.CERTIFICATE, (PEM_ERR,), (PEM_ERR,))
    b = _stale(Step.CERTIFICATE, (ASN1_ERR, PEM_ERR), (ASN1_ERR, PEM_ERR))
    assert a.left_by == b.left_by == "certificate"
    assert a.signature == b.signature
    assert a.variant != b.variant  # the variants are told apart inside the finding
    # Negative control: another failing step's error path is another place to fix.
    assert _stale(Step.KEY, (PEM_ERR,), (PEM_ERR,)).signature != a.signature


def test_errors_a_successful_call_left_are_one_finding_whatever_failed_later() -> None:
    accepted = _stale(None, (), (V3_ERR,))
    failed_later = _stale(Step.SERVER_NAME, (SNI_ERR,), (V3_ERR,))
    assert accepted.left_by == failed_later.left_by == "success"
    assert accepted.signature == failed_later.signature
    # Negative control: a rejection that left its own errors is placed at its step.
    assert _stale(Step.SERVER_NAME, (SNI_ERR,), (SNI_ERR,)).left_by == "server-name"


def test_the_store_counts_variants_inside_one_finding(tmp_path: Path) -> None:
    store = FindingStore(tmp_path)
    first = _stale(Step.CERTIFICATE, (PEM_ERR,), (PEM_ERR,))
    second = _stale(Step.CERTIFICATE, (ASN1_ERR,), (ASN1_ERR,))
    folder, new = store.add(first, first.case)
    assert new
    assert store.add(second, second.case) == (folder, False)
    assert store.add(second, second.case) == (folder, False)
    data = json.loads((folder / "finding.json").read_text())
    assert data["count"] == 3
    assert data["variants"] == {first.variant: 1, second.variant: 2}
    assert folder.name.startswith("error-queue-certificate-")


def test_variants_beyond_the_limit_are_counted_together(tmp_path: Path) -> None:
    store = FindingStore(tmp_path)
    findings = [
        _stale(Step.KEY, (e,), (e,))
        for e in (OpenSSLError("lib", f"reason {i}") for i in range(MAX_VARIANTS + 5))
    ]
    for finding in findings:
        folder, _new = store.add(finding, finding.case)
    variants = json.loads((folder / "finding.json").read_text())["variants"]
    assert len(variants) == MAX_VARIANTS + 1
    assert variants[OTHER_VARIANTS] == 5
    assert sum(variants.values()) == len(findings)


@pytest.mark.parametrize(
    ("control", "kind"), [("leaky", "leak"), ("fixed-keep-errors", "error-queue")]
)
def test_one_cause_is_one_finding_over_the_whole_corpus(
    control: str,
    kind: str,
    c_controls: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The bundled corpus: certificates and keys of every size and defect, so
    # what hangs off the leaked SSL_CTX and what the parser says both vary.
    report = tmp_path / "report.json"
    assert main(["check", f"c:{c_controls[control]}", "--json", str(report)]) == 1
    capsys.readouterr()
    findings = json.loads(report.read_text())["findings"]
    assert {f["kind"] for f in findings} == {kind}
    signatures = {f["signature"] for f in findings}
    if kind == "leak":
        assert len(signatures) == 1, signatures  # one missing free
        assert all("ssl_lib.c" in f["root_site"] for f in findings)  # SSL_CTX_new's
    else:
        # One missing ERR_clear_error behind each step that fails: at most one
        # finding per step, although the error lists are many.
        steps = {f["step"] for f in findings}
        assert len(signatures) == len(steps)
        assert len({tuple(map(tuple, f["errors_left"])) for f in findings}) > len(steps)


def test_a_target_that_names_no_errors_is_placed_at_its_failing_step() -> None:
    # The C ABI reports a step and a message, no errors: what it left is its own.
    assert _stale(Step.CA, (), (PEM_ERR,)).left_by == "ca"


def test_stale_errors_after_success_are_one_finding(
    c_controls: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A dropped CA bundle leaves whatever its parser said, on attempts that
    # succeed: one place, however many error lists.
    report = tmp_path / "report.json"
    assert main(["check", f"c:{c_controls['stale']}", "--json", str(report)]) == 1
    capsys.readouterr()
    findings = json.loads(report.read_text())["findings"]
    assert {f["kind"] for f in findings} == {"error-queue"}
    assert {f["signature"].rsplit(" | ", 1)[1] for f in findings} == {"success"}
    assert len({tuple(map(tuple, f["errors_left"])) for f in findings}) > 1


# -- gRPC's two known leaks: two findings --------------------------------------------

#: Bundled server cases gRPC accepts (it leaks its credentials' key-pair
#: array: one block) and refuses at the certificate and at the key (the
#: never-started server too, grpc/grpc#31509: some 24 blocks).
GRPC_ACCEPTED = (
    "38944f7fc9427b89f4bc5a4613206c98820bb4fb",
    "53fdddd5c28e545a640c5921283469064a1f086d",
    "9f664f83d0f36e3aa68613b65eeb5bcd0ebbec2d",
    "ab17a1e1970a96fba45f82141c5112e1798c3e01",
    "aeed1ca2d94b7809ca98cfb0970ad39a4f2e9f68",
    "e067d652958572857284cc563d1d151b1f4e909f",
    "ea202db95978b263447ff6ec9ad9b6f3d3671a04",
)
GRPC_REFUSED = (
    "00522e1f08af6b9b984b969141723ef18e39ca8c",  # at the certificate
    "0bceeeea15973ffd6ec3bd47d51c573610dd3803",  # at the key
)


def _grpc_signatures(tmp_path: Path, name: str) -> dict[str | None, set[str]]:
    corpus = Path(__file__).parents[2] / "corpus"
    report = tmp_path / f"{name}.json"
    cases = [str(corpus / c) for c in (*GRPC_ACCEPTED, *GRPC_REFUSED)]
    assert main(["check", "grpc", *cases, "--json", str(report), "-q"]) == 1
    by_step: dict[str | None, set[str]] = {}
    for finding in json.loads(report.read_text())["findings"]:
        by_step.setdefault(finding["step"], set()).add(finding["signature"])
    return by_step


def test_grpcs_two_leaks_are_two_findings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("grpc")
    first = _grpc_signatures(tmp_path, "first")
    second = _grpc_signatures(tmp_path, "second")
    capsys.readouterr()
    # A refused server (at the certificate or the key) is the server's leak;
    # an accepted one (some are missed: one block a run is near the noise)
    # the credentials': one signature each, rooted in grpcio's stripped
    # extension by a function's start, and the same on another run.
    refused = first.pop("certificate") | first.pop("key")
    assert len(refused) == 1
    (accepted,) = first.pop(None)
    assert not first
    assert refused != {accepted}
    for signature in (*refused, accepted):
        assert "cygrpc.cpython-" in signature
        assert "(fn@0x" in signature
    assert second.pop("certificate") | second.pop("key") == refused
    assert second.pop(None, {accepted}) == {accepted}
