"""Structure-aware minimisation: large multi-certificate inputs shrink to small reproducers."""

from __future__ import annotations

import contextlib
import datetime
import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import OpenSSL.SSL
import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tlsleak.cases import der
from tlsleak.cases.blobs import is_pem, pem_blocks
from tlsleak.cases.case import InitCase, Mode
from tlsleak.cases.material import (
    KeyFormat,
    KeyType,
    PrivateKey,
    cert_bytes,
    key_bytes,
    private_key,
    sign,
)
from tlsleak.check.minimize import minimize, shrink, signature_predicate
from tlsleak.check.oracle import Oracle
from tlsleak.check.worker import IsolatedOracle
from tlsleak.targets import CallableTarget, resolve_target

PASSWORD = b"correct horse battery staple"


def _name(common_name: str) -> x509.Name:
    attributes = [
        (NameOID.COUNTRY_NAME, "NZ"),
        (NameOID.STATE_OR_PROVINCE_NAME, "Otago"),
        (NameOID.LOCALITY_NAME, "Dunedin"),
        (NameOID.ORGANIZATION_NAME, "tlsleak large material"),
        (NameOID.ORGANIZATIONAL_UNIT_NAME, "minimiser tests"),
        (NameOID.COMMON_NAME, common_name),
    ]
    return x509.Name([x509.NameAttribute(oid, value) for oid, value in attributes])


def _cert(
    subject: str, key: PrivateKey, issuer: str, issuer_key: PrivateKey, serial: int, *, ca: bool
) -> x509.Certificate:
    """A certificate with many extensions (20 DNS names, policies, CRL points, ...)."""
    public = key.public_key()
    names = [x509.DNSName(f"host{i}.{subject}.example") for i in range(20)]
    crl = x509.DistributionPoint(
        [x509.UniformResourceIdentifier(f"http://crl.example/{subject}.crl")], None, None, None
    )
    policy = x509.PolicyInformation(
        x509.ObjectIdentifier("2.23.140.1.2.1"), [f"https://cps.example/{subject}"]
    )
    usage = x509.KeyUsage(True, False, True, False, False, ca, ca, False, False)
    extended = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(public)
        .serial_number(serial)
        .not_valid_before(datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC))
        .not_valid_after(datetime.datetime(2045, 1, 1, tzinfo=datetime.UTC))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
        .add_extension(usage, critical=True)
        .add_extension(x509.ExtendedKeyUsage(extended), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.CRLDistributionPoints([crl]), critical=False)
        .add_extension(x509.CertificatePolicies([policy]), critical=False)
    )
    return sign(builder, issuer_key)


def large_case() -> InitCase:
    """RSA-2048 everywhere: a CA bundle of six roots, a leaf with three intermediates, an
    encrypted key, a password and a server name (about 24 KB of blobs)."""
    leaf_key, inter_key, root_key = (private_key(KeyType.RSA2048, slot) for slot in range(3))
    root = _cert("root", root_key, "root", root_key, 1, ca=True)
    chain, issuer, issuer_key = [], "root", root_key
    for i in range(3):
        chain.append(_cert(f"inter{i}", inter_key, issuer, issuer_key, 10 + i, ca=True))
        issuer, issuer_key = f"inter{i}", inter_key
    leaf = _cert("leaf", leaf_key, issuer, issuer_key, 100, ca=False)
    others = [
        _cert(f"other{i}", inter_key, f"other{i}", inter_key, 200 + i, ca=True) for i in range(5)
    ]
    return InitCase(
        Mode.CLIENT,
        ca=b"".join(cert_bytes(c) for c in [*others[:3], root, *others[3:]]),
        cert=cert_bytes(leaf) + b"".join(cert_bytes(c) for c in reversed(chain)),
        key=key_bytes(leaf_key, KeyFormat.PKCS8_ENCRYPTED, password=PASSWORD),
        password=PASSWORD,
        server_name=b"leaf.example.org",
    )


@pytest.fixture(scope="module")
def large() -> InitCase:
    return large_case()


