"""The ``tlsleak`` command.

Exit status: 0 clean, 1 findings, 2 bad usage or bad input (one line on
stderr, never a traceback), 130 interrupted, 141 output pipe closed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn, TextIO

from tlsleak import __version__
from tlsleak._fs import write_atomically
from tlsleak.cases.case import InitCase, Mode
from tlsleak.cases.files import CorpusError, bundled_corpus, case_files, load_case, write_case
from tlsleak.check.findings import FindingError, FindingStore, load_finding
from tlsleak.check.oracle import DEFAULT_REPLAYS, Finding, FindingKind, format_delta
from tlsleak.check.worker import DEFAULT_TIMEOUT, IsolatedOracle, WorkerError
from tlsleak.ledgers import LEDGERS
from tlsleak.targets import TARGETS, resolve_target

__all__ = ["main"]

EXIT_CLEAN, EXIT_FINDINGS, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a killed writer


class UsageError(Exception):
    """Bad usage or bad input: reported as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # argparse prints the whole usage block; one line says it better.
        raise UsageError(f"{message} (see '{self.prog} --help')")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, not {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {value}")
    return value


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="tlsleak",
        description="Hunt resource leaks in the error paths of TLS initialisation code.",
    )
    parser.add_argument("--version", action="version", version=f"tlsleak {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    commands.add_parser("targets", help="list the built-in targets and their ledgers")
    mutations = commands.add_parser(
        "mutations", help="list the structure-aware mutations (PEM, DER, whole case)"
    )
    mutations.add_argument(
        "--markdown", action="store_true", help="as the tables of docs/mutations.md"
    )
    defects = commands.add_parser("defects", help="list the defect catalogue")
    defects.add_argument(
        "--markdown", action="store_true", help="as the Markdown table of docs/defects.md"
    )

    check = commands.add_parser(
        "check",
        help="run corpus cases through a target and report leaks",
        description="Run every case through TARGET and check that every live resource "
        "count returns to its baseline. Exit 0 when clean, 1 on findings.",
    )
    check.add_argument(
        "target",
        nargs="?",
        default="pyopenssl",
        help="built-in target name or package.module:function (default: pyopenssl)",
    )
    check.add_argument(
        "paths",
        nargs="*",
        type=Path,
        metavar="PATH",
        help="corpus files or folders (default: the bundled corpus)",
    )
    check.add_argument(
        "--replays",
        type=_positive_int,
        default=DEFAULT_REPLAYS,
        help=f"replays that must show growth again before it is a leak (default {DEFAULT_REPLAYS})",
    )
    check.add_argument(
        "--ledger",
        action="append",
        dest="ledgers",
        choices=sorted(LEDGERS),
        help="ledger to use (repeatable; default: the ones the target names)",
    )
    check.add_argument(
        "--fail-alloc",
        action="store_true",
        help="also re-run each case once per allocation it makes, with that allocation failing",
    )
    check.add_argument(
        "--fail-budget",
        type=_positive_int,
        default=64,
        metavar="N",
        help="with --fail-alloc: at most N failing runs per case, sampled (default 64)",
    )
    check.add_argument(
        "--timeout",
        type=_positive_float,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help="a case still running after this long is a timeout finding "
        f"(default {DEFAULT_TIMEOUT:g})",
    )
    check.add_argument("--json", type=Path, metavar="FILE", help="also write a JSON report to FILE")
    check.add_argument("-q", "--quiet", action="store_true", help="no progress line")
    check.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="store each distinct finding, with a minimised reproducer, in DIR/findings",
    )
    check.add_argument(
        "--minimize-budget",
        type=_non_negative_int,
        default=100,
        metavar="N",
        help="with --out: at most N checks to minimise each new finding (default 100; "
        "0 stores it as found)",
    )

    replay = commands.add_parser(
        "replay",
        help="re-run a stored finding's reproducer",
        description="Run the reproducer of FINDING_DIR (written by 'check --out') on the "
        "finding's target. Exit 1 when the same finding still appears, 0 when it is gone.",
    )
    replay.add_argument("folder", type=Path, metavar="FINDING_DIR")
    replay.add_argument(
        "--replays",
        type=_positive_int,
        default=DEFAULT_REPLAYS,
        help=f"replays that must show growth again before it is a leak (default {DEFAULT_REPLAYS})",
    )
    replay.add_argument(
        "--timeout",
        type=_positive_float,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=f"seconds before the run is a timeout finding (default {DEFAULT_TIMEOUT:g})",
    )

    fuzz = commands.add_parser(
        "fuzz",
        help="run a fuzz campaign on a target",
        usage="%(prog)s TARGET [options] [-- -libfuzzer_flag=value ...]",
        description="Fuzz TARGET with libFuzzer (atheris) workers, each input checked by the "
        "oracle. New inputs are added to the corpus; each distinct finding gets a folder with a "
        "minimised reproducer under OUT/findings. Ctrl-C stops cleanly (twice: without "
        "minimising what is still queued). libFuzzer flags go after '--'.",
        epilog="example: tlsleak fuzz pyopenssl --time 600 --jobs 2 -- -dict=pem.dict "
        "-max_len=8192",
    )
    fuzz.add_argument(
        "target",
        metavar="TARGET",
        help="a name from 'tlsleak targets', package.module:function, or c:LIBRARY[:SYMBOL]",
    )
    fuzz.add_argument(
        "--time",
        type=_positive_float,
        metavar="SECONDS",
        help="stop after SECONDS (default: run until Ctrl-C or SIGTERM)",
    )
    fuzz.add_argument(
        "-j", "--jobs", type=_positive_int, default=1, help="worker processes (default 1)"
    )
    fuzz.add_argument(
        "--corpus",
        type=Path,
        metavar="DIR",
        help="the corpus to fuzz from and grow (default: "
        "OUT/corpus, a copy of the bundled seed corpus made on first use)",
    )
    fuzz.add_argument(
        "--out",
        type=Path,
        default=Path("tlsleak-out"),
        metavar="DIR",
        help="where findings, stats and worker logs go (default ./tlsleak-out)",
    )
    fuzz.add_argument("--seed", type=_non_negative_int, default=0, help="random seed (default 0)")
    fuzz.add_argument(
        "--plain",
        action="store_true",
        help="guide libFuzzer by Python coverage only, not by "
        "new OpenSSL errors and allocation counts",
    )
    fuzz.add_argument(
        "--mutator",
        choices=["structure", "bytes"],
        default="structure",
        help="structure-aware mutations of the case (PEM, DER, valid material, crossover; "
        "the default) or libFuzzer's own byte mutations",
    )
    fuzz.add_argument(
        "--replays",
        type=_positive_int,
        default=DEFAULT_REPLAYS,
        help=f"replays that must show growth again (default {DEFAULT_REPLAYS})",
    )
    fuzz.add_argument(
        "--timeout",
        type=_positive_float,
        default=10.0,
        metavar="SECONDS",
        help="seconds an input may take before it is a timeout finding (default 10)",
    )
    fuzz.add_argument(
        "--minimize-budget",
        type=_non_negative_int,
        default=200,
        metavar="N",
        help="oracle checks spent shrinking each new finding (default 200; 0: don't)",
    )
    fuzz.add_argument(
        "--max-len",
        type=_positive_int,
        default=64 * 1024,
        metavar="BYTES",
        help="largest input libFuzzer makes (default 65536)",
    )
    fuzz.add_argument("-q", "--quiet", action="store_true", help="no progress, summary only")
    corpus = commands.add_parser("corpus", help="work with corpus folders")
    corpus_commands = corpus.add_subparsers(
        dest="corpus_command", metavar="ACTION", parser_class=_Parser
    )
    corpus_commands.required = True
    show = corpus_commands.add_parser("show", help="describe case files for humans")
    show.add_argument("files", nargs="+", type=Path, metavar="FILE")
    grow = corpus_commands.add_parser(
        "grow",
        help="add new cases to a folder: from the strategies, or from a short campaign",
        description="Generate cases with tlsleak's Hypothesis strategies and store the new "
        "ones in DIR under content-addressed names (existing files are never touched). "
        "With --fuzz TARGET, instead run a fuzz campaign of --time seconds on TARGET with DIR "
        "as its corpus, which adds the inputs it finds interesting.",
    )
    grow.add_argument("folder", type=Path, metavar="DIR")
    grow.add_argument(
        "-n", "--count", type=_positive_int, default=100, help="cases to generate (default 100)"
    )
    grow.add_argument("--seed", type=_int, default=0, help="random seed (default 0)")
    grow.add_argument(
        "--defect",
        action="append",
        dest="defects",
        metavar="NAME",
        help="only this defect (repeatable; default: all, plus valid cases)",
    )
    grow.add_argument("--fuzz", metavar="TARGET", help="grow by fuzzing TARGET instead")
    grow.add_argument(
        "--time",
        type=_positive_float,
        default=60.0,
        metavar="SECONDS",
        help="with --fuzz: how long (default 60)",
    )
    grow.add_argument("-j", "--jobs", type=_positive_int, default=1, help="with --fuzz: workers")
    grow.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="with --fuzz: keep the campaign's findings and stats here (default: reported, "
        "then discarded)",
    )
    stats = corpus_commands.add_parser(
        "stats",
        help="count modes, key types, encodings and labels (and what a target makes of them)",
        description="Count what the case files under DIR hold. With --target, also run "
        "each case on TARGET and count outcomes and the (step, OpenSSL error) pairs reached.",
    )
    stats.add_argument("folders", nargs="+", type=Path, metavar="DIR")
    stats.add_argument("--target", metavar="TARGET", help="also run every case on TARGET")
    imp = corpus_commands.add_parser(
        "import",
        help="turn raw PEM/DER files into cases",
        description="Make one case per file (a folder: every regular non-hidden file in "
        "it), with the file's bytes as the CA, certificate or key blob (--as), labelled "
        "'imported', and store the new ones in DIR. With --from-hypothesis, the files are "
        "failing cases that property tests kept, copied in as they are.",
    )
    imp.add_argument("paths", nargs="*", type=Path, metavar="PATH")
    imp.add_argument("--as", dest="as_field", choices=["ca", "cert", "key"])
    imp.add_argument(
        "--from-hypothesis",
        action="store_true",
        help="PATHs hold case files kept by tlsleak.sharing.keep_failures (default: "
        "$TLSLEAK_FAILURES_DIR or .hypothesis/tlsleak-failures), not raw blobs",
    )
    imp.add_argument("--into", required=True, type=Path, metavar="DIR")
    imp.add_argument("--mode", choices=[m.value for m in Mode], default=Mode.SERVER.value)
    imp.add_argument(
        "--with-material",
        action="store_true",
        help="fill the other blobs with a valid EC P-256 identity (default: leave them empty)",
    )
    merge = corpus_commands.add_parser(
        "merge",
        help="copy a minimal set of cases keeping every distinct behaviour",
        description="Copy into DIR the smallest case per label set or, with --target, per "
        "(status, step, OpenSSL errors, labels) on TARGET and per finding. SRC is never "
        "modified.",
    )
    merge.add_argument("sources", nargs="+", type=Path, metavar="SRC")
    merge.add_argument("--into", required=True, type=Path, metavar="DIR")
    merge.add_argument("--target", metavar="TARGET", help="tell behaviours apart by running TARGET")
    return parser


