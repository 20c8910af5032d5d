"""Corpus cases as test items (``--tlsleak-target``), and a plugin that is inert otherwise.

Positive control: the leaky control target fails the items of the cases it
leaks on, each named by its case file in ``--junitxml``.  Negative control:
the fixed control passes every item.  The plugin is loaded by every pytest
run where tlsleak is installed, so it must cost nothing and say nothing
until asked.
"""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]


def _testcases(xml: Path) -> dict[str, str | None]:
    """Case name -> the failure text of its ``<testcase>`` (None when it passed)."""
    cases: dict[str, str | None] = {}
    for case in ET.parse(xml).getroot().iter("testcase"):
        failure = case.find("failure")
        cases[case.get("name", "")] = None if failure is None else failure.text or ""
    return cases


@pytest.mark.parametrize(("target", "leaks"), [("control-leaky", True), ("control-fixed", False)])
def test_one_item_per_case_in_the_junit_xml(
    pytester: pytest.Pytester, small_corpus: Path, target: str, leaks: bool
) -> None:
    xml = pytester.path / "junit.xml"
    result = pytester.runpytest(
        f"--tlsleak-target={target}",
        f"--tlsleak-corpus={small_corpus}",
        "--tlsleak-replays=2",
        f"--junitxml={xml}",
    )
    names = sorted(p.name for p in small_corpus.iterdir())
    cases = _testcases(xml)
    assert sorted(cases) == names
    failed = {name: text for name, text in cases.items() if text is not None}
    if leaks:  # the two bad cases leak their SSL_CTX and SSL; the valid one is clean
        assert len(failed) == 2, cases
        for name, text in failed.items():
            assert "control-leaky: 1 cases" in (text or "")
            assert "SSL_CTX +1, SSL +1" in (text or "")
            assert name in (text or "")
        result.assert_outcomes(passed=1, failed=2)
    else:
        assert not failed, failed
        result.assert_outcomes(passed=3)
    assert result.ret == (1 if leaks else 0)
    # The end of the run names what counted.
    result.stdout.fnmatch_lines(["*= tlsleak =*", f"{target}: 3 cases*replays"])


def test_items_join_the_usual_tests_and_take_k(
    pytester: pytest.Pytester, small_corpus: Path
) -> None:
    pytester.makepyfile(test_plain="def test_plain():\n    pass\n")
    first = sorted(p.name for p in small_corpus.iterdir())[0]
    result = pytester.runpytest(
        "--tlsleak-target=control-fixed", f"--tlsleak-corpus={small_corpus}", "-v", "-k", first
    )
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([f"*::{first} PASSED*"])
    result = pytester.runpytest(
        "--tlsleak-target=control-fixed", f"--tlsleak-corpus={small_corpus}", "--collect-only"
    )
    result.stdout.fnmatch_lines(["collected 4 items"])


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--tlsleak-target=nosuchmodule:init"], "ERROR: --tlsleak-target: cannot import*"),
        (["--tlsleak-target=control-fixed", "--tlsleak-corpus=nowhere"], "*nowhere: no such*"),
        (["--tlsleak-corpus=corpus"], "ERROR: --tlsleak-corpus needs --tlsleak-target*"),
        (["--tlsleak-target=control-fixed", "--tlsleak-replays=0"], "*--tlsleak-replays*"),
    ],
)
def test_bad_options_are_one_usage_error(
    pytester: pytest.Pytester, small_corpus: Path, args: list[str], said: str
) -> None:
    args = [
        a if a != "--tlsleak-corpus=corpus" else f"--tlsleak-corpus={small_corpus}" for a in args
    ]
    if not any(a.startswith("--tlsleak-corpus") for a in args):
        args.append(f"--tlsleak-corpus={small_corpus}")
    result = pytester.runpytest_subprocess(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([said])
    assert "Traceback" not in result.stderr.str()
    assert "passed" not in result.stdout.str()  # no item ran
    assert "failed" not in result.stdout.str()


def test_the_entry_point_loads_the_plugin() -> None:
    [entry] = [e for e in importlib.metadata.entry_points(group="pytest11") if e.name == "tlsleak"]
    assert entry.value == "tlsleak.pytest_plugin"


def test_loading_the_plugin_imports_nothing_heavy() -> None:
    probe = (
        "import sys, tlsleak.pytest_plugin\n"
        "print(sorted(m for m in sys.modules if m.startswith(('tlsleak', 'OpenSSL', "
        "'cryptography', 'hypothesis'))))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip() == "['tlsleak', 'tlsleak._version', 'tlsleak.pytest_plugin']"


def test_a_run_that_does_not_use_it_hears_nothing_from_it(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_plain="def test_plain():\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    out = result.stdout.str()
    result.stdout.fnmatch_lines(["plugins: *tlsleak-*"])  # loaded: on the header's list ...
    assert "= tlsleak =" not in out  # ... and silent
    assert "tlsleak:" not in out
    assert result.stderr.str().strip() == ""
    help_text = pytester.runpytest_subprocess("--help").stdout.str()
    assert "--tlsleak-target" in help_text
    off = pytester.runpytest_subprocess("-p", "no:tlsleak", "--help").stdout.str()
    assert "--tlsleak-target" not in off  # and it can be turned off by its name
