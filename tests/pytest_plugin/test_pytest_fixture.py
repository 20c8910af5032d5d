"""The ``tlsleak`` fixture and marker, run by pytest on a user's project (``pytester``).

Each test writes a small user project (an init module and a test file) into
the pytester folder and runs pytest on it in-process; the checks themselves
run in the plugin's preloaded worker.  Positive controls: an init path that
keeps an ``SSL_CTX`` per call fails its test with the leak named, and one
that ``malloc``s through ctypes without a free fails on the ``heap`` ledger,
which only a preloaded process has.  Negative controls: their correct twins
pass.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

#: The user's init paths: importable by module path from the pytester folder.
USERMOD = """
import ctypes, os
from OpenSSL import SSL

_kept = []
_libc = ctypes.CDLL(None)
_libc.malloc.restype = ctypes.c_void_p
_libc.free.argtypes = [ctypes.c_void_p]

def keeps_a_context(case):
    _kept.append(SSL.Context(SSL.TLS_METHOD))

def frees_its_context(case):
    SSL.Context(SSL.TLS_METHOD)

def mallocs_and_forgets(case):
    _libc.malloc(4096)  # a C-level block: only the heap ledger sees it

def mallocs_and_frees(case):
    _libc.free(_libc.malloc(4096))

def aborts(case):
    os.abort()

def notes_its_process(case):
    with open(os.environ["PIDS"], "a") as f:
        f.write(f"{os.getpid()}\\n")
"""


def _report(reprec: pytest.HookRecorder, name: str) -> pytest.TestReport:
    """The report of test ``name``'s call (or of its setup, if that failed)."""
    reports = [
        r
        for r in reprec.getreports("pytest_runtest_logreport")
        if isinstance(r, pytest.TestReport) and r.nodeid.endswith(f"::{name}")
    ]
    failed = [r for r in reports if r.failed]
    return failed[0] if failed else next(r for r in reports if r.when == "call")


@pytest.fixture
def project(pytester: pytest.Pytester, small_corpus: Path) -> pytest.Pytester:
    """A user project: ``usermod`` and a corpus folder ``corpus`` (one valid, two bad cases)."""
    pytester.makepyfile(usermod=USERMOD)
    folder = pytester.path / "corpus"
    folder.mkdir()
    for case in small_corpus.iterdir():
        (folder / case.name).write_bytes(case.read_bytes())
    return pytester


def test_fixture_names_the_leak_and_passes_correct_code(project: pytest.Pytester) -> None:
    project.makepyfile(
        test_user="""
        from pathlib import Path

        def test_leaky(tlsleak):
            tlsleak.check("usermod:keeps_a_context", Path("corpus"))

        def test_correct(tlsleak):
            verdicts = tlsleak.check("usermod:frees_its_context", Path("corpus"))
            assert len(verdicts) == 3

        def test_correct_given_as_a_function(tlsleak):
            import usermod

            tlsleak.check(usermod.frees_its_context, Path("corpus"))
        """
    )
    reprec = project.inline_run()
    reprec.assertoutcome(passed=2, failed=1)
    failure = _report(reprec, "test_leaky").longreprtext
    assert "LeaksFound" in failure
    assert "usermod:keeps_a_context: 3 cases" in failure
    assert "SSL_CTX +1" in failure
    assert _report(reprec, "test_correct").passed


@pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the interposer is built for Linux (LD_PRELOAD)"
)
def test_a_leak_only_the_heap_ledger_sees_is_caught(project: pytest.Pytester) -> None:
    # Proves the worker is preloaded: a C block lost through ctypes is
    # invisible to the typed objects and the descriptors, and a test process
    # (not started with LD_PRELOAD) has no heap ledger of its own.
    project.makepyfile(
        test_user="""
        from pathlib import Path

        def test_heap_leak(tlsleak):
            tlsleak.check("usermod:mallocs_and_forgets", Path("corpus"))

        def test_heap_correct(tlsleak):
            tlsleak.check("usermod:mallocs_and_frees", Path("corpus"))

        def test_crash(tlsleak):
            tlsleak.check("usermod:aborts", sorted(Path("corpus").iterdir())[0])
        """
    )
    reprec = project.inline_run()
    reprec.assertoutcome(passed=1, failed=2)
    failure = _report(reprec, "test_heap_leak").longreprtext
    assert "heap.blocks +1" in failure
    # A crash is a finding of the test, not the end of the test run.
    assert "killed by SIGABRT" in _report(reprec, "test_crash").longreprtext


