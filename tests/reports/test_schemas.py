"""The published JSON Schemas (docs/schemas/) against real outputs, and format versions.

Each schema is itself checked (draft 2020-12), and validates what the commands
really write: ``check --json`` on the leaky and the fixed control, a stored
finding folder (one with an allocation-failure point too), the ``stats.jsonl``
of a short campaign, and ``diff --json``.  Validation is also *strict* here:
every object field the output has must be described in the schema (the
published schemas stay open, so that readers of version 1 accept the fields a
later minor addition brings).  A corrupted output must fail (negative control).
"""

from __future__ import annotations

import copy
import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from tlsleak.cases.case import InitCase
from tlsleak.cases.files import write_case
from tlsleak.cases.material import KeyType, cert_bytes, identity, key_bytes
from tlsleak.check.findings import FINDING_JSON, FindingError, format_refusal, load_stored
from tlsleak.cli import main
from tlsleak.fuzz.stats import FORMAT as STATS_FORMAT
from tlsleak.reports.json_report import FORMAT as CHECK_FORMAT

SCHEMAS = Path(__file__).resolve().parents[2] / "docs" / "schemas"
NAMES = ("tlsleak-check-1", "tlsleak-finding-1", "tlsleak-stats-1", "tlsleak-diff-1")


def _valid() -> InitCase:
    ident = identity(KeyType.EC_P256)
    return InitCase(
        ca=cert_bytes(ident.root), cert=cert_bytes(ident.leaf), key=key_bytes(ident.key)
    )


#: A PEM block whose body is not a certificate: OpenSSL's parser rejects it.
GARBAGE_CERT = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"


def schema(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((SCHEMAS / f"{name}.schema.json").read_text())
    return data


def _closed(node: Any, path: tuple[str, ...] = ()) -> Any:
    """``node`` with every object schema that lists properties closed to others.

    ``unevaluatedProperties`` sees through ``allOf`` and ``$ref``, so a check
    report's finding (the shared definition plus ``file``) is closed once, at
    its use; the shared definition itself is left open for that reason.
    """
    if isinstance(node, list):
        return [_closed(item, path) for item in node]
    if not isinstance(node, dict):
        return node
    made = {key: _closed(value, (*path, key)) for key, value in node.items()}
    shared = path == ("$defs", "finding")
    if "properties" in node and "additionalProperties" not in node and not shared:
        made["unevaluatedProperties"] = False
    return made


def errors(name: str, instance: Any, *, strict: bool = True) -> list[str]:
    """What is wrong with ``instance`` under the schema ``name`` (strictly: no field unnamed)."""
    found = schema(name)
    validator = Draft202012Validator(
        _closed(found) if strict else found, format_checker=Draft202012Validator.FORMAT_CHECKER
    )
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator.iter_errors(instance)
    ]


