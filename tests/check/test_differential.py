"""The differential comparison: what a case stands for, what a target loads, how rows compare.

The user callables the comparisons run are written to a module in a
temporary folder (the worker children import it from the current folder).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tlsleak.cases.case import InitCase
from tlsleak.cases.defects import Base
from tlsleak.cases.material import Encoding, KeyFormat, KeyType
from tlsleak.check.capabilities import Material, Seen, material_of, probes, supports
from tlsleak.check.differential import Differ, Kind, Result, Row, groups, stack_version

CALLABLES = """
import os
import time
from tlsleak.check.capabilities import material_of
from tlsleak.targets import Rejected

def accept_all(case):
    return None

def refuse_ed25519(case):
    if "ed25519" in material_of(case).key_types:
        raise Rejected("key", "no Ed25519 here")

def abort_on_name(case):
    if case.server_name == b"abort":
        os.abort()
    if case.server_name == b"hang":
        time.sleep(120)
"""


@pytest.fixture
def callables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The name of a module of test init paths, importable from the current folder."""
    (tmp_path / "diffcalls.py").write_text(CALLABLES)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "diffcalls"
    sys.modules.pop("diffcalls", None)


def _base(key_type: KeyType = KeyType.EC_P256, **choices: object) -> InitCase:
    return Base.build(key_type, **choices).case  # type: ignore[arg-type]


def test_every_probe_reads_as_its_own_material() -> None:
    found = probes()
    assert len({m for m, _case in found}) == len(found) > 30
    for material, case in found:
        seen = material_of(case)
        assert seen == Seen(
            frozenset({material.key_type}),
            material.cert_encoding,
            material.key_format,
            material.key_encoding,
        )


def test_damage_leaves_unknown_what_it_hides() -> None:
    case = _base(KeyType.ED25519, key_encoding=Encoding.DER)
    seen = material_of(InitCase(cert=case.cert, key=b"\x30\x03garbage"))
    assert seen.key_types == {"ed25519"}  # from the certificate
    assert (seen.key_format, seen.key_encoding) == (None, "der")
    assert material_of(InitCase()) == Seen()


def test_an_eddsa_identifier_beside_an_ec_key_is_the_signatures() -> None:
    case = _base(KeyType.EC_P256, cert_encoding=Encoding.DER)
    ed448 = bytes.fromhex("06032b6571")  # a signature relabelled Ed448
    assert material_of(InitCase(cert=case.cert + ed448)).key_types == {"ec-p256"}
    assert material_of(InitCase(cert=ed448)).key_types == {"ed448"}


def test_supports_needs_every_seen_key_type_and_matches_what_is_unknown() -> None:
    rsa = Material("rsa2048", "pem", "pkcs8", "pem")
    ed = Material("ed25519", "pem", "pkcs8", "pem")
    loads = {rsa: True, ed: False}
    assert supports(loads, Seen(frozenset({"rsa2048"}), "pem", "pkcs8", "pem"))
    assert not supports(loads, Seen(frozenset({"ed25519"})))
    assert not supports(loads, Seen(frozenset({"rsa2048", "ed25519"})))
    assert supports(loads, Seen())  # nothing visible: any loadable material will do
    assert not supports({rsa: False, ed: False}, Seen())
    # A shape no valid material has (an encrypted DER key) counts by key type alone.
    assert supports(loads, Seen(frozenset({"rsa2048"}), "pem", "pkcs8-encrypted", "der"))


def _row(name: str, label: str, *cells: tuple[str, str | None]) -> Row:
    return Row(name, (label,), tuple(Result(status, step) for status, step in cells))


def test_rows_compare_by_status_then_by_step() -> None:
    acc, key, check = ("accepted", None), ("rejected", "key"), ("rejected", "check-key")
    assert _row("a", "x", acc, key).kind is Kind.DISAGREE
    assert _row("a", "x", acc, ("crash", None)).kind is Kind.DISAGREE
    assert _row("a", "x", key, check).kind is Kind.STEPS
    assert _row("a", "x", key, key).kind is Kind.AGREE
    assert _row("a", "x", acc, ("unsupported", None)).kind is Kind.UNCOMPARED
    assert _row("a", "x", acc, key, ("unsupported", None)).kind is Kind.DISAGREE


def test_groups_merge_cases_unsupported_somewhere_into_the_behaviour_they_share() -> None:
    acc, key, none = ("accepted", None), ("rejected", "key"), ("unsupported", None)
    rows = [
        _row("c1", "zero", acc, key, acc),
        _row("c2", "zero", acc, key, none),
        _row("c3", "zero", acc, key, key),
        _row("c4", "other", acc, key, acc),
    ]
    found = groups(rows, Kind.DISAGREE)
    assert [(g.label, g.cases, g.unsupported) for g in found] == [
        ("zero", ("c1", "c2"), (0, 0, 1)),
        ("other", ("c4",), (0, 0, 0)),
        ("zero", ("c3",), (0, 0, 0)),
    ]
    assert found[0].shown() == ("accepted", "rejected at key", "accepted (1 unsupported)")


