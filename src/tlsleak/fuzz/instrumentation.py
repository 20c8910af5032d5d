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

Under ``--fail-alloc`` the init paths whose failures go through the heap
interposer (the k-th ``malloc`` of the whole process) meet a cost of tracing
itself: an instrumented function's frame is larger, and when an exception
passes through it CPython materialises its frame object, which past 512
bytes no longer comes from pymalloc's arenas but from ``malloc``.  Failing
that allocation, CPython 3.11 loses the ``MemoryError``
(``SystemError: error return without exception set``), which an untraced
``replay`` never gives.  atheris's own hook allocations are left out of the
numbering by the worker (:func:`tlsleak.fuzz.worker.quiet_hooks`); these
frames cannot be, so :data:`UNTRACED_WHEN_FAILING` lists the init paths
measured to meet them, and a ``--fail-alloc`` worker leaves those alone
(docs/fuzzing.md, "Allocation failures").
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

__all__ = [
    "NOT_INSTRUMENTED",
    "TARGET_MODULES",
    "UNTRACED_WHEN_FAILING",
    "instrumented_packages",
    "not_instrumented",
]

#: tlsleak's own modules that are init paths under test: instrumented in a campaign.
TARGET_MODULES: Final = frozenset(
    {
        "tlsleak.targets.callable",
        "tlsleak.targets.clib",
        "tlsleak.targets.control",
        "tlsleak.targets.grpc_target",
        # Not tlsleak.targets.mbedtls: its allocations fail through the heap
        # interposer, and traced, its frames' objects (see the module's
        # docstring) gave false findings under --fail-alloc (docs/mbedtls.md).
        "tlsleak.targets.mongoose",
        "tlsleak.targets.pyopenssl",
        "tlsleak.targets.stdlib_ssl",
    }
)
#: Init paths of :data:`TARGET_MODULES` a ``--fail-alloc`` worker leaves untraced:
#: measured, their traced frames' objects were failed (3 minutes of grpc
#: --fail-alloc with quiet hooks: a false ``SystemError`` 7 times traced, never
#: untraced).
UNTRACED_WHEN_FAILING: Final = frozenset({"tlsleak.targets.grpc_target"})
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


def not_instrumented(spec: str, *, fail_alloc: bool = False) -> list[str]:
    """What a campaign worker on target ``spec`` leaves uninstrumented: tlsleak but its target.

    atheris matches excluded names exactly, so every module is listed; a
    ``package.module:function`` target inside tlsleak stays instrumented.
    With ``fail_alloc``, the init paths of :data:`UNTRACED_WHEN_FAILING` too.
    """
    module, sep, _ = spec.partition(":")
    traced = TARGET_MODULES - UNTRACED_WHEN_FAILING if fail_alloc else TARGET_MODULES
    keep = traced | ({module} if sep and module != "c" else set())
    return sorted(set(NOT_INSTRUMENTED) | {m for m in tlsleak_modules() if m not in keep})
