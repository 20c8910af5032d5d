#!/usr/bin/env python3
"""What Python caller stacks cost ordinary attempts: the object ledger before and after them.

The ``openssl-objects`` ledger keeps the Python stack of each constructor
call only in the oracle's attribution replay of a leak; ordinary attempts
must not slow down.  Three ways of checking the bundled corpus on a target
(default ``pyopenssl``, its default ledgers), side by side in one process:

* ``before``    - the object ledger as it was before stacks (its source read
  from git at ``--before``, the last revision without them);
* ``after``     - the object ledger of this checkout, as ``check`` runs it;
* ``recording`` - this checkout's, with stacks kept for every attempt: what
  recording would cost if it were not confined to the attribution replay.

Rounds are interleaved (before, after, recording, before, ...) so that drift
in the machine hits every mode alike; the median round of each is reported.

With ``--cli N`` it then times the whole command, ``tlsleak check TARGET
corpus/`` (its worker, the ``heap`` ledger preloaded), N times each way,
alternating: this checkout as it is, and a copy of its ``src/`` whose object
ledger is the one at ``--before``.  Nothing here asserts on time.

    python bench/bench_stacks.py [--rounds 7] [--target pyopenssl] [--before f9c0e66] [--cli 5]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from tlsleak import InitCase, Oracle
from tlsleak.cases.files import bundled_corpus, load_cases
from tlsleak.ledgers import Ledger, make_ledger
from tlsleak.targets import Target, resolve_target

MODES = ("before", "after", "recording")
#: The last revision whose object ledger kept no stacks.
BEFORE = "f9c0e66"
#: Seconds a round should last, at least.
MIN_ROUND_SECONDS = 0.5
ROOT = Path(__file__).resolve().parents[1]


def _old_source(revision: str) -> str:
    """The source of ``tlsleak/ledgers/objects.py`` at ``revision``."""
    return subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{revision}:src/tlsleak/ledgers/objects.py"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def _old_objects(revision: str) -> ModuleType:
    """``tlsleak/ledgers/objects.py`` at ``revision``, imported under another name."""
    path = Path(tempfile.mkdtemp()) / "objects_before.py"
    path.write_text(_old_source(revision))
    spec = importlib.util.spec_from_file_location("objects_before", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _Recording:
    """The object ledger of this checkout with stacks kept from start to stop."""

    name = "openssl-objects"

    def __init__(self) -> None:
        self._ledger: Any = make_ledger("openssl-objects")
        self._mark = 0

    def start(self) -> None:
        self._ledger.start()
        self._mark = self._ledger.begin_stacks()

    def stop(self) -> None:
        self._ledger.end_stacks(self._mark)
        self._ledger.stop()

    def snapshot(self) -> dict[str, int]:
        return dict(self._ledger.snapshot())


def _ledgers(mode: str, target: Target, old: ModuleType) -> list[Ledger | str]:
    """The target's default ledgers, with the object ledger of ``mode``."""
    chosen: list[Ledger | str] = []
    for name in target.ledgers:
        if name != "openssl-objects" or mode == "after":
            chosen.append(name)
        elif mode == "before":
            chosen.append(old.OpenSSLObjectLedger())
        else:
            chosen.append(_Recording())  # type: ignore[arg-type]
    return chosen


def _round(
    mode: str, target: Target, old: ModuleType, cases: Sequence[InitCase], passes: int
) -> tuple[float, int]:
    """(seconds for ``passes`` checks of every case, cases with findings in the last pass)."""
    # Started and closed around each round, outside the timed loop: the
    # object ledgers each install a proxy in pyOpenSSL's globals.
    with Oracle(target, ledgers=_ledgers(mode, target, old)) as oracle:
        start = time.perf_counter()
        for _ in range(passes):
            found = sum(1 for case in cases if oracle.check(case).findings)
        return time.perf_counter() - start, found


def _cli(target: str, revision: str, runs: int) -> None:
    """Wall seconds of ``tlsleak check TARGET corpus/``, now and with the old object ledger."""
    before = Path(tempfile.mkdtemp()) / "src"
    shutil.copytree(ROOT / "src", before, ignore=shutil.ignore_patterns("__pycache__"))
    (before / "tlsleak" / "ledgers" / "objects.py").write_text(_old_source(revision))
    command = [
        sys.executable,
        "-c",
        "import sys; from tlsleak.cli import main; sys.exit(main(sys.argv[1:]))",
        "check",
        target,
        str(bundled_corpus()),
    ]
    times: dict[str, list[float]] = {"before": [], "after": []}
    for _ in range(runs):
        for mode, path in (("before", before), ("after", ROOT / "src")):
            env = {**os.environ, "PYTHONPATH": str(path)}
            start = time.perf_counter()
            done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
            times[mode].append(time.perf_counter() - start)
            if done.returncode not in (0, 1):
                raise SystemExit(f"check failed ({mode}): {done.stderr.strip()}")
    print(f"\ntlsleak check {target} corpus/: wall seconds over {runs} runs each")
    for mode, seconds in times.items():
        print(f"{mode:<10} median {statistics.median(seconds):.2f}   min {min(seconds):.2f}")
    ratio = statistics.median(times["after"]) / statistics.median(times["before"])
    print(f"after/before = {ratio:.3f}")
    shutil.rmtree(before.parent, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="rounds per mode (default 7)")
    parser.add_argument("--target", default="pyopenssl", help="target name (default pyopenssl)")
    parser.add_argument("--before", default=BEFORE, help=f"git revision (default {BEFORE})")
    parser.add_argument("--cli", type=int, default=0, help="whole-command runs each way (0)")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    target = resolve_target(args.target)
    old = _old_objects(args.before)
    cases = [case for _path, case in load_cases([bundled_corpus()])]
    print(f"target: {target.name}   ledgers: {', '.join(target.ledgers)}   cases: {len(cases)}")
    findings = {mode: _round(mode, target, old, cases, 1)[1] for mode in MODES}  # warm-up
    one = _round("after", target, old, cases, 1)[0]
    passes = max(1, round(MIN_ROUND_SECONDS / max(one, 1e-9)))
    rates: dict[str, list[float]] = {mode: [] for mode in MODES}
    for _ in range(args.rounds):
        for mode in MODES:
            seconds, _found = _round(mode, target, old, cases, passes)
            rates[mode].append(passes * len(cases) / seconds)
    before = statistics.median(rates["before"])
    print(f"passes per round: {passes}, rounds: {args.rounds}\n")
    print(
        "{:<10} {:>13} {:>9} {:>9} {:>10} {:>9}".format(
            "mode", "median chk/s", "min", "max", "vs before", "findings"
        )
    )
    for mode in MODES:
        median = statistics.median(rates[mode])
        print(
            f"{mode:<10} {median:>13.1f} {min(rates[mode]):>9.1f} {max(rates[mode]):>9.1f} "
            f"{median / before:>10.3f} {findings[mode]:>9}"
        )
    if args.cli > 0:
        _cli(args.target, args.before, args.cli)
    return 0


if __name__ == "__main__":
    sys.exit(main())
