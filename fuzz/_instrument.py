"""What the fuzz entry points instrument (shared by both).

Only :mod:`tlsleak.fuzz.instrumentation` is imported here, which imports nothing
else (``import tlsleak`` itself is lazy): atheris instruments only modules
first imported inside ``instrument_imports()``, and the entry points do that
import there.
"""

from __future__ import annotations

import os

from tlsleak.fuzz.instrumentation import NOT_INSTRUMENTED
from tlsleak.fuzz.instrumentation import instrumented_packages as _packages

__all__ = ["NOT_INSTRUMENTED", "TARGET_SPEC", "instrumented_packages"]

#: The target to fuzz: a built-in name or package.module:function.
TARGET_SPEC = os.environ.get("TLSLEAK_TARGET", "pyopenssl")


def instrumented_packages(spec: str = TARGET_SPEC) -> list[str]:
    """The packages to instrument for ``spec`` (default: ``TLSLEAK_TARGET``)."""
    return _packages(spec)
