#!/usr/bin/env python3
"""The ``heap`` ledger: what it costs, and what it finds, side by side in one run.

**Overhead.**  The oracle loop (``Oracle.check`` over the bundled corpus, as
the check worker runs it: collector settled) on ``pyopenssl`` and ``ssl``, in
a child with the malloc interposer and the OpenSSL heap shim preloaded:

* ``none``    - ``Oracle(target, ledgers=[])``: the oracle's own work;
* ``heap``    - ``Oracle(target, ledgers=["heap"])``;
* ``default`` - the target's default ledgers in a worker (heap among them);

rounds interleaved (none, heap, default, none, ...), each at least half a
second, after one untimed pass that fills the process's caches.  Time is the
child's CPU time (other processes on a shared machine disturb it far less
than the wall clock; the wall-clock ratios are printed too), and a ratio is
the median of the round-by-round ratios, so that drift cancels.  Also: the
same ``none`` loop in a child *without* the interposer (the cost of its
hooks alone; a separate process, so within a few per cent of noise), and how
many checks started replays in the first pass of a fresh process and in the
timed rounds (replays are most of a ledger's cost).

**Detection.**  Each cell is ``found/planted, false`` over the bundled corpus,
with the ``heap`` ledger alone, in a fresh preloaded child per cell, under
three verdicts: process scope with the slope verdict (the default), process
scope with growth on every replay, and thread scope with the slope verdict.

* an SSL_CTX leaked through cryptography's binding on the pyOpenSSL path
  (pyOpenSSL's init path, plus ``SSL_CTX_new`` never freed on half of the
  cases, chosen by the case's hash);
* tests/c/control_leaky.c (a C library on the system OpenSSL: SSL_CTX and SSL
  lost on every failure);
* tests/c/control_malloc.c (a C library without OpenSSL: plain malloc
  blocks lost on every failure);
* fixed code: control-fixed, control_fixed.c, control_malloc.c -DCONTROL_FIXED,
  pyopenssl and ssl (planted: none; every finding is false);
* fixed code whose SSL_CTX is freed, before the attempt ends, by a thread of
  its own (as stacks with background threads do): why thread scope is not
  the default.

Nothing here asserts on time.

    python bench/bench_heap_ledger.py [--rounds 5] [--no-matrix]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
C_DIR = ROOT / "tests" / "c"
OVERHEAD_TARGETS = ("pyopenssl", "ssl")
MODES = ("none", "heap", "default")
#: A timed round lasts at least this long per mode (the corpus is run over again).
MIN_ROUND_SECONDS = 0.5
#: (column title, TLSLEAK_HEAP_SCOPE, Oracle confirm)
VERDICTS = (
    ("process+slope", "process", "auto"),
    ("process+every", "process", "every"),
    ("thread+slope", "thread", "auto"),
)


# -- in the children ---------------------------------------------------------------------


def _cases() -> list[Any]:
    from tlsleak.cases.files import bundled_corpus, load_cases

    return [case for _path, case in load_cases([bundled_corpus()])]


def _counting_oracle() -> Any:
    """An Oracle that counts the checks that started replays."""
    from tlsleak.check.oracle import Oracle

    class Counting(Oracle):
        confirms = 0

        def _confirm(self, *args: Any, **kwargs: Any) -> Any:
            Counting.confirms += 1
            return super()._confirm(*args, **kwargs)

    return Counting


def _child_overhead(target_name: str, rounds: int, modes: Sequence[str]) -> dict[str, Any]:
    from tlsleak.check.oracle import settle_collector
    from tlsleak.targets import resolve_target

    target = resolve_target(target_name)
    cases = _cases()
    counting = _counting_oracle()
    ledgers: dict[str, list[str] | None] = {"none": [], "heap": ["heap"], "default": None}

    def one_pass(mode: str, passes: int = 1) -> tuple[float, float, int]:
        """(CPU seconds, wall seconds, checks that replayed) of ``passes`` over the corpus."""
        # Started and closed around each round, outside the timed loop: the
        # object ledger's proxy must not slow the other modes down.
        counting.confirms = 0
        with counting(target, ledgers=ledgers[mode]) as oracle:
            cpu, wall = time.process_time(), time.perf_counter()
            for _ in range(passes):
                for case in cases:
                    oracle.check(case)
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        return cpu, wall, counting.confirms

    settle_collector()  # as the check worker does
    first = {mode: one_pass(mode)[2] for mode in modes}  # a fresh process's caches
    settle_collector()
    passes = max(1, round(MIN_ROUND_SECONDS / max(one_pass(modes[0])[0], 1e-9)))
    cpu: dict[str, list[float]] = {mode: [] for mode in modes}
    wall: dict[str, list[float]] = {mode: [] for mode in modes}
    confirms = dict.fromkeys(modes, 0)
    for _ in range(rounds):
        for mode in modes:
            used, waited, replayed = one_pass(mode, passes)
            cpu[mode].append(used)
            wall[mode].append(waited)
            confirms[mode] += replayed
    with counting(target) as oracle:
        default = [x.name for x in oracle.ledgers]
    checks = passes * len(cases)
    base = modes[0]
    return {
        "cases": len(cases),
        "checks_per_round": checks,
        # exec/s per CPU second: what the child itself spent, which other
        # processes on a shared machine disturb far less than the wall clock.
        "rate": {m: checks / statistics.median(t) for m, t in cpu.items()},
        "wall_rate": {m: checks / statistics.median(t) for m, t in wall.items()},
        # Cost relative to the first mode, paired round by round (drift cancels).
        "ratio": {
            m: statistics.median(a / b for a, b in zip(t, cpu[base], strict=True))
            for m, t in cpu.items()
        },
        "wall_ratio": {
            m: statistics.median(a / b for a, b in zip(t, wall[base], strict=True))
            for m, t in wall.items()
        },
        "first_confirms": first,
        "confirms": confirms,
        "default": default,
    }


class _PlantedPyOpenSSL:
    """The pyopenssl target's init path; on planted cases an SSL_CTX made through
    cryptography's binding is never freed (a handle lost on the pyOpenSSL path)."""

    name = "planted-pyopenssl"
    description = "pyOpenSSL, plus an SSL_CTX lost on half of the cases"

    def __init__(self) -> None:
        from cryptography.hazmat.bindings.openssl.binding import Binding

        from tlsleak.targets.pyopenssl import PyOpenSSLTarget

        self._inner = PyOpenSSLTarget()
        self._lib = Binding.lib
        self.ledgers = self._inner.ledgers

    def error_queue(self) -> Any:
        return self._inner.error_queue()

    def probe(self) -> Any:
        return self._inner.probe()

    def run(self, case: Any) -> Any:
        outcome = self._inner.run(case)
        if planted(case):
            self._lib.SSL_CTX_new(self._lib.TLS_method())  # the bug: never freed
        return outcome


