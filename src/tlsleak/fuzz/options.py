"""What a fuzz campaign is asked to do, and the libFuzzer flags it keeps to itself.

Its own module so that every part of a campaign (:mod:`tlsleak.fuzz.workers`,
:mod:`tlsleak.fuzz.shared_corpus`, :mod:`tlsleak.fuzz.campaign`) can read the options
and raise :class:`CampaignError` without importing the campaign itself.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from tlsleak.check.minimize import DEFAULT_BUDGET
from tlsleak.check.oracle import DEFAULT_REPLAYS
from tlsleak.fuzz import MAX_JOBS

__all__ = [
    "MAX_JOBS",
    "RESERVED_FLAGS",
    "CampaignError",
    "CampaignOptions",
    "check_libfuzzer_flags",
]

#: libFuzzer flags the campaign sets itself, with the option to use instead.
RESERVED_FLAGS: Final = {
    "artifact_prefix": "findings go to --out",
    "exact_artifact_path": "findings go to --out",
    "handle_term": "the campaign stops its workers itself",
    "handle_int": "the campaign stops its workers itself",
    "seed": "use --seed",
    "jobs": "use --jobs",
    "workers": "use --jobs",
    "fork": "use --jobs",
    "merge": "use tlsleak corpus merge",
    "timeout": "use --timeout",
    "max_total_time": "use --time",
    "reload": "the campaign shares the corpus between workers itself",
}
_FLAG: Final = re.compile(r"-([a-z_]+)=(.*)", re.S)


class CampaignError(Exception):
    """The campaign can't start (bad option, folder or target): one line for the user."""


def check_libfuzzer_flags(flags: Sequence[str]) -> list[str]:
    """``flags`` checked: each ``-name=value``, none that the campaign sets itself."""
    for flag in flags:
        match = _FLAG.fullmatch(flag)
        if match is None:
            raise CampaignError(f"libFuzzer flag {flag!r}: expected -name=value")
        if match.group(1) in RESERVED_FLAGS:
            why = RESERVED_FLAGS[match.group(1)]
            raise CampaignError(f"libFuzzer flag -{match.group(1)} is set by tlsleak: {why}")
    return list(flags)


@dataclass(frozen=True)
class CampaignOptions:
    """What to fuzz, where, for how long."""

    target: str
    out: Path
    #: The corpus to use and grow; None: ``out/corpus``, seeded from the bundled one.
    corpus: Path | None = None
    #: Worker processes, 1 to :data:`MAX_JOBS`.
    jobs: int = 1
    #: Seconds to run; None: until :meth:`~tlsleak.fuzz.campaign.Campaign.stop`.
    seconds: float | None = None
    seed: int = 0
    #: Feed libFuzzer Python coverage only (no error-path guidance).
    plain: bool = False
    #: ``structure`` (the structure-aware custom mutator, :mod:`tlsleak.cases.mutator`)
    #: or ``bytes`` (libFuzzer's own byte mutations).
    mutator: str = "structure"
    replays: int = DEFAULT_REPLAYS
    #: Seconds one input may take (with its replays) before it is a timeout.
    timeout: float = 10.0
    minimize_budget: int = DEFAULT_BUDGET
    max_len: int = 64 * 1024
    libfuzzer_flags: tuple[str, ...] = ()
    #: Make the allocation each input names fail (``InitCase.fail_alloc``, which
    #: the mutators then change too); off: a fail point an input carries is ignored.
    fail_alloc: bool = False