def _leaf(blob: bytes) -> x509.Certificate | None:
    try:
        if is_pem(blob):
            return x509.load_pem_x509_certificate(pem_blocks(blob)[0])
        return x509.load_der_x509_certificate(blob)
    except ValueError:
        return None


_kept: list[Any] = []


def leaks_when_the_leaf_names_hosts(case: InitCase) -> None:
    """Loses an SSL_CTX when the leaf certificate parses and carries subjectAltName."""
    leaf = _leaf(case.cert)
    if leaf is not None and any(
        isinstance(e.value, x509.SubjectAlternativeName) for e in leaf.extensions
    ):
        _kept.append(OpenSSL.SSL.Context(OpenSSL.SSL.TLS_METHOD))


@pytest.fixture(scope="module")
def san_oracle() -> Iterator[Oracle]:
    target = CallableTarget(leaks_when_the_leaf_names_hosts, name="leaks-when-san")
    with Oracle(target) as oracle:
        yield oracle


def _counting(predicate: Callable[[InitCase], bool]) -> tuple[list[InitCase], Callable[..., bool]]:
    seen: list[InitCase] = []

    def counted(case: InitCase) -> bool:
        seen.append(case)
        return predicate(case)

    return seen, counted


# --- positive controls ----------------------------------------------------------------------------


def test_a_leak_that_needs_the_leaf_shrinks_to_a_small_certificate(
    san_oracle: Oracle, large: InitCase
) -> None:
    [finding] = san_oracle.check(large).findings
    seen, predicate = _counting(signature_predicate(san_oracle, finding.signature))
    result = shrink(large, predicate, budget=150)
    assert result.before == large.size > 20_000
    assert result.after == result.case.size < 400, result.case
    assert result.calls == len(seen) <= 150
    assert sum(result.wins.values()) >= 3
    [again] = san_oracle.check(result.case).findings
    assert again.signature == finding.signature
    assert result.case.mode is large.mode
    assert result.case.labels == large.labels
    assert (result.case.ca, result.case.key, result.case.password) == (b"", b"", b"")
    # What is left is a certificate that still carries the extension the leak needs.
    leaf = _leaf(result.case.cert)
    assert leaf is not None
    assert [type(e.value) for e in leaf.extensions] == [x509.SubjectAlternativeName]


def test_the_planted_leak_shrinks_to_a_byte(large: InitCase) -> None:
    case = InitCase(large.mode, large.ca, large.cert, large.key[:-100], large.password)
    with Oracle(resolve_target("control-leaky")) as oracle:
        [finding] = oracle.check(case).findings
        result = shrink(case, signature_predicate(oracle, finding.signature), budget=100)
        assert result.after <= 1
        assert [f.signature for f in oracle.check(result.case).findings] == [finding.signature]


def test_the_c_control_leak_shrinks_to_a_byte(c_controls: dict[str, Path], large: InitCase) -> None:
    case = InitCase(large.mode, large.ca, large.cert, large.key[:-100], large.password)
    with IsolatedOracle(f"c:{c_controls['leaky']}") as oracle:
        [finding] = oracle.check(case).findings
        result = shrink(case, signature_predicate(oracle, finding.signature), budget=60)
        assert result.after <= 1
        assert [f.signature for f in oracle.check(result.case).findings] == [finding.signature]


def _bundle(count: int) -> tuple[bytes, int]:
    """A CA bundle of ``count`` distinct certificates, and the serial of one in its middle."""
    key = private_key(KeyType.EC_P256, 1)
    certs = [_cert(f"ca{i}", key, f"ca{i}", key, 1000 + i, ca=True) for i in range(count)]
    return b"".join(cert_bytes(c) for c in certs), 1000 + count * 5 // 8


