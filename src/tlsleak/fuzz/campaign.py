"""Fuzz campaigns: worker processes, a shared corpus, deduplicated and minimised findings.

A :class:`Campaign` runs ``jobs`` workers (:mod:`tlsleak.fuzz.worker`, each a
fresh interpreter with the heap shim preloaded) on one target and looks
after what they find.  Its output folder::

    out/
      corpus/        the working corpus, when --corpus is not given: a copy
                     of the bundled seeds, grown by the campaign
      findings/      one folder per distinct finding (tlsleak.check.findings)
      stats.jsonl    one JSON object every few seconds, and a last one
      workers/wN.log what libFuzzer and the target printed, per worker
      .work/         the workers' private folders (removed at the end)
      .lock          held while a campaign writes here

**The corpus.**  libFuzzer writes new inputs non-atomically into the first
folder it is given, so no worker is given the shared corpus to write: each
gets a private folder seeded with a copy of it.  The campaign moves what a
worker adds into the shared corpus, content-addressed and atomically (see
:func:`tlsleak.cases.files.write_input`), after checking that a file's content
hashes to its name (libFuzzer names inputs by SHA-1, so a half-written file
never passes), and hands it to the other workers the same way (libFuzzer's
``-reload`` picks it up).  A campaign killed at any moment leaves the shared
corpus and the findings with whole files only; the private folders are
scratch, removed by the next campaign on the same output folder.

**Findings.**  A worker reports a signature the first time it sees it and
counts repeats.  The campaign keeps one record per signature: a new one is
minimised (with a budget) by a checker of its own in the background, an
isolated oracle (:class:`tlsleak.check.worker.IsolatedOracle`), and stored; repeats
are added to its count every few seconds.  A worker that dies (a crash, a
hang past ``--timeout``, out of memory) leaves the input in its artifact
folder: the campaign checks it in isolation (where a crash or a hang is a
finding), stores that, and starts the worker again.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import queue
import re
import selectors
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Final

from tlsleak._fs import TMP_GLOBS
from tlsleak.cases.case import decode
from tlsleak.cases.files import (
    MAX_CASE_BYTES,
    CorpusError,
    bundled_corpus,
    content_name,
    is_case_file,
    read_limited,
    write_input,
)
from tlsleak.check.findings import FindingError, FindingStore
from tlsleak.check.minimize import DEFAULT_BUDGET
from tlsleak.check.oracle import DEFAULT_REPLAYS, Finding, FindingKind
from tlsleak.check.worker import IsolatedOracle, WorkerError, child_env
from tlsleak.fuzz.guidance import is_alloc_bucket, is_error_pair
from tlsleak.targets import Outcome, Status

__all__ = [
    "RESERVED_FLAGS",
    "Campaign",
    "CampaignError",
    "CampaignOptions",
    "CampaignStatus",
    "FindingRecord",
    "WorkerStatus",
    "check_libfuzzer_flags",
]

#: libFuzzer flags the campaign sets itself, with the option to use instead.
RESERVED_FLAGS: Final = {
    "artifact_prefix": "findings go to --out",
    "exact_artifact_path": "findings go to --out",
    "handle_term": "the campaign stops its workers itself",
    "handle_int": "the campaign stops its workers itself",
    "seed": "use --seed",
    "jobs": "use --jobs",
    "workers": "use --jobs",
    "fork": "use --jobs",
    "merge": "use tlsleak corpus merge",
    "timeout": "use --timeout",
    "max_total_time": "use --time",
    "reload": "the campaign shares the corpus between workers itself",
}
_FLAG: Final = re.compile(r"-([a-z_]+)=(.*)", re.S)

#: Seconds between corpus syncs, count flushes and stats lines.
SYNC_EVERY: Final = 1.0
STATS_EVERY: Final = 5.0
#: A worker that dies this many times in a row before it is ready is given up.
MAX_FAILED_STARTS: Final = 3
#: Seconds a worker gets to stop after SIGTERM before it is killed.
STOP_GRACE: Final = 5.0
_SHA1_NAME: Final = re.compile(r"[0-9a-f]{40}")
#: PEM armor, DER headers and OIDs for libFuzzer's -dict (unless given one).
DICTIONARY: Final = Path(__file__).parent / "tls.dict"
_ARTIFACTS: Final = {"crash": FindingKind.CRASH, "timeout": FindingKind.TIMEOUT, "oom": None}


class CampaignError(Exception):
    """The campaign can't start (bad option, folder or target): one line for the user."""


