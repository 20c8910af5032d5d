"""``tlsleak corpus stats``, ``import`` and ``merge``."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest

from tlsleak.cases.case import InitCase, Mode, decode
from tlsleak.cases.files import MAX_CASE_BYTES, write_case
from tlsleak.cases.material import Encoding, KeyType, cert_bytes, identity, key_bytes
from tlsleak.check.worker import IsolatedOracle
from tlsleak.cli import main
from tlsleak.corpus.tools import UNLABELLED, UNPARSEABLE, corpus_stats


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def _cases(folder: Path) -> list[InitCase]:
    return [decode(p.read_bytes()) for p in _files(folder)]


def _snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.iterdir()}


def _smallest(*cases: InitCase) -> InitCase:
    return min(cases, key=lambda c: (len(c.encode()), c.encode()))


@pytest.fixture
def four_cases(
    valid_case: InitCase, bad_cert_case: InitCase, bad_key_case: InitCase, der_case: InitCase
) -> list[InitCase]:
    return [
        valid_case,
        bad_cert_case.with_labels("garbage-cert"),
        bad_key_case.with_labels("truncated-key", "pem"),
        der_case,
    ]


@pytest.fixture
def corpus(tmp_path: Path, four_cases: list[InitCase]) -> Path:
    folder = tmp_path / "corpus"
    for case in four_cases:
        write_case(folder, case)
    return folder


# -- stats ---------------------------------------------------------------------------


def test_stats_counts_are_exact(corpus: Path) -> None:
    stats = corpus_stats([corpus])
    assert stats.cases == 4
    assert stats.modes == {"server": 4}
    # valid and bad-key carry the EC leaf, bad-cert's cert is garbage, der is RSA.
    assert stats.cert_keys == {"EC secp256r1": 2, UNPARSEABLE: 1, "RSA 2048": 1}
    assert stats.key_keys == {"EC secp256r1": 2, UNPARSEABLE: 1, "RSA 2048": 1}
    assert stats.encodings == {
        "ca": {"PEM": 3, "(empty)": 1},
        "cert": {"PEM": 3, "DER": 1},
        "key": {"PEM": 3, "DER": 1},
    }
    assert stats.labels == {UNLABELLED: 2, "garbage-cert": 1, "truncated-key": 1, "pem": 1}
    assert stats.target is None
    assert not stats.statuses
    assert not stats.reached


def test_stats_on_a_target_counts_outcomes_and_errors(corpus: Path) -> None:
    with IsolatedOracle("pyopenssl") as oracle:
        stats = corpus_stats([corpus], oracle, "pyopenssl")
    assert stats.statuses == {"accepted": 2, "rejected": 2}
    assert stats.reached["certificate", "PEM routines: ASN1 lib"] == 1
    assert stats.reached["key", "DECODER routines: unsupported"] == 1


def test_stats_cli_lists_the_pem_error_of_the_bad_cert(
    corpus: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["corpus", "stats", str(corpus), "--target", "pyopenssl"]) == 0
    out = capsys.readouterr().out
    assert "cases: 4" in out
    assert "outcome on pyopenssl:" in out
    pem_lines = [line.split() for line in out.splitlines() if "PEM routines: ASN1 lib" in line]
    assert pem_lines == [["certificate", "PEM", "routines:", "ASN1", "lib", "1"]]
    # Aligned: every row of a section puts its count in the same column.
    labels = out.split("labels:\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert len({len(line) for line in labels}) == 1


def test_stats_bad_path_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["corpus", "stats", str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err.count("\n") == 1


# -- import --------------------------------------------------------------------------


@pytest.fixture
def pem_cert() -> bytes:
    return cert_bytes(identity(KeyType.EC_P256).leaf)


@pytest.fixture
def der_key() -> bytes:
    return key_bytes(identity(KeyType.RSA2048, issued=False).key, encoding=Encoding.DER)


def test_import_pem_cert_and_der_key(
    tmp_path: Path, pem_cert: bytes, der_key: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "leaf.pem").write_bytes(pem_cert)
    (tmp_path / "key.der").write_bytes(der_key)
    certs, keys = tmp_path / "certs", tmp_path / "keys"
    assert (
        main(["corpus", "import", str(tmp_path / "leaf.pem"), "--as", "cert", "--into", str(certs)])
        == 0
    )
    assert "1 new cases, 0 already there" in capsys.readouterr().out
    assert _cases(certs) == [InitCase(cert=pem_cert, labels=("imported",))]
    argv = ["corpus", "import", str(tmp_path / "key.der"), "--as", "key", "--into", str(keys)]
    assert main([*argv, "--mode", "client"]) == 0
    assert _cases(keys) == [InitCase(mode=Mode.CLIENT, key=der_key, labels=("imported",))]
    for path in _files(keys):
        assert path.stat().st_mode & 0o777 == 0o600


def test_import_skips_duplicates_and_hidden_files(
    tmp_path: Path, pem_cert: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.pem").write_bytes(pem_cert)
    (src / "b.pem").write_bytes(pem_cert)  # the same bytes under another name
    (src / ".hidden").write_bytes(b"not imported")
    into = tmp_path / "into"
    assert main(["corpus", "import", str(src), "--as", "ca", "--into", str(into)]) == 0
    assert "1 new cases, 1 already there" in capsys.readouterr().out
    assert _cases(into) == [InitCase(ca=pem_cert, labels=("imported",))]
    assert main(["corpus", "import", str(src), "--as", "ca", "--into", str(into)]) == 0
    assert "0 new cases, 2 already there" in capsys.readouterr().out
    assert len(_files(into)) == 1


def test_import_with_material_fills_the_other_fields(tmp_path: Path, der_key: bytes) -> None:
    (tmp_path / "k").write_bytes(der_key)
    into = tmp_path / "into"
    argv = ["corpus", "import", str(tmp_path / "k"), "--as", "key", "--into", str(into)]
    assert main([*argv, "--with-material", "--mode", "client"]) == 0
    [case] = _cases(into)
    ident = identity(KeyType.EC_P256)
    assert case.key == der_key
    assert case.ca == cert_bytes(ident.root)
    assert case.cert.startswith(cert_bytes(ident.leaf))
    assert case.server_name == b"localhost"
    assert case.labels == ("imported",)


def test_import_refuses_a_huge_file_before_writing(
    tmp_path: Path, pem_cert: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "good.pem").write_bytes(pem_cert)
    huge = tmp_path / "huge.bin"
    with huge.open("wb") as f:
        f.truncate(MAX_CASE_BYTES + 1)  # sparse: cheap to make
    into = tmp_path / "into"
    argv = ["corpus", "import", str(tmp_path / "good.pem"), str(huge), "--as", "cert"]
    assert main([*argv, "--into", str(into)]) == 2
    err = capsys.readouterr().err
    assert "huge.bin" in err
    assert err.count("\n") == 1
    assert not into.exists()


def test_import_refuses_an_unreadable_file_before_writing(
    tmp_path: Path, pem_cert: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "good.pem").write_bytes(pem_cert)
    bad = tmp_path / "bad.pem"
    if os.geteuid() == 0:
        # root reads any mode-000 file; a FIFO is just as unreadable as a blob.
        os.mkfifo(bad)
    else:
        bad.write_bytes(pem_cert + b"x")
        bad.chmod(0)
    into = tmp_path / "into"
    argv = ["corpus", "import", str(tmp_path / "good.pem"), str(bad), "--as", "key"]
    assert main([*argv, "--into", str(into)]) == 2
    err = capsys.readouterr().err
    assert "bad.pem" in err
    assert err.count("\n") == 1
    assert not into.exists()


# -- merge ---------------------------------------------------------------------------


def test_merge_keeps_one_smallest_case_per_label_set(
    tmp_path: Path,
    valid_case: InitCase,
    der_case: InitCase,
    bad_cert_case: InitCase,
    bad_key_case: InitCase,
    capsys: pytest.CaptureFixture[str],
) -> None:
    src = tmp_path / "src"
    cert_labelled = bad_cert_case.with_labels("x")
    key_labelled = bad_key_case.with_labels("x")
    for case in (valid_case, der_case, cert_labelled, key_labelled):
        write_case(src, case)
    before = _snapshot(src)
    into = tmp_path / "merged"
    assert main(["corpus", "merge", str(src), "--into", str(into)]) == 0
    assert "kept 2/4 cases" in capsys.readouterr().out
    expected = {_smallest(valid_case, der_case), _smallest(cert_labelled, key_labelled)}
    assert set(_cases(into)) == expected
    assert _snapshot(src) == before


def test_merge_on_a_target_keeps_findings_and_drops_duplicate_behaviour(
    tmp_path: Path,
    valid_case: InitCase,
    valid_client_case: InitCase,
    bad_cert_case: InitCase,
    bad_key_case: InitCase,
    capsys: pytest.CaptureFixture[str],
) -> None:
    shorter_key = replace(bad_key_case, key=bad_key_case.key[:-10])
    first, second = tmp_path / "a", tmp_path / "b"
    for case in (valid_case, bad_cert_case, bad_key_case):
        write_case(first, case)
    # Accepted like valid_case, and the same key-step leak as bad_key_case.
    for case in (valid_client_case, shorter_key):
        write_case(second, case)
    before = {first: _snapshot(first), second: _snapshot(second)}
    into = tmp_path / "merged"
    argv = ["corpus", "merge", str(first), str(second), "--into", str(into)]
    assert main([*argv, "--target", "control-leaky"]) == 0
    assert "kept 3/5 cases" in capsys.readouterr().out
    assert set(_cases(into)) == {
        _smallest(valid_case, valid_client_case),
        bad_cert_case,
        _smallest(bad_key_case, shorter_key),
    }
    # The merged corpus still reaches the leak behind both failing steps.
    assert main(["check", "control-leaky", str(into)]) == 1
    out = capsys.readouterr().out
    assert "(1 accepted, 2 rejected)" in out
    assert "2 findings, 1 distinct" in out
    assert {first: _snapshot(first), second: _snapshot(second)} == before


def test_merge_into_a_source_is_refused(corpus: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = _snapshot(corpus)
    assert main(["corpus", "merge", str(corpus), "--into", str(corpus)]) == 2
    assert "is also a source" in capsys.readouterr().err
    assert _snapshot(corpus) == before


def test_merge_on_a_target_keeps_what_guides_a_campaign(tmp_path: Path) -> None:
    # Two accepted cases with no labels: one behaviour by outcome, but the
    # one with a CA and a chain makes more allocations (another bucket of the
    # campaign's coverage), so merging keeps both; without a target, one.
    from tlsleak.cases.material import KeyType, cert_bytes, identity, key_bytes

    plain = identity(KeyType.EC_P256, issued=False)
    issued = identity(KeyType.EC_P256)
    small = InitCase(cert=cert_bytes(plain.leaf), key=key_bytes(plain.key))
    full = InitCase(
        ca=cert_bytes(issued.root),
        cert=cert_bytes(issued.leaf) + cert_bytes(issued.chain[0]),
        key=key_bytes(issued.key),
    )
    source = tmp_path / "src"
    for case in (small, full):
        write_case(source, case)
    assert main(["corpus", "merge", str(source), "--into", str(tmp_path / "a")]) == 0
    assert len(list((tmp_path / "a").iterdir())) == 1
    argv = ["corpus", "merge", str(source), "--into", str(tmp_path / "b"), "--target", "pyopenssl"]
    assert main(argv) == 0
    assert len(list((tmp_path / "b").iterdir())) == 2
