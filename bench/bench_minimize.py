#!/usr/bin/env python3
"""Reproducer sizes: the structure-aware minimiser next to the one before it, on the same findings.

For each target below, every case of the corpus (the bundled one unless
``--corpus``) is checked once; the cases that give a leak are the findings.
``--sample`` of them (spread evenly over their sizes; 0 = all) are minimised
with the predicate the ``check --out`` command uses ("checking this case gives
a finding with exactly this signature"), at the same ``--budget`` (100, the
command's default), twice: with the minimiser of commit c93c0fc
(``bench/minimize_v1.py``) and with :func:`tlsleak.check.minimize.shrink`.
Large made-up inputs are minimised the same way and shown one by one: an
RSA-2048 case of 24 KB (a CA bundle of six certificates with many extensions, a
leaf with three intermediates, an encrypted key; its key damaged for the
targets that leak on any failure), and a CA bundle of 100 certificates
(160 KB).

Targets:

* ``control-leaky``: the planted Python leak (any failure loses SSL_CTX, SSL);
* ``c:control_leaky.c``: the planted C leak, built here with gcc and checked
  in a worker process with the heap shim (its signature names the first lost
  block's allocation site);
* ``leaks-when-san``: a callable that loses an SSL_CTX when the leaf
  certificate parses and names hosts (subjectAltName): a finding that needs
  structure kept, not just bytes.

Printed per target: the median blob bytes before, after the old minimiser and
after the new one, their ratio, and the median checks each spent; then the
large inputs one by one.  Nothing here asserts on anything.

    python bench/bench_minimize.py [--budget 100] [--sample 20] [--corpus DIR]
"""

from __future__ import annotations

import argparse
import datetime
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import OpenSSL.SSL
from cryptography import x509
from cryptography.x509.oid import NameOID

from minimize_v1 import minimize as minimize_v1
from tlsleak.cases.blobs import is_pem, pem_blocks
from tlsleak.cases.case import InitCase, Mode
from tlsleak.cases.files import bundled_corpus, case_files, load_cases
from tlsleak.cases.material import (
    KeyFormat,
    KeyType,
    PrivateKey,
    cert_bytes,
    key_bytes,
    private_key,
    sign,
)
from tlsleak.check.minimize import shrink, signature_predicate
from tlsleak.check.oracle import FindingKind, Oracle
from tlsleak.check.worker import IsolatedOracle
from tlsleak.targets import CallableTarget, resolve_target

REPO = Path(__file__).resolve().parent.parent
PASSWORD = b"correct horse battery staple"

_kept: list[Any] = []


def leaks_when_san(case: InitCase) -> None:
    """Loses an SSL_CTX when the leaf certificate parses and carries subjectAltName."""
    try:
        blob = pem_blocks(case.cert)[0] if is_pem(case.cert) else case.cert
        load = x509.load_pem_x509_certificate if is_pem(blob) else x509.load_der_x509_certificate
        load(blob).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except (ValueError, x509.ExtensionNotFound):
        return
    _kept.append(OpenSSL.SSL.Context(OpenSSL.SSL.TLS_METHOD))


# --- large made-up inputs -------------------------------------------------------------------------


def _cert(subject: str, key: PrivateKey, issuer: str, issuer_key: PrivateKey, serial: int) -> bytes:
    def name(cn: str) -> x509.Name:
        parts = [("NZ", NameOID.COUNTRY_NAME), ("Otago", NameOID.STATE_OR_PROVINCE_NAME)]
        parts += [("tlsleak bench", NameOID.ORGANIZATION_NAME), (cn, NameOID.COMMON_NAME)]
        return x509.Name([x509.NameAttribute(oid, value) for value, oid in parts])

    hosts = [x509.DNSName(f"host{i}.{subject}.example") for i in range(20)]
    policy = x509.PolicyInformation(x509.ObjectIdentifier("2.23.140.1.2.1"), ["https://cps"])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name(subject))
        .issuer_name(name(issuer))
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC))
        .not_valid_after(datetime.datetime(2045, 1, 1, tzinfo=datetime.UTC))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(x509.SubjectAlternativeName(hosts), critical=False)
        .add_extension(x509.CertificatePolicies([policy]), critical=False)
    )
    return cert_bytes(sign(builder, issuer_key))


def large_inputs() -> dict[str, InitCase]:
    leaf_key, inter_key, root_key = (private_key(KeyType.RSA2048, slot) for slot in range(3))
    roots = [_cert(f"root{i}", root_key, f"root{i}", root_key, 1 + i) for i in range(6)]
    chain, issuer = [], "root0"
    for i in range(3):
        chain.append(_cert(f"inter{i}", inter_key, issuer, root_key, 10 + i))
        issuer = f"inter{i}"
    leaf = _cert("leaf", leaf_key, issuer, inter_key, 100)
    key = key_bytes(leaf_key, KeyFormat.PKCS8_ENCRYPTED, password=PASSWORD)
    multi = InitCase(
        Mode.CLIENT, b"".join(roots), leaf + b"".join(reversed(chain)), key, PASSWORD, b"leaf.test"
    )
    ec_key = private_key(KeyType.EC_P256, 1)
    bundle = b"".join(_cert(f"ca{i}", ec_key, f"ca{i}", ec_key, 1000 + i) for i in range(100))
    return {
        "24 KB multi-certificate case": multi,
        "24 KB multi-certificate case, key damaged": InitCase(
            multi.mode, multi.ca, multi.cert, multi.key[:-100], multi.password, multi.server_name
        ),
        "160 KB CA bundle, chain as cert": InitCase(ca=bundle, cert=multi.cert, key=b"x"),
    }


