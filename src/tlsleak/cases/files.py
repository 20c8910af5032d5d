"""Corpus folders: one encoded :class:`InitCase` per file, named by content.

Files are named by the SHA-1 of their bytes, as libFuzzer names what it adds,
so a tlsleak corpus and an atheris/libFuzzer corpus can be the same folder and
a case is never stored twice.  Writes are atomic (a private temporary file in
the same folder, then a rename) and never replace an existing file, so an
interrupted run leaves no half-written case and loses nothing a user had.
Corpus files hold private keys, so they are created private (mode 0600).

Reading never judges content: any bytes decode to a case.  It refuses only
what can't be a case file: a path that does not exist or can't be read, a
folder with no case files, and a file larger than :data:`MAX_CASE_BYTES`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Final

from tlsleak._fs import write_atomically
from tlsleak.cases.case import InitCase, decode

__all__ = [
    "MAX_CASE_BYTES",
    "CorpusError",
    "bundled_corpus",
    "case_files",
    "content_name",
    "is_case_file",
    "list_files",
    "load_case",
    "load_cases",
    "read_limited",
    "write_case",
    "write_input",
]

#: Larger files are refused: no TLS init path is given an 8 MiB certificate,
#: and reading one per execution would make a campaign crawl.
MAX_CASE_BYTES: Final = 8 * 1024 * 1024


class CorpusError(Exception):
    """A corpus path that can't be used; the message is one line for the user."""


def content_name(data: bytes) -> str:
    """The file name for ``data``: its SHA-1 in hex (libFuzzer's naming)."""
    return hashlib.sha1(data, usedforsecurity=False).hexdigest()


def is_case_file(path: Path) -> bool:
    """Whether a file in a corpus folder is a case (not hidden, not a README)."""
    # Hidden files (editor swap files, .gitkeep) and a README describing the
    # folder are not cases; everything else is, whatever its content.
    return not path.name.startswith(".") and not path.name.upper().startswith("README")


def list_files(
    paths: Iterable[Path],
    *,
    wanted: Callable[[Path], bool] = is_case_file,
    what: str = "case files",
) -> list[Path]:
    """The ``wanted`` files named by ``paths`` (files, or folders read one level deep), sorted.

    Raises :class:`CorpusError` for a missing or unreadable path and for a
    folder that holds none of ``what``.
    """
    found: list[Path] = []
    for path in paths:
        if not path.exists():
            raise CorpusError(f"{path}: no such file or folder")
        if path.is_dir():
            try:
                entries = sorted(p for p in path.iterdir() if p.is_file() and wanted(p))
            except OSError as exc:
                raise CorpusError(f"{path}: cannot list folder: {exc.strerror}") from None
            if not entries:
                raise CorpusError(f"{path}: folder holds no {what}")
            found.extend(entries)
        elif path.is_file():
            found.append(path)
        else:
            raise CorpusError(f"{path}: not a regular file or folder")
    return found


def case_files(paths: Iterable[Path]) -> list[Path]:
    """The case files named by ``paths`` (see :func:`list_files`)."""
    return list_files(paths)


def read_limited(path: Path, what: str = "a case file") -> bytes:
    """The bytes of ``path``, refused past :data:`MAX_CASE_BYTES` with a one-line error."""
    try:
        with path.open("rb") as f:
            data = f.read(MAX_CASE_BYTES + 1)
    except OSError as exc:
        raise CorpusError(f"{path}: cannot read: {exc.strerror}") from None
    if len(data) > MAX_CASE_BYTES:
        raise CorpusError(f"{path}: larger than {MAX_CASE_BYTES // (1024 * 1024)} MiB, not {what}")
    return data


def load_case(path: Path) -> InitCase:
    """Read and decode one case file."""
    return decode(read_limited(path))


def load_cases(paths: Iterable[Path]) -> Iterator[tuple[Path, InitCase]]:
    """``(path, case)`` for every case file under ``paths`` (validated up front)."""
    for path in case_files(paths):
        yield path, load_case(path)


def write_case(folder: Path, case: InitCase) -> tuple[Path, bool]:
    """Store ``case`` in ``folder`` under its content name; ``(path, False)`` if already there."""
    return write_input(folder, case.encode())


def write_input(folder: Path, data: bytes) -> tuple[Path, bool]:
    """Store ``data`` (an input as the fuzzer has it) under its content name, atomically.

    The file appears complete or not at all (written to a hidden temporary
    file, fsynced, then linked into place), private (0600: cases hold keys),
    and never over an existing file.  ``(path, False)`` if it was already there.
    """
    target = folder / content_name(data)
    try:
        # lstat, not exists(): a folder we may not search is an error to
        # report, not a reason to think the file is missing.
        target.lstat()
        return target, False
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise CorpusError(f"{folder}: cannot write: {exc.strerror}") from None
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CorpusError(f"{folder}: cannot write: {exc.strerror}") from None
    try:
        # Linked, not renamed: a concurrent writer of the same case can't be
        # overwritten, and the content is the same either way.
        return target, write_atomically(target, data, replace=False)
    except OSError as exc:
        raise CorpusError(f"{target}: cannot write: {exc.strerror}") from None


def bundled_corpus() -> Path:
    """The seed corpus shipped with tlsleak (inside the wheel, or the checkout's ``corpus/``)."""
    package = Path(__file__).resolve().parents[1]
    shipped = package / "_corpus"
    if shipped.is_dir():
        return shipped
    # An editable install runs from the checkout: src/tlsleak -> corpus/.
    return package.parent.parent / "corpus"