def test_the_marker_checks_its_corpus_after_the_body(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Corpus paths are relative to the test file: run from another folder
    # (usermod then on PYTHONPATH, as the docs say).
    project.makepyfile(
        test_user="""
        import pytest

        @pytest.mark.tlsleak(target="usermod:keeps_a_context", corpus="corpus", replays=2)
        def test_leaky():
            pass

        @pytest.mark.tlsleak("usermod:frees_its_context", corpus=["corpus"])
        def test_correct():
            pass

        @pytest.mark.tlsleak(target="usermod:keeps_a_context", corpus="corpus")
        def test_body_fails_first():
            assert False, "the body's own failure"

        @pytest.mark.tlsleak(target="usermod:frees_its_context", corpus="corpus")
        def test_with_the_fixture(tlsleak):
            from pathlib import Path

            tlsleak.check(Path(__file__).parent / "corpus")  # the marker's target
        """
    )
    monkeypatch.setenv("PYTHONPATH", str(project.path))
    monkeypatch.chdir(project.mkdir("elsewhere"))
    reprec = project.inline_run(str(project.path / "test_user.py"))
    reprec.assertoutcome(passed=2, failed=2)
    failure = _report(reprec, "test_leaky").longreprtext
    assert failure.startswith("usermod:keeps_a_context: 3 cases")
    assert "SSL_CTX +1" in failure
    assert "Traceback" not in failure
    assert "the body's own failure" in _report(reprec, "test_body_fails_first").longreprtext


def test_hypothesis_examples_share_one_worker_closed_at_teardown(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pids = project.path / "pids"
    monkeypatch.setenv("PIDS", str(pids))
    project.makepyfile(
        test_user="""
        import pytest
        from hypothesis import HealthCheck, given, settings
        from tlsleak.strategies import init_cases

        @pytest.mark.tlsleak(
            target="usermod:notes_its_process", replays=1, ledgers=["openssl-objects"]
        )
        @settings(max_examples=5, deadline=None, database=None,
                  suppress_health_check=[HealthCheck.function_scoped_fixture])
        @given(case=init_cases())
        def test_property(tlsleak, case):
            tlsleak.check(case)

        @pytest.mark.tlsleak(target="usermod:keeps_a_context", replays=1)
        @settings(max_examples=5, deadline=None, database=None,
                  suppress_health_check=[HealthCheck.function_scoped_fixture])
        @given(case=init_cases())
        def test_leaky_property(tlsleak, case):
            tlsleak.check(case)
        """
    )
    reprec = project.inline_run()
    reprec.assertoutcome(passed=1, failed=1)
    assert "SSL_CTX +1" in _report(reprec, "test_leaky_property").longreprtext
    seen = {int(line) for line in pids.read_text().split()}
    assert len(seen) == 1, f"one worker for every example, not {seen}"
    with pytest.raises(ProcessLookupError):
        os.kill(seen.pop(), 0)  # ended (and reaped) at teardown


def test_failing_in_memory_cases_are_kept_for_the_replay_line(project: pytest.Pytester) -> None:
    project.makepyfile(
        test_user="""
        from pathlib import Path
        from tlsleak.cases.files import load_case

        def test_leaky(tlsleak):
            case = load_case(sorted(Path("corpus").iterdir())[0])
            tlsleak.check("usermod:keeps_a_context", case)
        """
    )
    reprec = project.inline_run()
    failure = _report(reprec, "test_leaky").longreprtext
    replay = next(line for line in failure.splitlines() if "replay one:" in line)
    kept = Path(replay.split()[-1]).parent
    assert [p.stat().st_mode & 0o777 for p in kept.iterdir()] == [0o600]


def test_a_target_the_worker_cannot_import_is_one_clear_line(project: pytest.Pytester) -> None:
    project.makepyfile(
        test_user="""
        from pathlib import Path
        import pytest

        def local_init(case):
            pass

        def test_missing_module(tlsleak):
            tlsleak.check("nosuchmodule:init", Path("corpus"))

        def test_function_in_a_test_file(tlsleak):
            tlsleak.check(local_init, Path("corpus"))

        def test_function_inside_a_function(tlsleak):
            tlsleak.check(lambda case: None, Path("corpus"))

        @pytest.mark.tlsleak(target="usermod:init", corpus="corpus", replay=3)
        def test_bad_marker():
            pass
        """
    )
    reprec = project.inline_run()
    reprec.assertoutcome(failed=4)
    texts = {
        name: _report(reprec, name).longreprtext
        for name in (
            "test_missing_module",
            "test_function_in_a_test_file",
            "test_function_inside_a_function",
            "test_bad_marker",
        )
    }
    for text in texts.values():
        assert len(text.strip().splitlines()) == 1, text  # one line, no traceback
    assert "cannot import 'nosuchmodule'" in texts["test_missing_module"]
    assert "imports its target by module path" in texts["test_missing_module"]
    assert "defined in the test file" in texts["test_function_in_a_test_file"]
    assert "defined inside a function" in texts["test_function_inside_a_function"]
    assert "tlsleak marker" in texts["test_bad_marker"]
