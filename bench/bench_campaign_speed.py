#!/usr/bin/env python3
"""Campaign speed: one fuzz worker's exec/s against the bare init path's, per target.

Every figure comes from a fresh interpreter started with the environment a
campaign gives its workers (:func:`tlsleak.check.worker.child_env`: the heap
shims preloaded), on the same corpus (the bundled one unless ``--corpus``):

``bare``
    the target's ``run(case)`` called in a loop on the corpus cases, decoded
    once up front, after one untimed pass: no atheris, no oracle, no ledger
    started (the preloaded interposers are there but idle), nothing cleared
    between calls.  This is the init path alone, the ceiling of any campaign.
``floor``
    libFuzzer (atheris) over the same case files, each input decoded and
    given to ``run``, with the worker's instrumentation (the target's code
    only, :func:`~tlsleak.fuzz.instrumentation.not_instrumented`) and no
    oracle: what fuzzing the target with atheris costs before tlsleak checks
    anything.  ``corpus/floor`` is the cost of the checking alone.
``corpus``
    the real worker (``python -m tlsleak.fuzz.worker``, all default ledgers,
    guidance on, the campaign's libFuzzer flags) given the same case files
    (``--passes`` times over) as file arguments: libFuzzer runs each once,
    so every input is exactly one the bare loop runs.  Timed from the
    worker's ``ready`` event (its first input) to its ``done`` event.
``fuzz``
    the real worker fuzzing a copy of the corpus folder with the
    structure-aware mutator, as ``tlsleak fuzz`` runs it: the rate between
    its stats events after ``--warm`` seconds (its pass over the seed corpus
    excluded).  Its inputs are mutants, not the corpus cases, so its ratio
    to ``bare`` also moves with how cheap the mutants are to reject.

The modes run one after another, in alternating order per round and target,
so drift in the machine hits all alike; medians are reported, and the
per-round ratios show the noise.  Rates are per second of the process's own
CPU time (``/proc/PID/schedstat``, ``time.process_time``), which other work
on a shared machine disturbs far less than the wall clock; wall-clock rates
are printed too.  Nothing here asserts on time.

    python bench/bench_campaign_speed.py [--targets pyopenssl,ssl,c-fixed] [--rounds 3]

``c-fixed`` is ``tests/c/control_fixed.c`` built here and run as ``c:PATH``.
``--fail-alloc`` gives the workers (``corpus``, ``fuzz``) that option: over
the bundled corpus, whose cases carry no fail point, ``corpus`` then
measures what ``--fail-alloc`` costs an input without one (the quiet
wrappers of atheris's hooks, :func:`tlsleak.fuzz.worker.quiet_hooks`).
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from tlsleak.cases.files import bundled_corpus, case_files, load_cases
from tlsleak.check.worker import child_env
from tlsleak.fuzz.child import Worker, worker_argv
from tlsleak.fuzz.options import CampaignOptions

MODES = ("bare", "floor", "corpus", "fuzz")
C_SOURCE = Path(__file__).resolve().parents[1] / "tests" / "c" / "control_fixed.c"

#: A rate: (executions per CPU second, executions per wall-clock second).
Rate = tuple[float, float]


def bare_child(target_spec: str, corpus: str, seconds: float) -> None:
    """In the child: loop ``target.run`` over the corpus for ``seconds``; print the rates."""
    from tlsleak.targets import resolve_target

    target = resolve_target(target_spec)
    cases = [case for _path, case in load_cases([Path(corpus)])]
    for case in cases:  # untimed: fills one-time caches, as the worker's first inputs do
        target.run(case)
    execs = 0
    start, cpu = time.monotonic(), time.process_time()
    end = start + seconds
    while time.monotonic() < end:
        for case in cases:
            target.run(case)
        execs += len(cases)
    wall, cpu = time.monotonic() - start, time.process_time() - cpu
    print(json.dumps({"cpu": execs / cpu, "wall": execs / wall}))


def floor_child(target_spec: str, events: int, libfuzzer: list[str]) -> None:
    """In the child: libFuzzer runs ``run(decode(data))``, instrumented as a worker is."""
    import atheris

    from tlsleak.fuzz.instrumentation import instrumented_packages, not_instrumented

    with atheris.instrument_imports(
        include=instrumented_packages(target_spec), exclude=not_instrumented(target_spec)
    ):
        from tlsleak.cases.case import decode
        from tlsleak.check.oracle import settle_collector
        from tlsleak.targets import resolve_target

        target = resolve_target(target_spec)
    execs = [0]

    def send(**event: object) -> None:
        os.write(events, (json.dumps(event) + "\n").encode())

    def one(data: bytes) -> None:
        if not execs[0]:
            send(ev="ready")
        execs[0] += 1
        if execs[0] in (1, 100):
            settle_collector()  # as the worker does
        target.run(decode(data))

    import ctypes

    done = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(
        lambda _arg: (send(ev="stats", execs=execs[0]), send(ev="done"))
    )
    ctypes.CDLL(None).__cxa_atexit(done, None, None)
    atheris.Setup([sys.argv[0], *libfuzzer], one)
    atheris.Fuzz()


def _cpu(pid: int) -> float:
    """Seconds of CPU time process ``pid`` has had so far."""
    with open(f"/proc/{pid}/schedstat") as stat:
        return int(stat.read().split()[0]) / 1e9


def _bare(target: str, corpus: Path, seconds: float, env: dict[str, str]) -> Rate:
    argv = [sys.executable, __file__, "--bare-child", target, str(corpus), str(seconds)]
    done = subprocess.run(argv, env=env, capture_output=True, check=True)
    result = json.loads(done.stdout.decode().strip().splitlines()[-1])
    return float(result["cpu"]), float(result["wall"])


def _watch(worker: Worker, stop: Callable[[float, dict[str, object]], bool]) -> None:
    """Read the worker's events until ``stop(now, event)`` says so or the worker ends."""
    with selectors.DefaultSelector() as selector:
        selector.register(worker.fd, selectors.EVENT_READ)
        while True:
            selector.select(timeout=0.5)
            now = time.monotonic()
            events = worker.read()
            if events is None:
                return
            for event in events:
                if stop(now, event):
                    return


