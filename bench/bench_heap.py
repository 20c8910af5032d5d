#!/usr/bin/env python3
"""What the OpenSSL heap ledger costs on the stdlib ssl init path.

One input is a server init with the standard library's ``ssl`` module, which
runs on the system libcrypto the heap shim hooks:

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(<private 0600 file holding the chain and key>)
    ctx.load_verify_locations(cadata=<the root, PEM>)
    del ctx

over valid identities from :mod:`tlsleak.cases.material` (EC P-256 with a chain,
RSA 2048 self-signed, Ed25519 with a chain).

Two children run the same inputs, spawned by this script and kept for the
whole run:

* ``heap`` - started with the shim in ``LD_PRELOAD`` (its hooks count every
  OpenSSL allocation), taking a heap-ledger snapshot before and after each
  input, as the oracle does;
* ``bare`` - started without the shim: OpenSSL's own allocator, no snapshots.

Rounds are interleaved (heap, bare, bare, heap, ...) so drift in the machine
hits both alike; the median per-input time of each is reported with their
ratio (the goal is at most 1.10), and the median of the ratios of rounds run
back to back, which a busy machine disturbs less.  Nothing here asserts on
time.

    python bench/bench_heap.py [--rounds 31] [--seconds 120]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

# A round should last long enough that timer resolution and one-off hiccups
# don't dominate it.
MIN_ROUND_SECONDS = 0.2

MODES = ("heap", "bare")


# -- the children ------------------------------------------------------------


def _child(mode: str) -> int:
    """Serve rounds on stdin/stdout: first line the inputs, then one line per round."""
    import ssl  # before anything else touches OpenSSL: nothing here needs it earlier

    # Both children import the same modules, so only the hooks and the
    # snapshots differ between them.
    from tlsleak.ledgers import HeapLedger
    from tlsleak.ledgers.shim import heap as get_heap

    snapshot: Any = None
    heap: Any = None
    if mode == "heap":
        ledger = HeapLedger()
        ledger.start()  # raises if the shim is not active: never time a silent no-op
        snapshot = ledger.snapshot
        heap = get_heap()

    inputs = json.loads(sys.stdin.readline())

    def run(item: dict[str, str]) -> None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(item["certfile"])
        ctx.load_verify_locations(cadata=item["cadata"])
        del ctx

    def one_round(passes: int) -> dict[str, Any]:
        grown = 0
        start = time.perf_counter()
        if snapshot is None:
            for _ in range(passes):
                for item in inputs:
                    run(item)
        else:
            for _ in range(passes):
                for item in inputs:
                    before = snapshot()
                    run(item)
                    after = snapshot()
                    grown += after["openssl-heap.blocks"] - before["openssl-heap.blocks"]
        seconds = time.perf_counter() - start
        return {"seconds": seconds, "runs": passes * len(inputs), "grown": grown}

    report: dict[str, Any] = {}
    if heap is not None:
        for item in inputs:  # warm the caches first, then count one of each
            run(item)
        heap.reset_allocations()
        for item in inputs:
            run(item)
        report["allocations_per_input"] = heap.allocations() / len(inputs)
    print(json.dumps(report), flush=True)

    for line in sys.stdin:
        passes = int(line)
        print(json.dumps(one_round(passes)), flush=True)
    return 0


# -- the parent --------------------------------------------------------------


def _write_inputs(folder: Path) -> list[dict[str, str]]:
    from tlsleak.cases.material import KeyType, cert_bytes, identity, key_bytes

    inputs = []
    for key_type, issued in (
        (KeyType.EC_P256, True),
        (KeyType.RSA2048, False),
        (KeyType.ED25519, True),
    ):
        ident = identity(key_type, issued=issued)
        chain = cert_bytes(ident.leaf) + b"".join(cert_bytes(c) for c in ident.chain)
        # Test material, but a private key all the same: the file is 0600
        # (mkstemp's mode) in a 0700 folder (mkdtemp's).
        fd, path = tempfile.mkstemp(prefix=f"{key_type.value}-", suffix=".pem", dir=folder)
        with os.fdopen(fd, "wb") as f:
            f.write(chain + key_bytes(ident.key))
        inputs.append({"certfile": path, "cadata": cert_bytes(ident.root).decode("ascii")})
    return inputs


class _Child:
    def __init__(self, mode: str, inputs: list[dict[str, str]]) -> None:
        from tlsleak.ledgers.shim import preload_env, shim_path

        self.mode = mode
        if mode == "heap":
            env = preload_env()
        else:
            env = dict(os.environ)
            shim = str(shim_path())
            rest = [p for p in env.pop("LD_PRELOAD", "").replace(":", " ").split() if p != shim]
            if rest:
                env["LD_PRELOAD"] = " ".join(rest)
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--child", mode],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            text=True,
        )
        self.per_input: list[float] = []
        self.grown = 0
        self._send(json.dumps(inputs))
        self.info: dict[str, Any] = self._receive()

    def _send(self, line: str) -> None:
        stdin: IO[str] | None = self.proc.stdin
        assert stdin is not None
        stdin.write(line + "\n")
        stdin.flush()

    def _receive(self) -> dict[str, Any]:
        stdout: IO[str] | None = self.proc.stdout
        assert stdout is not None
        line = stdout.readline()
        if not line:
            raise SystemExit(f"the {self.mode} child died (exit status {self.proc.wait()})")
        result: dict[str, Any] = json.loads(line)
        return result

    def round(self, passes: int) -> dict[str, Any]:
        self._send(str(passes))
        return self._receive()

    def measure(self, passes: int) -> None:
        got = self.round(passes)
        self.per_input.append(got["seconds"] / got["runs"])
        self.grown += got["grown"]

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Per-input time of the stdlib ssl init path: heap ledger vs no hooks."
    )
    parser.add_argument("--rounds", type=int, default=31, help="rounds per mode (default 31)")
    parser.add_argument(
        "--seconds",
        type=float,
        default=120.0,
        help="stop starting new rounds after this many seconds (default 120)",
    )
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return _child(args.child)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")

    with tempfile.TemporaryDirectory(prefix="tlsleak-bench-heap-") as folder:
        inputs = _write_inputs(Path(folder))
        children = {mode: _Child(mode, inputs) for mode in MODES}
        try:
            heap, bare = children["heap"], children["bare"]
            print(f"inputs: {len(inputs)} server inits (EC P-256 chain, RSA 2048, Ed25519 chain)")
            print(f"OpenSSL allocations per input: {heap.info['allocations_per_input']:.0f}")
            # Warm-up, untimed; then size a round from the bare child's pace.
            for child in (heap, bare):
                child.round(1)
            probe = bare.round(5)
            per_run = probe["seconds"] / probe["runs"]
            passes = max(1, round(MIN_ROUND_SECONDS / max(per_run * len(inputs), 1e-9)))
            print(f"passes per round: {passes} ({passes * len(inputs)} inputs per mode and round)")

            deadline = time.monotonic() + args.seconds
            for done in range(args.rounds):
                if done and time.monotonic() > deadline:
                    print(f"--seconds cap reached after {done} rounds")
                    break
                order = (heap, bare) if done % 2 == 0 else (bare, heap)
                for child in order:
                    child.measure(passes)
        finally:
            for child in children.values():
                child.close()

    medians = {mode: statistics.median(children[mode].per_input) for mode in MODES}
    print()
    print("{:<6} {:>16} {:>12} {:>12}".format("mode", "median us/input", "min", "max"))
    for mode in MODES:
        times = children[mode].per_input
        print(
            f"{mode:<6} {medians[mode] * 1e6:>16.1f} {min(times) * 1e6:>12.1f} "
            f"{max(times) * 1e6:>12.1f}"
        )
    print()
    print(f"heap blocks grown over all timed inputs: {children['heap'].grown} (expect 0)")
    heap_times, bare_times = children["heap"].per_input, children["bare"].per_input
    pairs = [h / b for h, b in zip(heap_times, bare_times, strict=True)]
    print(f"ratio heap/bare = {medians['heap'] / medians['bare']:.3f} (goal <= 1.10)")
    print(f"median of the per-round ratios = {statistics.median(pairs):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
