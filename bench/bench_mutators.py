#!/usr/bin/env python3
"""How long one structure-aware mutation takes, on ordinary and on hostile inputs.

The documented bound: a 1 MiB input mutates in a few milliseconds, whatever it
holds.  For each input below, ``--calls`` mutations with different seeds are
timed for :func:`tlsleak.cases.der.mutate`, :func:`tlsleak.cases.pem.mutate` (with the
DER mutator on block bodies) and :func:`tlsleak.cases.mutator.mutate_case` (the
input as the whole encoded case's certificate); the median and the worst call
are printed, next to the time of one plain ``bytes`` copy of the input for
scale.  Nothing here asserts on time.

    python bench/bench_mutators.py [--calls 200]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable

from tlsleak.cases import der, pem
from tlsleak.cases.case import InitCase
from tlsleak.cases.choices import RandomChoices
from tlsleak.cases.material import Encoding, KeyType, cert_bytes, identity
from tlsleak.cases.mutator import mutate_case

MiB = 1024 * 1024


def _inputs() -> dict[str, bytes]:
    ident = identity(KeyType.EC_P256)
    cert_der = cert_bytes(ident.leaf, Encoding.DER)
    cert_pem = cert_bytes(ident.leaf)
    rng = random.Random(0)
    nested = b"\x30\x80" * (MiB // 2)  # indefinite-length SEQUENCEs, 512 Ki deep
    return {
        "one certificate (DER)": cert_der,
        "one certificate (PEM)": cert_pem,
        "1 MiB random bytes": rng.randbytes(MiB),
        "1 MiB of certificates (PEM)": (cert_pem * (MiB // len(cert_pem) + 1))[:MiB],
        "1 MiB nested SEQUENCE headers": nested,
        "1 MiB one huge OCTET STRING": der.tlv(0x04, b"\x00" * (MiB - 6)),
        "1 MiB of newlines": b"\n" * MiB,
    }


def _time(fn: Callable[[bytes, RandomChoices], object], data: bytes, calls: int) -> list[float]:
    # Untimed first calls: the case mutator builds its valid material (keys,
    # certificates) once per process, which is set-up, not mutation.
    for seed in range(-20, 0):
        fn(data, RandomChoices(random.Random(seed)))
    times = []
    for seed in range(calls):
        choices = RandomChoices(random.Random(seed))
        start = time.perf_counter()
        fn(data, choices)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()
    mutators: dict[str, Callable[[bytes, RandomChoices], object]] = {
        "der": lambda data, c: der.mutate(data, c),
        "pem": lambda data, c: pem.mutate(data, c, body_mutator=der.mutate),
        "case": lambda data, c: mutate_case(InitCase(cert=data).encode(), c),
    }
    print(f"{'input':32} {'copy':>8} " + " ".join(f"{m + ' med/max':>18}" for m in mutators))
    for label, data in _inputs().items():
        start = time.perf_counter()
        bytes(bytearray(data))
        copy = time.perf_counter() - start
        cells = []
        for fn in mutators.values():
            times = _time(fn, data, args.calls)
            cells.append(f"{statistics.median(times) * 1e3:7.2f}/{max(times) * 1e3:7.2f} ms")
        print(f"{label:32} {copy * 1e3:6.2f}ms " + " ".join(f"{c:>18}" for c in cells))


if __name__ == "__main__":
    main()
