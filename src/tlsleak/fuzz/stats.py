"""What a fuzz campaign says about itself: status snapshots, and ``stats.jsonl``.

A :class:`CampaignStatus` goes to the progress display every few seconds
(:mod:`tlsleak.fuzz.progress`) and, as one JSON object a line, to the stats
file of the output folder, with a last one at the end.  Each line names its
format first (:data:`FORMAT`, ``"tlsleak-stats/1"``: docs/formats.md).
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from tlsleak._netns import Network
from tlsleak.fuzz.guidance import is_alloc_bucket, is_alloc_path, is_alloc_site, is_error_pair

__all__ = ["FORMAT", "STATS_EVERY", "CampaignStatus", "FindingRecord", "Stats", "WorkerStatus"]

#: The ``format`` of each line of ``stats.jsonl``: a name, then the major version.
FORMAT: Final = "tlsleak-stats/1"

#: Seconds between stats lines (and, by default, status snapshots).
STATS_EVERY: Final = 5.0


@dataclass
class WorkerStatus:
    index: int
    state: str = "starting"  # starting, running, restarting, finished, failed
    execs: int = 0
    restarts: int = 0
    message: str = ""
    #: Whether it is off the network, as its ready event said (tlsleak._netns).
    network: Network | None = None


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
    #: No input of it tried in a fresh checker gave it alone (tlsleak.check.alone):
    #: growth the worker's earlier inputs left behind.  Not stored, not counted.
    unconfirmed: bool = False

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
    #: Why the campaign did not do the work it was asked for (it executed
    #: nothing, or lost every worker); None when it did.  Final status only.
    no_work: str | None = None
    #: Allocation-site features (sites alone, with their caller, at a depth).
    alloc_sites: int = 0
    #: Distinct sets of allocation sites (paths) the attempts took.
    alloc_paths: int = 0
    #: Distinct findings no fresh checker gave alone (see FindingRecord.unconfirmed):
    #: apart from ``findings``, which are those that count.
    unconfirmed: list[FindingRecord] = field(default_factory=list)

    def findings_by_kind(self) -> Counter[str]:
        return Counter(f.kind for f in self.findings)

    @property
    def restarts(self) -> int:
        """Worker restarts so far (a crash, a hang or running out of memory each)."""
        return sum(w.restarts for w in self.workers)

    @property
    def network(self) -> Network | None:
        """The workers' network: the first one not isolated, if any; None if none said yet."""
        said = [w.network for w in self.workers if w.network is not None]
        return next((n for n in said if n.warning()), said[0] if said else None)

    @property
    def starting(self) -> bool:
        """Nothing executed yet, and workers still starting."""
        states = {w.state for w in self.workers}
        return not self.execs and "starting" in states and "running" not in states

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
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
            "alloc_sites": self.alloc_sites,
            "alloc_paths": self.alloc_paths,
            "findings": dict(self.findings_by_kind()),
            "finding_hits": sum(f.count for f in self.findings),
            "restarts": self.restarts,
            **(
                {"unconfirmed": dict(Counter(f.kind for f in self.unconfirmed))}
                if self.unconfirmed
                else {}
            ),
            **({"no_work": self.no_work} if self.no_work else {}),
            **({"network": self.network.to_json()} if self.network else {}),
            "workers": [
                {"index": w.index, "state": w.state, "execs": w.execs, "restarts": w.restarts}
                for w in self.workers
            ],
        }


class Stats:
    """The campaign's figures over time: the coverage its workers reported, their rate."""

    def __init__(self, path: Path, warn: Callable[[str], None]) -> None:
        self.path = path
        #: The coverage features the workers' guidance reported (tlsleak.fuzz.guidance).
        self.features: set[str] = set()
        self._rates: list[tuple[float, int]] = []
        self._warn = warn

    def status(
        self,
        *,
        target: str,
        started: float,
        workers: list[WorkerStatus],
        findings: list[FindingRecord],
        corpus: int,
        corpus_added: int,
        stopping: bool,
    ) -> CampaignStatus:
        """A snapshot, from copies of the workers' statuses and of the findings.

        Unconfirmed findings (:attr:`FindingRecord.unconfirmed`) go apart.
        """
        now = time.monotonic()
        execs = sum(w.execs for w in workers)
        self._rates.append((now, execs))
        # The rate over the last ten seconds or so: what the workers do now.
        while len(self._rates) > 2 and now - self._rates[1][0] >= 10:
            self._rates.pop(0)
        t0, e0 = self._rates[0]
        rate = (execs - e0) / (now - t0) if now > t0 else 0.0
        return CampaignStatus(
            target=target,
            elapsed=now - started,
            execs=execs,
            exec_rate=rate,
            corpus=corpus,
            corpus_added=corpus_added,
            # Paths are figures of their own, not coverage features.
            features=sum(not is_alloc_path(f) for f in self.features),
            error_pairs=sum(map(is_error_pair, self.features)),
            alloc_buckets=sum(map(is_alloc_bucket, self.features)),
            alloc_sites=sum(map(is_alloc_site, self.features)),
            alloc_paths=sum(map(is_alloc_path, self.features)),
            findings=[f for f in findings if not f.unconfirmed],
            workers=workers,
            stopping=stopping,
            unconfirmed=[f for f in findings if f.unconfirmed],
        )

    def append(self, status: CampaignStatus) -> None:
        """Add ``status`` to the stats file, as one line."""
        line = (json.dumps(status.to_json(), separators=(",", ":")) + "\n").encode()
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                # One write() of a whole line: a reader (or a kill) never sees half.
                os.write(fd, line)
            finally:
                os.close(fd)
        except OSError as exc:  # (EINTR is retried by os.write itself, PEP 475)
            self._warn(f"{self.path}: cannot write stats: {exc.strerror}")