def test_one_needed_block_out_of_a_hundred_is_found_in_a_few_checks() -> None:
    bundle, needle = _bundle(100)
    assert len(bundle) > 100_000

    def holds_the_needle(case: InitCase) -> bool:
        # (pem_blocks wants a blob with PEM armor.)
        for block in pem_blocks(case.ca) if is_pem(case.ca) else []:
            with contextlib.suppress(ValueError):
                if x509.load_pem_x509_certificate(block).serial_number == needle:
                    return True
        return False

    case = InitCase(ca=bundle)
    # One block at a time would need 99 checks just to drop the others.
    result = shrink(case, holds_the_needle, budget=40)
    assert len(pem_blocks(result.case.ca)) == 1
    assert result.after < 1_000
    assert holds_the_needle(result.case)


# --- negative control, determinism, budget --------------------------------------------------------


def test_a_case_only_the_whole_input_fails_is_kept_as_it_is(large: InitCase) -> None:
    seen, predicate = _counting(lambda case: case == large)
    result = shrink(large, predicate, budget=300)
    assert result.case is large
    assert result.after == result.before == large.size
    assert result.calls == len(seen) > 0
    assert not result.wins
    assert minimize(large, lambda case: case == large, budget=50) is large


def _fickle(case: InitCase) -> bool:
    """A deterministic predicate with no structure: a third of all cases fail."""
    return hashlib.sha256(case.encode()).digest()[0] % 3 == 0


def test_the_same_case_and_predicate_give_the_same_search(large: InitCase) -> None:
    first_seen, first = _counting(_fickle)
    second_seen, second = _counting(_fickle)
    one = shrink(large, first, budget=80)
    two = shrink(large, second, budget=80)
    assert one == two
    assert [c.encode() for c in first_seen] == [c.encode() for c in second_seen]


@pytest.mark.parametrize("budget", [0, 1, 2, 5, 17, 60])
def test_the_budget_is_never_exceeded(large: InitCase, budget: int) -> None:
    seen, predicate = _counting(_fickle)
    result = shrink(large, predicate, budget=budget)
    assert result.calls == len(seen) <= budget
    assert result.case is large or _fickle(result.case)
    if budget == 0:
        assert result.case is large
        assert not result.complete


def test_stop_ends_the_search_before_the_next_check(large: InitCase) -> None:
    seen, predicate = _counting(lambda case: bool(case.cert))
    result = shrink(large, predicate, budget=100, stop=lambda: len(seen) >= 3)
    assert result.calls == len(seen) == 3
    assert not result.complete


def test_a_negative_budget_is_refused(large: InitCase) -> None:
    with pytest.raises(ValueError, match="budget"):
        shrink(large, bool, budget=-1)


def test_the_budget_goes_to_the_biggest_win_whichever_pass_offers_it() -> None:
    # 80 KB of DER whose failure needs any half of it: each of the DER pass's
    # drops that succeeds takes off a few bytes, cutting the blob in half 40 KB.
    blob = der.sequence(*[der.integer(i) for i in range(20_000)])
    result = shrink(InitCase(cert=blob), lambda case: len(case.cert) > len(blob) // 2, budget=30)
    assert result.after == len(blob) // 2 + 1


@pytest.mark.parametrize(
    "blob",
    [
        b"-----BEGIN X-----\n" * 10_000,
        b"-----BEGIN CERTIFICATE-----\n" + b"Proc-Type: 4,ENCRYPTED\n" * 10_000,
        b"\x30\x80" * 100_000,
        b"\n" * 200_000,
        der.tlv(0x04, b"\x00" * 200_000),
    ],
    ids=["begin-lines", "headers", "nested", "newlines", "octet-string"],
)
def test_hostile_blobs_are_searched_within_the_budget(blob: bytes) -> None:
    # Thousands of blocks, lines or nested elements: the work per move is
    # bounded (a slow search would show as a slow test, not a failure).
    case = InitCase(cert=blob, key=blob[:500])
    seen, predicate = _counting(lambda case: len(case.cert) > len(blob) // 3)
    result = shrink(case, predicate, budget=60)
    assert result.calls == len(seen) <= 60
    assert result.case is case or len(blob) // 3 < len(result.case.cert)
