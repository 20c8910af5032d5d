#!/usr/bin/env python3
"""What the ledgers cost: executions per second with every ledger on vs the bare target.

Three ways of running the same cases, measured side by side in one process:

* ``bare``     - ``target.run(case)``: no oracle, no ledger;
* ``oracle``   - ``Oracle(target, ledgers=[]).check(case)``: the oracle's own
  work (error queue, gc switching, snapshots of nothing) without any ledger;
* ``ledgers``  - ``Oracle(target).check(case)``: the target's default ledgers.

Rounds are interleaved (bare, oracle, ledgers, bare, ...) so that drift in the
machine (frequency scaling, a noisy neighbour) hits every mode alike, and the
median round of each mode is reported.  Nothing here asserts on time.

    python bench/bench_ledgers.py [--rounds 5] [--target pyopenssl] [--seconds 120]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Sequence

from tlsleak import InitCase, Mode, Oracle
from tlsleak.cases.files import CorpusError, bundled_corpus, load_cases
from tlsleak.cases.material import (
    Encoding,
    KeyFormat,
    KeyType,
    cert_bytes,
    identity,
    key_bytes,
)
from tlsleak.targets import Target, resolve_target

MODES = ("bare", "oracle", "ledgers")

# A round should last long enough that timer resolution and one-off hiccups
# don't dominate it; a small corpus is run several times over per round.
MIN_ROUND_SECONDS = 0.5


def _fallback_cases() -> list[InitCase]:
    """A handful of valid and simply malformed cases, for when there is no corpus."""
    ec = identity(KeyType.EC_P256)
    rsa = identity(KeyType.RSA2048, issued=False)
    ed = identity(KeyType.ED25519)
    other_ec = identity(KeyType.EC_P256, slot=1)
    ec_cert = cert_bytes(ec.leaf) + b"".join(cert_bytes(c) for c in ec.chain)
    ec_key = key_bytes(ec.key)
    garbage = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
    return [
        # Valid: PEM chain with CA, DER self-signed RSA (PKCS#1), client with SNI.
        InitCase(ca=cert_bytes(ec.root), cert=ec_cert, key=ec_key),
        InitCase(
            cert=cert_bytes(rsa.leaf, Encoding.DER),
            key=key_bytes(rsa.key, KeyFormat.PKCS1, Encoding.DER),
        ),
        InitCase(
            mode=Mode.CLIENT,
            ca=cert_bytes(ed.root),
            cert=cert_bytes(ed.leaf) + b"".join(cert_bytes(c) for c in ed.chain),
            key=key_bytes(ed.key),
            server_name=b"localhost",
        ),
        # Malformed: unparsable certificate, truncated key, key of another
        # certificate, key without certificate, unparsable CA.
        InitCase(ca=cert_bytes(ec.root), cert=garbage, key=ec_key),
        InitCase(ca=cert_bytes(ec.root), cert=ec_cert, key=ec_key[:-40]),
        InitCase(cert=ec_cert, key=key_bytes(other_ec.key)),
        InitCase(key=ec_key),
        InitCase(ca=garbage, cert=ec_cert, key=ec_key),
    ]


def _load_corpus() -> tuple[list[InitCase], str]:
    folder = bundled_corpus()
    try:
        cases = [case for _path, case in load_cases([folder])]
    except CorpusError as exc:
        return _fallback_cases(), f"built-in fallback cases (bundled corpus unusable: {exc})"
    return cases, f"bundled corpus {folder}"


def _pass(run: Callable[[InitCase], object], cases: Sequence[InitCase], passes: int) -> float:
    """Seconds for ``passes`` runs over every case."""
    start = time.perf_counter()
    for _ in range(passes):
        for case in cases:
            run(case)
    return time.perf_counter() - start


class _Mode:
    """One way of running a case; started only for its own rounds."""

    def __init__(self, name: str, target: Target) -> None:
        self.name = name
        self.target = target
        self.rates: list[float] = []
        self.with_findings = 0

    def measure(self, cases: Sequence[InitCase], passes: int) -> float:
        if self.name == "bare":
            return _pass(self.target.run, cases, passes)
        ledgers = None if self.name == "ledgers" else []
        # Started and closed around each round, outside the timed loop: while
        # the object ledger is started its proxy is installed in pyOpenSSL's
        # module globals, so leaving it on would slow the bare rounds too.
        with Oracle(self.target, ledgers=ledgers) as oracle:
            return _pass(oracle.check, cases, passes)

    def count_findings(self, cases: Sequence[InitCase]) -> None:
        if self.name == "bare":
            return
        ledgers = None if self.name == "ledgers" else []
        with Oracle(self.target, ledgers=ledgers) as oracle:
            self.with_findings = sum(1 for case in cases if oracle.check(case).findings)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Executions per second of a target: every ledger on vs the bare target."
    )
    parser.add_argument("--rounds", type=int, default=5, help="rounds per mode (default 5)")
    parser.add_argument("--target", default="pyopenssl", help="target name (default pyopenssl)")
    parser.add_argument(
        "--seconds",
        type=float,
        default=120.0,
        help="stop starting new rounds after this many seconds (default 120)",
    )
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")

    target = resolve_target(args.target)
    cases, source = _load_corpus()
    print(f"target: {target.name}   cases: {len(cases)} from {source}")

    modes = [_Mode(name, target) for name in MODES]
    # Warm-up, untimed: one-time OpenSSL and Python caches, and the findings
    # count (a case with findings is replayed by the ledger oracle, which is
    # real cost but worth knowing about when reading the ratio).
    for mode in modes:
        mode.count_findings(cases)
        mode.measure(cases, 1)
    one_pass = _pass(target.run, cases, 1)
    passes = max(1, round(MIN_ROUND_SECONDS / max(one_pass, 1e-9)))
    print(f"passes per round: {passes} ({passes * len(cases)} executions per mode and round)")

    deadline = time.monotonic() + args.seconds
    for done in range(args.rounds):
        # Always finish at least one round, so there is something to report.
        if done and time.monotonic() > deadline:
            print(f"--seconds cap reached after {done} rounds")
            break
        for mode in modes:
            seconds = mode.measure(cases, passes)
            mode.rates.append(passes * len(cases) / seconds)

    medians = {mode.name: statistics.median(mode.rates) for mode in modes}
    bare = medians["bare"]
    print()
    header = ("mode", "median exec/s", "min", "max", "vs bare", "findings")
    print("{:<8} {:>14} {:>10} {:>10} {:>8} {:>9}".format(*header))
    for mode in modes:
        findings = "-" if mode.name == "bare" else f"{mode.with_findings}/{len(cases)}"
        print(
            f"{mode.name:<8} {medians[mode.name]:>14.1f} {min(mode.rates):>10.1f} "
            f"{max(mode.rates):>10.1f} {medians[mode.name] / bare:>8.2f} {findings:>9}"
        )
    print()
    print(f"ratio oracle/bare = {medians['oracle'] / bare:.2f}")
    print(f"ratio ledgers/oracle = {medians['ledgers'] / medians['oracle']:.2f}")
    print(f"ratio ledgers/bare = {medians['ledgers'] / bare:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