@pytest.fixture
def labelled(valid_case: InitCase, bad_cert_case: InitCase, bad_key_case: InitCase) -> list:
    return [
        ("valid", valid_case),
        ("bad-cert", bad_cert_case.with_labels("garbage-cert")),
        ("bad-key", bad_key_case.with_labels("truncated-key")),
    ]


def test_a_stack_that_accepts_everything_disagrees_with_one_that_checks(
    callables: str, labelled: list
) -> None:
    with Differ(["control-fixed", f"{callables}:accept_all"]) as differ:
        rows = {name: differ.compare(case, name) for name, case in labelled}
    assert rows["valid"].kind is Kind.AGREE
    assert rows["bad-cert"].kind is Kind.DISAGREE
    assert rows["bad-key"].kind is Kind.DISAGREE
    (group,) = [g for g in groups(rows.values(), Kind.DISAGREE) if g.label == "garbage-cert"]
    assert group.cells[0].startswith("rejected at ")
    assert group.cells[1] == "accepted"


@pytest.mark.parametrize("pair", [("control-leaky", "control-fixed"), ("pyopenssl", "pyopenssl")])
def test_stacks_that_accept_the_same_never_disagree(pair: tuple[str, str], labelled: list) -> None:
    with Differ(list(pair)) as differ:
        rows = [differ.compare(case, name) for name, case in labelled]
        names = [t.name for t in differ.targets]
    assert {row.kind for row in rows} == {Kind.AGREE}
    assert len(set(names)) == 2  # a target given twice gets a column of its own


def test_material_a_stack_cannot_load_is_unsupported_not_a_disagreement(callables: str) -> None:
    ed_bad_key = _base(KeyType.ED25519, key_format=KeyFormat.PKCS8)
    ed_bad_key = InitCase(ca=ed_bad_key.ca, cert=ed_bad_key.cert, key=ed_bad_key.key[:-30])
    ec_bad_key = _base(KeyType.EC_P256)
    ec_bad_key = InitCase(ca=ec_bad_key.ca, cert=ec_bad_key.cert, key=ec_bad_key.key[:-30])
    with Differ(["pyopenssl", f"{callables}:refuse_ed25519"]) as differ:
        ed = differ.compare(ed_bad_key.with_labels("truncated-key"), "ed")
        ec = differ.compare(ec_bad_key.with_labels("truncated-key"), "ec")
        refused = differ.targets[1].cannot_load()
    assert {m.key_type for m in refused} == {"ed25519"}
    assert ed.results[1].status == "unsupported"
    assert ed.kind is Kind.UNCOMPARED
    # The negative control: a case it can load is compared (and it accepts a bad key).
    assert ec.results[1].status == "accepted"
    assert ec.kind is Kind.DISAGREE


def test_a_crash_on_one_case_is_that_targets_result_and_the_run_goes_on(
    callables: str, valid_case: InitCase
) -> None:
    aborting = InitCase(cert=valid_case.cert, key=valid_case.key, server_name=b"abort")
    with Differ([f"{callables}:accept_all", f"{callables}:abort_on_name"]) as differ:
        crashed = differ.compare(aborting, "abort")
        after = differ.compare(valid_case, "valid")
        assert differ.failure is None
    assert crashed.results[1].status == "crash"
    assert "SIGABRT" in crashed.results[1].detail
    assert crashed.kind is Kind.DISAGREE
    assert after.kind is Kind.AGREE


def test_a_hang_is_a_timeout_for_that_target(callables: str, valid_case: InitCase) -> None:
    hanging = InitCase(cert=valid_case.cert, key=valid_case.key, server_name=b"hang")
    with Differ([f"{callables}:accept_all", f"{callables}:abort_on_name"], timeout=3) as differ:
        row = differ.compare(hanging, "hang")
        after = differ.compare(valid_case, "valid")
    assert [r.status for r in row.results] == ["accepted", "timeout"]
    assert after.kind is Kind.AGREE


def test_fewer_than_two_targets_is_refused() -> None:
    with pytest.raises(ValueError, match="at least two"):
        Differ(["pyopenssl"])


def test_stack_versions_name_the_tls_library() -> None:
    assert "OpenSSL" in (stack_version("pyopenssl") or "")
    assert "OpenSSL" in (stack_version("ssl") or "")
    assert stack_version("pkg.mod:func") is None
