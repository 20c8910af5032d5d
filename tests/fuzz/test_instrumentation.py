"""What a campaign worker instruments: the target's code, not tlsleak's own machinery.

Positive control: the target's module (``tlsleak.targets.control``) is
instrumented when imported the way the worker imports it.  Negative control:
the oracle and the case decoder, which run on every input whatever it is,
are not.
"""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import pytest

import tlsleak
from tlsleak.fuzz.instrumentation import (
    NOT_INSTRUMENTED,
    TARGET_MODULES,
    not_instrumented,
    tlsleak_modules,
)


def test_tlsleak_modules_are_every_module_of_the_package() -> None:
    walked = {m.name for m in pkgutil.walk_packages(tlsleak.__path__, "tlsleak.")}
    assert set(tlsleak_modules()) == walked | {"tlsleak"}


@pytest.mark.parametrize("spec", ["pyopenssl", "ssl", "control-fixed", "c:/x/lib.so"])
def test_a_worker_leaves_all_of_tlsleak_but_the_init_paths_alone(spec: str) -> None:
    excluded = set(not_instrumented(spec))
    assert set(NOT_INSTRUMENTED) <= excluded
    assert {"tlsleak.check.oracle", "tlsleak.cases.case", "tlsleak.openssl.errors"} <= excluded
    assert not TARGET_MODULES & excluded
    assert set(tlsleak_modules()) - TARGET_MODULES <= excluded


def test_a_callable_target_inside_tlsleak_stays_instrumented() -> None:
    assert "tlsleak.cases.describe" not in not_instrumented("tlsleak.cases.describe:f")
    assert "tlsleak.cases.describe" in not_instrumented("pyopenssl")


# Imports as the worker does (tlsleak.fuzz.worker.main), then says which
# modules carry atheris's mark in their code.
_PROBE = """
import atheris, sys
from tlsleak.fuzz.instrumentation import instrumented_packages, not_instrumented
spec = sys.argv[1]
include, exclude = instrumented_packages(spec), not_instrumented(spec)
with atheris.instrument_imports(include=include, exclude=exclude):
    from tlsleak.cases.case import decode
    from tlsleak.check.oracle import Oracle
    from tlsleak.targets import resolve_target
    resolve_target(spec)
def marked(module):
    return any(
        "__ATHERIS_INSTRUMENTED__" in getattr(f, "__code__", None).co_consts
        for f in vars(sys.modules[module]).values()
        if getattr(f, "__module__", None) == module and hasattr(f, "__code__")
    )
for name in ("tlsleak.targets.control", "tlsleak.check.oracle", "tlsleak.cases.case"):
    print(name, marked(name))
"""


def test_the_target_is_instrumented_and_the_oracle_is_not() -> None:
    pytest.importorskip("atheris", reason="instrumentation needs atheris")
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, "control-fixed"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    marked = dict(line.split() for line in done.stdout.splitlines())
    assert marked == {
        "tlsleak.targets.control": "True",
        "tlsleak.check.oracle": "False",
        "tlsleak.cases.case": "False",
    }
