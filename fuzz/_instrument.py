"""What the fuzz entry points instrument (shared by both; imports nothing of tlsleak).

It must not import tlsleak: atheris instruments only modules first imported
inside ``instrument_imports()``, and the entry points do that import there.
"""

from __future__ import annotations

import os

#: The target to fuzz: a built-in name or package.module:function.
TARGET_SPEC = os.environ.get("TLSLEAK_TARGET", "pyopenssl")

# The ledgers are the measuring instrument, not code under test: their branches
# follow allocator address reuse and interposer set-up rather than the input,
# which would feed libFuzzer coverage that is noise, and tracing them cost 15-30%
# of the executions per second when measured.  (atheris matches these names
# exactly, so each module is listed.)
NOT_INSTRUMENTED = [
    "tlsleak.ledgers",
    "tlsleak.ledgers.base",
    "tlsleak.ledgers.fds",
    "tlsleak.ledgers.objects",
]


def instrumented_packages(spec: str = TARGET_SPEC) -> list[str]:
    """tlsleak and pyOpenSSL, plus the top package of a ``package.module:function`` target.

    Hypothesis stays uninstrumented: its coverage says nothing about the init
    path and would only slow every execution down.
    """
    packages = ["tlsleak", "OpenSSL"]
    module, sep, _ = spec.partition(":")
    if sep and module:
        packages.append(module.split(".", 1)[0])
    return packages
