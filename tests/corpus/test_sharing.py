"""Hypothesis and the fuzzer sharing cases: examples from a corpus, failures into one."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tlsleak.cases.case import InitCase
from tlsleak.cases.files import CorpusError, load_case, load_cases, write_case
from tlsleak.cli import main
from tlsleak.sharing import FAILURES_ENV, corpus_examples, failures_folder, keep_failures
from tlsleak.strategies import init_cases

_QUICK = settings(max_examples=30, derandomize=True, database=None, deadline=None)


def test_keep_failures_keeps_the_smallest_failing_case(tmp_path: Path) -> None:
    folder = tmp_path / "failures"

    @_QUICK
    @given(st.binary(max_size=64).map(lambda b: InitCase(cert=b)))
    @keep_failures(folder)
    def test_short_certs(case: InitCase) -> None:
        assert len(case.cert) < 10

    with pytest.raises(AssertionError):
        test_short_certs()
    [kept] = list(folder.iterdir())
    assert kept.name.endswith("test_short_certs")
    assert kept.stat().st_mode & 0o077 == 0
    # Shrunk: the smallest certificate that fails is 10 bytes.
    assert len(load_case(kept).cert) == 10


def test_keep_failures_writes_nothing_for_a_passing_test(tmp_path: Path) -> None:
    folder = tmp_path / "failures"

    @_QUICK
    @given(init_cases())
    @keep_failures(folder)
    def test_passes(case: InitCase) -> None:
        assert isinstance(case, InitCase)

    test_passes()
    assert not folder.exists()


def test_keep_failures_defaults_to_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(FAILURES_ENV, str(tmp_path / "from-env"))
    assert failures_folder() == tmp_path / "from-env"
    monkeypatch.delenv(FAILURES_ENV)
    assert failures_folder() == Path(".hypothesis/tlsleak-failures")


def test_corpus_examples_runs_every_case_of_a_folder(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    cases = [InitCase(cert=b"one"), InitCase(key=b"two"), InitCase(ca=b"three")]
    for case in cases:
        write_case(corpus, case)
    seen: list[InitCase] = []

    # The strategy can't produce these: only the examples bring them in.
    @settings(max_examples=1, database=None, phases=["explicit"])
    @corpus_examples(corpus)
    @given(st.just(InitCase(password=b"generated")))
    def test_records(case: InitCase) -> None:
        seen.append(case)

    test_records()
    assert sorted(seen, key=lambda c: c.encode()) == sorted(cases, key=lambda c: c.encode())


def test_corpus_examples_reads_finding_folders(tmp_path: Path) -> None:
    folder = tmp_path / "findings" / "leak-SSL-abc"
    folder.mkdir(parents=True)
    (folder / "reproducer").write_bytes(InitCase(cert=b"x").encode())
    seen: list[InitCase] = []

    @settings(database=None, phases=["explicit"])
    @corpus_examples(tmp_path / "findings")
    @given(st.just(InitCase()))
    def test_records(case: InitCase) -> None:
        seen.append(case)

    test_records()
    assert seen == [InitCase(cert=b"x")]


def test_corpus_examples_refuses_an_empty_or_missing_folder(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    for path in (tmp_path / "empty", tmp_path / "missing"):
        with pytest.raises(CorpusError):
            corpus_examples(path)


def test_import_from_hypothesis(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    kept = tmp_path / "kept"
    write_case(kept, InitCase(cert=b"kept one"))
    into = tmp_path / "corpus"
    assert main(["corpus", "import", "--from-hypothesis", str(kept), "--into", str(into)]) == 0
    assert "1 new cases" in capsys.readouterr().out
    assert [case for _p, case in load_cases([into])] == [InitCase(cert=b"kept one")]
    bad = [
        ["corpus", "import", "--from-hypothesis", str(kept), "--as", "cert", "--into", str(into)],
        ["corpus", "import", "--into", str(into)],
        ["corpus", "import", str(kept), "--into", str(into)],
    ]
    for argv in bad:
        assert main(argv) == 2
        assert capsys.readouterr().err.count("\n") == 1