def _progress(out: TextIO, text: str) -> None:
    out.write(f"\r\033[K{text}")
    out.flush()


def _cmd_targets(_args: argparse.Namespace) -> int:
    rows = []
    for name in TARGETS:
        target = resolve_target(name)
        rows.append((name, ", ".join(target.ledgers), target.description))
    width = max(len(r[0]) for r in rows)
    lwidth = max(len(r[1]) for r in rows)
    print(f"{'TARGET':<{width}}  {'LEDGERS':<{lwidth}}  DESCRIPTION")
    for name, ledgers, description in rows:
        print(f"{name:<{width}}  {ledgers:<{lwidth}}  {description}")
    print("\nYour own init path: package.module:function taking a tlsleak.InitCase,")
    print("or c:PATH[:SYMBOL] for a C library exporting tls_init_once (docs/c-abi.md).")
    print("Targets on cryptography's binding also get openssl-heap where it runs on the")
    print("system libcrypto (checked in the worker process, which has the heap shim).")
    return EXIT_CLEAN


def _cmd_defects(args: argparse.Namespace) -> int:
    from tlsleak.cases.defects import DEFECTS

    def steps(d: Any) -> str:
        return ", ".join(sorted(d.steps)) if d.steps else "-"

    if args.markdown:
        print("| defect | blob | pyopenssl | rejected at | description |")
        print("| --- | --- | --- | --- | --- |")
        for d in DEFECTS.values():
            row = (d.name, d.field, d.expect.value, steps(d), d.description)
            print("| " + " | ".join(row) + " |")
        return EXIT_CLEAN
    width = max(len(name) for name in DEFECTS)
    for d in DEFECTS.values():
        print(f"{d.name:<{width}}  {d.field:<11}  {d.expect.value:<8}  {d.description}")
    return EXIT_CLEAN


