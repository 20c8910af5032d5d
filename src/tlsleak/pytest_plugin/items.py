"""Corpus cases as test items: ``pytest --tlsleak-target T --tlsleak-corpus DIR``.

One item per case file, named by the file, so that ``-k``, ``--lf`` and
``--junitxml`` treat each case as a test; the nodes' ids are the corpus path
as given (relative to the rootdir when under it) and the file name:
``corpus::00522e1f...``.  Every item runs through one worker for the
session (:class:`SessionWorker`), started once the items are known: a target
that cannot be set up is then one usage error before any test runs, not one
failure per case.  A failing item's text is ``tlsleak check``'s report for
its case.

This module imports the oracle and the targets: the plugin's entry module
imports it only when ``--tlsleak-target`` is given.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from tlsleak.cases.files import CorpusError, bundled_corpus, case_files, load_case
from tlsleak.check.worker import IsolatedOracle, WorkerError
from tlsleak.pytest_plugin.checker import CheckSettings, check_report, start_error

__all__ = ["CaseFindings", "CaseItem", "CorpusCollector", "SessionWorker", "corpus_items"]


class SessionWorker:
    """The one worker of a session's corpus items, and what they found (for the summary)."""

    def __init__(self, target: str, settings: CheckSettings) -> None:
        self.target = target
        self.settings = settings
        self.oracle: IsolatedOracle | None = None
        self.statuses: Counter[str] = Counter()
        self.failed = 0

    def start(self) -> IsolatedOracle:
        """The started worker; :class:`pytest.UsageError` when the target cannot be set up."""
        if self.oracle is None:
            oracle = IsolatedOracle(
                self.target,
                ledgers=self.settings.ledgers,
                replays=self.settings.replays,
                timeout=self.settings.timeout,
            )
            try:
                oracle.start()
            except WorkerError as exc:
                message = start_error(self.target, exc)
                raise pytest.UsageError(f"--tlsleak-target: {message}") from None
            self.oracle = oracle
        return self.oracle

    def close(self) -> None:
        oracle, self.oracle = self.oracle, None
        if oracle is not None:
            oracle.close()

    def summary(self) -> list[str]:
        """Lines for the end of the run: what counted, what could not, how cases ended."""
        if self.oracle is None:
            return []
        oracle = self.oracle
        ended = ", ".join(f"{n} {s}" for s, n in sorted(self.statuses.items())) or "none run"
        lines = [
            f"{oracle.target_name}: {sum(self.statuses.values())} cases ({ended}), "
            f"{self.failed} with findings; ledgers {', '.join(oracle.ledger_names or ())}, "
            f"{oracle.replays} replays"
        ]
        if oracle.network is not None and (warning := oracle.network.warning()):
            lines.append(warning)
        lines.extend(f"not counted: {why}" for why in oracle.blind.values())
        return lines


class CaseFindings(Exception):
    """A corpus case gave findings; the message is the text report."""


class CorpusCollector(pytest.Collector):
    """The case files of one ``--tlsleak-corpus`` path."""

    def __init__(self, *, files: Sequence[Path], worker: SessionWorker, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.files = list(files)
        self.worker = worker

    def collect(self) -> list[pytest.Item | pytest.Collector]:
        return [
            CaseItem.from_parent(self, name=path.name, path=path, worker=self.worker)
            for path in self.files
        ]


class CaseItem(pytest.Item):
    """One case file, checked through the session's worker."""

    def __init__(self, *, worker: SessionWorker, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.worker = worker

    def runtest(self) -> None:
        oracle = self.worker.start()
        failure = None
        try:
            case = load_case(self.path)
            started = time.monotonic()
            verdict = oracle.check(case)
        except (CorpusError, WorkerError) as exc:  # WorkerError: it died for good earlier
            failure = str(exc)
        if failure is not None:
            pytest.fail(failure, pytrace=False)  # outside the handler: no chained traceback
        self.worker.statuses[str(verdict.outcome.status)] += 1
        if verdict.findings:
            self.worker.failed += 1
            statuses = Counter([str(verdict.outcome.status)])
            findings = [(self.path, f) for f in verdict.findings]
            elapsed = time.monotonic() - started
            raise CaseFindings(check_report(oracle, [self.path], statuses, findings, elapsed))

    def repr_failure(
        self,
        excinfo: pytest.ExceptionInfo[BaseException],
        style: Any = None,
    ) -> str | Any:
        if isinstance(excinfo.value, CaseFindings):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, f"{self.worker.target} {self.name}"


def corpus_items(
    session: pytest.Session, worker: SessionWorker, paths: Sequence[str]
) -> list[pytest.Item]:
    """One item per case file under ``paths`` (the bundled corpus when none is given)."""
    given = [Path(p) for p in paths] or [bundled_corpus()]
    base = session.config.invocation_params.dir
    items: list[pytest.Item] = []
    for path in given:
        folder = path if path.is_absolute() else base / path
        try:
            files = case_files([folder])
        except CorpusError as exc:
            raise pytest.UsageError(f"--tlsleak-corpus: {exc}") from None
        collector = CorpusCollector.from_parent(
            session,
            name=str(path),
            path=folder,
            nodeid=_nodeid(session, folder),
            files=files,
            worker=worker,
        )
        # Collected through the hooks, as pytest collects a file: the terminal
        # counts the items ("collected N items"), and plugins see each one.
        report = collector.ihook.pytest_make_collect_report(collector=collector)
        collector.ihook.pytest_collectreport(report=report)
        for item in report.result:
            assert isinstance(item, pytest.Item)
            item.ihook.pytest_itemcollected(item=item)
            items.append(item)
    return items


def _nodeid(session: pytest.Session, folder: Path) -> str:
    """The corpus folder relative to the rootdir (as test files are named), else as it is."""
    root = session.config.rootpath
    try:
        return folder.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return folder.as_posix()
