"""``tlsleak fuzz``: a fuzz campaign on a target (see docs/fuzzing.md).

The campaign itself is :class:`tlsleak.fuzz.campaign.Campaign`; this module
turns options into :class:`~tlsleak.fuzz.campaign.CampaignOptions`, shows its
progress on stderr and its summary on stdout, and turns Ctrl-C and SIGTERM
into a clean stop.  libFuzzer's own flags follow ``--`` (see ``main``).
:func:`run_campaign` and :func:`campaign_exit` serve ``corpus grow --fuzz`` too.

Exit status: 128 + the signal after Ctrl-C or SIGTERM; otherwise 1 when a
finding of a ``--fail-on`` kind was found (one a fresh worker gave alone:
unconfirmed ones never count); otherwise 2 when the campaign did
no work (no input executed, or every worker given up), with one line saying
why; otherwise 0.  ``--sarif`` and ``--summary-md`` are written after any stop,
from the campaign's distinct findings and their stored folders.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from tlsleak.check.oracle import FindingKind
from tlsleak.cli._common import (
    EXIT_FINDINGS,
    EXIT_USAGE,
    Commands,
    UsageError,
    add_ci_reports,
    add_fail_on,
    add_minimize_budget,
    add_replays,
    add_timeout,
    check_ci_reports,
    non_negative_int,
    positive_float,
    positive_int,
    stderr_message,
    verdict_exit,
    write_ci_reports,
)
from tlsleak.fuzz import MAX_JOBS

if TYPE_CHECKING:
    # The campaign modules and rich are imported only when a campaign runs,
    # so the other commands start without them.
    from tlsleak.fuzz.campaign import CampaignOptions, CampaignStatus

__all__ = ["add_parser", "campaign_exit", "run", "run_campaign"]


def add_parser(commands: Commands) -> None:
    """Add ``fuzz`` to the sub-commands ``commands``."""
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
    fuzz.set_defaults(run=run)
    fuzz.add_argument(
        "target",
        metavar="TARGET",
        help="a name from 'tlsleak targets', package.module:function, or c:LIBRARY[:SYMBOL]",
    )
    fuzz.add_argument(
        "--time",
        type=positive_float,
        metavar="SECONDS",
        help="stop after SECONDS (default: run until Ctrl-C or SIGTERM)",
    )
    fuzz.add_argument(
        "-j",
        "--jobs",
        type=positive_int,
        default=1,
        help=f"worker processes, one core each (default 1, at most {MAX_JOBS})",
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
    fuzz.add_argument("--seed", type=non_negative_int, default=0, help="random seed (default 0)")
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
    add_replays(fuzz, what="again")
    add_timeout(fuzz, "seconds an input may take before it", default=10.0)
    add_fail_on(fuzz)
    add_minimize_budget(
        fuzz,
        default=200,
        help_text="oracle checks spent shrinking each new finding (default 200; 0: don't)",
    )
    fuzz.add_argument(
        "--max-len",
        type=positive_int,
        default=64 * 1024,
        metavar="BYTES",
        help="largest input libFuzzer makes (default 65536)",
    )
    fuzz.add_argument(
        "--fail-alloc",
        action="store_true",
        help="make allocations fail too: each input may name one allocation of its run to "
        "fail (after a warm-up run of the same input), and the mutators set, move and clear "
        "it; a finding stores the point so that 'tlsleak replay' fails the same allocation",
    )
    add_ci_reports(fuzz)
    fuzz.add_argument("-q", "--quiet", action="store_true", help="no progress, summary only")


def run(args: argparse.Namespace) -> int:
    _require_atheris()
    check_ci_reports(args)
    from rich.console import Console

    from tlsleak.fuzz.progress import summary_table, summary_title, unconfirmed_lines

    status, signum = run_campaign(_options(args), quiet=args.quiet)
    print(summary_title(status))
    Console(file=sys.stdout, highlight=False, width=_summary_width()).print(summary_table(status))
    if lines := unconfirmed_lines(status):
        print(lines)
    if status.network is not None and (line := status.network.warning()):
        print(line)  # the workers could reach the network (tlsleak._netns)
    if status.findings:
        print(
            f"\n{len(status.findings)} distinct findings in {args.out / 'findings'}; "
            "replay one with: tlsleak replay FOLDER"
        )
    exit_status = campaign_exit(status, signum, args.fail_on)
    _write_ci_reports(args, status, exit_status)
    return exit_status


def _write_ci_reports(args: argparse.Namespace, status: CampaignStatus, exit_status: int) -> None:
    """``--sarif`` and ``--summary-md``: what the campaign ran and found (reports.ci)."""
    if args.sarif is None and args.summary_md is None:
        return
    from tlsleak.reports.ci import RunInfo, from_campaign

    notes = []
    if status.network is not None and (line := status.network.warning()):
        notes.append(line)
    for record in status.unconfirmed:  # not results: a fresh worker did not give them alone
        notes.append(
            f"not counted: {record.kind} {record.signature} (seen {record.count} times): "
            "a fresh worker did not give it alone"
        )
    run = RunInfo(
        command="fuzz",
        target=status.target,
        ran=f"{status.execs} inputs in {status.elapsed:.0f} s with {len(status.workers)} "
        f"worker{'s' if len(status.workers) != 1 else ''}; corpus {status.corpus} cases",
        outcomes={
            "inputs": status.execs,
            "corpus cases added": status.corpus_added,
            "worker restarts": status.restarts,
            "finding sightings": sum(f.count for f in status.findings),
        },
        exit_status=exit_status,
        problem=status.no_work,
        notes=tuple(notes),
    )
    write_ci_reports(args, run, from_campaign(status.findings, status.target))


def _require_atheris() -> None:
    """One line, not a worker's ImportError, when the fuzzing extra is missing.

    atheris is an extra (``tlsleak[fuzz]``): it has no wheels for macOS or
    Linux on ARM, and nothing but campaigns needs it.
    """
    import importlib.util

    if importlib.util.find_spec("atheris") is None:
        raise UsageError(
            "tlsleak fuzz needs atheris, which is not installed: pip install 'tlsleak[fuzz]' "
            "(check, replay and the property tests work without it)"
        )


def run_campaign(options: CampaignOptions, *, quiet: bool) -> tuple[CampaignStatus, int | None]:
    """Run a campaign, its progress on stderr; its final status and the signal that stopped it.

    Ctrl-C and SIGTERM stop it cleanly (a second one also skips minimising
    what is still queued), so that its scratch, which holds keys, is removed.
    """
    import signal

    from tlsleak.fuzz.campaign import Campaign, CampaignError
    from tlsleak.fuzz.progress import LiveDisplay, PlainDisplay

    live = not quiet and sys.stderr.isatty()
    display: LiveDisplay | PlainDisplay | None = None
    if not quiet:
        display = LiveDisplay(sys.stderr) if live else PlainDisplay(sys.stderr)
    try:
        try:
            campaign = Campaign(
                options,
                on_status=display.update if display is not None else None,
                on_message=display.message if display is not None else stderr_message,
                status_every=0.5 if live else 5.0,
            )
        except CampaignError as exc:
            raise UsageError(str(exc)) from None
        received: list[int] = []

        def on_signal(signum: int, _frame: object) -> None:
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
    finally:
        if display is not None:
            display.close()
    return status, received[0] if received else None


def campaign_exit(
    status: CampaignStatus, signum: int | None, fail_on: frozenset[FindingKind]
) -> int:
    """The exit status of a campaign (see the module docstring); says why if it did no work."""
    if signum is not None:
        return 128 + signum
    verdict = verdict_exit((f.kind for f in status.findings), fail_on)
    if status.no_work is None:
        return verdict
    if verdict == EXIT_FINDINGS:  # what was found stands; the shortfall is said anyway
        print(f"tlsleak: warning: no work done: {status.no_work}", file=sys.stderr)
        return verdict
    print(f"tlsleak: error: no work done: {status.no_work}", file=sys.stderr)
    return EXIT_USAGE


def _options(args: argparse.Namespace) -> CampaignOptions:
    from tlsleak.fuzz.campaign import CampaignOptions

    return CampaignOptions(
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
        fail_alloc=args.fail_alloc,
    )


def _summary_width() -> int | None:
    # A log file gets the whole table, not one folded to 80 columns.
    return None if sys.stdout.isatty() else 200
