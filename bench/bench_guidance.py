#!/usr/bin/env python3
"""What allocation-site guidance buys on a C library whose failures say nothing.

The target is ``tests/c/control_opaque.c`` (built here with gcc): it parses
certificates and keys through OpenSSL along several paths of its own and,
like Mongoose, clears OpenSSL's error queue on every rejection and reports
one generic failure, so every rejected input shows tlsleak the same error
pair.  Three one-worker campaigns run side by side (at the same time, so
they get the same share of the machine), from an empty corpus with the same
seed, as ``tlsleak fuzz`` processes:

``sites``
    allocation-site guidance on top of the rest (``TLSLEAK_FUZZ_SITES=on``,
    tlsleak fuzz's default);
``error pairs``
    error pairs, error stacks and allocation buckets guide; sites are
    recorded and counted but not fed (``TLSLEAK_FUZZ_SITES=count``);
``plain``
    Python coverage only (``--plain``; sites recorded and counted).

All three record sites, so they pay the same cost and are counted the same
way.  A **path** is a distinct set of allocation sites an executed input's
attempt made (``path`` features of :mod:`tlsleak.fuzz.guidance`: module and
offset of each site, callers and depths left out), over every input the
campaign executed, not only those it kept.  Also printed: distinct site
features (sites, sites with their caller, sites at a depth), all coverage
features, the corpus size and executions.  Nothing here asserts on time.

    python bench/bench_guidance.py [--seconds 60] [--seed 1]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

SOURCE = Path(__file__).resolve().parent.parent / "tests" / "c" / "control_opaque.c"
VARIANTS: dict[str, tuple[dict[str, str], list[str]]] = {
    "sites": ({"TLSLEAK_FUZZ_SITES": "on"}, []),
    "error pairs": ({"TLSLEAK_FUZZ_SITES": "count"}, []),
    "plain": ({"TLSLEAK_FUZZ_SITES": "count"}, ["--plain"]),
}
FIGURES = ("alloc_paths", "alloc_sites", "features", "error_pairs", "corpus", "execs")


def build(folder: Path) -> Path:
    """The opaque control, as a shared library in ``folder``."""
    out = folder / "control_opaque.so"
    command = ["gcc", "-shared", "-fPIC", "-O1", "-o", str(out), str(SOURCE), "-lssl", "-lcrypto"]
    subprocess.run(command, check=True)
    return out


def campaigns(target: str, folder: Path, seconds: float, seed: int) -> dict[str, dict[str, int]]:
    """Run every variant at once; the last stats line of each."""
    tlsleak = shutil.which("tlsleak", path=os.path.dirname(sys.executable)) or "tlsleak"
    running = {}
    for name, (env, flags) in VARIANTS.items():
        out = folder / name.replace(" ", "-")
        (out / "corpus").mkdir(parents=True)
        command = [tlsleak, "fuzz", target, "--out", str(out), "--corpus", str(out / "corpus")]
        command += ["--time", str(seconds), "--seed", str(seed), "--minimize-budget", "0", *flags]
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.PIPE}
        running[name] = (out, subprocess.Popen(command, env={**os.environ, **env}, **quiet))
    results = {}
    for name, (out, proc) in running.items():
        _, err = proc.communicate()
        lines = (out / "stats.jsonl").read_text().splitlines() if proc.returncode in (0, 1) else []
        if not lines:
            raise SystemExit(f"{name}: tlsleak fuzz failed ({proc.returncode}):\n{err.decode()}")
        results[name] = json.loads(lines[-1])
    return results


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="budget of each (60)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        target = "c:" + str(build(Path(tmp)))
        print(
            f"control_opaque (errors cleared, one generic failure), {args.seconds:g} s each, "
            f"seed {args.seed}, empty corpus, side by side:",
            flush=True,
        )
        results = campaigns(target, Path(tmp), args.seconds, args.seed)
    print(f"  {'':12}" + "".join(f"{f:>13}" for f in FIGURES))
    for name, stats in results.items():
        print(f"  {name:12}" + "".join(f"{stats.get(f, 0):>13,}" for f in FIGURES))
    sites, pairs = results["sites"]["alloc_paths"], results["error pairs"]["alloc_paths"]
    ratio = f"{sites / pairs:.2f}x" if pairs else "inf"
    print(f"paths: site guidance {sites:,} vs error-pair guidance {pairs:,}: {ratio} (goal >= 5x)")


if __name__ == "__main__":
    main()
