"""``tlsleak targets``, ``defects`` and ``mutations``: what tlsleak knows, listed.

``defects --markdown`` and ``mutations --markdown`` print the tables that
docs/defects.md and docs/mutations.md end with (a test keeps them equal).
"""

from __future__ import annotations

import argparse

from tlsleak.cli._common import EXIT_CLEAN, Commands, UsageError
from tlsleak.targets import TARGETS

__all__ = ["add_parsers", "run_defects", "run_mutations", "run_targets"]


def add_parsers(commands: Commands) -> None:
    """Add ``targets``, ``mutations`` and ``defects`` to the sub-commands ``commands``."""
    targets = commands.add_parser(
        "targets", help="list the built-in targets and the ledgers that see them (probed)"
    )
    targets.set_defaults(run=run_targets)
    mutations = commands.add_parser(
        "mutations", help="list the structure-aware mutations (PEM, DER, whole case)"
    )
    mutations.set_defaults(run=run_mutations)
    mutations.add_argument(
        "--markdown", action="store_true", help="as the tables of docs/mutations.md"
    )
    defects = commands.add_parser("defects", help="list the defect catalogue")
    defects.set_defaults(run=run_defects)
    defects.add_argument(
        "--markdown", action="store_true", help="as the Markdown table of docs/defects.md"
    )


def _unmade(error: str) -> str:
    """What the targets table says of a target that could not be made."""
    # A missing optional stack says how to install it (TargetUnavailable).
    return error if error.startswith("not installed") else f"cannot be made: {error}"


def run_targets(_args: argparse.Namespace) -> int:
    """The built-in targets with the ledgers that see each, probed in one worker process."""
    from tlsleak.targets.probe import survey

    try:
        surveyed = survey(list(TARGETS))
    except RuntimeError as exc:
        raise UsageError(str(exc)) from None
    found = surveyed.targets
    rows = [
        (t.name, ", ".join(t.seen_by()) or "none", t.description or _unmade(t.error))
        for t in found
    ]
    width = max(len(r[0]) for r in rows)
    lwidth = max(len(r[1]) for r in rows)
    print(f"{'TARGET':<{width}}  {'LEDGERS':<{lwidth}}  DESCRIPTION")
    for name, ledgers, description in rows:
        print(f"{name:<{width}}  {ledgers:<{lwidth}}  {description}")
    blind: dict[str, list[str]] = {}
    inactive: dict[str, str] = {}
    for t in found:
        for s in t.sights:
            if s.sees is False:
                blind.setdefault(s.ledger, []).append(t.name)
            elif s.sees is None and s.why:
                inactive[s.ledger] = s.why
    print("\nLEDGERS are the ledgers that counted one object each target allocated through")
    print("its own stack, tried in a worker with the heap shims preloaded (fds and pyobjects")
    print("count the whole process).")
    for ledger, names in blind.items():
        print(f"Blind: {ledger} cannot see {', '.join(names)}.")
    for ledger, why in inactive.items():
        print(f"Inactive: {ledger}: {why}")
    if surveyed.network is not None and (warning := surveyed.network.warning()):
        print(warning)  # the probes could reach the network (tlsleak._netns)
    print("\nYour own init path: package.module:function taking a tlsleak.InitCase,")
    print("or c:PATH[:SYMBOL] for a C library exporting tls_init_once (docs/c-abi.md).")
    print("check refuses a ledger that cannot see its target, tried the same way.")
    return EXIT_CLEAN


def run_defects(args: argparse.Namespace) -> int:
    from tlsleak.cases.defects import DEFECTS, Defect

    def steps(d: Defect) -> str:
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


def run_mutations(args: argparse.Namespace) -> int:
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