# --- measuring ------------------------------------------------------------------------------------


@dataclass
class Row:
    what: str
    before: int
    old: int
    new: int
    old_calls: int
    new_calls: int


Checker = Any  # an Oracle or an IsolatedOracle: both have check()


def _measure(oracle: Checker, what: str, case: InitCase, budget: int) -> Row | None:
    leaks = [f for f in oracle.check(case).findings if f.kind is FindingKind.LEAK]
    if not leaks:
        return None
    signature = leaks[0].signature
    old_predicate = signature_predicate(oracle, signature)
    old = minimize_v1(case, old_predicate, budget=budget)
    new = shrink(case, signature_predicate(oracle, signature), budget=budget)
    return Row(what, case.size, old.size, new.after, old_predicate.calls, new.calls)


def _spread(items: list[tuple[Path, InitCase]], count: int) -> list[tuple[Path, InitCase]]:
    """``count`` items evenly spaced over ``items`` sorted by size (all of them for 0)."""
    ordered = sorted(items, key=lambda item: (item[1].size, item[0].name))
    if count <= 0 or count >= len(ordered):
        return ordered
    if count == 1:
        return [ordered[len(ordered) // 2]]
    return [ordered[round(i * (len(ordered) - 1) / (count - 1))] for i in range(count)]


def _run_target(
    name: str, oracle: Checker, corpus: list[tuple[Path, InitCase]], args: argparse.Namespace
) -> list[Row]:
    start = time.perf_counter()
    failing = [
        (p, c)
        for p, c in corpus
        if any(f.kind is FindingKind.LEAK for f in oracle.check(c).findings)
    ]
    rows = []
    for path, case in _spread(failing, args.sample):
        row = _measure(oracle, path.name[:12], case, args.budget)
        if row is not None:
            rows.append(row)
    large = [_measure(oracle, what, case, args.budget) for what, case in large_inputs().items()]
    seconds = time.perf_counter() - start
    _report(name, len(failing), rows, [r for r in large if r is not None], seconds)
    return rows


def _report(name: str, found: int, rows: list[Row], large: list[Row], seconds: float) -> None:
    print(f"\n{name}: {found} corpus cases leak; {len(rows)} minimised ({seconds:.0f}s)")
    print(f"  {'':42} {'before':>8} {'old':>8} {'new':>8} {'old/new':>8} {'checks old/new':>15}")
    if rows:
        med = {
            k: statistics.median(getattr(r, k) for r in rows) for k in vars(rows[0]) if k != "what"
        }
        ratio = med["old"] / max(med["new"], 1)
        calls = f"{med['old_calls']:.0f}/{med['new_calls']:.0f}"
        print(
            f"  {'median over the corpus findings':42} {med['before']:>8.0f} {med['old']:>8.0f}"
            f" {med['new']:>8.0f} {ratio:>8.1f} {calls:>15}"
        )
    for r in large:
        ratio = r.old / max(r.new, 1)
        calls = f"{r.old_calls}/{r.new_calls}"
        print(f"  {r.what:42} {r.before:>8} {r.old:>8} {r.new:>8} {ratio:>8.1f} {calls:>15}")


@contextmanager
def _c_leaky() -> Iterator[IsolatedOracle | None]:
    gcc = shutil.which("gcc")
    if gcc is None:
        print("\nc:control_leaky.c: skipped (no gcc)")
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="tlsleak-bench-") as folder:
        lib = Path(folder) / "control_leaky.so"
        source = REPO / "tests" / "c" / "control_leaky.c"
        command = [gcc, "-shared", "-fPIC", "-O1", "-o", str(lib), str(source), "-lssl", "-lcrypto"]
        subprocess.run(command, check=True)
        with IsolatedOracle(f"c:{lib}") as oracle:
            yield oracle


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=int, default=100, help="checks per finding (100)")
    parser.add_argument("--sample", type=int, default=20, help="corpus findings per target (20)")
    parser.add_argument("--corpus", type=Path, default=None, help="a corpus folder (bundled)")
    args = parser.parse_args()
    corpus = list(load_cases(case_files([args.corpus or bundled_corpus()])))
    print(f"{len(corpus)} corpus cases, budget {args.budget} checks per finding")
    runs: list[tuple[str, Callable[[], Any]]] = [
        ("control-leaky", lambda: Oracle(resolve_target("control-leaky"))),
        ("c:control_leaky.c", _c_leaky),
        ("leaks-when-san", lambda: Oracle(CallableTarget(leaks_when_san, name="leaks-when-san"))),
    ]
    everything: list[Row] = []
    for name, make in runs:
        with make() as oracle:
            if oracle is not None:
                everything += _run_target(name, oracle, corpus, args)
    if everything:
        old, new = sum(r.old for r in everything), sum(r.new for r in everything)
        before = sum(r.before for r in everything)
        print(
            f"\nall {len(everything)} corpus findings: {before} B before, reproducers "
            f"{old} B old, {new} B new in total (old/new {old / max(new, 1):.1f})"
        )


if __name__ == "__main__":
    sys.exit(main())
