"""The corpus of a fuzz campaign, shared between its workers with whole files only.

libFuzzer writes new inputs non-atomically into the first folder it is
given, so no worker is given the shared corpus to write: each gets a private
folder (:class:`WorkerFolders`) seeded with a copy of it.  The campaign moves
what a worker adds into the shared corpus, content-addressed and atomically
(see :func:`tlsleak.cases.files.write_input`), after checking that a file's
content hashes to its name (libFuzzer names inputs by SHA-1, so a
half-written file never passes), and hands it to the other workers the same
way (libFuzzer's ``-reload`` picks it up).  A campaign killed at any moment
leaves the shared corpus with whole files only; the private folders are
scratch (0700 folders, 0600 files: cases hold private keys), removed at the
end of the campaign or, after a kill, by the next one on the same output
folder.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from tlsleak._fs import TMP_GLOBS
from tlsleak.cases.files import (
    MAX_CASE_BYTES,
    CorpusError,
    bundled_corpus,
    content_name,
    is_case_file,
    read_limited,
    write_input,
)
from tlsleak.fuzz.options import CampaignError

__all__ = ["SharedCorpus", "WorkerFolders"]

_SHA1_NAME: Final = re.compile(r"[0-9a-f]{40}")


@dataclass(frozen=True)
class WorkerFolders:
    """One worker's private folder: ``home``, removed and made again at each start."""

    home: Path

    @property
    def inputs(self) -> Path:
        """libFuzzer's corpus folder: what it reads at start, and writes new inputs to."""
        return self.home / "corpus"

    @property
    def incoming(self) -> Path:
        """Where inputs for the worker are written before being renamed into ``inputs``."""
        return self.home / "incoming"

    @property
    def artifacts(self) -> Path:
        """libFuzzer's ``-artifact_prefix``: the input the worker died on."""
        return self.home / "artifacts"


class SharedCorpus:
    """The campaign's corpus folder, and what its workers have of it."""

    def __init__(self, folder: Path, warn: Callable[[str], None]) -> None:
        self.folder = folder
        self._warn = warn
        #: Names of the inputs in the corpus, those found at the start included.
        self.known: set[str] = set()
        self.start = 0
        # Inputs that killed a worker: not given to workers again, or a
        # crasher in the corpus would kill every restart while loading it.
        self.quarantine: set[str] = set()

    @property
    def added(self) -> int:
        return len(self.known) - self.start

    def prepare(self, *, working_copy: bool) -> None:
        """Check the folder (made from the bundled seeds first when ``working_copy``)."""
        corpus = self.folder
        if working_copy and not corpus.exists():
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
        self.known = set(names)
        self.start = len(names)
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

    def seed(self, worker: WorkerFolders) -> None:
        """Fill a worker's private folder with a copy of the shared corpus.

        Raises OSError when the folder can't be made or filled (a full disk).
        """
        shutil.rmtree(worker.home, ignore_errors=True)
        worker.home.mkdir(mode=0o700)
        for folder in (worker.inputs, worker.incoming, worker.artifacts):
            folder.mkdir(mode=0o700)
        for path in self._files():
            try:
                data = read_limited(path)
            except CorpusError as exc:
                self._warn(f"corpus: skipping {exc}")
                continue
            name = content_name(data)
            if name not in self.quarantine:
                _write_private(worker.inputs / name, data)

    def _files(self) -> Iterator[Path]:
        try:
            entries = sorted(self.folder.iterdir())
        except OSError as exc:
            self._warn(f"corpus: cannot list {self.folder}: {exc.strerror}")
            return
        for path in entries:
            if is_case_file(path):
                with contextlib.suppress(OSError):
                    if path.is_file():
                        yield path

    def sync(self, workers: Sequence[WorkerFolders]) -> None:
        """Move the workers' new inputs into the corpus, and on to the other workers."""
        for worker in workers:
            try:
                names = [n for n in os.listdir(worker.inputs) if n not in self.known]
            except OSError:
                continue
            for name in names:
                data = _complete_input(worker.inputs / name)
                if data is None:
                    continue  # being written, or not one of libFuzzer's: next time
                try:
                    write_input(self.folder, data)
                except CorpusError as exc:
                    self._warn(f"corpus: {exc}")
                    continue
                self.known.add(name)
                for other in workers:
                    if other is not worker:
                        _hand_over(other, name, data)


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


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to a new file only its owner can read (scratch, not kept: no fsync)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def _hand_over(worker: WorkerFolders, name: str, data: bytes) -> None:
    """Give ``data`` to a worker: written aside, then renamed into its folder in one step."""
    tmp = worker.incoming / name
    with contextlib.suppress(OSError):
        _write_private(tmp, data)
        os.replace(tmp, worker.inputs / name)
