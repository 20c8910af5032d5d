"""What every command module of the ``tlsleak`` command shares.

Bad usage and bad input are a :class:`UsageError`: :func:`tlsleak.cli.main`
reports it as one line on stderr and exits with :data:`EXIT_USAGE`, never with
a traceback.  The argument types below turn bad option values into the same.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from typing import NoReturn, TextIO, TypeAlias

from tlsleak.check.oracle import DEFAULT_REPLAYS, FindingKind
from tlsleak.check.worker import DEFAULT_TIMEOUT, IsolatedOracle, WorkerError

__all__ = [
    "EXIT_BROKEN_PIPE",
    "EXIT_CLEAN",
    "EXIT_FINDINGS",
    "EXIT_INTERRUPTED",
    "EXIT_USAGE",
    "Commands",
    "Parser",
    "UsageError",
    "add_fail_on",
    "add_minimize_budget",
    "add_replays",
    "add_timeout",
    "int_arg",
    "non_negative_int",
    "positive_float",
    "positive_int",
    "progress",
    "started",
    "stderr_message",
    "verdict_exit",
]

EXIT_CLEAN, EXIT_FINDINGS, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a killed writer


class UsageError(Exception):
    """Bad usage or bad input: reported as one line, exit status 2."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # argparse prints the whole usage block; one line says it better.
        raise UsageError(f"{message} (see '{self.prog} --help')")


#: What ``add_subparsers`` returns: each command module adds its commands to it.
Commands: TypeAlias = "argparse._SubParsersAction[Parser]"


def positive_int(text: str) -> int:
    value = int_arg(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, not {text}")
    return value


def non_negative_int(text: str) -> int:
    value = int_arg(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {value}")
    return value


def int_arg(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


# The options several commands take: one spelling of each, so that the
# commands agree on type, default and metavar; the help text says what the
# option means for the command at hand.


def add_replays(
    parser: argparse.ArgumentParser, *, what: str = "again before it is a leak"
) -> None:
    parser.add_argument(
        "--replays",
        type=positive_int,
        default=DEFAULT_REPLAYS,
        help=f"replays that must show growth {what} (default {DEFAULT_REPLAYS})",
    )


def add_timeout(
    parser: argparse.ArgumentParser, when: str, *, default: float = DEFAULT_TIMEOUT
) -> None:
    parser.add_argument(
        "--timeout",
        type=positive_float,
        default=default,
        metavar="SECONDS",
        help=f"{when} is a timeout finding (default {default:g})",
    )


def add_minimize_budget(parser: argparse.ArgumentParser, *, default: int, help_text: str) -> None:
    parser.add_argument(
        "--minimize-budget", type=non_negative_int, default=default, metavar="N", help=help_text
    )


def started(oracle: IsolatedOracle) -> IsolatedOracle:
    """``oracle``, started; a target that cannot start is bad usage."""
    try:
        return oracle.start()
    except WorkerError as exc:
        raise UsageError(str(exc)) from None


def progress(out: TextIO, text: str) -> None:
    out.write(f"\r\033[K{text}")
    out.flush()


def stderr_message(text: str) -> None:
    print(f"tlsleak: {text}", file=sys.stderr)


def _kinds(text: str) -> frozenset[FindingKind]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    known = {str(k) for k in FindingKind}
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"{', '.join(unknown) or repr(text)} is not a finding kind "
            f"(kinds: {', '.join(str(k) for k in FindingKind)})"
        )
    return frozenset(FindingKind(n) for n in names)


def add_fail_on(parser: argparse.ArgumentParser) -> None:
    """``--fail-on KINDS``: which finding kinds make the exit status 1."""
    parser.add_argument(
        "--fail-on",
        type=_kinds,
        default=frozenset(FindingKind),
        metavar="KINDS",
        help="comma-separated finding kinds that make the exit status 1; the others are "
        f"still reported (default: every kind: {','.join(str(k) for k in FindingKind)})",
    )


def verdict_exit(kinds: Iterable[str], fail_on: frozenset[FindingKind]) -> int:
    """:data:`EXIT_FINDINGS` if any of ``kinds`` (of what was found) is gated on, else clean."""
    return EXIT_FINDINGS if any(FindingKind(k) in fail_on for k in kinds) else EXIT_CLEAN
