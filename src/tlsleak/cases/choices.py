"""Where a mutator's decisions come from: a seeded RNG or Hypothesis's ``draw``.

The structure-aware mutators (:mod:`tlsleak.cases.der`, :mod:`tlsleak.cases.pem`) are
written once against :class:`Choices` and used twice:

- by the fuzzer's custom mutator, with :class:`RandomChoices` around a
  ``random.Random`` seeded from libFuzzer's seed, so a mutation is
  reproducible;
- by Hypothesis strategies, with :class:`DrawChoices` around ``draw``, so every
  decision is a Hypothesis choice and shrinks like one: integers towards
  ``low``, choices towards the first option, byte strings towards short and
  zero, booleans towards False.

A mutator lists its options simplest first, so that what Hypothesis shrinks
towards is also the least surprising mutation.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

__all__ = ["Choices", "DrawChoices", "RandomChoices", "SimplestChoices"]

T = TypeVar("T")


class Choices(Protocol):
    """A source of decisions; every method shrinks towards its first/smallest answer."""

    def integer(self, low: int, high: int) -> int:
        """An integer in ``[low, high]`` (both included; ``low <= high``)."""
        ...

    def choice(self, options: Sequence[T]) -> T:
        """One of ``options`` (not empty)."""
        ...

    def boolean(self) -> bool: ...

    def blob(self, min_size: int, max_size: int) -> bytes:
        """Bytes of a length in ``[min_size, max_size]``."""
        ...


class RandomChoices:
    """Decisions from a ``random.Random`` (the fuzzer's custom mutator)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def integer(self, low: int, high: int) -> int:
        return self.rng.randint(low, high)

    def choice(self, options: Sequence[T]) -> T:
        return options[self.rng.randrange(len(options))]

    def boolean(self) -> bool:
        return self.rng.random() < 0.5

    def blob(self, min_size: int, max_size: int) -> bytes:
        return self.rng.randbytes(self.rng.randint(min_size, max_size))


class DrawChoices:
    """Decisions drawn through Hypothesis (inside ``@st.composite`` or ``st.data()``)."""

    # Any callable taking a strategy: ``draw`` in @st.composite (a DrawFn) and
    # ``data.draw`` of st.data() have different signatures past the first
    # argument, and both must fit.
    def __init__(self, draw: Callable[[SearchStrategy[Any]], Any]) -> None:
        self.draw = draw

    def integer(self, low: int, high: int) -> int:
        value: int = self.draw(st.integers(low, high))
        return value

    def choice(self, options: Sequence[T]) -> T:
        return options[self.integer(0, len(options) - 1)]

    def boolean(self) -> bool:
        value: bool = self.draw(st.booleans())
        return value

    def blob(self, min_size: int, max_size: int) -> bytes:
        value: bytes = self.draw(st.binary(min_size=min_size, max_size=max_size))
        return value


class SimplestChoices:
    """The answers Hypothesis shrinks towards: lowest integer, first option, False, zeros.

    What a mutator does with these is what a failing example shrinks to, so
    tests (and users) can see a mutation's simplest form without a search.
    """

    def integer(self, low: int, high: int) -> int:
        return low

    def choice(self, options: Sequence[T]) -> T:
        return options[0]

    def boolean(self) -> bool:
        return False

    def blob(self, min_size: int, max_size: int) -> bytes:
        return bytes(min_size)
