"""``tlsleak corpus``: show, grow, stats, import and merge corpus folders.

Cases are stored under content-addressed names, so adding a case that is
already there changes nothing: the actions that write say how many were new.
Stats, import and merge do their work in :mod:`tlsleak.corpus.tools`.  A
folder that can't be read or written is one line and exit status 2, checked
before the work where it can be (:func:`tlsleak.corpus.tools.check_writable`).
"""

from __future__ import annotations

import argparse
import functools
import tempfile
from collections.abc import Callable
from pathlib import Path

from tlsleak.cases.case import Mode
from tlsleak.cases.files import case_files, load_case, write_case
from tlsleak.check.oracle import FindingKind
from tlsleak.check.worker import IsolatedOracle
from tlsleak.cli._common import (
    EXIT_CLEAN,
    Commands,
    Parser,
    UsageError,
    int_arg,
    positive_float,
    positive_int,
    started,
)

__all__ = ["add_parser"]


def _one_line_errors(action: Callable[[argparse.Namespace], int]) -> Callable[..., int]:
    """``action``, with a file system error it meets on the way as one line (exit 2)."""

    @functools.wraps(action)
    def run(args: argparse.Namespace) -> int:
        try:
            return action(args)
        except OSError as exc:  # a folder made unwritable midway, a full disk
            where = f"{exc.filename}: " if exc.filename else ""
            raise UsageError(f"{where}{exc.strerror or exc}") from None

    return run


def add_parser(commands: Commands) -> None:
    """Add ``corpus`` and its actions to the sub-commands ``commands``."""
    corpus = commands.add_parser("corpus", help="work with corpus folders")
    actions = corpus.add_subparsers(dest="corpus_command", metavar="ACTION", parser_class=Parser)
    actions.required = True
    show = actions.add_parser("show", help="describe case files for humans")
    show.set_defaults(run=_one_line_errors(_show))
    show.add_argument("files", nargs="+", type=Path, metavar="FILE")
    _add_grow(actions)
    stats = actions.add_parser(
        "stats",
        help="count modes, key types, encodings and labels (and what a target makes of them)",
        description="Count what the case files under DIR hold. With --target, also run "
        "each case on TARGET and count outcomes and the (step, OpenSSL error) pairs reached.",
    )
    stats.set_defaults(run=_one_line_errors(_stats))
    stats.add_argument("folders", nargs="+", type=Path, metavar="DIR")
    stats.add_argument("--target", metavar="TARGET", help="also run every case on TARGET")
    _add_import(actions)
    merge = actions.add_parser(
        "merge",
        help="copy a minimal set of cases keeping every distinct behaviour",
        description="Copy into DIR the smallest case per label set or, with --target, per "
        "(status, step, OpenSSL errors, labels) on TARGET and per finding. SRC is never "
        "modified.",
    )
    merge.set_defaults(run=_one_line_errors(_merge))
    merge.add_argument("sources", nargs="+", type=Path, metavar="SRC")
    merge.add_argument("--into", required=True, type=Path, metavar="DIR")
    merge.add_argument("--target", metavar="TARGET", help="tell behaviours apart by running TARGET")


def _add_grow(actions: Commands) -> None:
    grow = actions.add_parser(
        "grow",
        help="add new cases to a folder: from the strategies, or from a short campaign",
        description="Generate cases with tlsleak's Hypothesis strategies and store the new "
        "ones in DIR under content-addressed names (existing files are never touched). "
        "With --fuzz TARGET, instead run a fuzz campaign of --time seconds on TARGET with DIR "
        "as its corpus, which adds the inputs it finds interesting.",
    )
    grow.set_defaults(run=_one_line_errors(_grow))
    grow.add_argument("folder", type=Path, metavar="DIR")
    grow.add_argument(
        "-n", "--count", type=positive_int, default=100, help="cases to generate (default 100)"
    )
    grow.add_argument("--seed", type=int_arg, default=0, help="random seed (default 0)")
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
        type=positive_float,
        default=60.0,
        metavar="SECONDS",
        help="with --fuzz: how long (default 60)",
    )
    grow.add_argument("-j", "--jobs", type=positive_int, default=1, help="with --fuzz: workers")
    grow.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="with --fuzz: keep the campaign's findings and stats here (default: reported, "
        "then discarded)",
    )


def _add_import(actions: Commands) -> None:
    imp = actions.add_parser(
        "import",
        help="turn raw PEM/DER files into cases",
        description="Make one case per file (a folder: every regular non-hidden file in "
        "it), with the file's bytes as the CA, certificate or key blob (--as), labelled "
        "'imported', and store the new ones in DIR. With --from-hypothesis, the files are "
        "failing cases that property tests kept, copied in as they are.",
    )
    imp.set_defaults(run=_one_line_errors(_import))
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


def _show(args: argparse.Namespace) -> int:
    from tlsleak.cases.describe import describe_case

    files = case_files(args.files)
    for i, path in enumerate(files):
        if i:
            print()
        print(f"== {path}")
        print(describe_case(load_case(path)))
    return EXIT_CLEAN


def _grow(args: argparse.Namespace) -> int:
    from hypothesis.errors import InvalidArgument

    from tlsleak.cases import strategies
    from tlsleak.corpus.tools import check_writable

    if args.fuzz is not None and args.defects:
        raise UsageError("--defect chooses generated cases; it does not go with --fuzz")
    check_writable(args.folder)
    if args.fuzz is not None:
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
    from tlsleak.cli.fuzz import campaign_exit, run_campaign
    from tlsleak.fuzz.campaign import CampaignOptions

    with tempfile.TemporaryDirectory(prefix="tlsleak-grow-") as scratch:
        out = args.out if args.out is not None else Path(scratch)
        options = CampaignOptions(
            args.fuzz, out, corpus=args.folder, jobs=args.jobs, seconds=args.time, seed=args.seed
        )
        # Progress on stderr, Ctrl-C and SIGTERM as clean stops, as `tlsleak fuzz`.
        status, signum = run_campaign(options, quiet=False)
    print(
        f"{args.folder}: {status.corpus_added} new inputs from {status.execs:,} executions "
        f"on {status.target} in {status.elapsed:.0f}s"
    )
    for record in status.findings:
        print(f"  {record.kind} ({record.count}x): {record.summary}")
    if status.findings and args.out is None:
        print("  (findings not kept: pass --out DIR, or run tlsleak fuzz)")
    return campaign_exit(status, signum, frozenset(FindingKind))


def _started_oracle(target: str | None) -> IsolatedOracle | None:
    return started(IsolatedOracle(target)) if target is not None else None


def _stats(args: argparse.Namespace) -> int:
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


def _import(args: argparse.Namespace) -> int:
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


def _merge(args: argparse.Namespace) -> int:
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