def _end(worker: Worker) -> None:
    worker.signal(signal.SIGTERM)
    assert worker.proc is not None
    try:
        worker.proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        worker.proc.kill()
        worker.proc.wait()
    worker.close()


def _over_files(
    target: str,
    files: list[Path],
    passes: int,
    env: dict[str, str],
    *,
    floor: bool,
    fail_alloc: bool = False,
) -> Rate:
    """The worker (or the floor) over exactly the corpus files, from ``ready`` to ``done``."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        options = CampaignOptions(target, work / "out", fail_alloc=fail_alloc)
        worker = Worker(0, work / "w0", work / "w0.log")
        worker.folders.artifacts.mkdir(parents=True)

        def argv_for(fd: int) -> list[str]:
            argv = worker_argv(options, worker, None, fd)
            split = argv.index("--")
            # Not the folder: the files, each run once, no mutation.
            libfuzzer = [*argv[split + 2 :], *map(str, files * passes)]
            if floor:
                return [sys.executable, __file__, "--floor-child", target, str(fd), *libfuzzer]
            return [*argv[:split], "--", *libfuzzer]

        worker.spawn(argv_for, env)
        assert worker.proc is not None
        pid = worker.proc.pid
        marks: dict[str, tuple[float, float]] = {}
        execs = [0]

        def stop(now: float, event: dict[str, object]) -> bool:
            kind = str(event.get("ev"))
            if kind in ("ready", "done"):
                marks[kind] = (now, _cpu(pid))
            elif kind == "stats":
                execs[0] = max(execs[0], int(str(event["execs"])))
            return kind == "done"

        _watch(worker, stop)
        _end(worker)
    if execs[0] != len(files) * passes or len(marks) != 2:
        raise RuntimeError(f"{target}: ran {execs[0]} of {len(files) * passes} inputs; see log")
    (wall0, cpu0), (wall1, cpu1) = marks["ready"], marks["done"]
    return execs[0] / (cpu1 - cpu0), execs[0] / (wall1 - wall0)


def _fuzz(
    target: str,
    corpus: Path,
    seconds: float,
    warm: float,
    env: dict[str, str],
    *,
    fail_alloc: bool = False,
) -> Rate:
    """The worker fuzzing a copy of the corpus: its steady rate between stats events."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        options = CampaignOptions(target, work / "out", fail_alloc=fail_alloc)
        worker = Worker(0, work / "w0", work / "w0.log")
        shutil.copytree(corpus, worker.folders.inputs)
        worker.folders.artifacts.mkdir(parents=True)
        worker.spawn(lambda fd: worker_argv(options, worker, None, fd), env)
        assert worker.proc is not None
        pid = worker.proc.pid
        stats: list[tuple[float, float, int]] = []
        ready: list[float] = []

        def stop(now: float, event: dict[str, object]) -> bool:
            if event.get("ev") == "ready":
                ready.append(now)
            elif event.get("ev") == "stats" and ready and now - ready[0] >= warm:
                stats.append((now, _cpu(pid), int(str(event["execs"]))))
            return bool(stats) and stats[-1][0] - stats[0][0] >= seconds

        _watch(worker, stop)
        _end(worker)
    if len(stats) < 2:
        raise RuntimeError(f"{target}: the worker ended early; see its log")
    (w0, c0, e0), (w1, c1, e1) = stats[0], stats[-1]
    return (e1 - e0) / (c1 - c0), (e1 - e0) / (w1 - w0)


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b else "inf"


