#!/usr/bin/env python3
"""What a fuzz campaign achieves: first finding, speed, scaling, and what guidance buys.

Four figures, each measured side by side in this one run (these machines are
noisy: compare ratios, not absolute numbers between runs):

``first-finding``
    seconds from starting ``tlsleak fuzz control-leaky`` on an empty corpus
    to its first confirmed (replayed) finding, workers' start-up included;
    the median of ``--runs`` campaigns.
``exec/s``
    executions per second of one worker on ``--target`` (the bundled corpus),
    and of two; the 2-job/1-job ratio is the scaling.  Alternated
    (1, 2, 1, 2, ...) so that drift hits both alike; medians reported.
``guided vs plain``
    distinct (step, OpenSSL library, reason) pairs and allocation-count
    buckets reached in ``--seconds`` from an empty corpus with the same seed
    by four campaigns: plain atheris (Python coverage, libFuzzer's byte
    mutations), the same with error-path guidance, the structure-aware
    mutator with Python coverage only, and both (tlsleak fuzz's default).
    They run at the same time, one worker each, so all get the same share
    of the machine.
``structure vs bytes``
    the same, structure-aware custom mutator against libFuzzer's byte
    mutations (both guided), with the reasons only the structure-aware run
    reached, on each target of ``--mutator-targets``.

``fail-alloc``
    ``tlsleak fuzz --fail-alloc`` on a C control whose bug only a failed
    allocation reaches (``--fail-alloc-control``: ``bionull``, a crash on an
    unchecked ``BIO_new`` in a refused input's error path, or ``sslnew``, a
    leak when ``SSL_new`` fails), built from ``tests/c`` with gcc: for each of
    ``--runs`` campaigns (seeds 0, 1, ...; the bundled corpus, one worker),
    the executions until its first finding of that bug (counted to within a
    worker's stats interval, half a second) and the share of the inputs the
    campaign added to the corpus that carry a fail point.

Nothing here asserts on time.

    python bench/bench_campaign.py [--only first-finding,scaling,guidance,mutator,fail-alloc]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from tlsleak.cases.case import decode
from tlsleak.cases.files import bundled_corpus
from tlsleak.fuzz.campaign import Campaign, CampaignOptions
from tlsleak.fuzz.guidance import is_alloc_bucket, is_error_pair
from tlsleak.fuzz.stats import CampaignStatus

PARTS = ("first-finding", "scaling", "guidance", "mutator", "fail-alloc")
#: The C controls of the fail-alloc part: the kind of finding only a failed allocation gives.
FAIL_ALLOC_CONTROLS = {"bionull": "crash", "sslnew": "leak"}
_C_DIR = Path(__file__).resolve().parent.parent / "tests" / "c"


def _campaign(options: CampaignOptions) -> tuple[Campaign, CampaignStatus]:
    campaign = Campaign(options)
    return campaign, campaign.run()


class _FirstFinding:
    """Stops a campaign at its first finding and remembers when that was."""

    def __init__(self) -> None:
        self.campaign: Campaign | None = None
        self.at: float | None = None

    def __call__(self, status: CampaignStatus) -> None:
        if status.findings and self.at is None and self.campaign is not None:
            self.at = status.elapsed
            self.campaign.stop(hurry=True)


def time_to_first_finding(runs: int, limit: float) -> list[float]:
    times: list[float] = []
    for run in range(runs):
        with tempfile.TemporaryDirectory() as tmp:
            empty = Path(tmp) / "corpus"
            empty.mkdir()
            watch = _FirstFinding()
            options = CampaignOptions(
                "control-leaky",
                Path(tmp) / "out",
                corpus=empty,
                seconds=limit,
                seed=run,
                minimize_budget=0,
            )
            watch.campaign = Campaign(options, on_status=watch, status_every=0.05)
            watch.campaign.run()
            times.append(watch.at if watch.at is not None else float("inf"))
            print(f"  run {run + 1}: {times[-1]:.2f} s", flush=True)
    return times


def scaling(target: str, seconds: float, rounds: int) -> dict[int, list[float]]:
    rates: dict[int, list[float]] = {1: [], 2: []}
    for _round in range(rounds):
        for jobs in (1, 2):
            with tempfile.TemporaryDirectory() as tmp:
                options = CampaignOptions(
                    target, Path(tmp) / "out", jobs=jobs, seconds=seconds, minimize_budget=0
                )
                _c, status = _campaign(options)
                # Executions over the time the workers ran, start-up excluded
                # as far as the status can tell: the rate of the last stretch.
                rates[jobs].append(status.execs / status.elapsed)
                print(f"  {jobs} job(s): {rates[jobs][-1]:.1f} exec/s", flush=True)
    return rates


def side_by_side(
    target: str, seconds: float, seed: int, *variants: dict[str, object]
) -> list[Campaign]:
    """One-worker campaigns from an empty corpus at the same time, one per variant of options."""
    results: list[Campaign] = []
    with tempfile.TemporaryDirectory() as tmp:
        runs = []
        for name, extra in enumerate(variants):
            corpus = Path(tmp) / f"{name}-corpus"
            corpus.mkdir()
            options = CampaignOptions(
                target,
                Path(tmp) / f"{name}-out",
                corpus=corpus,
                seconds=seconds,
                seed=seed,
                minimize_budget=0,
                **extra,  # type: ignore[arg-type]
            )
            campaign = Campaign(options)
            results.append(campaign)
            runs.append(threading.Thread(target=campaign.run))
        for thread in runs:
            thread.start()
        for thread in runs:
            thread.join()
    return results


class _FirstFailure:
    """Stops a campaign at its first allocation-failure finding of ``kind``; keeps the execs."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.campaign: Campaign | None = None
        self.execs: int | None = None
        self.seconds: float | None = None

    def __call__(self, status: CampaignStatus) -> None:
        hit = any(
            f.kind == self.kind and "allocation failure" in f.signature for f in status.findings
        )
        if hit and self.execs is None and self.campaign is not None:
            self.execs, self.seconds = status.execs, status.elapsed
            self.campaign.stop(hurry=True)


