"""What the ``tlsleak`` fixture and marker do: check cases through a target in a preloaded worker.

The heap ledgers need their libraries in ``LD_PRELOAD`` when the process
starts, which a test process never has: :func:`tlsleak.assert_no_leaks` in a
plain pytest process counts typed OpenSSL objects and descriptors only.  The
checks here run in :class:`~tlsleak.check.worker.IsolatedOracle`'s child
instead, started with both heap libraries preloaded and off the network, as
``tlsleak check`` runs them.  That child imports the target by its module
path (``package.module:function``), so a callable given here must be
importable from a fresh interpreter: a function defined in a test file or
inside a function is refused with one line that says so.

A failure is a :class:`LeaksFound` (an :class:`AssertionError`, and a
:class:`tlsleak.LeakError` with its ``findings``) whose message is the text
report of ``tlsleak check``; in-memory cases that gave findings are first
written to a private folder, so that the report's ``replay one:`` line names
a real file.

This module imports the oracle and the targets: the plugin's entry module
imports it only when a test asks for a check.
"""

from __future__ import annotations

import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path
from typing import Any, NoReturn

import pytest

from tlsleak.cases.case import InitCase
from tlsleak.cases.files import CorpusError, case_files, content_name, load_case, write_case
from tlsleak.check.oracle import Finding, LeakError, Verdict
from tlsleak.check.worker import IsolatedOracle, WorkerError
from tlsleak.reports import text

__all__ = ["CheckSettings", "LeakCheck", "LeaksFound", "check_report", "target_spec"]

#: A target as the fixture and the marker take it: a spec, or a function to name by its path.
TargetLike = str | Callable[..., Any]


class LeaksFound(LeakError):
    """Findings of a check in a test; the message is ``tlsleak check``'s text report."""

    def __init__(self, findings: Sequence[Finding], report: str) -> None:
        super().__init__(findings)
        self.args = (report,)


@dataclass(frozen=True)
class CheckSettings:
    """How a worker is run: ledgers (None: the target's own), replays, timeout in seconds."""

    ledgers: tuple[str, ...] | None
    replays: int
    timeout: float


def fail(message: str) -> NoReturn:
    """Fail the test with ``message`` alone: a usage problem, not a traceback."""
    __tracebackhide__ = True
    pytest.fail(f"tlsleak: {message}", pytrace=False)


def target_spec(target: TargetLike, python_files: Iterable[str] = ("test_*.py",)) -> str:
    """The spec the worker imports for ``target``; refuses a function it could not import.

    A string is a spec already (a built-in name, ``c:PATH``, ``package.module:function``).
    A function is named ``module:qualname``, unless it lives where a fresh
    interpreter cannot import it: inside a function, in ``__main__``, or in a
    test file or conftest (``python_files``: pytest imports those by its own
    rules, which the worker does not follow).
    """
    if isinstance(target, str):
        return target
    module = getattr(target, "__module__", None)
    qualname = getattr(target, "__qualname__", None)
    if not callable(target) or not module or not isinstance(qualname, str):
        raise ValueError(f"{target!r} is not a function: give it as 'package.module:function'")
    named = f"{module}:{qualname}"
    why = ""
    if "<locals>" in qualname:
        why = "it is defined inside a function"
    elif "<lambda>" in qualname:
        why = "a lambda has no name to import"
    elif module == "__main__":
        why = "it is defined in __main__"
    else:
        file = getattr(sys.modules.get(module), "__file__", None) or ""
        name = os.path.basename(file)
        if name == "conftest.py" or any(fnmatch(name, p) for p in python_files):
            why = f"it is defined in the test file {file}"
    if why:
        raise ValueError(f"cannot check {named}: {why}. {IMPORTABLE}")
    return named


#: Where a target must live, said after every failure to import one.
IMPORTABLE = (
    "The worker process imports its target by module path (package.module:function): "
    "put the function in a module it can import (installed, on PYTHONPATH, or under the "
    "folder pytest runs in)"
)


def start_error(spec: str, error: WorkerError) -> str:
    """One line for a worker that could not start on ``spec``; the import rule when it helps."""
    message = str(error)
    names_a_function = ":" in spec and not spec.startswith("c:")
    if names_a_function and ("cannot import" in message or "has no attribute" in message):
        message += f". {IMPORTABLE}"
    return message


def check_report(
    oracle: IsolatedOracle,
    files: Sequence[Path],
    statuses: Counter[str],
    findings: Sequence[tuple[Path, Finding]],
    elapsed: float,
) -> str:
    """``tlsleak check``'s text report, and the ledgers that could not see the target."""
    report = text.check_report(
        oracle.target_name, files, statuses, findings, elapsed, network=oracle.network
    )
    return "\n".join([report, *(f"not counted: {why}" for why in oracle.blind.values())])