class _FreedElsewhere:
    """Correct code whose SSL_CTX is freed by another thread (as a stack with a
    background thread of its own does): a false leak to thread scope only."""

    name = "freed-elsewhere"
    description = "an SSL_CTX made here and freed, before returning, by a worker thread"

    def __init__(self) -> None:
        import queue
        import threading

        from cryptography.hazmat.bindings.openssl.binding import Binding

        self._lib = Binding.lib
        self._todo: queue.Queue[Any] = queue.Queue()
        self._done: queue.Queue[bool] = queue.Queue()
        threading.Thread(target=self._free_forever, daemon=True).start()
        self.ledgers = ("heap",)

    def _free_forever(self) -> None:
        while True:
            self._lib.SSL_CTX_free(self._todo.get())
            self._done.put(True)

    def error_queue(self) -> None:
        return None

    def run(self, case: Any) -> Any:
        from tlsleak.targets import Outcome

        self._todo.put(self._lib.SSL_CTX_new(self._lib.TLS_method()))
        self._done.get()  # freed before the attempt ends
        return Outcome.accepted()


def planted(case: Any) -> bool:
    """Whether the planted pyOpenSSL leak fires on ``case``: half the cases, by hash."""
    return hashlib.sha256(case.encode()).digest()[0] % 2 == 0


def _child_detect(spec: str, confirm: str) -> dict[str, Any]:
    from tlsleak.check.oracle import Oracle, settle_collector
    from tlsleak.targets import Status, resolve_target

    kind, _, rest = spec.partition("=")
    made = {"planted-pyopenssl": _PlantedPyOpenSSL, "freed-elsewhere": _FreedElsewhere}
    target: Any = made[rest]() if rest in made else resolve_target(rest)
    cases = _cases()
    found = planted_count = false = 0
    with Oracle(target, ledgers=["heap"], confirm=confirm) as oracle:
        settle_collector()
        for case in cases:
            verdict = oracle.check(case)
            leaked = any(f.kind in ("leak", "cycle") for f in verdict.findings)
            if kind == "pyopenssl":
                is_planted = planted(case)
            elif kind == "rejected":  # the C controls lose their objects on every failure
                is_planted = verdict.outcome.status is Status.REJECTED
            else:
                is_planted = False
            planted_count += is_planted
            found += is_planted and leaked
            false += leaked and not is_planted
    return {"found": found, "planted": planted_count, "false": false}


# -- the parent ------------------------------------------------------------------------


def _run_child(args: list[str], env: dict[str, str]) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"child {args} failed:\n{proc.stderr}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def _build_c(folder: Path) -> dict[str, Path]:
    gcc = shutil.which("gcc")
    if gcc is None:
        raise SystemExit("gcc is needed to build the C controls")
    libs: dict[str, tuple[str, list[str]]] = {
        "ssl-leaky": ("control_leaky.c", ["-lssl", "-lcrypto"]),
        "ssl-fixed": ("control_fixed.c", ["-lssl", "-lcrypto"]),
        "malloc-leaky": ("control_malloc.c", []),
        "malloc-fixed": ("control_malloc.c", ["-DCONTROL_FIXED"]),
    }
    built = {}
    for name, (source, flags) in libs.items():
        out = folder / f"{name}.so"
        cmd = [gcc, "-shared", "-fPIC", "-O1", "-o", str(out), str(C_DIR / source), *flags]
        subprocess.run(cmd, check=True)
        built[name] = out
    return built


