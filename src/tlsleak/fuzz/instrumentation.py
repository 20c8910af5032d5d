"""Which modules atheris instruments (shared by the fuzz worker and ``fuzz/``).

This module imports nothing from tlsleak: atheris instruments only modules
first imported inside ``instrument_imports()``, and whoever uses these lists
must still be able to import the modules to fuzz for the first time there.

A campaign worker (:func:`not_instrumented`) instruments the target's code
only: the third-party packages of :func:`instrumented_packages` and, of
tlsleak, the init paths in :data:`TARGET_MODULES`.  The rest of tlsleak (the
case decoder, the oracle, the error-queue readers, the ledgers) runs on
every input whatever it is; tracing it cost 10-20% of a pyopenssl worker's
executions per second (``bench/bench_campaign_speed.py``), and its branches
say little the error-path guidance does not say better.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

__all__ = ["NOT_INSTRUMENTED", "TARGET_MODULES", "instrumented_packages", "not_instrumented"]

#: tlsleak's own modules that are init paths under test: instrumented in a campaign.
TARGET_MODULES: Final = frozenset(
    {
        "tlsleak.targets.callable",
        "tlsleak.targets.clib",
        "tlsleak.targets.control",
        "tlsleak.targets.grpc_target",
        # Not tlsleak.targets.mbedtls: its allocations fail through the heap
        # interposer (k-th malloc of the process), which under --fail-alloc
        # fails atheris's own hook allocations in traced code (docs/mbedtls.md).
        "tlsleak.targets.mongoose",
        "tlsleak.targets.pyopenssl",
        "tlsleak.targets.stdlib_ssl",
    }
)
_PACKAGE: Final = Path(__file__).resolve().parents[1]

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


def tlsleak_modules() -> list[str]:
    """Every module of tlsleak, by name, from the files (nothing is imported)."""
    names = set()
    for path in _PACKAGE.rglob("*.py"):
        parts = path.relative_to(_PACKAGE.parent).with_suffix("").parts
        names.add(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return sorted(names)


def not_instrumented(spec: str) -> list[str]:
    """What a campaign worker on target ``spec`` leaves uninstrumented: tlsleak but its target.

    atheris matches excluded names exactly, so every module is listed; a
    ``package.module:function`` target inside tlsleak stays instrumented.
    """
    module, sep, _ = spec.partition(":")
    keep = TARGET_MODULES | ({module} if sep and module != "c" else set())
    return sorted(set(NOT_INSTRUMENTED) | {m for m in tlsleak_modules() if m not in keep})
