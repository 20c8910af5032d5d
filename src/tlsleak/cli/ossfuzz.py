"""``tlsleak oss-fuzz``: an OSS-Fuzz / ClusterFuzzLite kit that fuzzes a target with tlsleak.

The work is :func:`tlsleak.reports.oss_fuzz.write_kit`; this module adds the
sub-command and turns its errors (an unknown target, a folder that is not
new or empty) into one line and exit status 2.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tlsleak.cli._common import EXIT_CLEAN, Commands, UsageError
from tlsleak.reports.oss_fuzz import KitError, write_kit

__all__ = ["add_parser", "run"]


def add_parser(commands: Commands) -> None:
    """Add ``oss-fuzz`` to the sub-commands ``commands``."""
    parser = commands.add_parser(
        "oss-fuzz",
        help="write a ClusterFuzzLite / OSS-Fuzz kit that fuzzes TARGET with tlsleak's oracle",
        description="Write into DIR what ClusterFuzzLite (and OSS-Fuzz) need to fuzz TARGET with "
        "tlsleak's leak oracle: .clusterfuzzlite/ (project.yaml, Dockerfile, build.sh, the "
        "fuzzer script, its seed corpus zip and dictionary) and .github/workflows/ (pull-request "
        "and daily batch fuzzing). Copy DIR's contents into your repository (docs/oss-fuzz.md).",
    )
    parser.set_defaults(run=run)
    parser.add_argument(
        "target",
        metavar="TARGET",
        help="a built-in target (see 'tlsleak targets') or package.module:function",
    )
    parser.add_argument(
        "--into",
        type=Path,
        required=True,
        metavar="DIR",
        help="the folder to create (missing or empty)",
    )
    parser.add_argument(
        "--project",
        metavar="NAME",
        help="the project's folder in the image, $SRC/NAME (default: the current folder's name)",
    )


def run(args: argparse.Namespace) -> int:
    try:
        kit = write_kit(args.target, args.into, project=args.project)
    except KitError as exc:
        raise UsageError(str(exc)) from None
    print(f"{args.into}: .clusterfuzzlite/ ({kit.fuzzer}) and .github/workflows/")
    print(f"copy them into your repository (cp -r {args.into}/. REPO/); see docs/oss-fuzz.md")
    return EXIT_CLEAN
