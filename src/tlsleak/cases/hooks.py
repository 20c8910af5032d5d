"""tlsleak in Hypothesis's plug-in points: ``st.from_type(InitCase)`` and statistics events.

**from_type.**  Hypothesis loads every entry point of the ``hypothesis`` group
when it is itself imported and calls it; tlsleak's (``pyproject.toml``) is
:func:`_hypothesis_setup_hook`, which registers :func:`~tlsleak.cases.strategies.init_cases`
for :class:`~tlsleak.cases.case.InitCase`.  So ``st.from_type(InitCase)``, and
``st.builds`` of anything with an ``InitCase`` field, draw tlsleak's cases
instead of whatever Hypothesis would make of the dataclass's bytes fields.  The
hook runs in every process that imports Hypothesis with tlsleak installed, so
it stays light: it imports the case model (standard library only) and defers
the strategies, whose material pulls in ``cryptography``, to the first draw.
A registration of your own (``st.register_type_strategy(InitCase, ...)``)
replaces it, as it runs later.

**Events.**  :func:`note` records ``tlsleak KIND: VALUE`` with
:func:`hypothesis.event`, so that ``pytest --hypothesis-show-statistics``
says which defects were drawn and how the attempts ended.  Outside a
Hypothesis test (the fuzzer, ``tlsleak check``, plain calls) it does nothing,
and it never imports Hypothesis itself: a process that has not imported it is
not running a Hypothesis test.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from hypothesis.strategies import SearchStrategy

    from tlsleak.cases.case import InitCase

__all__ = ["EVENT_PREFIX", "note", "note_outcome", "quiet"]

#: What every event tlsleak records starts with, so they sort together.
EVENT_PREFIX: Final = "tlsleak "

# Set while a strategy draws a case that is not the example itself (the
# crossover partner of a mutation), whose defects would otherwise be counted.
_QUIET: ContextVar[bool] = ContextVar("tlsleak_quiet_events", default=False)


def _hypothesis_setup_hook() -> None:
    """Register ``init_cases()`` for ``InitCase`` (the ``hypothesis`` entry point)."""
    # Imported here, not at the top: Hypothesis is mid-import when it calls
    # the hook, and this module must stay importable without Hypothesis.
    from hypothesis import strategies as st

    from tlsleak.cases.case import InitCase

    st.register_type_strategy(InitCase, st.deferred(_init_cases))


def _init_cases() -> SearchStrategy[InitCase]:
    from tlsleak.cases.strategies import init_cases

    return init_cases()


def note(kind: str, value: str) -> None:
    """Record the Hypothesis event ``tlsleak KIND: VALUE`` when inside a Hypothesis test.

    One event per distinct string and test case: Hypothesis keeps events in a
    dict keyed by their text, so the value is part of the text rather than a
    payload (two defects stacked on one case are two events).
    """
    if _QUIET.get() or "hypothesis" not in sys.modules:
        return
    from hypothesis.control import currently_in_test_context, event

    if currently_in_test_context():
        event(f"{EVENT_PREFIX}{kind}: {value}")


def note_outcome(status: str, step: str | None) -> None:
    """Record how an attempt ended (``accepted``, ``rejected``, ``error``) and at which step."""
    note("outcome", str(status))
    if step:
        note("step", str(step))


@contextmanager
def quiet() -> Iterator[None]:
    """Record no events in this block (draws that are not the example itself)."""
    token = _QUIET.set(True)
    try:
        yield
    finally:
        _QUIET.reset(token)