def _cmd_mutations(args: argparse.Namespace) -> int:
    from tlsleak.cases import der, mutator, pem

    sections = [
        (
            "pem",
            "PEM level (tlsleak.cases.pem)",
            [(m.name, m.description) for m in pem.MUTATIONS.values()],
        ),
        (
            "der",
            "DER level (tlsleak.cases.der)",
            [(m.name, m.description) for m in der.MUTATIONS.values()],
        ),
        (
            "case",
            "whole case (tlsleak.cases.mutator)",
            list(mutator.OPERATION_DESCRIPTIONS.items()),
        ),
    ]
    for prefix, title, rows in sections:
        if args.markdown:
            print(f"\n## {title}\n\n| mutation | description |\n| --- | --- |")
            for name, description in rows:
                print(f"| {prefix}:{name} | {description} |")
        else:
            for name, description in rows:
                print(f"{prefix}:{name:<28}  {description}")
    return EXIT_CLEAN


def _write_json_atomically(path: Path, payload: dict[str, Any]) -> None:
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise UsageError(f"{path}: folder {folder} does not exist")
    try:
        write_atomically(path, (json.dumps(payload, indent=2) + "\n").encode("utf-8"))
    except OSError as exc:
        raise UsageError(f"{path}: cannot write report: {exc.strerror}") from None