def check_libfuzzer_flags(flags: Sequence[str]) -> list[str]:
    """``flags`` checked: each ``-name=value``, none that the campaign sets itself."""
    for flag in flags:
        match = _FLAG.fullmatch(flag)
        if match is None:
            raise CampaignError(f"libFuzzer flag {flag!r}: expected -name=value")
        if match.group(1) in RESERVED_FLAGS:
            why = RESERVED_FLAGS[match.group(1)]
            raise CampaignError(f"libFuzzer flag -{match.group(1)} is set by tlsleak: {why}")
    return list(flags)


@dataclass(frozen=True)
class CampaignOptions:
    """What to fuzz, where, for how long."""

    target: str
    out: Path
    #: The corpus to use and grow; None: ``out/corpus``, seeded from the bundled one.
    corpus: Path | None = None
    jobs: int = 1
    #: Seconds to run; None: until :meth:`Campaign.stop`.
    seconds: float | None = None
    seed: int = 0
    #: Feed libFuzzer Python coverage only (no error-path guidance).
    plain: bool = False
    #: ``structure`` (the structure-aware custom mutator, :mod:`tlsleak.cases.mutator`)
    #: or ``bytes`` (libFuzzer's own byte mutations).
    mutator: str = "structure"
    replays: int = DEFAULT_REPLAYS
    #: Seconds one input may take (with its replays) before it is a timeout.
    timeout: float = 10.0
    minimize_budget: int = DEFAULT_BUDGET
    max_len: int = 64 * 1024
    libfuzzer_flags: tuple[str, ...] = ()


@dataclass
class WorkerStatus:
    index: int
    state: str = "starting"  # starting, running, restarting, finished, failed
    execs: int = 0
    restarts: int = 0
    message: str = ""


@dataclass
class FindingRecord:
    """One distinct finding of the campaign."""

    signature: str
    kind: str
    step: str
    summary: str
    count: int = 1
    folder: Path | None = None
    minimized: bool = False
    #: Sightings per failing step (a leak's signature spans steps).
    steps: dict[str, int] = field(default_factory=dict)

    def step_list(self) -> str:
        """The steps it was seen at, most frequent first."""
        return ",".join(sorted(self.steps, key=lambda s: -self.steps[s])) or self.step


@dataclass
class CampaignStatus:
    """A snapshot for progress displays and the stats file."""

    target: str
    elapsed: float
    execs: int
    exec_rate: float
    corpus: int
    corpus_added: int
    features: int
    error_pairs: int
    alloc_buckets: int
    findings: list[FindingRecord]
    workers: list[WorkerStatus]
    stopping: bool = False
    messages: list[str] = field(default_factory=list)

    def findings_by_kind(self) -> Counter[str]:
        return Counter(f.kind for f in self.findings)

    def to_json(self) -> dict[str, Any]:
        return {
            "time": datetime.now(UTC).isoformat(timespec="seconds"),
            "elapsed": round(self.elapsed, 3),
            "target": self.target,
            "execs": self.execs,
            "exec_per_s": round(self.exec_rate, 1),
            "corpus": self.corpus,
            "corpus_added": self.corpus_added,
            "features": self.features,
            "error_pairs": self.error_pairs,
            "alloc_buckets": self.alloc_buckets,
            "findings": dict(self.findings_by_kind()),
            "finding_hits": sum(f.count for f in self.findings),
            "workers": [
                {"index": w.index, "state": w.state, "execs": w.execs, "restarts": w.restarts}
                for w in self.workers
            ],
        }


