"""tlsleak: hunt resource leaks (and crashes) in the error paths of TLS init code.

Generate malformed certificate and key blobs (:mod:`tlsleak.strategies`),
drive them through a TLS init path (a *target*), and check that every live
resource count returns to its baseline after each attempt (the *oracle*).

The public surface is small on purpose; everything here is documented and
kept stable across minor versions.
"""

from __future__ import annotations

__version__ = "0.1.0"

from tlsleak.case import InitCase, Mode, decode, encode
from tlsleak.errors import OpenSSLError
from tlsleak.oracle import (
    Finding,
    FindingKind,
    LeakError,
    Oracle,
    Verdict,
    assert_no_leaks,
)
from tlsleak.targets import CallableTarget, Outcome, Rejected, Status, Step, Target

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
