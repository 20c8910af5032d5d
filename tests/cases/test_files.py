"""Corpus folders: content names, atomic private writes, refusal of unusable paths."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tlsleak.cases.case import InitCase
from tlsleak.cases.files import (
    MAX_CASE_BYTES,
    CorpusError,
    bundled_corpus,
    case_files,
    content_name,
    load_case,
    write_case,
    write_input,
)


def test_write_is_content_addressed_private_and_idempotent(tmp_path: Path) -> None:
    case = InitCase(cert=b"cert", labels=("x",))
    path, added = write_case(tmp_path / "new", case)
    assert added
    assert path.name == content_name(case.encode())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # corpus files carry private keys
    assert load_case(path) == case
    again, added_again = write_case(tmp_path / "new", case)
    assert (again, added_again) == (path, False)
    assert [p.name for p in (tmp_path / "new").iterdir()] == [path.name]  # no temp left


def test_existing_file_is_never_replaced(tmp_path: Path) -> None:
    case = InitCase(key=b"k")
    name = content_name(case.encode())
    (tmp_path / name).write_bytes(b"user's own bytes")
    _path, added = write_case(tmp_path, case)
    assert not added
    assert (tmp_path / name).read_bytes() == b"user's own bytes"


def test_case_files_reads_folders_and_skips_hidden_and_readme(tmp_path: Path) -> None:
    for name in ("b", "a", ".hidden", "README.md"):
        (tmp_path / name).write_bytes(b"\x00")
    (tmp_path / "sub").mkdir()
    assert [p.name for p in case_files([tmp_path])] == ["a", "b"]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "missing", "no such file"),
        (lambda d: d, "holds no case files"),
    ],
)
def test_unusable_paths_are_refused(tmp_path: Path, make, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(CorpusError, match=message):
        case_files([make(tmp_path)])


def test_huge_file_is_refused(tmp_path: Path) -> None:
    big = tmp_path / "big"
    with big.open("wb") as f:
        f.truncate(MAX_CASE_BYTES + 1)
    with pytest.raises(CorpusError, match="larger than"):
        load_case(big)


def test_unreadable_file_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # chmod 0 does not stop root (CI runs as root), so make the read itself fail.
    f = tmp_path / "locked"
    f.write_bytes(b"x")

    def refuse(self: Path, *args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "open", refuse)
    with pytest.raises(CorpusError, match="cannot read: Permission denied"):
        load_case(f)


def test_any_content_is_a_case(tmp_path: Path) -> None:
    f = tmp_path / "noise"
    f.write_bytes(os.urandom(300))
    assert isinstance(load_case(f), InitCase)


def test_bundled_corpus_is_found() -> None:
    assert bundled_corpus().is_dir()


def test_bundled_corpus_covers_every_defect_label() -> None:
    from tlsleak.cases.defects import DEFECTS
    from tlsleak.cases.files import load_cases

    seen: set[str] = set()
    valid = 0
    for _path, case in load_cases([bundled_corpus()]):
        seen.update(case.labels)
        valid += not case.labels
    assert set(DEFECTS) - seen == set(), "grow cases for these with tlsleak corpus grow --defect"
    assert valid > 0


def test_a_folder_that_cannot_be_searched_is_an_error_not_a_missing_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As root, modes don't stop us: make the look-up itself fail the way a
    # folder without search permission makes it fail for anyone else.
    def denied(self: Path) -> os.stat_result:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "lstat", denied)
    with pytest.raises(CorpusError, match="cannot write: Permission denied"):
        write_input(tmp_path, b"case")
