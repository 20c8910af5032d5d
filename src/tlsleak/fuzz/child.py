"""One worker process of a fuzz campaign as the campaign sees it.

A :class:`Worker` is started as ``python -m tlsleak.fuzz.worker`` (a fresh
interpreter, with the heap shim preloaded through its environment) with the
command line of :func:`worker_argv`, and reports JSON events, one a line, on
a pipe of its own; what libFuzzer and the target print goes to its log.

The events stop when a worker dies (a crash is ``_exit``, no last word), but
libFuzzer prints its final stats to the log (``-print_final_stats=1``) on a
crash or a timeout too: :meth:`Worker.logged_executions` reads them, so the
executions of a life that ended between two events still count.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from tlsleak.fuzz.options import CampaignOptions
from tlsleak.fuzz.shared_corpus import WorkerFolders
from tlsleak.fuzz.stats import WorkerStatus

__all__ = ["DICTIONARY", "Worker", "worker_argv"]

#: PEM armor, DER headers and OIDs for libFuzzer's -dict (unless given one).
DICTIONARY: Final = Path(__file__).parent / "tls.dict"
#: How much of the end of a worker's log is read for its last words.
_LOG_TAIL: Final = 64 * 1024
_EXECUTED: Final = re.compile(rb"^stat::number_of_executed_units:\s*(\d+)\s*$", re.M)


class Worker:
    """One worker, over its lives: it is started again after a crash."""

    def __init__(self, index: int, home: Path, log: Path) -> None:
        self.index = index
        self.folders = WorkerFolders(home)
        self.log = log
        self.status = WorkerStatus(index)
        self.proc: subprocess.Popen[bytes] | None = None
        self.fd = -1
        self.buffer = b""
        self.execs_before = 0  # executions of earlier lives
        self.failed_starts = 0
        self.log_start = 0  # where this life's output starts in the log

    def spawn(
        self,
        argv_for: Callable[[int], list[str]],
        env: dict[str, str],
        keep_fds: tuple[int, ...] = (),
    ) -> None:
        """Start the worker process; ``argv_for(fd)`` is its command line, given its event pipe.

        ``keep_fds`` are inherited too (the output folder's lock: held while a
        worker lives, even one whose campaign was killed).
        """
        read, write = os.pipe()
        os.set_blocking(read, False)
        try:
            # Private: libFuzzer prints small crashing inputs (key material
            # among them) into the log.  Readable too: the worker reads back
            # what each input wrote, for pass-phrase prompts (check/prompts.py).
            fd = os.open(self.log, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
            os.fchmod(fd, 0o600)  # a log an older version left 0644
            with os.fdopen(fd, "ab") as log:
                self.log_start = log.tell()
                self.proc = subprocess.Popen(
                    argv_for(write),
                    env=env,
                    pass_fds=(write, *keep_fds),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    # Ctrl-C on the terminal goes to the campaign only: it
                    # decides how the workers stop.
                    start_new_session=True,
                    # What libFuzzer writes (inputs, crashers) holds keys: private.
                    umask=0o077,
                )
        except BaseException:
            os.close(read)
            raise
        finally:
            os.close(write)
        self.fd = read
        self.buffer = b""

    def read(self) -> list[dict[str, Any]] | None:
        """The events the worker sent since the last read; None at end of file (it is gone)."""
        try:
            chunk = os.read(self.fd, 1 << 20)
        except BlockingIOError:
            return []
        if not chunk:
            return None
        self.buffer += chunk
        *lines, self.buffer = self.buffer.split(b"\n")
        events: list[dict[str, Any]] = []
        for line in lines:
            try:
                events.append(json.loads(line))
            except ValueError:
                continue
        return events

    def _log_tail(self) -> bytes:
        """The end of what this life wrote to the log."""
        try:
            with self.log.open("rb") as log:
                size = log.seek(0, os.SEEK_END)
                log.seek(max(self.log_start, size - _LOG_TAIL))
                return log.read()
        except OSError:
            return b""

    def logged_executions(self) -> int | None:
        """The executions libFuzzer counted in this life (its final stats), if it printed them."""
        found = _EXECUTED.findall(self._log_tail())
        return int(found[-1]) if found else None

    def last_log_line(self) -> str:
        """The last line this life wrote to the log (why it could not start, usually)."""
        lines = [line.strip() for line in self._log_tail().splitlines() if line.strip()]
        return lines[-1].decode("utf-8", "replace")[:200] if lines else ""

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def signal(self, signum: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signum)


def worker_argv(o: CampaignOptions, worker: Worker, until: float | None, events: int) -> list[str]:
    """The command line of ``worker``'s next life, reporting on file descriptor ``events``."""
    # libFuzzer's -seed=0 means "pick one": derive a non-zero seed per
    # worker and per restart from --seed, so a campaign can be re-run.
    seed = 1 + (o.seed * 1_000_003 + worker.index * 7919 + worker.status.restarts) % (2**31 - 2)
    argv = [sys.executable, "-m", "tlsleak.fuzz.worker", o.target, "--events", str(events)]
    if until is not None:
        argv += ["--until", repr(until)]
    argv += ["--replays", str(o.replays), "--mutator", o.mutator]
    if o.plain:
        argv.append("--plain")
    if o.fail_alloc:
        argv.append("--fail-alloc")
    argv += [
        "--",
        str(worker.folders.inputs),
        f"-artifact_prefix={worker.folders.artifacts}/",
        "-handle_term=0",
        "-handle_int=0",
        f"-seed={seed}",
        f"-max_len={o.max_len}",
        f"-timeout={max(1, round(o.timeout))}",
        "-reload=1",
        "-print_final_stats=1",
    ]
    given = {flag.split("=", 1)[0] for flag in o.libfuzzer_flags}
    if "-dict" not in given:
        argv.append(f"-dict={DICTIONARY}")
    if "-len_control" not in given:
        # libFuzzer starts inputs at 4 bytes and lets them grow slowly; a
        # case needs a few dozen bytes before its blobs say anything.
        # Measured (bench_campaign.py): more error paths in the first minute.
        argv.append("-len_control=0")
    return argv + list(o.libfuzzer_flags)
