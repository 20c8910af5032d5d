"""Hypothesis and the fuzzer share their finds: the same case encoding both ways.

Corpus files, finding reproducers and Hypothesis examples are all
:class:`~tlsleak.cases.case.InitCase` values in the one byte encoding, so:

- **fuzzer -> Hypothesis**: :func:`corpus_examples` makes every case under a
  folder (a corpus, a ``findings/`` folder, a single reproducer) an explicit
  ``@example`` of a property test.  Copy a campaign's reproducer into, say,
  ``properties/examples/`` and every later run of the property tries it first,
  on every profile, database or not;
- **Hypothesis -> fuzzer**: :func:`keep_failures` saves the case a property
  test fails on as a case file, and ``tlsleak corpus import --from-hypothesis``
  adds those to a corpus.  Hypothesis shrinks by calling the test again with
  smaller failing examples and finishes with the smallest, so the file is
  replaced only by a smaller failing case: what is left is the minimal one.

Hypothesis's own example database is not read: it stores the choice
sequences the strategies drew from, which only the same strategies at the
same version can turn back into cases.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final, TypeVar

from hypothesis import example

from tlsleak.cases.case import InitCase, decode
from tlsleak.cases.files import case_files, read_limited, write_input

__all__ = ["FAILURES_ENV", "corpus_examples", "failures_folder", "keep_failures"]

#: Environment variable naming the folder :func:`keep_failures` writes to.
FAILURES_ENV: Final = "TLSLEAK_FAILURES_DIR"
_DEFAULT_FAILURES: Final = Path(".hypothesis") / "tlsleak-failures"

F = TypeVar("F", bound=Callable[..., Any])


def failures_folder() -> Path:
    """Where kept failures go: ``$TLSLEAK_FAILURES_DIR``, else ``.hypothesis/tlsleak-failures``."""
    return Path(os.environ.get(FAILURES_ENV) or _DEFAULT_FAILURES)


def _cases_under(path: Path) -> Iterator[InitCase]:
    if path.is_dir() and (path / "reproducer").is_file():
        yield decode(read_limited(path / "reproducer"))
        return
    if path.is_dir():
        subfolders = sorted(p for p in path.iterdir() if (p / "reproducer").is_file())
        if subfolders:  # a findings/ folder
            for folder in subfolders:
                yield decode(read_limited(folder / "reproducer"))
            return
    for file in case_files([path]):
        yield decode(read_limited(file))


def corpus_examples(*paths: str | Path, argname: str = "case") -> Callable[[F], F]:
    """Make each case under ``paths`` an ``@example`` (of argument ``argname``).

    A path is a case file, a corpus folder, a finding folder or a folder of
    finding folders.  Apply it above ``@given``.  Raises
    :class:`~tlsleak.cases.files.CorpusError` (at import time of the test module)
    for a missing path or an empty folder: a regression test that silently
    runs nothing is worse than none.
    """
    cases = [case for path in paths for case in _cases_under(Path(path))]

    def decorate(test: F) -> F:
        for case in reversed(cases):  # decorators apply bottom-up: keep file order
            test = example(**{argname: case})(test)
        return test

    return decorate


def keep_failures(folder: str | Path | None = None, *, argname: str = "case") -> Callable[[F], F]:
    """Save the smallest case the decorated test fails on (apply it below ``@given``).

    The file is ``<folder>/<module>.<test>``, written atomically and privately
    (0600), and only replaced by a smaller case (fewer blob bytes).  Nothing
    is written when the test passes.  ``folder`` defaults to
    :func:`failures_folder`, read when the test fails.
    """

    def decorate(test: F) -> F:
        name = f"{test.__module__}.{test.__qualname__}"

        @functools.wraps(test)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return test(*args, **kwargs)
            except Exception:
                case = kwargs.get(argname)
                if isinstance(case, InitCase):
                    _keep(Path(folder) if folder is not None else failures_folder(), name, case)
                raise

        return wrapper  # type: ignore[return-value]

    return decorate


def _keep(folder: Path, name: str, case: InitCase) -> None:
    path = folder / name
    try:
        if path.is_file() and decode(read_limited(path)).size <= case.size:
            return
        written, _new = write_input(folder, case.encode())
        os.replace(written, path)
    except Exception:
        return  # keeping a copy must never hide the test's own failure