@pytest.mark.parametrize("name", NAMES)
def test_each_schema_is_a_valid_draft_2020_12_schema_with_descriptions(name: str) -> None:
    found = schema(name)
    Draft202012Validator.check_schema(found)
    assert found["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert found["$id"] == f"urn:tlsleak:schema:{name.rsplit('-', 1)[0]}/1"

    def undescribed(node: Any, path: str) -> list[str]:
        if not isinstance(node, dict):
            return []
        missing = [
            f"{path}/{k}" for k, v in node.get("properties", {}).items() if "description" not in v
        ]
        for key in ("properties", "$defs"):
            for k, v in node.get(key, {}).items():
                missing += undescribed(v, f"{path}/{k}")
        if isinstance(node.get("items"), dict):
            missing += undescribed(node["items"], f"{path}/items")
        return missing

    assert undescribed(found, "") == []  # every field says what it is


def test_the_shared_finding_definition_is_the_same_in_every_schema() -> None:
    assert schema("tlsleak-check-1")["$defs"] == schema("tlsleak-finding-1")["$defs"]


# --- real outputs ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """check --json on both controls (leaky with --out), diff --json, on a small corpus."""
    folder = tmp_path_factory.mktemp("outputs")
    corpus = folder / "corpus"
    valid = _valid()
    for case in (
        valid,
        InitCase(ca=valid.ca, cert=GARBAGE_CERT, key=valid.key),
        InitCase(ca=valid.ca, cert=valid.cert, key=valid.key[:-40]),
    ):
        write_case(corpus, case)
    assert (
        main(
            [
                "check",
                "control-leaky",
                str(corpus),
                "-q",
                "--json",
                str(folder / "leaky.json"),
                "--out",
                str(folder / "leaky"),
            ]
        )
        == 1
    )
    assert (
        main(["check", "control-fixed", str(corpus), "-q", "--json", str(folder / "fixed.json")])
        == 0
    )
    assert (
        main(
            [
                "diff",
                "control-leaky",
                "control-fixed",
                str(corpus),
                "-q",
                "--json",
                str(folder / "diff.json"),
            ]
        )
        == 0
    )
    return folder


@pytest.mark.parametrize("report", ["leaky.json", "fixed.json"])
def test_check_reports_follow_their_schema(outputs: Path, report: str) -> None:
    data = json.loads((outputs / report).read_text())
    assert data["format"] == CHECK_FORMAT == "tlsleak-check/1"
    assert bool(data["findings"]) is (report == "leaky.json")
    assert errors("tlsleak-check-1", data) == []


def test_a_stored_finding_follows_its_schema_and_a_corrupted_one_fails(outputs: Path) -> None:
    (folder,) = (outputs / "leaky" / "findings").iterdir()
    data = json.loads((folder / FINDING_JSON).read_text())
    assert data["format"] == "tlsleak-finding/1"
    assert data["caller"]  # the Python frame of the control's own code
    assert errors("tlsleak-finding-1", data) == []
    # Negative controls: a kind not known, a field of the wrong type, a
    # required one missing, an undescribed one added.
    for corrupt in (
        {"kind": "memory"},
        {"count": "4"},
        {"case_hex": "not hex"},
        {"format": "tlsleak-finding/2"},
        {"surprise": 1},
    ):
        assert errors("tlsleak-finding-1", {**data, **corrupt}), corrupt
    assert errors("tlsleak-finding-1", {k: v for k, v in data.items() if k != "signature"})
    # ...and a folder stored before the format field existed still follows it.
    assert errors("tlsleak-finding-1", {k: v for k, v in data.items() if k != "format"}) == []


def test_a_corrupted_check_report_fails_its_schema(outputs: Path) -> None:
    data = json.loads((outputs / "leaky.json").read_text())
    broken = copy.deepcopy(data)
    broken["findings"][0]["delta"]["SSL_CTX"] = "one"
    assert errors("tlsleak-check-1", broken)
    broken = copy.deepcopy(data)
    del broken["findings"][0]["file"]
    assert errors("tlsleak-check-1", broken)
    broken = copy.deepcopy(data)
    broken["findings"][0]["new_field"] = True
    assert errors("tlsleak-check-1", broken)  # strictly: every field is described...
    assert errors("tlsleak-check-1", broken, strict=False) == []  # ...but readers stay open
    assert errors("tlsleak-check-1", {**data, "format": "tlsleak-diff/1"})


def test_the_diff_report_follows_its_schema(outputs: Path) -> None:
    data = json.loads((outputs / "diff.json").read_text())
    assert data["format"] == "tlsleak-diff/1"
    assert errors("tlsleak-diff-1", data) == []
    data["cases"][0]["kind"] = "maybe"
    assert errors("tlsleak-diff-1", data)


def test_an_allocation_failure_finding_follows_the_schema(tmp_path: Path) -> None:
    write_case(tmp_path / "valid", _valid())
    out = tmp_path / "out"
    argv = [
        "check",
        "control-leaky",
        str(tmp_path / "valid"),
        "-q",
        "--fail-alloc",
        "--fail-budget",
        "16",
        "--minimize-budget",
        "0",
        "--out",
        str(out),
    ]
    assert main(argv) == 1
    folders = list((out / "findings").iterdir())
    assert folders
    for folder in folders:
        data = json.loads((folder / FINDING_JSON).read_text())
        assert "fail_point" in data
        assert errors("tlsleak-finding-1", data) == []


@pytest.mark.skipif(importlib.util.find_spec("atheris") is None, reason="needs tlsleak[fuzz]")
def test_stats_lines_of_a_short_campaign_follow_their_schema(tmp_path: Path) -> None:
    out = tmp_path / "out"
    argv = [
        "fuzz",
        "control-leaky",
        "--out",
        str(out),
        "-q",
        "--time",
        "300",
        "--minimize-budget",
        "0",
        "--",
        "-runs=30",
    ]
    assert main(argv) == 1
    lines = [json.loads(line) for line in (out / "stats.jsonl").read_text().splitlines()]
    assert lines
    assert lines[-1]["findings"] == {"leak": 1}
    for line in lines:
        assert line["format"] == STATS_FORMAT == "tlsleak-stats/1"
        assert errors("tlsleak-stats-1", line) == []
    assert errors("tlsleak-stats-1", {**lines[-1], "workers": [{"index": 0, "state": "bored"}]})


# --- reading: old files, future versions ----------------------------------------------------


def test_format_refusal_reads_old_files_and_refuses_later_major_versions() -> None:
    expected = "tlsleak-finding/1"
    assert format_refusal({}, expected) is None  # written before the field existed
    assert format_refusal({"format": "tlsleak-finding/1"}, expected) is None
    assert format_refusal({"format": "tlsleak-finding/0"}, expected) is None
    newer = format_refusal({"format": "tlsleak-finding/2"}, expected)
    assert newer is not None
    assert "newer" in newer
    assert "upgrade" in newer
    assert format_refusal({"format": "tlsleak-check/1"}, expected) is not None
    assert format_refusal({"format": "finding"}, expected) is not None


def test_a_stored_finding_without_a_format_still_replays_and_a_future_one_is_refused(
    outputs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    (stored,) = (outputs / "leaky" / "findings").iterdir()
    old = tmp_path / "old"
    shutil.copytree(stored, old)
    data = json.loads((old / FINDING_JSON).read_text())
    del data["format"]  # as stored before the field existed
    (old / FINDING_JSON).write_text(json.dumps(data))
    assert load_stored(old).finding.signature == data["signature"]
    assert main(["replay", str(old), "--replays", "1"]) == 1  # still there
    capsys.readouterr()
    (old / FINDING_JSON).write_text(json.dumps({**data, "format": "tlsleak-finding/2"}))
    with pytest.raises(FindingError, match="newer than this tlsleak reads"):
        load_stored(old)
    assert main(["replay", str(old)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "tlsleak-finding/2" in err
    assert "Traceback" not in err
