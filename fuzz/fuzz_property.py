#!/usr/bin/env python3
"""Fuzz a TLS init path for leaks through tlsleak's Hypothesis property.

Bug class: as ``fuzz_oracle.py`` - resource leaks, entries left on OpenSSL's
error queue and unexpected exceptions in the error paths of TLS init code -
but the inputs are structured: libFuzzer's bytes drive the choices of
``tlsleak.strategies.init_cases()``, so every execution is a valid identity or
one damaged by a named defect instead of raw bytes decoded as a case.

The target is named by ``TLSLEAK_TARGET`` (default ``pyopenssl``).  A failing
example raises ``tlsleak.LeakError`` (libFuzzer saves the input as
``crash-<sha1>``).  The saved file holds Hypothesis's choice bytes, not an
encoded case: replay it with this script, not with ``fuzz_oracle.py``.
"""

from __future__ import annotations

import os
import sys

import atheris
from hypothesis import given, settings

# Neither imports anything of tlsleak that is to be instrumented: atheris
# instruments only modules first imported inside instrument_imports().
from tlsleak.fuzz.entry import DEFAULT_TARGET, libfuzzer_argv
from tlsleak.fuzz.instrumentation import NOT_INSTRUMENTED, instrumented_packages

TARGET_SPEC = os.environ.get("TLSLEAK_TARGET") or DEFAULT_TARGET

with atheris.instrument_imports(
    include=instrumented_packages(TARGET_SPEC), exclude=NOT_INSTRUMENTED
):
    import tlsleak
    from tlsleak.strategies import init_cases
    from tlsleak.targets import resolve_target

    # Resolving imports the target's module; inside this block it is instrumented.
    TARGET = resolve_target(TARGET_SPEC)


# No example database: libFuzzer keeps the corpus and the crash files, and a
# database would only collect failing examples under .hypothesis/examples in
# whatever directory the campaign runs in.  No deadline: the oracle replays a
# case that grew a count, so a finding's execution is several times slower
# than a clean one, and that is no bug.
@settings(database=None, deadline=None)
@given(init_cases())
def test_init_path_does_not_leak(case: tlsleak.InitCase) -> None:
    tlsleak.assert_no_leaks(TARGET, case)


TestOneInput = test_init_path_does_not_leak.hypothesis.fuzz_one_input


def main() -> None:
    # argv[0] becomes a command that re-runs this interpreter on this script,
    # which libFuzzer's -jobs/-fork/-workers start more of (tlsleak.fuzz.entry).
    argv = libfuzzer_argv(sys.argv)
    if not any(arg.startswith("-len_control=") for arg in argv):
        # libFuzzer grows its length limit slowly from 4 bytes, but Hypothesis
        # needs a few dozen bytes of choices for a single case and rejects
        # anything shorter: without this the first thousands of executions
        # are all wasted.  An explicit -len_control=N still wins.
        argv.append("-len_control=0")
    atheris.Setup(argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
