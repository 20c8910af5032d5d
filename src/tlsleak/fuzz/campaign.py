"""Fuzz campaigns: worker processes, a shared corpus, deduplicated and minimised findings.

A :class:`Campaign` runs ``jobs`` workers (:mod:`tlsleak.fuzz.worker`, each a
fresh interpreter with the heap shim preloaded) on one target and looks
after what they find.  It holds the output folder and runs the loop; the
rest is done by its parts: :mod:`~tlsleak.fuzz.workers` supervises the
workers, :mod:`~tlsleak.fuzz.shared_corpus` shares their corpus,
:mod:`~tlsleak.fuzz.desk` minimises and stores their findings and
:mod:`~tlsleak.fuzz.stats` keeps the figures.  Its output folder::

    out/
      corpus/        the working corpus, when --corpus is not given: a copy
                     of the bundled seeds, grown by the campaign
      findings/      one folder per distinct finding (tlsleak.check.findings)
      stats.jsonl    one JSON object every few seconds, and a last one
      workers/wN.log what libFuzzer and the target printed, per worker
      .work/         the workers' private folders (removed at the end)
      .lock          held while a campaign writes here

A campaign killed at any moment leaves the shared corpus and the findings
with whole files only.
"""

from __future__ import annotations

import fcntl
import shutil
import threading
import time
from collections.abc import Callable
from typing import IO, Final

from tlsleak.check.findings import FindingStore
from tlsleak.check.worker import IsolatedOracle, WorkerError
from tlsleak.fuzz.child import DICTIONARY, Worker
from tlsleak.fuzz.desk import Desk
from tlsleak.fuzz.options import (
    RESERVED_FLAGS,
    CampaignError,
    CampaignOptions,
    check_libfuzzer_flags,
)
from tlsleak.fuzz.shared_corpus import SharedCorpus
from tlsleak.fuzz.stats import STATS_EVERY, CampaignStatus, FindingRecord, Stats, WorkerStatus
from tlsleak.fuzz.workers import WorkerPool

# Everything but Campaign is re-exported from where it lives now, for the
# modules that import it from here.
__all__ = [
    "DICTIONARY",
    "RESERVED_FLAGS",
    "Campaign",
    "CampaignError",
    "CampaignOptions",
    "CampaignStatus",
    "FindingRecord",
    "WorkerStatus",
    "check_libfuzzer_flags",
]

#: Seconds between corpus syncs and count flushes.
SYNC_EVERY: Final = 1.0


