"""Which modules atheris instruments (shared by the fuzz worker and ``fuzz/``).

This module imports nothing: atheris instruments only modules first imported
inside ``instrument_imports()``, and whoever uses these lists must still be
able to import the modules to fuzz for the first time there.
"""

from __future__ import annotations

__all__ = ["NOT_INSTRUMENTED", "instrumented_packages"]

# The ledgers are the measuring instrument, not code under test: their branches
# follow allocator address reuse and interposer set-up rather than the input,
# which would feed libFuzzer coverage that is noise, and tracing them cost 15-30%
# of the executions per second when measured.  The campaign machinery around
# the oracle (guidance, the worker, the mutators' drivers) is the fuzzer's own
# code.  atheris matches these names exactly, so each module is listed.
NOT_INSTRUMENTED = [
    "tlsleak.ledgers",
    "tlsleak.ledgers._preload",
    "tlsleak.ledgers.base",
    "tlsleak.ledgers.fds",
    "tlsleak.ledgers.heap",
    "tlsleak.ledgers.interposer",
    "tlsleak.ledgers.objects",
    "tlsleak.ledgers.process_heap",
    "tlsleak.ledgers.pyobjects",
    "tlsleak.ledgers.shim",
    "tlsleak.ledgers.symbols",
    "tlsleak.fuzz.guidance",
    "tlsleak.fuzz.worker",
    "tlsleak.cases.mutator",
    "tlsleak.cases.choices",
    "tlsleak.cases.der",
    "tlsleak.cases.pem",
]


def instrumented_packages(spec: str) -> list[str]:
    """tlsleak and pyOpenSSL, plus the top package of a ``package.module:function`` target.

    Hypothesis stays uninstrumented: its coverage says nothing about the init
    path and would only slow every execution down.
    """
    packages = ["tlsleak", "OpenSSL"]
    module, sep, _ = spec.partition(":")
    if sep and module:
        packages.append(module.split(".", 1)[0])
    return packages