def _build_control(name: str, folder: Path) -> Path:
    gcc = shutil.which("gcc")
    if gcc is None:
        raise SystemExit("fail-alloc: gcc is needed to build the C control")
    library = folder / f"{name}.so"
    source = _C_DIR / f"control_{name}.c"
    flags = ["-shared", "-fPIC", "-O1", "-g"]
    subprocess.run([gcc, *flags, "-o", str(library), str(source), "-lssl", "-lcrypto"], check=True)
    return library


def fail_alloc_runs(control: str, runs: int, limit: float) -> list[tuple[int | None, float]]:
    """(executions to the first finding or None, share of new inputs with a fail point) per run."""
    seeds = {p.name for p in bundled_corpus().iterdir()}
    results: list[tuple[int | None, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        library = _build_control(control, Path(tmp))
        for run in range(runs):
            out = Path(tmp) / f"out-{run}"
            watch = _FirstFailure(FAIL_ALLOC_CONTROLS[control])
            options = CampaignOptions(
                f"c:{library}", out, seconds=limit, seed=run, minimize_budget=0, fail_alloc=True
            )
            watch.campaign = Campaign(options, on_status=watch, status_every=0.05)
            status = watch.campaign.run()
            added = [p for p in (out / "corpus").iterdir() if p.name not in seeds]
            pointed = sum(decode(p.read_bytes()).fail_alloc is not None for p in added)
            share = pointed / len(added) if added else 0.0
            results.append((watch.execs, share))
            found = f"{watch.execs:,} execs ({watch.seconds:.1f} s)" if watch.execs else "none"
            print(
                f"  run {run + 1}: first {FAIL_ALLOC_CONTROLS[control]}: {found}; "
                f"{status.execs:,} execs in all, {pointed}/{len(added)} new inputs "
                f"({share:.0%}) carry a fail point",
                flush=True,
            )
            shutil.rmtree(out, ignore_errors=True)
    return results


def _counts(campaign: Campaign) -> tuple[int, int]:
    features = campaign.features
    return sum(map(is_error_pair, features)), sum(map(is_alloc_bucket, features))


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "inf"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default=",".join(PARTS), help="comma-separated parts")
    parser.add_argument("--runs", type=int, default=5, help="first-finding campaigns (5)")
    parser.add_argument("--target", default="pyopenssl", help="target for exec/s (pyopenssl)")
    parser.add_argument("--scaling-seconds", type=float, default=20.0)
    parser.add_argument("--scaling-rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=60.0, help="guided/plain budget (60)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--mutator-targets", default="pyopenssl,ssl")
    parser.add_argument(
        "--fail-alloc-control", choices=sorted(FAIL_ALLOC_CONTROLS), default="bionull"
    )
    parser.add_argument(
        "--fail-alloc-seconds", type=float, default=120.0, help="fail-alloc campaign limit (120)"
    )
    args = parser.parse_args(argv)
    parts = set(args.only.split(","))

    if "first-finding" in parts:
        print("time to first confirmed finding, control-leaky, empty corpus:", flush=True)
        times = time_to_first_finding(args.runs, limit=60.0)
        print(
            f"first-finding: median {statistics.median(times):.2f} s over {len(times)} runs "
            f"(min {min(times):.2f}, max {max(times):.2f}); goal < 5 s\n"
        )

    if "scaling" in parts:
        print(f"executions per second on {args.target} (bundled corpus):", flush=True)
        rates = scaling(args.target, args.scaling_seconds, args.scaling_rounds)
        one, two = statistics.median(rates[1]), statistics.median(rates[2])
        print(
            f"exec/s: 1 job {one:.1f}/s, 2 jobs {two:.1f}/s ({two / 2:.1f}/s per worker); "
            f"2-job scaling {_ratio(two, one)}\n"
        )

    if "guidance" in parts:
        print(
            f"guided vs plain, {args.target}, {args.seconds:g} s each, seed {args.seed}, "
            "empty corpus, side by side:",
            flush=True,
        )
        variants = {
            "plain atheris (bytes, Python coverage)": {"plain": True, "mutator": "bytes"},
            "bytes + error-path guidance": {"mutator": "bytes"},
            "structure-aware, Python coverage only": {"plain": True},
            "structure-aware + guidance (default)": {},
        }
        runs = side_by_side(args.target, args.seconds, args.seed, *variants.values())
        counts = [_counts(run) for run in runs]
        for name, (pairs, buckets) in zip(variants, counts, strict=True):
            print(f"  {name:40} {pairs:4} (step, reason) pairs, {buckets:3} alloc buckets")
        (pp, pb), (gp, _gb), (sp, _sb), (dp, db) = counts
        print(
            f"guidance alone: {_ratio(gp, pp)} pairs with byte mutations, {_ratio(dp, sp)} with "
            f"structure-aware ones; tlsleak fuzz vs plain atheris: {_ratio(dp, pp)} pairs, "
            f"{_ratio(db, pb)} buckets (goal >= 2x pairs)\n"
        )

    if "mutator" in parts:
        for target in args.mutator_targets.split(","):
            print(
                f"structure-aware vs byte mutation, {target}, {args.seconds:g} s each, "
                f"seed {args.seed}, empty corpus, side by side:",
                flush=True,
            )
            structure, plain_bytes = side_by_side(
                target, args.seconds, args.seed, {"mutator": "structure"}, {"mutator": "bytes"}
            )
            execs = (structure.workers[0].status.execs, plain_bytes.workers[0].status.execs)
            print(
                f"executions: structure {execs[0]:,} ({execs[0] / args.seconds:.0f}/s), "
                f"bytes {execs[1]:,} ({execs[1] / args.seconds:.0f}/s)"
            )
            (sp, sb), (bp, bb) = _counts(structure), _counts(plain_bytes)
            print(f"structure: {sp} pairs, {sb} alloc buckets")
            print(f"bytes:     {bp} pairs, {bb} alloc buckets")
            print(f"structure-aware: {_ratio(sp, bp)} pairs, {_ratio(sb, bb)} buckets; goal >= 2x")
            only = sorted(f for f in structure.features - plain_bytes.features if is_error_pair(f))
            print("reached only with structure-aware mutation:")
            for feature in only:
                print(f"  {feature.removeprefix('err ')}")
            print()

    if "fail-alloc" in parts:
        control = args.fail_alloc_control
        kind = FAIL_ALLOC_CONTROLS[control]
        print(f"fuzz --fail-alloc on control_{control}.c, bundled corpus:", flush=True)
        results = fail_alloc_runs(control, args.runs, args.fail_alloc_seconds)
        found = [execs for execs, _share in results if execs is not None]
        shares = [share for _execs, share in results]
        median = f"median {statistics.median(found):,.0f}" if found else "never"
        print(
            f"fail-alloc: first {kind} in {len(found)}/{len(results)} runs, {median} execs "
            f"(min {min(found, default=0):,}, max {max(found, default=0):,}); "
            f"new inputs with a fail point: median {statistics.median(shares):.0%}\n"
        )


if __name__ == "__main__":
    start = time.monotonic()
    main()
    print(f"(bench took {time.monotonic() - start:.0f} s)")
