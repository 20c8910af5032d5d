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
      .work/         the workers' private folders: 0700, files 0600 (they
                     hold keys), removed at the end, also after Ctrl-C or
                     SIGTERM; after a kill, by the next campaign here
      .lock          flock()ed while a campaign or any of its workers
                     lives; holds the campaign's pid

With ``--fail-alloc`` (:attr:`CampaignOptions.fail_alloc`) the workers run
each input's fail point after a warm-up, the mutators change it, and the
desk stores each finding of a failing run with the point a fresh process
reproduces it at (see docs/fuzzing.md, "Allocation failures"); a target
whose ledgers can make no allocation fail is refused before any worker
starts.

A finding counts only once a fresh checker gives it alone, as ``replay``
would (:mod:`~tlsleak.fuzz.desk`); one that none does is *unconfirmed*:
no folder, and apart in the status (:attr:`CampaignStatus.unconfirmed`).

A campaign killed at any moment leaves the shared corpus and the findings
with whole files only.  ``--time`` counts from :meth:`Campaign.run`, start-up
included.  The final status says when the campaign did no work
(:attr:`CampaignStatus.no_work`): it executed nothing, or lost every worker.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Final

from tlsleak.check.findings import FindingStore
from tlsleak.check.worker import IsolatedOracle, WorkerError
from tlsleak.fuzz.child import DICTIONARY, Worker
from tlsleak.fuzz.desk import Desk
from tlsleak.fuzz.options import (
    MAX_JOBS,
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
    "MAX_JOBS",
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
#: Seconds beyond ``--timeout`` to wait for the workers of a killed campaign
#: to leave the output folder (they notice within half a second, or at the
#: end of the input they are stuck on).
ORPHAN_GRACE: Final = 5.0


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's: alive
        return True
    return True


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
        if not 1 <= options.jobs <= MAX_JOBS:
            raise CampaignError(f"--jobs must be from 1 to {MAX_JOBS}, not {options.jobs}")
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
        self._next_status = 0.0
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

    @property
    def work(self) -> Path:
        """The workers' private folders (see the module's docstring)."""
        return self.out / ".work"

    # -- set-up -----------------------------------------------------------------------

    def _prepare_out(self) -> None:
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            # Not truncated when opened: the pid of a running owner stays readable.
            fd = os.open(self.out / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
            self._lock_file = os.fdopen(fd, "r+b")
        except OSError as exc:
            raise CampaignError(f"--out {self.out}: cannot write there: {exc.strerror}") from None
        self._lock()
        # Scratch of an earlier campaign that was killed: ours now that we hold
        # the lock (its workers held it too, so they are gone).
        self._clean_up(release=False)
        try:
            (self.out / "workers").mkdir(exist_ok=True)
            self.work.mkdir(mode=0o700)
            self.work.chmod(0o700)  # whatever the umask
        except OSError as exc:
            self._release()
            raise CampaignError(f"--out {self.out}: cannot write there: {exc.strerror}") from None

    def _lock(self) -> None:
        """Take the output folder, waiting a little for the workers of a killed campaign."""
        lock = self._lock_file
        assert lock is not None
        end = time.monotonic() + self.options.timeout + ORPHAN_GRACE
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:
                pass
            lock.seek(0)
            owner = lock.read(32).strip()
            pid = int(owner) if owner.isdigit() else None
            if pid is None or _alive(pid) or time.monotonic() >= end:
                self._release()
                if pid is None or _alive(pid):
                    who = "another campaign" + (f" (pid {pid})" if pid else "")
                    raise CampaignError(f"--out {self.out}: {who} is running with this folder")
                raise CampaignError(
                    f"--out {self.out}: the workers of a killed campaign (pid {pid}) "
                    "still use this folder; try again when they have exited"
                )
            time.sleep(0.2)
        lock.seek(0)
        lock.truncate()
        lock.write(f"{os.getpid()}\n".encode())
        lock.flush()

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
        if self.options.fail_alloc and not checker.can_fail_allocations:
            checker.close()
            raise CampaignError(
                f"--fail-alloc: no ledger of target {checker.target_name} can make allocations "
                "fail (that takes the heap interposer or the OpenSSL heap shim preloaded)"
            )
        return checker

    def _fresh_checker(self) -> IsolatedOracle:
        """A new checker process, as ``replay`` starts one (not yet started).

        The desk confirms findings alone in one (a finding counts only if a
        process that has run nothing else gives it), and failures afresh.
        """
        o = self.options
        return IsolatedOracle(o.target, replays=o.replays, timeout=o.timeout)

    def _warn_about_cores(self) -> None:
        cores = usable_cores()
        if self.options.jobs > cores:
            self._warn(
                f"--jobs {self.options.jobs} is more than the {cores} cores available: "
                "the workers will share them, each slower"
            )

    def _clean_up(self, *, release: bool = True) -> None:
        """Remove the workers' scratch (it holds private keys); release the folder."""
        shutil.rmtree(self.work, ignore_errors=True)
        if self.work.exists():
            self._warn(f"could not remove {self.work}: it holds private keys, remove it yourself")
        if release:
            self._release()

    def _release(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()  # closing the file releases the lock
            self._lock_file = None

    # -- running ----------------------------------------------------------------------

    def run(self) -> CampaignStatus:
        """Run until the time is up, :meth:`stop` or no worker is left; the final status."""
        started = time.monotonic()  # --time counts from here: start-up is part of it
        seconds = self.options.seconds
        deadline = None if seconds is None else started + seconds
        self._prepare_out()
        try:
            self._shared.prepare(working_copy=self.options.corpus is None)
            checker = self._start_checker()
        except BaseException:
            self._clean_up()
            raise
        # Bad input is one line: the status shows once the target is known to be good.
        self._warn_about_cores()
        self._show(lambda: self._starting_status(started))
        desk = Desk(
            FindingStore(self.out / "findings"),
            checker,
            self.options.minimize_budget,
            fresh=self._fresh_checker,
            fail_alloc=self.options.fail_alloc,
        )
        assert self._lock_file is not None
        pool = WorkerPool(
            self.options,
            corpus=self._shared,
            desk=desk,
            stats=self._stats,
            until=None if deadline is None else time.time() + (deadline - time.monotonic()),
            stop=self._stop,
            warn=self._warn,
            keep_fds=(self._lock_file.fileno(),),
        )
        self.workers = pool.workers
        try:
            for worker in pool.workers:
                if self._stop.is_set() or (deadline is not None and time.monotonic() >= deadline):
                    break
                pool.start(worker)
                self._show(lambda: self._status(pool, desk, started))
            self._loop(pool, desk, started, deadline)
        finally:
            final = self._finish(pool, desk, checker, started)
        return final

    def _loop(self, pool: WorkerPool, desk: Desk, started: float, deadline: float | None) -> None:
        """Until the time is up, :meth:`stop` or no worker is left: read, share, count."""
        next_sync = next_stats = time.monotonic()
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
            self._show(lambda: self._status(pool, desk, started))
            self._relay(desk)

    def _finish(
        self, pool: WorkerPool, desk: Desk, checker: IsolatedOracle, started: float
    ) -> CampaignStatus:
        """Stop the workers, store what is still to store, clean up; the final status."""
        try:
            self._show(lambda: self._stopping(pool, desk, started), now=True)
            pool.stop()
            pool.sync()
            # Minimising what is still queued can take a while: show it.
            desk.finish(
                hurry=self._hurry.is_set(),
                waiting=lambda: self._show(lambda: self._stopping(pool, desk, started)),
            )
            checker.close()
            final = self._status(pool, desk, started)
            final.no_work = self._no_work(final, pool)
            self._stats.append(final)
            self._relay(desk)
        finally:
            self._clean_up()
        return final

    def _no_work(self, final: CampaignStatus, pool: WorkerPool) -> str | None:
        """Why the campaign did not do what it was asked (see :attr:`CampaignStatus.no_work`)."""
        workers = pool.workers
        if all(w.status.state == "failed" for w in workers):
            first = workers[0]
            return f"every worker was given up; w{first.index}: {first.status.message}"
        if final.execs:
            return None
        if self._stop.is_set():
            return "stopped before any input was executed"
        seconds = self.options.seconds
        if seconds is not None and final.elapsed >= seconds:
            return (
                f"no input was executed within --time {seconds:g}s (it counts from the start, "
                "start-up included)"
            )
        said = next((w.last_log_line() for w in workers if w.proc is not None), "")
        return f"the workers ended without executing any input: {said or 'no output'}"

    def _starting_status(self, started: float) -> CampaignStatus:
        """The status shown while the checker and the workers start: nothing yet."""
        return self._stats.status(
            target=self.target_name,
            started=started,
            workers=[WorkerStatus(i) for i in range(self.options.jobs)],
            findings=[],
            corpus=len(self._shared.known),
            corpus_added=0,
            stopping=self._stop.is_set(),
        )

    def _show(self, status: Callable[[], CampaignStatus], *, now: bool = False) -> None:
        """Give the display ``status()`` if one is due (every ``status_every`` seconds)."""
        if now or time.monotonic() >= self._next_status:
            self._on_status(status())
            self._next_status = time.monotonic() + self._status_every

    def _stopping(self, pool: WorkerPool, desk: Desk, started: float) -> CampaignStatus:
        stopping = self._status(pool, desk, started)
        stopping.stopping = True
        return stopping

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