def _cmd_check(args: argparse.Namespace) -> int:
    paths = args.paths or [bundled_corpus()]
    files = case_files(paths)
    if (
        args.json is not None
        and not (args.json.parent if str(args.json.parent) else Path(".")).is_dir()
    ):
        raise UsageError(f"{args.json}: folder {args.json.parent} does not exist")
    store = _finding_store(args.out) if args.out is not None else None
    show_progress = not args.quiet and sys.stderr.isatty()
    statuses: Counter[str] = Counter()
    findings: list[tuple[Path, Finding]] = []
    started = time.monotonic()
    # The target runs in a child process: a crash or hang there is a finding,
    # and the child is started with the heap shim preloaded (see worker.py).
    oracle = IsolatedOracle(
        args.target, ledgers=args.ledgers, replays=args.replays, timeout=args.timeout
    )
    try:
        oracle.start()
    except WorkerError as exc:
        raise UsageError(str(exc)) from None
    try:
        if args.fail_alloc and not oracle.can_fail_allocations:
            raise UsageError(
                f"--fail-alloc: no ledger of target {oracle.target_name} can make allocations fail"
            )
        for i, path in enumerate(files, 1):
            case = load_case(path)
            verdict = oracle.check(case)
            statuses[str(verdict.outcome.status)] += 1
            found = list(verdict.findings)
            if args.fail_alloc:
                for k in _failure_points(case, oracle.count_allocations(case), args.fail_budget):
                    found.extend(oracle.check(case, fail_at=k).findings)
            findings.extend((path, f) for f in found)
            if store is not None:
                for finding in found:
                    _store_finding(store, oracle, finding, path, args.minimize_budget)
            if show_progress:
                _progress(sys.stderr, f"{i}/{len(files)} cases, {len(findings)} findings")
    finally:
        oracle.close()
        if show_progress:
            _progress(sys.stderr, "")
    elapsed = time.monotonic() - started
    _print_report(oracle.target_name, files, statuses, findings, elapsed)
    if args.json is not None:
        _write_json_atomically(
            args.json, _json_report(oracle.target_name, oracle, files, statuses, findings)
        )
    if store is not None and findings:
        stored = len({store.path_for(f) for _path, f in findings})
        print(f"\n{stored} distinct findings stored in {store.folder}")
    return EXIT_FINDINGS if findings else EXIT_CLEAN


