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

``--families LIST`` (repeatable) adds a site-guided campaign that feeds only
those site feature families (``TLSLEAK_FUZZ_SITE_FAMILIES``), ``--no-plain``
leaves plain out: the more campaigns side by side, the fewer executions each.

``--cost`` measures instead what recording sites costs an attempt: one child
process per mode (``on``, ``count``, ``off``) and target (the opaque control,
pyopenssl), run one after the other, checks the same inputs (the bundled
seeds, then a chain of structure-aware mutations of them made with a fixed
seed) the way a fuzz worker does (begin, check, features, counter hits,
features not seen before) and prints milliseconds per attempt over the
mutated inputs (the seeds warm up OpenSSL).  Every input is new to the
process, as in a campaign; the caches fill as they would there.

    python bench/bench_guidance.py [--seconds 60] [--seed 1] [--families site,caller ...]
    python bench/bench_guidance.py --cost [--runs 1500] [--seed 1]
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
MODES = ("on", "count", "off")

#: The per-attempt work of a fuzz worker (tlsleak.fuzz.worker), timed; one mode.
COST_CHILD = """\
import random, sys, time
from tlsleak.cases.case import decode
from tlsleak.cases.files import bundled_corpus
from tlsleak.cases.mutator import custom_mutator
from tlsleak.check.oracle import Oracle
from tlsleak.fuzz.guidance import POOL_SIZE, FeatureCounters, features, site_recorder
from tlsleak.targets import resolve_target

target, runs, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
oracle = Oracle(resolve_target(target)).start()
sites = site_recorder()
try:
    import atheris
    hit = atheris._trace_branch
except ImportError:
    hit = lambda counter: None
counters = FeatureCounters(range(POOL_SIZE), hit)
seeds = [p.read_bytes() for p in sorted(bundled_corpus().iterdir()) if p.is_file()]
rng = random.Random(seed)
inputs, data = [], rng.choice(seeds)
for _ in range(runs):
    data = rng.choice(seeds) if rng.random() < 0.2 else data
    data = custom_mutator(data, 65536, rng.getrandbits(32), byte_mutate=lambda d, m: d)
    inputs.append(data)
seen = set()
clock = time.perf_counter
spent = [0.0]

def attempt(data):
    if sites is not None:
        sites.begin()
    verdict = oracle.check(decode(data).without_fail_alloc())
    start = clock()
    found = features(verdict, sites.end() if sites is not None else ())
    counters.hit(found if sites is None else sites.fed(found))
    seen.update(found - seen)
    spent[0] += clock() - start

for data in seeds:
    attempt(data)
spent[0] = 0.0
start = clock()
for data in inputs:
    attempt(data)
print((clock() - start) / runs * 1e3, spent[0] / runs * 1e3)
"""

FIGURES = ("alloc_paths", "alloc_sites", "features", "error_pairs", "corpus", "execs")


def build(folder: Path) -> Path:
    """The opaque control, as a shared library in ``folder``."""
    out = folder / "control_opaque.so"
    command = ["gcc", "-shared", "-fPIC", "-O1", "-o", str(out), str(SOURCE), "-lssl", "-lcrypto"]
    subprocess.run(command, check=True)
    return out


def campaigns(
    target: str,
    folder: Path,
    seconds: float,
    seed: int,
    variants: dict[str, tuple[dict[str, str], list[str]]],
) -> dict[str, dict[str, int]]:
    """Run every variant at once; the last stats line of each."""
    tlsleak = shutil.which("tlsleak", path=os.path.dirname(sys.executable)) or "tlsleak"
    running = {}
    for name, (env, flags) in variants.items():
        out = folder / "".join(c if c.isalnum() else "-" for c in name)
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


def attempt_cost(target: str, mode: str, runs: int, seed: int) -> tuple[float, float]:
    """Milliseconds per attempt of a worker's per-input work with sites in ``mode``, and
    of the part of it after the check (features and counter hits: Python's)."""
    from tlsleak.ledgers.shim import preload_env

    env = preload_env({**os.environ, "TLSLEAK_FUZZ_SITES": mode})
    command = [sys.executable, "-c", COST_CHILD, target, str(runs), str(seed)]
    proc = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{target} ({mode}): cost child failed:\n{proc.stderr}")
    total, after = proc.stdout.split()[-2:]
    return float(total), float(after)


def cost(runs: int, seed: int) -> None:
    """Print ms per attempt for each mode, on the opaque control and on pyopenssl."""
    with tempfile.TemporaryDirectory() as tmp:
        targets = {"control_opaque": "c:" + str(build(Path(tmp))), "pyopenssl": "pyopenssl"}
        print(
            f"ms per attempt, {runs} mutated inputs, seed {seed}, by sites mode: "
            "whole attempt (features and hits after the check)"
        )
        print(f"  {'':16}" + "".join(f"{m:>18}" for m in MODES) + f"{'on-off':>9}")
        for name, target in targets.items():
            ms = {m: attempt_cost(target, m, runs, seed) for m in MODES}
            row = "".join(f"{ms[m][0]:>10.3f} ({ms[m][1]:.3f})" for m in MODES)
            print(f"  {name:16}{row}{ms['on'][0] - ms['off'][0]:>9.3f}", flush=True)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="budget of each (60)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--cost", action="store_true", help="ms per attempt, not campaigns")
    parser.add_argument("--runs", type=int, default=1500, help="inputs per --cost child (1500)")
    parser.add_argument(
        "--families",
        action="append",
        default=[],
        metavar="LIST",
        help="one more site-guided campaign feeding only these site feature families "
        "(TLSLEAK_FUZZ_SITE_FAMILIES: site,caller,depth,hits); repeatable",
    )
    parser.add_argument("--no-plain", action="store_true", help="leave out the plain campaign")
    args = parser.parse_args(argv)
    if args.cost:
        cost(args.runs, args.seed)
        return
    with tempfile.TemporaryDirectory() as tmp:
        target = "c:" + str(build(Path(tmp)))
        print(
            f"control_opaque (errors cleared, one generic failure), {args.seconds:g} s each, "
            f"seed {args.seed}, empty corpus, side by side:",
            flush=True,
        )
        variants = dict(VARIANTS)
        if args.no_plain:
            del variants["plain"]
        for families in args.families:
            env = {"TLSLEAK_FUZZ_SITES": "on", "TLSLEAK_FUZZ_SITE_FAMILIES": families}
            variants[f"sites[{families}]"] = (env, [])
        results = campaigns(target, Path(tmp), args.seconds, args.seed, variants)
    width = max(12, *map(len, results))
    print(f"  {'':{width}}" + "".join(f"{f:>13}" for f in FIGURES))
    for name, stats in results.items():
        print(f"  {name:{width}}" + "".join(f"{stats.get(f, 0):>13,}" for f in FIGURES))
    pairs = results["error pairs"]["alloc_paths"]
    for name, stats in results.items():
        if name.startswith("sites"):
            sites = stats["alloc_paths"]
            ratio = f"{sites / pairs:.2f}x" if pairs else "inf"
            print(f"paths: {name} {sites:,} vs error pairs {pairs:,}: {ratio} (goal >= 5x)")


if __name__ == "__main__":
    main()
