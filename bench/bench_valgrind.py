#!/usr/bin/env python3
"""tlsleak against valgrind on the leaky C control: same verdicts, how much faster.

For N corpus cases (default 100, the first by name), the leaky C control
(tests/c/control_leaky.c, built here) is judged twice:

* by tlsleak: ``IsolatedOracle("c:control_leaky.so")``, the heap ledger with
  replays, one worker for all cases;
* by valgrind: ``valgrind --leak-check=full`` on a small C harness
  (bench/c/harness.c) that calls ``tls_init_once`` once per process; a case
  leaks when valgrind reports memory "definitely lost".

It prints how many verdicts agree, the cases where they differ, and the
wall-clock time of each with the ratio.  Nothing is asserted.

    python bench/bench_valgrind.py [--cases N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tlsleak import FindingKind, InitCase, Mode
from tlsleak.cases.files import bundled_corpus, case_files, load_case
from tlsleak.check.worker import IsolatedOracle

ROOT = Path(__file__).resolve().parent.parent


def _build(workdir: Path) -> tuple[Path, Path]:
    harness = workdir / "harness"
    library = workdir / "control_leaky.so"
    subprocess.run(
        ["gcc", "-O1", "-g", "-o", str(harness), str(ROOT / "bench/c/harness.c"), "-ldl"],
        check=True,
    )
    subprocess.run(
        [
            "gcc",
            "-shared",
            "-fPIC",
            "-O1",
            "-g",
            "-o",
            str(library),
            str(ROOT / "tests/c/control_leaky.c"),
            "-lssl",
            "-lcrypto",
        ],
        check=True,
    )
    return harness, library


def _private_file(folder: Path, name: str, data: bytes) -> Path:
    # Key material: private, and removed with the folder after each case.
    path = folder / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return path


def _valgrind_leaks(harness: Path, library: Path, case: InitCase) -> bool:
    with tempfile.TemporaryDirectory(prefix="tlsleak-vg-") as tmp:
        folder = Path(tmp)
        files = [_private_file(folder, n, getattr(case, n)) for n in ("ca", "cert", "key")]
        proc = subprocess.run(
            [
                "valgrind",
                "--leak-check=full",
                "--errors-for-leak-kinds=definite",
                "--error-exitcode=99",
                "--quiet",
                str(harness),
                str(library),
                *map(str, files),
                "1" if case.mode is Mode.CLIENT else "0",
            ],
            capture_output=True,
            check=False,
        )
    return proc.returncode == 99


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=100, help="corpus cases to judge (100)")
    args = parser.parse_args()
    if shutil.which("valgrind") is None or shutil.which("gcc") is None:
        print("needs valgrind and gcc (Debian: apt-get install valgrind gcc libssl-dev)")
        return 2
    paths = case_files([bundled_corpus()])[: args.cases]
    cases = [load_case(p) for p in paths]
    with tempfile.TemporaryDirectory(prefix="tlsleak-bench-") as tmp:
        harness, library = _build(Path(tmp))

        started = time.perf_counter()
        with IsolatedOracle(f"c:{library}") as oracle:
            ours = [
                any(f.kind is FindingKind.LEAK for f in oracle.check(c).findings) for c in cases
            ]
        ours_seconds = time.perf_counter() - started

        started = time.perf_counter()
        theirs = [_valgrind_leaks(harness, library, c) for c in cases]
        valgrind_seconds = time.perf_counter() - started

    agree = sum(a == b for a, b in zip(ours, theirs, strict=True))
    print(f"cases: {len(cases)} from {bundled_corpus()}")
    print(f"leaks found   tlsleak {sum(ours):4d}   valgrind {sum(theirs):4d}")
    print(f"verdicts agree on {agree}/{len(cases)} cases")
    for path, a, b in zip(paths, ours, theirs, strict=True):
        if a != b:
            print(
                f"  differ: {path.name} tlsleak={'leak' if a else 'clean'} "
                f"valgrind={'leak' if b else 'clean'}"
            )
    print(f"time          tlsleak {ours_seconds:7.2f}s  valgrind {valgrind_seconds:7.2f}s")
    print(f"ratio valgrind/tlsleak = {valgrind_seconds / ours_seconds:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
