"""tlsleak: hunt resource leaks (and crashes) in the error paths of TLS init code.

Generate malformed certificate and key blobs (:mod:`tlsleak.strategies`),
drive them through a TLS init path (a *target*), and check that every live
resource count returns to its baseline after each attempt (the *oracle*).

The public surface is small on purpose; everything here is documented and
kept stable across minor versions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tlsleak._version import __version__

if TYPE_CHECKING:
    from tlsleak.cases.case import InitCase, Mode, decode, encode
    from tlsleak.check.oracle import LeakError, Oracle, assert_no_leaks
    from tlsleak.check.verdict import Finding, FindingKind, Verdict
    from tlsleak.openssl.errors import OpenSSLError
    from tlsleak.targets import CallableTarget, Outcome, Rejected, Status, Step, Target

# Where each public name lives.  They are imported on first use (PEP 562) so
# that ``import tlsleak.<module>`` runs nothing else: the fuzz worker imports
# the oracle and the targets inside atheris's instrument_imports(), which only
# instruments modules imported for the first time there.
_HOMES = {
    "InitCase": "tlsleak.cases.case",
    "Mode": "tlsleak.cases.case",
    "decode": "tlsleak.cases.case",
    "encode": "tlsleak.cases.case",
    "OpenSSLError": "tlsleak.openssl.errors",
    "Finding": "tlsleak.check.verdict",
    "FindingKind": "tlsleak.check.verdict",
    "LeakError": "tlsleak.check.oracle",
    "Oracle": "tlsleak.check.oracle",
    "Verdict": "tlsleak.check.verdict",
    "assert_no_leaks": "tlsleak.check.oracle",
    "CallableTarget": "tlsleak.targets",
    "Outcome": "tlsleak.targets",
    "Rejected": "tlsleak.targets",
    "Status": "tlsleak.targets",
    "Step": "tlsleak.targets",
    "Target": "tlsleak.targets",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'tlsleak' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "CallableTarget",
    "Finding",
    "FindingKind",
    "InitCase",
    "LeakError",
    "Mode",
    "OpenSSLError",
    "Oracle",
    "Outcome",
    "Rejected",
    "Status",
    "Step",
    "Target",
    "Verdict",
    "__version__",
    "assert_no_leaks",
    "decode",
    "encode",
]