class Campaign:
    """One fuzz campaign; :meth:`run` it, call :meth:`stop` from a signal handler."""

    def __init__(
        self,
        options: CampaignOptions,
        *,
        on_status: Callable[[CampaignStatus], None] | None = None,
        on_message: Callable[[str], None] | None = None,
        status_every: float = STATS_EVERY,
    ) -> None:
        if options.jobs < 1:
            raise CampaignError(f"--jobs must be at least 1, not {options.jobs}")
        if options.seconds is not None and options.seconds <= 0:
            raise CampaignError(f"--time must be positive, not {options.seconds:g}")
        if options.mutator not in ("structure", "bytes"):
            raise CampaignError(f"--mutator must be structure or bytes, not {options.mutator!r}")
        check_libfuzzer_flags(options.libfuzzer_flags)
        self.options = options
        self.out = options.out
        self.corpus = options.corpus if options.corpus is not None else options.out / "corpus"
        self._on_status = on_status or (lambda _status: None)
        self._on_message = on_message or (lambda _text: None)
        self._status_every = status_every
        self._stop = threading.Event()
        self._hurry = threading.Event()
        self._shared = SharedCorpus(self.corpus, self._warn)
        self._stats = Stats(self.out / "stats.jsonl", self._warn)
        self._warned: set[str] = set()
        self._lock_file: IO[bytes] | None = None
        self.target_name = options.target
        self.workers: list[Worker] = []

    def stop(self, *, hurry: bool = False) -> None:
        """Ask the campaign to stop (safe from a signal handler); ``hurry``: don't minimise."""
        self._stop.set()
        if hurry:
            self._hurry.set()

    @property
    def features(self) -> frozenset[str]:
        return frozenset(self._stats.features)

    # -- set-up -----------------------------------------------------------------------

    def _prepare_out(self) -> None:
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            self._lock_file = (self.out / ".lock").open("wb")
        except OSError as exc:
            raise CampaignError(f"--out {self.out}: cannot write there: {exc.strerror}") from None
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise CampaignError(
                f"--out {self.out}: another campaign is running with this folder"
            ) from None
        # Scratch of an earlier campaign that was killed: ours now that we hold the lock.
        shutil.rmtree(self.out / ".work", ignore_errors=True)
        try:
            (self.out / "workers").mkdir(exist_ok=True)
            (self.out / ".work").mkdir()
        except OSError as exc:
            raise CampaignError(f"--out {self.out}: cannot write there: {exc.strerror}") from None

    def _start_checker(self) -> IsolatedOracle:
        """The isolated oracle that minimises findings; starting it also validates the target."""
        try:
            (self.out / "findings").mkdir(exist_ok=True)
        except OSError as exc:
            raise CampaignError(f"--out {self.out}: cannot write there: {exc.strerror}") from None
        checker = IsolatedOracle(
            self.options.target, replays=self.options.replays, timeout=self.options.timeout
        )
        try:
            checker.start()
        except WorkerError as exc:
            raise CampaignError(str(exc)) from None
        self.target_name = checker.target_name
        return checker

    def _release(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()  # closing the file releases the lock
            self._lock_file = None

    # -- running ----------------------------------------------------------------------

    def run(self) -> CampaignStatus:
        """Run until the time is up or :meth:`stop`; the final status."""
        self._prepare_out()
        try:
            self._shared.prepare(working_copy=self.options.corpus is None)
            checker = self._start_checker()
        except BaseException:
            self._release()
            raise
        desk = Desk(FindingStore(self.out / "findings"), checker, self.options.minimize_budget)
        started = time.monotonic()
        seconds = self.options.seconds
        until = None if seconds is None else time.time() + seconds
        deadline = None if seconds is None else started + seconds
        pool = WorkerPool(
            self.options,
            corpus=self._shared,
            desk=desk,
            stats=self._stats,
            until=until,
            stop=self._stop,
            warn=self._warn,
        )
        self.workers = pool.workers
        try:
            pool.start()
            self._loop(pool, desk, started, deadline)
        finally:
            final = self._finish(pool, desk, checker, started)
        return final

    def _loop(self, pool: WorkerPool, desk: Desk, started: float, deadline: float | None) -> None:
        """Until the time is up, :meth:`stop` or no worker is left: read, share, count."""
        next_sync = next_stats = next_status = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                break
            if pool.done():
                break
            pool.poll(timeout=0.2)
            now = time.monotonic()
            if now >= next_sync:
                pool.sync()
                desk.flush_counts()
                next_sync = now + SYNC_EVERY
            if now >= next_stats:
                self._stats.append(self._status(pool, desk, started))
                next_stats = now + STATS_EVERY
            if now >= next_status:
                self._on_status(self._status(pool, desk, started))
                next_status = now + self._status_every
            self._relay(desk)

    def _finish(
        self, pool: WorkerPool, desk: Desk, checker: IsolatedOracle, started: float
    ) -> CampaignStatus:
        """Stop the workers, store what is still to store, clean up; the final status."""
        stopping = self._status(pool, desk, started)
        stopping.stopping = True
        self._on_status(stopping)
        pool.stop()
        pool.sync()
        desk.finish(hurry=self._hurry.is_set())
        checker.close()
        final = self._status(pool, desk, started)
        self._stats.append(final)
        self._relay(desk)
        shutil.rmtree(self.out / ".work", ignore_errors=True)
        self._release()
        return final

    def _status(self, pool: WorkerPool, desk: Desk, started: float) -> CampaignStatus:
        return self._stats.status(
            target=self.target_name,
            started=started,
            workers=pool.statuses(),
            findings=desk.snapshot(),
            corpus=len(self._shared.known),
            corpus_added=self._shared.added,
            stopping=self._stop.is_set(),
        )

    def _relay(self, desk: Desk) -> None:
        for message in list(desk.errors):
            self._warn(message)

    def _warn(self, message: str) -> None:
        if message not in self._warned:
            self._warned.add(message)
            self._on_message(message)
