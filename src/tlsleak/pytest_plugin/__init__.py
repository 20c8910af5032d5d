"""tlsleak's pytest plugin: the ``tlsleak`` fixture and marker, and corpus cases as test items.

Registered under the ``pytest11`` entry point ``tlsleak``, so every pytest
run in an environment with tlsleak installed loads this module: it stays
inert and cheap until its options, fixture or marker are used.  It imports
nothing but pytest and the standard library at load time and prints
nothing; the worker, the oracle and the targets are imported (from
:mod:`.checker` and :mod:`.items`) only when a test asks for a check or
``--tlsleak-target`` is given.  ``-p no:tlsleak`` turns it off.

Every check runs in a worker process started with the heap ledgers'
libraries in ``LD_PRELOAD`` (see :mod:`.checker`), which the test process
itself can never have: the reason for the plugin.  See docs/pytest.md.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import pytest

if TYPE_CHECKING:
    from tlsleak.pytest_plugin.checker import CheckSettings, LeakCheck
    from tlsleak.pytest_plugin.items import SessionWorker

__all__ = ["pytest_addoption", "pytest_configure", "tlsleak"]

#: The check worker's defaults (tlsleak.check.oracle.DEFAULT_REPLAYS,
#: tlsleak.check.worker.DEFAULT_TIMEOUT), repeated so loading costs no import.
DEFAULT_REPLAYS: Final = 3
DEFAULT_TIMEOUT: Final = 30.0

#: What the marker takes, by keyword (the target may also come first, alone).
MARKER_ARGUMENTS: Final = ("target", "corpus", "ledgers", "replays", "timeout")

_SESSION: pytest.StashKey[SessionWorker] = pytest.StashKey()


def _positive(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        value = kind(text)
        if value <= 0:
            raise ValueError(text)
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its error
    return parse


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("tlsleak", "tlsleak: leaks in TLS init paths (docs/pytest.md)")
    group.addoption(
        "--tlsleak-target",
        metavar="TARGET",
        help="collect one test item per corpus case, run through TARGET (a built-in name, "
        "package.module:function or c:PATH) in a preloaded worker",
    )
    group.addoption(
        "--tlsleak-corpus",
        action="append",
        default=[],
        metavar="PATH",
        help="with --tlsleak-target: case files or folders (repeatable; default: the bundled "
        "corpus)",
    )
    group.addoption(
        "--tlsleak-ledger",
        action="append",
        dest="tlsleak_ledgers",
        metavar="NAME",
        help="ledger to count with (repeatable; default: the ones the target names)",
    )
    group.addoption(
        "--tlsleak-replays",
        type=_positive(int),
        default=DEFAULT_REPLAYS,
        metavar="N",
        help=f"replays that must show growth again before it is a leak (default {DEFAULT_REPLAYS})",
    )
    group.addoption(
        "--tlsleak-timeout",
        type=_positive(float),
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=f"a case still running after this long is a timeout finding (default "
        f"{DEFAULT_TIMEOUT:g})",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "tlsleak(target=, corpus=None, ledgers=None, replays=None, timeout=None): check the "
        "target's init path in a preloaded worker: the corpus (paths relative to the test "
        "file) after the test body, and the `tlsleak` fixture's check() calls",
    )
    if config.getoption("tlsleak_corpus") and not config.getoption("tlsleak_target"):
        raise pytest.UsageError("--tlsleak-corpus needs --tlsleak-target (the init path to run)")


def _settings(config: pytest.Config, options: dict[str, Any] | None = None) -> CheckSettings:
    """The command line's settings, overridden by the marker's ``options``."""
    __tracebackhide__ = True
    from tlsleak.pytest_plugin.checker import CheckSettings

    options = options or {}
    ledgers = options.get("ledgers")
    if isinstance(ledgers, str):
        ledgers = [ledgers]
    if ledgers is None:
        ledgers = config.getoption("tlsleak_ledgers")
    replays = options.get("replays", config.getoption("tlsleak_replays"))
    timeout = options.get("timeout", config.getoption("tlsleak_timeout"))
    if not isinstance(replays, int) or replays < 1:
        pytest.fail(f"tlsleak marker: replays must be 1 or more, not {replays!r}", pytrace=False)
    if not isinstance(timeout, int | float) or timeout <= 0:
        pytest.fail(f"tlsleak marker: timeout must be positive, not {timeout!r}", pytrace=False)
    return CheckSettings(tuple(ledgers) if ledgers is not None else None, replays, timeout)


def _marker_options(node: pytest.Item) -> dict[str, Any] | None:
    """The closest ``tlsleak`` marker's keywords (its lone positional is the target), checked."""
    __tracebackhide__ = True
    marker = node.get_closest_marker("tlsleak")
    if marker is None:
        return None
    unknown = sorted(set(marker.kwargs) - set(MARKER_ARGUMENTS))
    if unknown or len(marker.args) > 1 or (marker.args and "target" in marker.kwargs):
        pytest.fail(
            f"tlsleak marker: takes a target and the keywords {', '.join(MARKER_ARGUMENTS)}, "
            f"not {marker.args} {marker.kwargs}",
            pytrace=False,
        )
    options = dict(marker.kwargs)
    if marker.args:
        options["target"] = marker.args[0]
    return options