def _line(rates: dict[str, float], modes: Sequence[str]) -> str:
    line = ", ".join(f"{m} {rates[m]:.0f}" for m in modes)
    ratios = [f"{m}/bare {_ratio(rates[m], rates['bare'])}" for m in modes[1:] if "bare" in rates]
    if "floor" in rates and "corpus" in rates:
        ratios.append(f"corpus/floor {_ratio(rates['corpus'], rates['floor'])}")
    return f"{line}; {', '.join(ratios)}"


def _build(names: list[str], folder: Path) -> dict[str, str]:
    """Target specs by name; ``c-fixed`` is built from tests/c into ``folder``."""
    specs: dict[str, str] = {}
    for name in names:
        if name == "c-fixed":
            lib = folder / "control_fixed.so"
            command = ["gcc", "-shared", "-fPIC", "-O1", "-o", str(lib), str(C_SOURCE)]
            subprocess.run([*command, "-lssl", "-lcrypto"], check=True)
            specs[name] = f"c:{lib}"
        else:
            specs[name] = name
    return specs


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", default="pyopenssl,ssl,c-fixed")
    parser.add_argument("--corpus", type=Path, default=None, help="default: the bundled corpus")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0, help="bare and fuzz time (5)")
    parser.add_argument("--warm", type=float, default=3.0, help="fuzz warm-up seconds (3)")
    parser.add_argument("--passes", type=int, default=6, help="passes over the corpus (6)")
    parser.add_argument("--modes", default=",".join(MODES), help="bare first if given")
    parser.add_argument("--fail-alloc", action="store_true", help="workers with --fail-alloc")
    args = parser.parse_args(argv)
    fail = args.fail_alloc
    corpus = args.corpus or bundled_corpus()
    files = sorted(case_files([corpus]))
    modes = [m for m in MODES if m in args.modes.split(",")]
    env = child_env()
    measure: dict[str, Callable[[str], Rate]] = {
        "bare": lambda spec: _bare(spec, corpus, args.seconds, env),
        "floor": lambda spec: _over_files(spec, files, args.passes, env, floor=True),
        "corpus": lambda spec: _over_files(
            spec, files, args.passes, env, floor=False, fail_alloc=fail
        ),
        "fuzz": lambda spec: _fuzz(spec, corpus, args.seconds, args.warm, env, fail_alloc=fail),
    }
    results: dict[str, dict[str, list[Rate]]] = {}
    with tempfile.TemporaryDirectory() as build:
        specs = _build(args.targets.split(","), Path(build))
        print(f"corpus: {corpus} ({len(files)} cases); exec/s per CPU second", flush=True)
        for round_ in range(args.rounds):
            for name, spec in specs.items():
                got = results.setdefault(name, {m: [] for m in modes})
                for mode in modes if round_ % 2 == 0 else modes[::-1]:
                    got[mode].append(measure[mode](spec))
                cpu = {m: v[-1][0] for m, v in got.items()}
                wall = ", ".join(f"{m} {v[-1][1]:.0f}" for m, v in got.items())
                print(f"  round {round_ + 1} {name:10} {_line(cpu, modes)} (wall: {wall})")
    print("\nmedians, exec/s per CPU second, and ratios:")
    for name, got in results.items():
        medians = {m: statistics.median(r[0] for r in v) for m, v in got.items()}
        print(f"  {name:10} {_line(medians, modes)}")


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--bare-child":
        bare_child(sys.argv[2], sys.argv[3], float(sys.argv[4]))
        sys.exit(0)
    if len(sys.argv) > 3 and sys.argv[1] == "--floor-child":
        floor_child(sys.argv[2], int(sys.argv[3]), sys.argv[4:])
        sys.exit(0)
    started = time.monotonic()
    main()
    print(f"(bench took {time.monotonic() - started:.0f} s)")