def _overhead(rounds: int, env: dict[str, str], bare_env: dict[str, str]) -> None:
    print(
        f"overhead: Oracle.check over the bundled corpus; {rounds} interleaved rounds of "
        f">= {MIN_ROUND_SECONDS}s per mode; exec/s per CPU second of the child, median"
    )
    header = (
        "target",
        "none exec/s",
        "heap exec/s",
        "heap/none",
        "default exec/s",
        "default/none",
        "(wall: heap, default)",
        "no interposer",
        "replays: 1st pass, rounds",
    )
    print("{:<10} {:>11} {:>11} {:>9} {:>14} {:>12} {:>22} {:>13}  {}".format(*header))
    for name in OVERHEAD_TARGETS:
        got = _run_child(["overhead", name, str(rounds), ",".join(MODES)], env)
        bare = _run_child(["overhead", name, str(rounds), "none"], bare_env)
        rate, ratio, wall = got["rate"], got["ratio"], got["wall_ratio"]
        first = "/".join(str(got["first_confirms"][m]) for m in MODES)
        later = "/".join(str(got["confirms"][m]) for m in MODES)
        walls = f"{wall['heap']:.3f}x, {wall['default']:.3f}x"
        print(
            f"{name:<10} {rate['none']:>11.0f} {rate['heap']:>11.0f} {ratio['heap']:>8.3f}x "
            f"{rate['default']:>14.0f} {ratio['default']:>11.3f}x {walls:>22} "
            f"{bare['rate']['none']:>13.0f}  {first}, {later}"
        )
        print(
            f"{'':<10} default ledgers: {', '.join(got['default'])}; "
            f"{got['checks_per_round']} checks per mode and round"
        )
    print(
        "(x: time per check relative to no ledger, paired by round; goal for heap <= 1.05x.  "
        "no interposer: the none loop in a process without it.  replays: checks that "
        "started replays, none/heap/default, in a fresh process's first pass and in all "
        "rounds, each of which starts a new oracle)"
    )


def _matrix(env: dict[str, str], c_libs: dict[str, Path]) -> None:
    rows: list[tuple[str, list[str]]] = [
        ("SSL_CTX leak via cryptography's binding", ["pyopenssl=planted-pyopenssl"]),
        ("C library on system OpenSSL (leaky)", [f"rejected=c:{c_libs['ssl-leaky']}"]),
        ("C library, plain malloc (leaky)", [f"rejected=c:{c_libs['malloc-leaky']}"]),
        (
            "fixed controls over the corpus",
            [
                "fixed=control-fixed",
                f"fixed=c:{c_libs['ssl-fixed']}",
                f"fixed=c:{c_libs['malloc-fixed']}",
            ],
        ),
        ("pyopenssl and ssl (no planted leak)", ["fixed=pyopenssl", "fixed=ssl"]),
        ("SSL_CTX freed by another thread (fixed)", ["fixed=freed-elsewhere"]),
    ]
    print()
    print("detection with the heap ledger alone: found/planted, false (bundled corpus per target)")
    print("{:<42}".format("case") + "".join(f" {title:>16}" for title, _s, _c in VERDICTS))
    for title, specs in rows:
        cells = []
        for _column, scope, confirm in VERDICTS:
            found = planted_count = false = 0
            for spec in specs:
                child_env = {**env, "TLSLEAK_HEAP_SCOPE": scope}
                got = _run_child(["detect", spec, confirm], child_env)
                found += got["found"]
                planted_count += got["planted"]
                false += got["false"]
            cells.append(f"{found}/{planted_count}, {false}")
        print(f"{title:<42}" + "".join(f" {cell:>16}" for cell in cells))


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--child"]:
        what, *rest = argv[1:]
        result: dict[str, Any]
        if what == "overhead":
            result = _child_overhead(rest[0], int(rest[1]), rest[2].split(","))
        else:
            result = _child_detect(rest[0], rest[1])
        print(json.dumps(result))
        return 0
    parser = argparse.ArgumentParser(description="The heap ledger's cost and detection matrix.")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per mode (default 5)")
    parser.add_argument("--no-matrix", action="store_true", help="skip the detection matrix")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")

    from tlsleak.ledgers.interposer import interposer_path
    from tlsleak.ledgers.shim import preload_env

    env = preload_env()
    interposer = str(interposer_path())
    bare_env = dict(env)
    bare_env["LD_PRELOAD"] = " ".join(p for p in env["LD_PRELOAD"].split() if p != interposer)
    started = time.monotonic()
    _overhead(args.rounds, env, bare_env)
    if not args.no_matrix:
        with tempfile.TemporaryDirectory(prefix="bench-heap-") as folder:
            _matrix(env, _build_c(Path(folder)))
    print(f"\n({time.monotonic() - started:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