# --- the findings desk ---------------------------------------------------------------


class _Desk:
    """Deduplicates findings, minimises new ones in a thread of its own, stores them."""

    def __init__(self, store: FindingStore, checker: IsolatedOracle, budget: int) -> None:
        self.store = store
        self.checker = checker
        self.budget = budget
        self.records: dict[str, FindingRecord] = {}
        self._pending: Counter[str] = Counter()
        self._findings: dict[str, Finding] = {}
        self._lock = threading.Lock()
        self._jobs: queue.Queue[tuple[str, Any] | None] = queue.Queue()
        self._hurry = threading.Event()
        self.errors: list[str] = []
        self._thread = threading.Thread(target=self._work, name="tlsleak-findings", daemon=True)
        self._thread.start()

    # Called from the campaign's loop.

    def offer(self, finding: Finding) -> None:
        with self._lock:
            step = str(finding.step or "-")
            record = self.records.get(finding.signature)
            if record is not None:
                record.count += 1
                record.steps[step] = record.steps.get(step, 0) + 1
                self._pending[finding.signature] += 1
                return
            self.records[finding.signature] = FindingRecord(
                finding.signature, str(finding.kind), step, finding.summary(), steps={step: 1}
            )
            self._findings[finding.signature] = finding
        self._jobs.put(("finding", finding))

    def repeats(self, signature: str, times: int, step: str = "-") -> None:
        with self._lock:
            record = self.records.get(signature)
            if record is not None:
                record.count += times
                record.steps[step] = record.steps.get(step, 0) + times
                self._pending[signature] += times

    def artifact(self, kind: FindingKind | None, data: bytes, how: str) -> None:
        self._jobs.put(("artifact", (kind, data, how)))

    def flush_counts(self) -> None:
        """Write the repeats counted since the last flush into the stored findings."""
        with self._lock:
            ready = {
                s: n for s, n in self._pending.items() if n and self.records[s].folder is not None
            }
            for signature in ready:
                del self._pending[signature]
        for signature, times in ready.items():
            try:
                self.store.add_repeats(self._findings[signature], times)
            except FindingError as exc:
                self._error(str(exc))

    def finish(self, *, hurry: bool) -> None:
        """Handle what is queued (without minimising when ``hurry``), then stop."""
        if hurry:
            self._hurry.set()
        self._jobs.put(None)
        while self._thread.is_alive():
            self._thread.join(0.2)
        self.flush_counts()

    def _error(self, message: str) -> None:
        with self._lock:
            if message not in self.errors:
                self.errors.append(message)

    # The thread.

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            what, payload = job
            try:
                if what == "finding":
                    self._store(payload)
                else:
                    self._check_artifact(*payload)
            except FindingError as exc:
                self._error(str(exc))
            except WorkerError as exc:
                self._error(f"checker: {exc}")
            except Exception as exc:  # a long campaign must outlive one bad finding
                self._error(f"could not store a finding: {type(exc).__name__}: {exc}")

    def _store(self, finding: Finding) -> None:
        reproducer, reproduced = finding.case, None
        # A timeout costs the whole timeout per try: not worth shrinking.
        if self.budget > 0 and not self._hurry.is_set() and finding.kind is not FindingKind.TIMEOUT:
            from tlsleak.check.minimize import minimize, signature_predicate

            predicate = signature_predicate(self.checker, finding.signature)
            reproducer = minimize(
                finding.case, predicate, budget=self.budget, stop=self._hurry.is_set
            )
            reproduced = predicate.finding_for(reproducer)
        folder, _new = self.store.add(finding, reproducer, reproducer_finding=reproduced)
        with self._lock:
            record = self.records[finding.signature]
            record.folder = folder
            record.minimized = reproducer is not finding.case

    def _check_artifact(self, kind: FindingKind | None, data: bytes, how: str) -> None:
        case = decode(data)
        verdict = self.checker.check(case)
        found = [f for f in verdict.findings if f.kind in (FindingKind.CRASH, FindingKind.TIMEOUT)]
        if not found:
            # Not reproduced in isolation (flaky, or it needed the worker's
            # history): still a finding, with what the worker's death said.
            outcome = Outcome(Status.ERROR, None, (), f"worker {how}; not reproduced in isolation")
            found = [Finding(kind or FindingKind.CRASH, self.checker.target_name, case, outcome)]
        for finding in found:
            self.offer(finding)


