"""Supervision of a fuzz campaign's workers: started, listened to, restarted, stopped.

Each worker (:class:`tlsleak.fuzz.child.Worker`) starts from a copy of the
shared corpus (:mod:`tlsleak.fuzz.shared_corpus`); its events go to the findings
desk (:mod:`tlsleak.fuzz.desk`) and the stats.  A worker that dies (a crash,
a hang past ``--timeout``, out of memory) leaves the input in its artifact
folder: the desk checks it in isolation (where a crash or a hang is a
finding) and stores that, and the worker is started again, unless it keeps
dying before its first input.  The executions of every life count, the ones
libFuzzer printed when it died included; the restarts are counted too.
"""

from __future__ import annotations

import contextlib
import selectors
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any, Final

from tlsleak._netns import Network
from tlsleak.cases.files import MAX_CASE_BYTES, content_name
from tlsleak.check.oracle import Finding, FindingKind
from tlsleak.check.worker import child_env
from tlsleak.fuzz.child import Worker, worker_argv
from tlsleak.fuzz.desk import Desk
from tlsleak.fuzz.options import CampaignOptions
from tlsleak.fuzz.shared_corpus import SharedCorpus
from tlsleak.fuzz.stats import Stats, WorkerStatus

__all__ = ["MAX_FAILED_STARTS", "STOP_GRACE", "WorkerPool"]

#: A worker that dies this many times in a row before it is ready is given up.
MAX_FAILED_STARTS: Final = 3
#: Seconds a worker gets to stop after SIGTERM before it is killed.
STOP_GRACE: Final = 5.0
_ARTIFACTS: Final = {"crash": FindingKind.CRASH, "timeout": FindingKind.TIMEOUT, "oom": None}


