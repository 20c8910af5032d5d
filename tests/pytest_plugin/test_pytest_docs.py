"""docs/pytest.md's snippets run as written, on a small user project (docs that drift are a bug).

The project has ``mylib/tls.py`` (a correct pyOpenSSL init path, so every
snippet's test passes) and ``tests/corpus`` (three cases); each ``python``
snippet becomes a test file in ``tests/``, and the ``sh`` snippet's options
are run as given.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

DOC = Path(__file__).resolve().parents[2] / "docs" / "pytest.md"

MYLIB = """
from OpenSSL import SSL, crypto


def init(case):
    ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
    if case.cert:
        ctx.use_certificate(crypto.load_certificate(crypto.FILETYPE_PEM, case.cert))
"""

# Few examples: the snippet's @settings leaves max_examples to the profile.
CONFTEST = """
from hypothesis import settings

settings.register_profile("docs", max_examples=5, database=None)
settings.load_profile("docs")
"""


def _snippets(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC.read_text(), re.S)


def test_the_python_snippets_pass(pytester: pytest.Pytester, small_corpus: Path) -> None:
    pytester.mkpydir("mylib").joinpath("tls.py").write_text(MYLIB)
    tests = pytester.mkdir("tests")
    corpus = tests / "corpus"
    corpus.mkdir()
    for case in small_corpus.iterdir():
        (corpus / case.name).write_bytes(case.read_bytes())
    (tests / "conftest.py").write_text(CONFTEST)
    snippets = _snippets("python")
    assert len(snippets) == 3, "docs/pytest.md: the fixture, the marker, the marker with @given"
    for i, snippet in enumerate(snippets):
        (tests / f"test_doc_{i}.py").write_text(snippet)
    [command] = [s for s in _snippets("sh") if "--tlsleak-target" in s]
    args = shlex.split(command)[1:]
    args = [a for a in args if not a.startswith("--junitxml") and a != "report.xml"]
    result = pytester.runpytest("tests", *args)
    result.assert_outcomes(passed=3 + 3)  # three snippets, three corpus items
    result.stdout.fnmatch_lines(["*= tlsleak =*", "mylib.tls:init: 3 cases*"])
