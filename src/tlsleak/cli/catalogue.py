"""``tlsleak targets``, ``defects`` and ``mutations``: what tlsleak knows, listed.

``defects --markdown`` and ``mutations --markdown`` print the tables that
docs/defects.md and docs/mutations.md end with (a test keeps them equal).
"""

from __future__ import annotations

import argparse

from tlsleak.cli._common import EXIT_CLEAN, Commands
from tlsleak.targets import TARGETS, resolve_target

__all__ = ["add_parsers", "run_defects", "run_mutations", "run_targets"]


def add_parsers(commands: Commands) -> None:
    """Add ``targets``, ``mutations`` and ``defects`` to the sub-commands ``commands``."""
    targets = commands.add_parser("targets", help="list the built-in targets and their ledgers")
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


def run_targets(_args: argparse.Namespace) -> int:
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
