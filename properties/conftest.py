"""Hypothesis profiles for the property tests.

Pick one with ``TLSLEAK_HYPOTHESIS_PROFILE`` (dev, ci, nightly); the default is
``ci`` when the ``CI`` environment variable is set, else ``dev``.

- ``dev``: Hypothesis's defaults (100 examples) without a deadline, with the
  example database in the project's ``.hypothesis/examples`` (wherever pytest
  is started from), so a failure found once is tried first next time.
- ``ci``: 50 derandomized examples and no database, so a CI run is
  reproducible and fast.
- ``nightly``: 2000 examples, to find what the quick profiles miss (same
  database as ``dev``).

Whatever the profile, the properties in ``test_targets.py`` first run the
fuzzer's reproducers in ``examples/``, and keep a failing case as a case file
(``tlsleak.sharing``; import with ``tlsleak corpus import --from-hypothesis``).

None has a deadline: the first example of a run builds the key pool (2048-bit
RSA keys take a quarter of a second each), which says nothing about the code
under test.  ``too_slow`` is suppressed for the same reason.
"""

from __future__ import annotations

import os
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis.database import DirectoryBasedExampleDatabase

_SLOW_START = [HealthCheck.too_slow]
_DATABASE = DirectoryBasedExampleDatabase(Path(__file__).parent.parent / ".hypothesis" / "examples")

settings.register_profile(
    "dev", deadline=None, suppress_health_check=_SLOW_START, database=_DATABASE
)
settings.register_profile(
    "ci",
    derandomize=True,
    max_examples=50,
    deadline=None,
    database=None,
    suppress_health_check=_SLOW_START,
    print_blob=True,
)
settings.register_profile(
    "nightly",
    max_examples=2000,
    deadline=None,
    suppress_health_check=_SLOW_START,
    database=_DATABASE,
)

settings.load_profile(
    os.environ.get("TLSLEAK_HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev")
)