def _finding_store(out: Path) -> FindingStore:
    """The store under ``out``, proven writable before any case runs."""
    folder = out / "findings"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        # Permission bits don't tell the whole story (read-only mounts, ACLs,
        # root): writing a file is the one reliable test.
        fd, probe = tempfile.mkstemp(prefix=".probe-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise UsageError(f"--out {out}: cannot write there: {exc.strerror or exc}") from None
    return FindingStore(folder)


def _store_finding(
    store: FindingStore, oracle: IsolatedOracle, finding: Finding, path: Path, budget: int
) -> None:
    """Store ``finding``; a new signature is minimised first with the check's own oracle."""
    if store.has(finding):
        store.add(finding, finding.case, path)
        return
    reproducer, reproduced = finding.case, None
    # A timeout finding costs the whole timeout per try: not worth shrinking.
    if budget > 0 and finding.kind is not FindingKind.TIMEOUT:
        from tlsleak.check.minimize import minimize, signature_predicate

        predicate = signature_predicate(oracle, finding.signature, fail_at=finding.fail_at)
        reproducer = minimize(finding.case, predicate, budget=budget)
        reproduced = predicate.finding_for(reproducer)
    store.add(finding, reproducer, path, reproducer_finding=reproduced)


def _cmd_replay(args: argparse.Namespace) -> int:
    recorded, case = load_finding(args.folder)
    oracle = IsolatedOracle(recorded.target, replays=args.replays, timeout=args.timeout)
    try:
        oracle.start()
    except WorkerError as exc:
        raise UsageError(str(exc)) from None
    try:
        if recorded.fail_at is not None and not oracle.can_fail_allocations:
            raise UsageError(
                f"{args.folder}: an allocation-failure finding, but no ledger of target "
                f"{oracle.target_name} can make allocations fail"
            )
        verdict = oracle.check(case, fail_at=recorded.fail_at)
    finally:
        oracle.close()
    where = f", allocation {recorded.fail_at} failing" if recorded.fail_at is not None else ""
    print(f"{args.folder}: {recorded.kind} on {recorded.target}{where}")
    print(f"outcome: {verdict.outcome.describe()}")
    for finding in verdict.findings:
        what = format_delta(finding.delta) if finding.delta else finding.summary()
        print(f"  {finding.kind} at {finding.step or '-'}: {what}")
        for site in finding.sites[:_SITES_SHOWN]:
            print(f"    {site}")
    if any(f.signature == recorded.signature for f in verdict.findings):
        print("still there: the same finding appears again")
        return EXIT_FINDINGS
    print("gone: the reproducer no longer gives this finding")
    return EXIT_CLEAN


def _cmd_fuzz(args: argparse.Namespace) -> int:
    import signal

    from rich.console import Console

    from tlsleak.fuzz.campaign import Campaign, CampaignError, CampaignOptions
    from tlsleak.fuzz.progress import LiveDisplay, PlainDisplay, summary_table, summary_title

    options = CampaignOptions(
        target=args.target,
        out=args.out,
        corpus=args.corpus,
        jobs=args.jobs,
        seconds=args.time,
        seed=args.seed,
        plain=args.plain,
        mutator=args.mutator,
        replays=args.replays,
        timeout=args.timeout,
        minimize_budget=args.minimize_budget,
        max_len=args.max_len,
        libfuzzer_flags=tuple(args.libfuzzer),
    )
    live = not args.quiet and sys.stderr.isatty()
    try:
        display: LiveDisplay | PlainDisplay | None = None
        if not args.quiet:
            display = LiveDisplay(sys.stderr) if live else PlainDisplay(sys.stderr)
        campaign = Campaign(
            options,
            on_status=display.update if display is not None else None,
            on_message=display.message if display is not None else _stderr_message,
            status_every=0.5 if live else 5.0,
        )
    except CampaignError as exc:
        raise UsageError(str(exc)) from None
    received: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        # The first signal stops the campaign; the next one also skips
        # minimising the findings still queued.
        received.append(signum)
        campaign.stop(hurry=len(received) > 1)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        status = campaign.run()
    except CampaignError as exc:
        raise UsageError(str(exc)) from None
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if display is not None:
            display.close()
    print(summary_title(status))
    Console(file=sys.stdout, highlight=False, width=_summary_width()).print(summary_table(status))
    if status.findings:
        print(
            f"\n{len(status.findings)} distinct findings in {args.out / 'findings'}; "
            "replay one with: tlsleak replay FOLDER"
        )
    if received:
        return 128 + received[0]
    return EXIT_FINDINGS if status.findings else EXIT_CLEAN


def _summary_width() -> int | None:
    # A log file gets the whole table, not one folded to 80 columns.
    return None if sys.stdout.isatty() else 200


def _stderr_message(text: str) -> None:
    print(f"tlsleak: {text}", file=sys.stderr)


def _failure_points(case: InitCase, count: int, budget: int) -> list[int]:
    """Which allocations to fail: all of them, or ``budget`` sampled ones.

    The sample is seeded by the case, so a re-run fails the same allocations;
    the first and the last allocation are always in it (the constructor that
    starts the path and the one that completes it are where error branches
    are least often tested).
    """
    if count <= budget:
        return list(range(1, count + 1))
    rng = random.Random(hashlib.sha256(case.encode()).digest())
    middle = rng.sample(range(2, count), budget - 2) if budget > 2 else []
    return sorted({1, count, *middle})[:budget]


#: Allocation sites printed per distinct finding (all are in the JSON report).
_SITES_SHOWN = 6


def _print_report(
    target: str,
    files: Sequence[Path],
    statuses: Counter[str],
    findings: Sequence[tuple[Path, Finding]],
    elapsed: float,
) -> None:
    outcome_text = ", ".join(f"{n} {s}" for s, n in sorted(statuses.items()))
    print(f"{target}: {len(files)} cases in {elapsed:.1f}s ({outcome_text})")
    if not findings:
        print("no findings: every live count returned to its baseline")
        return
    groups: dict[str, list[tuple[Path, Finding]]] = {}
    for path, finding in findings:
        groups.setdefault(finding.signature, []).append((path, finding))
    print(f"{len(findings)} findings, {len(groups)} distinct:\n")
    header = ("KIND", "STEP", "CASES", "WHAT", "EXAMPLE")
    rows = []
    for group in groups.values():
        path, first = group[0]
        if first.delta:
            what = ", ".join(f"{k} {v:+d}" for k, v in first.delta.items())
        elif first.errors_left:
            what = "; ".join(sorted({str(e) for e in first.errors_left}))
        else:
            what = first.outcome.message
        rows.append((str(first.kind), _steps(group), str(len(group)), what[:60], path.name))
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    for group in groups.values():
        first = group[0][1]
        if first.sites:
            where = f"{first.kind} at {first.step or '-'}"
            print(f"\nwhere the blocks of the {where} were allocated (example {group[0][0].name}):")
            for site in first.sites[:_SITES_SHOWN]:
                print(f"  {site.file}:{site.line}  {site.blocks} blocks, {site.bytes} bytes")
            if len(first.sites) > _SITES_SHOWN:
                print(f"  ... {len(first.sites) - _SITES_SHOWN} more sites in the JSON report")
    example = findings[0][0]
    print(f"\nreplay one: tlsleak check {target} {example.parent}/EXAMPLE")


def _steps(group: Sequence[tuple[Path, Finding]]) -> str:
    """The failing steps of a group of findings, most frequent first.

    One leak signature covers every step its missing free shows behind.
    """
    counts = Counter(str(f.step or "-") for _path, f in group)
    return ",".join(step for step, _n in counts.most_common())


def _json_report(
    target: str,
    oracle: IsolatedOracle,
    files: Sequence[Path],
    statuses: Counter[str],
    findings: Sequence[tuple[Path, Finding]],
) -> dict[str, Any]:
    return {
        "tool": "tlsleak",
        "version": __version__,
        "target": target,
        "ledgers": oracle.ledger_names,
        "replays": oracle.replays,
        "cases": len(files),
        "outcomes": dict(statuses),
        "findings": [{**f.to_json(), "file": str(path)} for path, f in findings],
    }


def _cmd_corpus_show(args: argparse.Namespace) -> int:
    from tlsleak.cases.describe import describe_case

    files = case_files(args.files)
    for i, path in enumerate(files):
        if i:
            print()
        print(f"== {path}")
        print(describe_case(load_case(path)))
    return EXIT_CLEAN


def _cmd_corpus_grow(args: argparse.Namespace) -> int:
    from hypothesis.errors import InvalidArgument

    from tlsleak import strategies

    if args.folder.exists() and not args.folder.is_dir():
        raise UsageError(f"{args.folder}: exists and is not a folder")
    if args.fuzz is not None:
        if args.defects:
            raise UsageError("--defect chooses generated cases; it does not go with --fuzz")
        return _grow_by_fuzzing(args)
    try:
        if args.defects:
            strategy = strategies.malformed_cases(defects=args.defects)
        else:
            strategy = strategies.init_cases()
        cases = strategies.generate(strategy, args.count, seed=args.seed)
    except InvalidArgument as exc:
        raise UsageError(str(exc)) from None
    added = 0
    for case in cases:
        _path, new = write_case(args.folder, case)
        added += new
    print(f"{args.folder}: {added} new cases, {len(cases) - added} already there")
    return EXIT_CLEAN


def _grow_by_fuzzing(args: argparse.Namespace) -> int:
    from tlsleak.fuzz.campaign import Campaign, CampaignError, CampaignOptions

    args.folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="tlsleak-grow-") as scratch:
        out = args.out if args.out is not None else Path(scratch)
        options = CampaignOptions(
            args.fuzz, out, corpus=args.folder, jobs=args.jobs, seconds=args.time, seed=args.seed
        )
        try:
            status = Campaign(options, on_message=_stderr_message).run()
        except CampaignError as exc:
            raise UsageError(str(exc)) from None
    print(
        f"{args.folder}: {status.corpus_added} new inputs from {status.execs:,} executions "
        f"on {status.target} in {status.elapsed:.0f}s"
    )
    for record in status.findings:
        print(f"  {record.kind} ({record.count}x): {record.summary}")
    if status.findings and args.out is None:
        print("  (findings not kept: pass --out DIR, or run tlsleak fuzz)")
    return EXIT_FINDINGS if status.findings else EXIT_CLEAN


