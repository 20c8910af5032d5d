"""What every command module of the ``tlsleak`` command shares.

Bad usage and bad input are a :class:`UsageError`: :func:`tlsleak.cli.main`
reports it as one line on stderr and exits with :data:`EXIT_USAGE`, never with
a traceback.  The argument types below turn bad option values into the same.

Report files (``--json``, ``--sarif``, ``--summary-md``) are checked before
any case runs (:func:`check_output_path`) and again when written
(:func:`write_output`, :func:`append_output`): a file the report can't reach
is one line and exit 2, and a report is never half-written.
"""

from __future__ import annotations

import argparse
import os
import stat
import sys
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, TextIO, TypeAlias

from tlsleak._fs import write_atomically
from tlsleak.check.oracle import DEFAULT_REPLAYS, FindingKind
from tlsleak.check.worker import DEFAULT_TIMEOUT, IsolatedOracle, WorkerError

if TYPE_CHECKING:
    from tlsleak.reports.ci import Distinct, RunInfo

__all__ = [
    "EXIT_BROKEN_PIPE",
    "EXIT_CLEAN",
    "EXIT_FINDINGS",
    "EXIT_INTERRUPTED",
    "EXIT_USAGE",
    "Commands",
    "Parser",
    "UsageError",
    "add_ci_reports",
    "add_fail_on",
    "add_minimize_budget",
    "add_replays",
    "add_timeout",
    "append_output",
    "check_ci_reports",
    "check_output_path",
    "int_arg",
    "is_stream",
    "non_negative_int",
    "positive_float",
    "positive_int",
    "progress",
    "started",
    "stderr_message",
    "verdict_exit",
    "write_ci_reports",
    "write_output",
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


# --- report files ------------------------------------------------------------------------


def is_stream(path: Path) -> bool:
    """A destination written in place: a device, a FIFO, a socket, or a name under /dev.

    ``--json /dev/stdout`` (or a pipe, ``>(jq .)``) must reach the stream, and
    renaming a file over a device would replace the device itself (as root).
    """
    if str(path).startswith(("/dev/", "/proc/self/fd/")):
        return True
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    return stat.S_ISCHR(mode) or stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


def check_output_path(option: str, path: Path, *, append: bool = False) -> None:
    """Refuse a report destination that can't be written, before any case runs.

    A regular file is written to a temporary file in the same folder and
    renamed over ``path``, so the folder must take a new file, and ``path``
    must be a regular file or nothing (a file of ``/proc`` can't be replaced).
    With ``append`` (``--summary-md``), an existing file is appended to, so it
    must be writable itself.  A stream (:func:`is_stream`) is written in place,
    so it must be writable.  ``option`` names the option in the message.
    """
    if is_stream(path):
        if not os.access(path, os.W_OK):
            raise UsageError(f"{option} {path}: cannot write to it")
        return
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise UsageError(f"{option} {path}: folder {folder} does not exist")
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        mode = None
    except OSError as exc:
        raise UsageError(f"{option} {path}: cannot use it: {exc.strerror}") from None
    if mode is not None and stat.S_ISDIR(mode):
        raise UsageError(f"{option} {path}: is a folder; give the report's file name")
    if mode is not None and not stat.S_ISREG(mode):
        raise UsageError(f"{option} {path}: not a regular file; give a file the report can replace")
    if append and mode is not None:
        if not os.access(path, os.W_OK):
            raise UsageError(f"{option} {path}: cannot write to it")
        return
    try:
        fd, probe = tempfile.mkstemp(prefix=".probe-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise UsageError(f"{option} {path}: cannot write in {folder}: {exc.strerror}") from None


def write_output(option: str, path: Path, data: bytes) -> None:
    """Write a report whole: atomically to a file, appended to a stream."""
    # Checked again: the folder may have gone, or the file changed, while the cases ran.
    check_output_path(option, path)
    try:
        if is_stream(path):
            # Appending: /dev/stdout may be a file the text report went to.
            with path.open("ab") as stream:
                stream.write(data)
        else:
            write_atomically(path, data)
    except OSError as exc:
        raise UsageError(f"{option} {path}: cannot write the report: {exc.strerror}") from None


def append_output(option: str, path: Path, data: bytes) -> None:
    """Append a report to ``path`` (created if missing) in one write: the file others add to.

    One ``write`` with ``O_APPEND``: what other steps appended stays, and a
    reader never sees this report cut between two writers.
    """
    check_output_path(option, path, append=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            view = memoryview(data)
            while view:  # a short write (a pipe, a full disk's last block) goes on
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
    except OSError as exc:
        raise UsageError(f"{option} {path}: cannot write the report: {exc.strerror}") from None


def add_ci_reports(parser: argparse.ArgumentParser) -> None:
    """``--sarif FILE`` and ``--summary-md FILE``: the reports CI reads."""
    parser.add_argument(
        "--sarif",
        type=Path,
        metavar="FILE",
        help="also write a SARIF 2.1.0 log for code scanning to FILE: one result per "
        "distinct finding",
    )
    parser.add_argument(
        "--summary-md",
        type=Path,
        metavar="FILE",
        help="also append a short Markdown summary to FILE (e.g. $GITHUB_STEP_SUMMARY, "
        "which collects every step's: appended to, never replaced)",
    )


def check_ci_reports(args: argparse.Namespace) -> None:
    """Refuse ``--sarif`` or ``--summary-md`` destinations before any case runs."""
    if args.sarif is not None:
        check_output_path("--sarif", args.sarif)
    if args.summary_md is not None:
        check_output_path("--summary-md", args.summary_md, append=True)


def write_ci_reports(args: argparse.Namespace, run: RunInfo, findings: Sequence[Distinct]) -> None:
    """Write the ``--sarif`` log and append the ``--summary-md`` summary, where asked."""
    from tlsleak.reports.json_report import encode
    from tlsleak.reports.sarif import sarif_log
    from tlsleak.reports.summary import summary_markdown

    if args.sarif is not None:
        write_output("--sarif", args.sarif, encode(sarif_log(run, findings)))
    if args.summary_md is not None:
        append_output("--summary-md", args.summary_md, summary_markdown(run, findings).encode())
