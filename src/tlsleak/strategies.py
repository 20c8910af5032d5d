"""Hypothesis strategies for init cases, valid and malformed (the public home).

Use them in property tests of your own init path::

    from hypothesis import given
    from tlsleak.strategies import init_cases

    @given(init_cases(key_types=["ec-p256", "rsa2048"]))
    def test_my_init_path_does_not_leak(case): ...

What each strategy generates, and how it shrinks, is documented on the
strategy itself.  They live in :mod:`tlsleak.cases.strategies` beside the
material and defects they draw from; this module is the stable import path.
"""

from __future__ import annotations

from tlsleak.cases.strategies import (
    MUTATED,
    generate,
    init_cases,
    key_types,
    malformed_cases,
    mutated_cases,
    valid_cases,
)

__all__ = [
    "MUTATED",
    "generate",
    "init_cases",
    "key_types",
    "malformed_cases",
    "mutated_cases",
    "valid_cases",
]