def _started_oracle(target: str | None) -> IsolatedOracle | None:
    if target is None:
        return None
    oracle = IsolatedOracle(target)
    try:
        return oracle.start()
    except WorkerError as exc:
        raise UsageError(str(exc)) from None


def _cmd_corpus_stats(args: argparse.Namespace) -> int:
    from tlsleak.corpus.tools import corpus_stats, format_stats

    # Refuse bad paths before a worker is started for them.
    case_files(args.folders)
    oracle = _started_oracle(args.target)
    try:
        target = oracle.target_name if oracle is not None else None
        stats = corpus_stats(args.folders, oracle, target)
    finally:
        if oracle is not None:
            oracle.close()
    print(format_stats(stats))
    return EXIT_CLEAN


def _cmd_corpus_import(args: argparse.Namespace) -> int:
    from tlsleak.corpus.tools import import_blobs, import_cases

    if args.from_hypothesis:
        if args.as_field is not None:
            raise UsageError("--as is for raw blobs; kept Hypothesis failures are whole cases")
        from tlsleak.corpus.sharing import failures_folder

        result = import_cases(args.paths or [failures_folder()], args.into)
        print(f"{args.into}: {result.new} new cases, {result.present} already there")
        return EXIT_CLEAN
    if not args.paths or args.as_field is None:
        raise UsageError("corpus import needs PATH... and --as ca|cert|key (or --from-hypothesis)")
    result = import_blobs(
        args.paths, args.as_field, args.into, Mode(args.mode), with_material=args.with_material
    )
    print(f"{args.into}: {result.new} new cases, {result.present} already there")
    return EXIT_CLEAN