# --- workers -------------------------------------------------------------------------


class _Worker:
    def __init__(self, index: int, home: Path, log: Path) -> None:
        self.index = index
        self.home = home
        self.inputs = home / "corpus"
        self.incoming = home / "incoming"
        self.artifacts = home / "artifacts"
        self.log = log
        self.status = WorkerStatus(index)
        self.proc: subprocess.Popen[bytes] | None = None
        self.fd = -1
        self.buffer = b""
        self.execs_before = 0  # executions of earlier lives
        self.failed_starts = 0

    def spawn(self, argv_for: Callable[[int], list[str]], env: dict[str, str]) -> None:
        """Start the worker process; ``argv_for(fd)`` is its command line, given its event pipe."""
        read, write = os.pipe()
        os.set_blocking(read, False)
        try:
            with self.log.open("ab") as log:
                self.proc = subprocess.Popen(
                    argv_for(write),
                    env=env,
                    pass_fds=(write,),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    # Ctrl-C on the terminal goes to the campaign only: it
                    # decides how the workers stop.
                    start_new_session=True,
                )
        except BaseException:
            os.close(read)
            raise
        finally:
            os.close(write)
        self.fd = read
        self.buffer = b""

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def signal(self, signum: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signum)


# --- the campaign --------------------------------------------------------------------


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
        self._features: set[str] = set()
        self._known: set[str] = set()
        # Inputs that killed a worker: not given to workers again, or a
        # crasher in the corpus would kill every restart while loading it.
        self._quarantine: set[str] = set()
        self._corpus_start = 0
        self._warned: set[str] = set()
        self._lock_file: IO[bytes] | None = None
        self.target_name = options.target
        self.workers: list[_Worker] = []
        self._rates: list[tuple[float, int]] = []

    # -- control ----------------------------------------------------------------------

    def stop(self, *, hurry: bool = False) -> None:
        """Ask the campaign to stop (safe from a signal handler); ``hurry``: don't minimise."""
        self._stop.set()
        if hurry:
            self._hurry.set()

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

    def _prepare_corpus(self) -> None:
        corpus = self.corpus
        if self.options.corpus is None and not corpus.exists():
            # The default working copy: the bundled seeds, never the bundled
            # folder itself (it may be inside site-packages, or under review).
            self._seed_working_copy(corpus)
        if not corpus.is_dir():
            raise CampaignError(
                f"--corpus {corpus}: no such folder (create it empty to start from nothing)"
            )
        try:
            names = [p.name for p in corpus.iterdir() if not p.name.startswith(".")]
            probe = corpus / f".probe-{os.getpid()}"
            probe.touch()
            probe.unlink()
        except OSError as exc:
            raise CampaignError(f"--corpus {corpus}: cannot use it: {exc.strerror}") from None
        self._known = set(names)
        self._corpus_start = len(names)
        # Temporary files of writers killed mid-write (write_input's); a live
        # writer holds one for microseconds, so a minute old is abandoned.
        cutoff = time.time() - 60
        for leftover in (p for pattern in TMP_GLOBS for p in corpus.glob(pattern)):
            with contextlib.suppress(OSError):
                if leftover.stat().st_mtime < cutoff:
                    leftover.unlink()

    def _seed_working_copy(self, corpus: Path) -> None:
        source = bundled_corpus()
        try:
            corpus.mkdir(parents=True)
            for path in sorted(source.iterdir()):
                if path.is_file() and _SHA1_NAME.fullmatch(path.name):
                    write_input(corpus, path.read_bytes())
        except (OSError, CorpusError) as exc:
            raise CampaignError(f"cannot make the working corpus {corpus}: {exc}") from None

    def _seed_worker(self, worker: _Worker) -> None:
        """Fill a worker's private folder with a copy of the shared corpus."""
        shutil.rmtree(worker.home, ignore_errors=True)
        for folder in (worker.inputs, worker.incoming, worker.artifacts):
            folder.mkdir(parents=True)
        for path in self._corpus_files():
            try:
                data = read_limited(path)
            except CorpusError as exc:
                self._warn(f"corpus: skipping {exc}")
                continue
            name = content_name(data)
            if name not in self._quarantine:
                (worker.inputs / name).write_bytes(data)

    def _corpus_files(self) -> Iterator[Path]:
        try:
            entries = sorted(self.corpus.iterdir())
        except OSError as exc:
            self._warn(f"corpus: cannot list {self.corpus}: {exc.strerror}")
            return
        for path in entries:
            if is_case_file(path):
                with contextlib.suppress(OSError):
                    if path.is_file():
                        yield path

    def _worker_argv(self, worker: _Worker, until: float | None, events: int) -> list[str]:
        o = self.options
        # libFuzzer's -seed=0 means "pick one": derive a non-zero seed per
        # worker and per restart from --seed, so a campaign can be re-run.
        seed = 1 + (o.seed * 1_000_003 + worker.index * 7919 + worker.status.restarts) % (2**31 - 2)
        argv = [sys.executable, "-m", "tlsleak.fuzz.worker", o.target, "--events", str(events)]
        if until is not None:
            argv += ["--until", repr(until)]
        argv += ["--replays", str(o.replays), "--mutator", o.mutator]
        if o.plain:
            argv.append("--plain")
        argv += [
            "--",
            str(worker.inputs),
            f"-artifact_prefix={worker.artifacts}/",
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

    # -- running ----------------------------------------------------------------------

    def run(self) -> CampaignStatus:
        """Run until the time is up or :meth:`stop`; the final status."""
        self._prepare_out()
        try:
            self._prepare_corpus()
            checker = self._start_checker()
        except BaseException:
            self._release()
            raise
        store = FindingStore(self.out / "findings")
        desk = _Desk(store, checker, self.options.minimize_budget)
        started = time.monotonic()
        until = None if self.options.seconds is None else time.time() + self.options.seconds
        deadline = None if self.options.seconds is None else started + self.options.seconds
        env = child_env()
        self.workers = [
            _Worker(i, self.out / ".work" / f"w{i}", self.out / "workers" / f"w{i}.log")
            for i in range(self.options.jobs)
        ]
        selector = selectors.DefaultSelector()
        stats_file = self.out / "stats.jsonl"
        try:
            for worker in self.workers:
                self._start(worker, selector, env, until)
            next_sync = next_stats = next_status = time.monotonic()
            while not self._stop.is_set():
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    break
                if all(w.status.state in ("finished", "failed") for w in self.workers):
                    break
                for key, _mask in selector.select(timeout=0.2):
                    worker = key.data
                    if not self._read(worker, desk):
                        selector.unregister(worker.fd)
                        self._ended(worker, desk)
                        if not self._stop.is_set() and worker.status.state == "restarting":
                            self._start(worker, selector, env, until)
                now = time.monotonic()
                if now >= next_sync:
                    self._sync()
                    desk.flush_counts()
                    next_sync = now + SYNC_EVERY
                if now >= next_stats:
                    self._append_stats(stats_file, self._status(started, desk))
                    next_stats = now + STATS_EVERY
                if now >= next_status:
                    self._on_status(self._status(started, desk))
                    next_status = now + self._status_every
                self._relay(desk)
        finally:
            stopping = self._status(started, desk)
            stopping.stopping = True
            self._on_status(stopping)
            self._stop_workers(selector, desk)
            selector.close()
            self._sync()
            desk.finish(hurry=self._hurry.is_set())
            checker.close()
            final = self._status(started, desk)
            self._append_stats(stats_file, final)
            self._relay(desk)
            shutil.rmtree(self.out / ".work", ignore_errors=True)
            self._release()
        return final

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

    def _start(
        self,
        worker: _Worker,
        selector: selectors.BaseSelector,
        env: dict[str, str],
        until: float | None,
    ) -> None:
        self._seed_worker(worker)
        worker.status.state = "starting"
        worker.spawn(lambda fd: self._worker_argv(worker, until, fd), env)
        selector.register(worker.fd, selectors.EVENT_READ, worker)

    def _read(self, worker: _Worker, desk: _Desk) -> bool:
        """Handle what the worker sent; False at end of file (the worker is gone)."""
        try:
            chunk = os.read(worker.fd, 1 << 20)
        except BlockingIOError:
            return True
        if not chunk:
            return False
        worker.buffer += chunk
        *lines, worker.buffer = worker.buffer.split(b"\n")
        for line in lines:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            self._event(worker, event, desk)
        return True

    def _event(self, worker: _Worker, event: dict[str, Any], desk: _Desk) -> None:
        kind = event.get("ev")
        if kind == "stats":
            worker.status.execs = worker.execs_before + int(event["execs"])
            self._features.update(event["new"])
            for key, times in event["repeats"].items():
                step, _tab, signature = key.partition("\t")
                desk.repeats(signature, int(times), step)
        elif kind == "finding":
            desk.offer(Finding.from_json(event["finding"]))
        elif kind == "ready":
            worker.status.state = "running"
            worker.failed_starts = 0
        elif kind == "error":
            worker.status.state = "failed"
            worker.status.message = str(event["message"])

    def _ended(self, worker: _Worker, desk: _Desk) -> None:
        """The worker's pipe closed: collect its exit and its artifacts; restart or not."""
        worker.close()
        assert worker.proc is not None
        try:
            code = worker.proc.wait(timeout=STOP_GRACE)
        except subprocess.TimeoutExpired:
            worker.proc.kill()
            code = worker.proc.wait()
        worker.execs_before = worker.status.execs
        self._sync()  # its last new inputs, before its folder is reset
        found = self._collect_artifacts(worker, desk)
        if worker.status.state == "failed" or self._stop.is_set():
            return
        if code == 0 and not found:
            worker.status.state = "finished"  # -runs=N or the time is up
            return
        if worker.status.state == "starting":
            worker.failed_starts += 1
        how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"
        if worker.failed_starts >= MAX_FAILED_STARTS:
            worker.status.state = "failed"
            worker.status.message = f"died {MAX_FAILED_STARTS} times while starting ({how})"
            message = worker.status.message
            self._warn(f"worker {worker.index}: given up: {message}; see {worker.log}")
            return
        worker.status.restarts += 1
        worker.status.state = "restarting"
        worker.status.message = how

    def _collect_artifacts(self, worker: _Worker, desk: _Desk) -> bool:
        found = False
        with contextlib.suppress(OSError):
            for path in sorted(worker.artifacts.iterdir()):
                prefix = path.name.split("-", 1)[0]
                if prefix not in _ARTIFACTS:
                    continue  # slow-unit-*: libFuzzer's note, not a failure
                try:
                    data = path.read_bytes()[:MAX_CASE_BYTES]
                except OSError:
                    continue
                found = True
                self._quarantine.add(content_name(data))
                how = {"crash": "crashed", "timeout": "timed out", "oom": "ran out of memory"}
                desk.artifact(_ARTIFACTS[prefix], data, how[prefix])
                path.unlink()
        return found

    def _stop_workers(self, selector: selectors.BaseSelector, desk: _Desk) -> None:
        alive = [w for w in self.workers if w.proc is not None and w.proc.poll() is None]
        for worker in alive:
            worker.signal(signal.SIGTERM)
        # Read their last stats while they leave; kill the ones stuck in C.
        end = time.monotonic() + STOP_GRACE
        while time.monotonic() < end and any(w.fd >= 0 for w in self.workers):
            for key, _mask in selector.select(timeout=0.1):
                worker = key.data
                if not self._read(worker, desk):
                    selector.unregister(worker.fd)
                    worker.close()
        for worker in self.workers:
            if worker.fd >= 0:
                with contextlib.suppress(KeyError, ValueError):
                    selector.unregister(worker.fd)
                worker.close()
            if worker.proc is not None and worker.proc.poll() is None:
                worker.proc.kill()
            if worker.proc is not None:
                worker.proc.wait()
            if worker.status.state not in ("failed", "finished"):
                worker.status.state = "stopped"

    # -- the corpus -------------------------------------------------------------------

    def _sync(self) -> None:
        """Move the workers' new inputs into the corpus, and on to the other workers."""
        for worker in self.workers:
            try:
                names = [n for n in os.listdir(worker.inputs) if n not in self._known]
            except OSError:
                continue
            for name in names:
                data = _complete_input(worker.inputs / name)
                if data is None:
                    continue  # being written, or not one of libFuzzer's: next time
                try:
                    write_input(self.corpus, data)
                except CorpusError as exc:
                    self._warn(f"corpus: {exc}")
                    continue
                self._known.add(name)
                for other in self.workers:
                    if other is not worker:
                        _hand_over(other, name, data)

    def _relay(self, desk: _Desk) -> None:
        for message in list(desk.errors):
            self._warn(message)

    def _warn(self, message: str) -> None:
        if message not in self._warned:
            self._warned.add(message)
            self._on_message(message)

    # -- status -----------------------------------------------------------------------

    def _status(self, started: float, desk: _Desk) -> CampaignStatus:
        now = time.monotonic()
        execs = sum(w.status.execs for w in self.workers)
        self._rates.append((now, execs))
        # The rate over the last ten seconds or so: what the workers do now.
        while len(self._rates) > 2 and now - self._rates[1][0] >= 10:
            self._rates.pop(0)
        t0, e0 = self._rates[0]
        rate = (execs - e0) / (now - t0) if now > t0 else 0.0
        with desk._lock:
            records = [replace(r, steps=dict(r.steps)) for r in desk.records.values()]
        return CampaignStatus(
            target=self.target_name,
            elapsed=now - started,
            execs=execs,
            exec_rate=rate,
            corpus=len(self._known),
            corpus_added=len(self._known) - self._corpus_start,
            features=len(self._features),
            error_pairs=sum(map(is_error_pair, self._features)),
            alloc_buckets=sum(map(is_alloc_bucket, self._features)),
            findings=records,
            workers=[replace(w.status) for w in self.workers],
            stopping=self._stop.is_set(),
        )

    def _append_stats(self, path: Path, status: CampaignStatus) -> None:
        line = (json.dumps(status.to_json(), separators=(",", ":")) + "\n").encode()
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                # One write() of a whole line: a reader (or a kill) never sees half.
                os.write(fd, line)
            finally:
                os.close(fd)
        except OSError as exc:  # (EINTR is retried by os.write itself, PEP 475)
            self._warn(f"{path}: cannot write stats: {exc.strerror}")

    @property
    def features(self) -> frozenset[str]:
        return frozenset(self._features)


def _complete_input(path: Path) -> bytes | None:
    """The content of one of libFuzzer's inputs, if it is whole (its SHA-1 is its name)."""
    if not _SHA1_NAME.fullmatch(path.name):
        return None
    try:
        with path.open("rb") as f:
            data = f.read(MAX_CASE_BYTES + 1)
    except OSError:
        return None
    if len(data) > MAX_CASE_BYTES or content_name(data) != path.name:
        return None
    return data


def _hand_over(worker: _Worker, name: str, data: bytes) -> None:
    """Give ``data`` to a worker: written aside, then renamed into its folder in one step."""
    tmp = worker.incoming / name
    with contextlib.suppress(OSError):
        tmp.write_bytes(data)
        os.replace(tmp, worker.inputs / name)