class LeakCheck:
    """The ``tlsleak`` fixture: one worker per target and settings, closed at teardown.

    ``target`` is the marker's (or None: then each :meth:`check` names one);
    ``case_folder`` gives the folder that in-memory cases with findings are
    written to (made on first use).
    """

    def __init__(
        self,
        settings: CheckSettings,
        *,
        target: TargetLike | None = None,
        python_files: Sequence[str] = ("test_*.py",),
        case_folder: Callable[[], Path] | None = None,
    ) -> None:
        self.settings = settings
        self.target = target
        self.python_files = tuple(python_files)
        self._case_folder = case_folder
        self._folder: Path | None = None
        self._workers: dict[tuple[str, CheckSettings], IsolatedOracle] = {}

    def __repr__(self) -> str:
        target = self.target if isinstance(self.target, str | None) else repr(self.target)
        return f"<tlsleak fixture: target {target}, {len(self._workers)} workers running>"

    def check(
        self,
        target_or_case: TargetLike | InitCase | os.PathLike[str],
        *cases: InitCase | os.PathLike[str],
        ledgers: Sequence[str] | None = None,
        replays: int | None = None,
    ) -> list[Verdict]:
        """Check ``cases`` (InitCase objects, case files, corpus folders) through a target.

        The target comes first (a spec string, or an importable function);
        it may be left out when the ``tlsleak`` marker names one.  Raises
        :class:`LeaksFound` with the text report when any case gives a
        finding; returns the verdicts otherwise.
        """
        __tracebackhide__ = True
        if isinstance(target_or_case, InitCase | os.PathLike):
            target, cases = self.target, (target_or_case, *cases)
        else:
            target = target_or_case
        if target is None:
            fail("check() needs a target: check(TARGET, *cases), or @pytest.mark.tlsleak(target=)")
        if not cases:
            fail("check() was given no cases")
        if replays is not None and replays < 1:
            fail(f"check(): replays must be 1 or more, not {replays}")
        settings = CheckSettings(
            tuple(ledgers) if ledgers is not None else self.settings.ledgers,
            replays if replays is not None else self.settings.replays,
            self.settings.timeout,
        )
        try:
            spec = target_spec(target, self.python_files)
            named = list(_named_cases(cases))
        except (ValueError, CorpusError) as exc:
            refused = str(exc)
        else:
            return self._run(self._worker(spec, settings), named)
        fail(refused)  # outside the handler: one line, no chained traceback

    def _worker(self, spec: str, settings: CheckSettings) -> IsolatedOracle:
        __tracebackhide__ = True
        worker = self._workers.get((spec, settings))
        if worker is None:
            worker = IsolatedOracle(
                spec, ledgers=settings.ledgers, replays=settings.replays, timeout=settings.timeout
            )
            try:
                worker.start()
            except WorkerError as exc:
                refused = start_error(spec, exc)
            else:
                self._workers[spec, settings] = worker
                return worker
            fail(refused)
        return worker

    def _run(
        self, worker: IsolatedOracle, named: Sequence[tuple[Path | None, InitCase]]
    ) -> list[Verdict]:
        __tracebackhide__ = True
        started = time.monotonic()
        statuses: Counter[str] = Counter()
        verdicts: list[Verdict] = []
        findings: list[tuple[Path, Finding]] = []
        for path, case in named:
            failure: str | None = None
            try:
                verdict = worker.check(case)
            except WorkerError as exc:  # the worker died on a case and could not restart
                failure = str(exc)
            if failure is not None:
                fail(failure)
            statuses[str(verdict.outcome.status)] += 1
            verdicts.append(verdict)
            if verdict.findings:
                kept = path or self._keep(case)
                findings.extend((kept, f) for f in verdict.findings)
        if findings:
            files = [path or Path(content_name(case.encode())) for path, case in named]
            report = check_report(worker, files, statuses, findings, time.monotonic() - started)
            raise LeaksFound([f for _path, f in findings], report)
        return verdicts

    def _keep(self, case: InitCase) -> Path:
        """Write an in-memory case that gave findings where the report can point to it.

        Without a folder (the marker's corpus is files already) it is only named.
        """
        if self._case_folder is None:
            return Path(content_name(case.encode()))
        if self._folder is None:
            self._folder = self._case_folder()
        return write_case(self._folder, case)[0]

    def close(self) -> None:
        """End every worker this test started."""
        workers, self._workers = list(self._workers.values()), {}
        for worker in workers:
            worker.close()


def _named_cases(
    cases: Iterable[InitCase | os.PathLike[str]],
) -> Iterable[tuple[Path | None, InitCase]]:
    """``(file or None, case)``: case objects as given, files and folders read (one level)."""
    for item in cases:
        if isinstance(item, InitCase):
            yield None, item
        elif isinstance(item, os.PathLike):
            for path in case_files([Path(item)]):
                yield path, load_case(path)
        else:
            raise ValueError(f"not a case, a case file or a folder: {item!r}")