class WorkerPool:
    """The ``jobs`` workers of one campaign run, and where what they report goes."""

    def __init__(
        self,
        options: CampaignOptions,
        *,
        corpus: SharedCorpus,
        desk: Desk,
        stats: Stats,
        until: float | None,
        stop: threading.Event,
        warn: Callable[[str], None],
        keep_fds: tuple[int, ...] = (),
    ) -> None:
        self.options = options
        self._keep_fds = keep_fds
        self._corpus = corpus
        self._desk = desk
        self._stats = stats
        self._until = until
        self._stop = stop
        self._warn = warn
        self._env = child_env()
        out = options.out
        self.workers = [
            Worker(i, out / ".work" / f"w{i}", out / "workers" / f"w{i}.log")
            for i in range(options.jobs)
        ]
        self._selector = selectors.DefaultSelector()

    def start(self, worker: Worker) -> None:
        """Start ``worker`` (one of :attr:`workers`) for the first time."""
        self._start(worker)

    def done(self) -> bool:
        """Whether every worker has finished or been given up."""
        return all(w.status.state in ("finished", "failed") for w in self.workers)

    def poll(self, timeout: float) -> None:
        """Handle what the workers send within ``timeout``; start again the ones that died."""
        for key, _mask in self._selector.select(timeout=timeout):
            worker = key.data
            if not self._read(worker):
                self._selector.unregister(worker.fd)
                self._ended(worker)
                if not self._stop.is_set() and worker.status.state == "restarting":
                    self._start(worker)

    def sync(self) -> None:
        """Move the workers' new inputs into the corpus, and on to the other workers."""
        self._corpus.sync([w.folders for w in self.workers])

    def statuses(self) -> list[WorkerStatus]:
        return [replace(w.status) for w in self.workers]

    def _start(self, worker: Worker) -> None:
        worker.status.state = "starting"
        try:
            self._corpus.seed(worker.folders)
            worker.spawn(
                lambda fd: worker_argv(self.options, worker, self._until, fd),
                self._env,
                self._keep_fds,
            )
        except OSError as exc:  # a full disk, a folder gone: this worker can't run
            what = exc.strerror or str(exc)
            what = f"{exc.filename}: {what}" if exc.filename else what
            self._give_up(worker, f"cannot be started: {what}", see_log=False)
            return
        self._selector.register(worker.fd, selectors.EVENT_READ, worker)

    def _give_up(self, worker: Worker, why: str, *, see_log: bool = True) -> None:
        worker.status.state = "failed"
        worker.status.message = why
        self._warn(f"worker {worker.index}: given up: {why}" + (f"; see {worker.log}" * see_log))

    def _read(self, worker: Worker) -> bool:
        """Handle what the worker sent; False at end of file (the worker is gone)."""
        events = worker.read()
        for event in events or ():
            self._handle(worker, event)
        return events is not None

    def _handle(self, worker: Worker, event: dict[str, Any]) -> None:
        kind = event.get("ev")
        if kind == "stats":
            worker.status.execs = worker.execs_before + int(event["execs"])
            self._stats.features.update(event["new"])
            for key, times in event["repeats"].items():
                step, _tab, signature = key.partition("\t")
                self._desk.repeats(signature, int(times), step)
        elif kind == "finding":
            self._desk.offer(Finding.from_json(event["finding"]))
        elif kind == "ready":
            worker.status.state = "running"
            worker.status.network = Network.from_json(event.get("network"))
            if worker.status.network and (line := worker.status.network.warning()):
                self._warn(line)  # once, however many workers say it
        elif kind == "error":
            worker.status.state = "failed"
            worker.status.message = str(event["message"])

    def _ended(self, worker: Worker) -> None:
        """The worker's pipe closed: collect its exit and its artifacts; restart or not."""
        worker.close()
        assert worker.proc is not None
        try:
            code = worker.proc.wait(timeout=STOP_GRACE)
        except subprocess.TimeoutExpired:
            worker.proc.kill()
            code = worker.proc.wait()
        # The events stop at a crash; libFuzzer's final stats in the log don't.
        life = max(worker.status.execs - worker.execs_before, worker.logged_executions() or 0)
        worker.status.execs = worker.execs_before = worker.execs_before + life
        worker.failed_starts = 0 if life else worker.failed_starts + 1
        self.sync()  # its last new inputs, before its folder is reset
        found = self._collect_artifacts(worker)
        if worker.status.state == "failed" or self._stop.is_set():
            return
        if code == 0 and not found:
            worker.status.state = "finished"  # -runs=N or the time is up
            return
        how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"
        if worker.failed_starts >= MAX_FAILED_STARTS:
            said = worker.last_log_line()
            why = f"died {MAX_FAILED_STARTS} times before its first input ({how})"
            self._give_up(worker, f"{why}: {said}" if said else why)
            return
        worker.status.restarts += 1
        worker.status.state = "restarting"
        worker.status.message = how

    def _collect_artifacts(self, worker: Worker) -> bool:
        found = False
        with contextlib.suppress(OSError):
            for path in sorted(worker.folders.artifacts.iterdir()):
                prefix = path.name.split("-", 1)[0]
                if prefix not in _ARTIFACTS:
                    continue  # slow-unit-*: libFuzzer's note, not a failure
                try:
                    data = path.read_bytes()[:MAX_CASE_BYTES]
                except OSError:
                    continue
                found = True
                self._corpus.quarantine.add(content_name(data))
                how = {"crash": "crashed", "timeout": "timed out", "oom": "ran out of memory"}
                self._desk.artifact(_ARTIFACTS[prefix], data, how[prefix])
                path.unlink()
        return found

    def stop(self) -> None:
        """Stop the workers: SIGTERM, their last events read, a kill for the ones stuck in C."""
        alive = [w for w in self.workers if w.proc is not None and w.proc.poll() is None]
        for worker in alive:
            worker.signal(signal.SIGTERM)
        # Read their last stats while they leave; kill the ones stuck in C.
        end = time.monotonic() + STOP_GRACE
        while time.monotonic() < end and any(w.fd >= 0 for w in self.workers):
            for key, _mask in self._selector.select(timeout=0.1):
                worker = key.data
                if not self._read(worker):
                    self._selector.unregister(worker.fd)
                    worker.close()
        for worker in self.workers:
            if worker.fd >= 0:
                with contextlib.suppress(KeyError, ValueError):
                    self._selector.unregister(worker.fd)
                worker.close()
            if worker.proc is not None and worker.proc.poll() is None:
                worker.proc.kill()
            if worker.proc is not None:
                worker.proc.wait()
            if worker.status.state not in ("failed", "finished"):
                worker.status.state = "stopped"
        self._selector.close()