def _checker(node: pytest.Item, case_folder: Callable[[], Path] | None) -> LeakCheck:
    from tlsleak.pytest_plugin.checker import LeakCheck

    options = _marker_options(node) or {}
    return LeakCheck(
        _settings(node.config, options),
        target=options.get("target"),
        python_files=node.config.getini("python_files"),
        case_folder=case_folder,
    )


@pytest.fixture
def tlsleak(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LeakCheck]:
    """Check init paths in a preloaded worker: ``tlsleak.check(target, *cases)``.

    One worker per target for the test (all Hypothesis examples of a
    ``@given`` test share it), ended at teardown.  In-memory cases that give
    findings are written under the test session's temporary folder, for the
    report's ``replay one:`` line.
    """
    checker = _checker(request.node, lambda: tmp_path_factory.mktemp("tlsleak-cases"))
    try:
        yield checker
    finally:
        checker.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, object, object]:
    """After a test marked with a ``corpus``, check that corpus (the test fails on findings)."""
    result = yield
    options = _marker_options(item)
    if options is not None and options.get("corpus") is not None:
        corpus = options["corpus"]
        paths = [corpus] if isinstance(corpus, str | Path) else list(corpus)
        from tlsleak.pytest_plugin.checker import LeakCheck, LeaksFound

        folder = item.path.parent
        # The test's own fixture when it has one: its worker is started already.
        given = getattr(item, "funcargs", {}).get("tlsleak")
        if not isinstance(given, LeakCheck):
            given = None
        checker = given if given is not None else _checker(item, None)
        report = None
        try:
            if checker.target is None:
                pytest.fail("tlsleak marker: a corpus needs a target", pytrace=False)
            checker.check(checker.target, *(folder / Path(p) for p in paths))
        except LeaksFound as exc:  # no test line to point at: the report is the failure
            report = str(exc)
        finally:
            if given is None:
                checker.close()
        if report is not None:
            pytest.fail(report, pytrace=False)
    return result


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    """With ``--tlsleak-target``: add one item per corpus case (first, so -k and -m apply)."""
    target = config.getoption("tlsleak_target")
    if not target:
        return
    from tlsleak.pytest_plugin.items import SessionWorker, corpus_items

    worker = SessionWorker(target, _settings(config))
    config.stash[_SESSION] = worker
    config.add_cleanup(worker.close)
    items.extend(corpus_items(session, worker, config.getoption("tlsleak_corpus")))


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start the corpus items' worker now: a target that cannot be set up is one usage error."""
    worker = session.config.stash.get(_SESSION, None)
    if worker is None or session.config.option.collectonly:
        return
    from tlsleak.pytest_plugin.items import CaseItem

    if any(isinstance(item, CaseItem) for item in session.items):
        worker.start()


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """A section naming the ledgers that counted (and any that could not), when items ran."""
    worker = config.stash.get(_SESSION, None)
    lines = worker.summary() if worker is not None else []
    if lines:
        terminalreporter.section("tlsleak")
        for line in lines:
            terminalreporter.line(line)
