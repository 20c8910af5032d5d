"""The JSON report of ``tlsleak check`` (``--json FILE``).

Unlike the text report it holds every finding, each with the case file that
showed it and all of its allocation sites (with ``caller`` and ``stack``:
the target's own line that lost the first block or object and its whole
stack, when the ``heap`` ledger's C stacks or the ``openssl-objects``
ledger's Python ones name them, left out otherwise), ``blind``: each
ledger that was asked for or is a default of the target but cannot see it,
with why (a blind ledger is dropped, never reported as zero), and
``network``: whether the worker was off the network
(:class:`tlsleak._netns.Network`), whatever the answer.  It names its format
first (:data:`FORMAT`; its schema is docs/schemas/, see docs/formats.md).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from tlsleak._netns import Network
from tlsleak._version import __version__
from tlsleak.check.oracle import Finding

__all__ = ["FORMAT", "check_report", "encode"]

#: The ``format`` of a ``tlsleak check --json`` report: a name, then the major version.
FORMAT: Final = "tlsleak-check/1"


def check_report(
    target: str,
    *,
    ledgers: Sequence[str] | None,
    replays: int,
    files: Sequence[Path],
    statuses: Counter[str],
    findings: Sequence[tuple[Path, Finding]],
    network: Network | None = None,
    blind: Mapping[str, str] | None = None,
    unconfirmed: Sequence[tuple[Path, Finding]] = (),
) -> dict[str, Any]:
    """The report of a check of ``files`` on ``target`` with ``ledgers``, as JSON data.

    ``network`` (the worker's) is left out only when it is not known;
    ``unconfirmed`` (findings no fresh worker gave alone: tlsleak.check.alone)
    only when there are none.
    """
    return {
        "format": FORMAT,
        "tool": "tlsleak",
        "version": __version__,
        "target": target,
        "ledgers": ledgers,
        "blind": dict(blind or {}),
        "replays": replays,
        "cases": len(files),
        "outcomes": dict(statuses),
        **({"network": network.to_json()} if network is not None else {}),
        "findings": [{**f.to_json(), "file": str(path)} for path, f in findings],
        **(
            {"unconfirmed": [{**f.to_json(), "file": str(p)} for p, f in unconfirmed]}
            if unconfirmed
            else {}
        ),
    }


def encode(report: dict[str, Any]) -> bytes:
    """``report`` as the bytes of a JSON file: indented, UTF-8, with a final newline."""
    return (json.dumps(report, indent=2) + "\n").encode("utf-8")
