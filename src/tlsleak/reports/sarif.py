"""SARIF 2.1.0 for code scanning (``check --sarif FILE``, ``fuzz --sarif FILE``).

One result per distinct finding (:class:`~tlsleak.reports.ci.Distinct`: one
signature), its ``ruleId`` the finding's kind (``tlsleak/leak``, ...), its
message the finding's one-line summary.  Where the ledgers named the target's
own line that made the first thing lost (``Finding.caller``: a C frame
``file.c:LINE (function)`` from the ``heap`` ledger, a Python frame
``pkg/mod.py:LINE (function)`` from ``openssl-objects``) that frame is the
location, and the whole stack goes in ``stacks``; otherwise the location is
logical: the target and the failing step.  The reproducer (the stored folder,
or the case file) is a related location, and ``partialFingerprints`` carry the
sha256 of the signature, so that code scanning sees the same bug as the same
alert across runs, whichever case or line showed it this time.

C frames name the file by its base name (that is what :mod:`tlsleak.ledgers.symbols`
keeps, so that a rebuild elsewhere names the same place); code scanning
resolves a relative URI against the repository's root.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any, Final
from urllib.parse import quote

from tlsleak._version import __version__
from tlsleak.check.oracle import FindingKind
from tlsleak.reports.ci import Distinct, RunInfo, exit_meaning

__all__ = ["FINGERPRINT", "LEVELS", "RULES", "SCHEMA_URI", "fingerprint", "rule_id", "sarif_log"]

SCHEMA_URI: Final = (
    "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
)

#: The ``partialFingerprints`` key: the signature's hash, version 1 of how it is made.
FINGERPRINT: Final = "tlsleakSignatureHash/v1"

#: How bad each kind is: resources lost, a dead or stuck process, an exception
#: or a prompt that blocks a service are errors; memory only the collector
#: frees, and errors left for the next caller to misread, warnings.
LEVELS: Final = {
    FindingKind.LEAK: "error",
    FindingKind.CYCLE: "warning",
    FindingKind.ERROR_QUEUE: "warning",
    FindingKind.EXCEPTION: "error",
    FindingKind.CRASH: "error",
    FindingKind.TIMEOUT: "error",
    FindingKind.PROMPT: "error",
}

#: Each kind's rule: a name, and what it means (docs/findings.md says more).
RULES: Final = {
    FindingKind.LEAK: (
        "ResourceLeak",
        "Resource leaked on a TLS init path",
        "Live counts (OpenSSL objects, heap blocks, file descriptors) grew on every replay "
        "of the attempt and were never freed: the error path returns without freeing what "
        "it made.",
    ),
    FindingKind.CYCLE: (
        "ReferenceCycle",
        "Resources freed only by the garbage collector",
        "Live counts grew on every replay and only a garbage collection freed them: a "
        "reference cycle holds OpenSSL objects until the collector runs.",
    ),
    FindingKind.ERROR_QUEUE: (
        "ErrorQueueLeft",
        "Entries left on the OpenSSL error queue",
        "The init path returned with entries left on OpenSSL's per-thread error queue: the "
        "next caller on the thread reads errors that are not its own.",
    ),
    FindingKind.EXCEPTION: (
        "UnexpectedException",
        "Exception that is not a documented rejection",
        "Malformed input made the init path raise an exception other than the documented "
        "rejection.",
    ),
    FindingKind.CRASH: (
        "Crash",
        "Process killed by a signal",
        "The process running the init path died on a signal (a segmentation fault, an "
        "abort) on this input.",
    ),
    FindingKind.TIMEOUT: (
        "Timeout",
        "Init path did not return in time",
        "The init path did not return within the timeout on this input.",
    ),
    FindingKind.PROMPT: (
        "PassphrasePrompt",
        "OpenSSL prompted for a pass phrase",
        "OpenSSL asked for a pass phrase on the terminal: no password callback was given, "
        "and a service would hang waiting for someone to type.",
    ),
}

#: ``file:LINE (function)`` or ``file:LINE``: a frame with a source line.
_FRAME: Final = re.compile(r"^(?P<file>[^\s()][^()]*?):(?P<line>[1-9]\d*)(?: \((?P<func>.+)\))?$")


def rule_id(kind: str) -> str:
    return f"tlsleak/{kind}"


def fingerprint(signature: str) -> str:
    """The hash code scanning matches results by: sha256 of the signature, hex."""
    return hashlib.sha256(signature.encode("utf-8")).hexdigest()


def sarif_log(run: RunInfo, findings: Sequence[Distinct]) -> dict[str, Any]:
    """A SARIF 2.1.0 log of one run of ``check`` or ``fuzz``, as JSON data."""
    kinds = list(FindingKind)
    invocation: dict[str, Any] = {
        "executionSuccessful": run.succeeded,
        "exitCode": run.exit_status,
        "exitCodeDescription": exit_meaning(run.exit_status),
    }
    if run.problem is not None:
        invocation["toolExecutionNotifications"] = [
            {"level": "error", "message": {"text": run.problem}}
        ]
    return {
        "$schema": SCHEMA_URI,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "tlsleak",
                        "version": __version__,
                        "rules": [_rule(kind) for kind in kinds],
                    }
                },
                # Code scanning keeps one set of alerts per category: one per
                # command and target, so that runs on other targets don't close them.
                "automationDetails": {"id": f"tlsleak/{run.command}/{run.target}/"},
                "invocations": [invocation],
                "results": [_result(f, kinds.index(FindingKind(f.kind))) for f in findings],
            }
        ],
    }


def _rule(kind: FindingKind) -> dict[str, Any]:
    name, short, full = RULES[kind]
    return {
        "id": rule_id(str(kind)),
        "name": name,
        "shortDescription": {"text": short},
        "fullDescription": {"text": full},
        "help": {
            "text": f"{full} Replay the stored finding with 'tlsleak replay FOLDER' "
            "(docs/findings.md)."
        },
        "defaultConfiguration": {"level": LEVELS[kind]},
        "properties": {"tags": ["tlsleak", str(kind)]},
    }


def _result(finding: Distinct, rule_index: int) -> dict[str, Any]:
    result: dict[str, Any] = {
        "ruleId": rule_id(finding.kind),
        "ruleIndex": rule_index,
        "level": LEVELS[FindingKind(finding.kind)],
        "message": {"text": finding.summary},
        "locations": [_primary(finding)],
        "partialFingerprints": {FINGERPRINT: fingerprint(finding.signature)},
        "properties": {
            "signature": finding.signature,
            "steps": list(finding.steps),
            "cases": finding.cases,
            "growth": finding.what,
            "replay": finding.replay,
        },
    }
    if finding.stack:
        result["stacks"] = [
            {
                "message": {"text": "stack of the first thing lost, innermost frame first"},
                "frames": [{"location": _frame_location(frame)} for frame in finding.stack],
            }
        ]
    if finding.reproducer is not None:
        what = "stored finding folder" if finding.replay.startswith("tlsleak replay") else "case"
        result["relatedLocations"] = [
            {
                "id": 1,
                "physicalLocation": {"artifactLocation": {"uri": _uri(finding.reproducer)}},
                "message": {"text": f"reproducer ({what}): {finding.replay}"},
            }
        ]
    return result


def _primary(finding: Distinct) -> dict[str, Any]:
    """The caller's frame when it has a source line; else the target and the step."""
    if finding.caller is not None and _FRAME.match(finding.caller):
        return _frame_location(finding.caller)
    step = finding.steps[0] if finding.steps else "-"
    return {
        "logicalLocations": [
            {"name": step, "fullyQualifiedName": f"{finding.target}/{step}", "kind": "function"}
        ],
        "message": {"text": f"{finding.target}, step {step}"},
    }


def _frame_location(frame: str) -> dict[str, Any]:
    """One stack frame: a file and line (and function) where known, else its text."""
    match = _FRAME.match(frame)
    if match is None:  # object(symbol+offset): no debug info
        return {"logicalLocations": [{"fullyQualifiedName": frame}]}
    location: dict[str, Any] = {
        "physicalLocation": {
            "artifactLocation": {"uri": _uri(PurePosixPath(match["file"]))},
            "region": {"startLine": int(match["line"])},
        }
    }
    if match["func"]:
        location["logicalLocations"] = [{"name": match["func"], "kind": "function"}]
    return location


def _uri(path: PurePosixPath | Path) -> str:
    """A URI reference for ``path``: ``file://`` when absolute, relative otherwise."""
    if path.is_absolute():
        return Path(path).as_uri()
    return quote(path.as_posix(), safe="/")