def _cmd_corpus_merge(args: argparse.Namespace) -> int:
    from tlsleak.corpus.tools import merge_corpora

    case_files(args.sources)
    oracle = _started_oracle(args.target)
    try:
        result = merge_corpora(args.sources, args.into, oracle)
    finally:
        if oracle is not None:
            oracle.close()
    print(
        f"{args.into}: kept {result.kept}/{result.total} cases "
        f"({result.new} new, {result.kept - result.new} already there)"
    )
    return EXIT_CLEAN


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tlsleak`` console script."""
    try:
        argv = list(sys.argv[1:] if argv is None else argv)
        # libFuzzer's flags follow "--" (argparse's own handling of "--" under
        # sub-commands passes it on as an argument).
        split = argv.index("--") if "--" in argv else len(argv)
        argv, passed_on = argv[:split], argv[split + 1 :]
        args = _parser().parse_args(argv)
        if passed_on and args.command != "fuzz":
            raise UsageError("only 'tlsleak fuzz' takes flags after '--' (libFuzzer's)")
        args.libfuzzer = passed_on
        if args.command == "targets":
            return _cmd_targets(args)
        if args.command == "mutations":
            return _cmd_mutations(args)
        if args.command == "defects":
            return _cmd_defects(args)
        if args.command == "check":
            return _cmd_check(args)
        if args.command == "replay":
            return _cmd_replay(args)
        if args.command == "fuzz":
            return _cmd_fuzz(args)
        if args.corpus_command == "show":
            return _cmd_corpus_show(args)
        if args.corpus_command == "stats":
            return _cmd_corpus_stats(args)
        if args.corpus_command == "import":
            return _cmd_corpus_import(args)
        if args.corpus_command == "merge":
            return _cmd_corpus_merge(args)
        return _cmd_corpus_grow(args)
    except (UsageError, CorpusError, FindingError) as exc:
        print(f"tlsleak: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("\ntlsleak: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`tlsleak check | head`): stop quietly, and keep
        # Python from complaining again when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE

