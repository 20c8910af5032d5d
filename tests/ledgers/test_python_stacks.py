"""Python caller stacks: a typed-object leak names the line of the user's Python code.

The ``openssl-objects`` ledger keeps the Python stack of each constructor
call, in the attribution replay only, so that a leak of a target written on
pyOpenSSL says which line of *its* code made what was lost.  Positive
control: a module that keeps an ``SSL.Context`` on failure is named by its
file and line, in the text and the JSON report.  Negative control: its fixed
twin has no finding.  The line is no part of the signature.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tlsleak.check.oracle import Oracle
from tlsleak.cli import main
from tlsleak.ledgers import objects, symbols
from tlsleak.ledgers.objects import OpenSSLObjectLedger
from tlsleak.targets import resolve_target

#: A bundled case every target here rejects at its certificate.
REJECTED_CASE = Path(__file__).parents[2] / "corpus" / "01cdda74e75ec40bc2bd0ae7c27282c9d5a83451"

#: A user's init path on pyOpenSSL that keeps its context when loading fails.
LEAKY = """\
from OpenSSL import SSL, crypto

_kept = []


def init(case):
    ctx = SSL.Context(SSL.TLS_METHOD)
    try:
        ctx.use_certificate(crypto.load_certificate(crypto.FILETYPE_PEM, case.cert))
    except crypto.Error:
        KEEP
        raise
"""
#: The line that makes the context.
CONTEXT_LINE = "ctx = SSL.Context(SSL.TLS_METHOD)"


def _user_module(folder: Path, package: str, *, fixed: bool, padding: int = 0) -> int:
    """Write ``package/tls.py`` under ``folder``; return the line that makes the context.

    ``padding`` blank lines above the function move that line (not the code).
    """
    source = LEAKY.replace("KEEP", "pass" if fixed else "_kept.append(ctx)  # the bug")
    source = source.replace("\n\ndef init", "\n" * (padding + 2) + "def init")
    (folder / package).mkdir(parents=True)
    (folder / package / "__init__.py").write_text("")
    (folder / package / "tls.py").write_text(source)
    return next(i for i, ln in enumerate(source.splitlines(), 1) if CONTEXT_LINE in ln)


@pytest.fixture
def user_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A folder to write user modules in, the current folder (where ``check`` imports from)."""
    folder = tmp_path / "project"
    folder.mkdir()
    monkeypatch.chdir(folder)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(folder))])
    yield folder
    _forget("pystack_")


def _forget(prefix: str) -> None:
    """Drop the imported user modules named ``prefix...``: the next test writes its own."""
    for name in [n for n in sys.modules if n.startswith(prefix)]:
        del sys.modules[name]


# -- end to end: the CLI, its worker, both reports ------------------------------


def test_a_python_leak_names_the_users_file_and_line(
    user_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    line = _user_module(user_folder, "pystack_leaky", fixed=False)
    report = tmp_path / "report.json"
    assert main(["check", "pystack_leaky.tls:init", str(REJECTED_CASE), "--json", str(report)]) == 1
    caller = f"pystack_leaky/tls.py:{line} (init)"
    assert f"lost at {caller}" in capsys.readouterr().out
    (finding,) = json.loads(report.read_text())["findings"]
    assert finding["delta"].get("SSL_CTX") == 1
    assert finding["caller"] == caller
    # Innermost first: pyOpenSSL's constructor, then the user's line.
    assert finding["stack"][0].startswith("OpenSSL/SSL.py:")
    assert finding["stack"][1] == caller
    assert finding["signature"] == "pystack_leaky.tls:init | leak | SSL_CTX"  # no line


def test_the_fixed_python_target_has_no_finding(
    user_folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _user_module(user_folder, "pystack_fixed", fixed=True)
    assert main(["check", "pystack_fixed.tls:init", str(REJECTED_CASE)]) == 0
    out = capsys.readouterr().out
    assert "no findings" in out
    assert "lost at" not in out


def test_the_line_is_not_part_of_the_signature(
    user_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The same bug, the same module name, at two lines: two runs from two folders.
    findings = []
    for padding, name in ((0, "a"), (7, "b")):
        folder = user_folder / name
        line = _user_module(folder, "pystack_moved", fixed=False, padding=padding)
        _forget("pystack_moved")
        report = tmp_path / f"{name}.json"
        target = "pystack_moved.tls:init"
        with pytest.MonkeyPatch.context() as patch:
            patch.chdir(folder)
            assert main(["check", target, str(REJECTED_CASE), "--json", str(report)]) == 1
        (finding,) = json.loads(report.read_text())["findings"]
        assert finding["caller"] == f"pystack_moved/tls.py:{line} (init)"
        findings.append(finding)
    capsys.readouterr()
    assert findings[0]["caller"] != findings[1]["caller"]  # the lines did move
    assert findings[0]["signature"] == findings[1]["signature"]


# -- the frame rule ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("module", "runtime"),
    [
        ("OpenSSL.SSL", True),
        ("cryptography.hazmat.bindings.openssl.binding", True),
        ("ssl", True),
        ("functools", True),
        ("importlib._bootstrap", True),
        ("tlsleak.check.oracle", True),
        ("tlsleak.targets.callable", False),  # outer to the user's frame anyway
        ("tlsleak.targets.pyopenssl", False),  # a built-in target is the code under test
        ("mylib.tls", False),
        ("__main__", False),
        ("sslkeys", False),  # a user's module is no binding for its prefix
    ],
)
def test_the_binding_stdlib_and_tlsleak_are_never_the_caller(module: str, runtime: bool) -> None:
    assert symbols.is_python_runtime(module) is runtime


def test_a_python_frame_is_named_by_its_module_path_not_its_folder() -> None:
    def here() -> tuple[symbols.Frame, ...]:
        return symbols.python_stack(sys._getframe())

    frame = here()[0]
    assert frame.python
    assert str(frame).startswith(f"{__name__.replace('.', '/')}.py:")
    assert str(frame).endswith(
        "(test_a_python_frame_is_named_by_its_module_path_not_its_folder.<locals>.here)"
    )
    stack = symbols.LostStack(1, 0, 1, here())
    assert stack.caller == stack.frames[0]  # a test module is user code
    assert stack.root is None  # lines move: a Python stack gives a signature nothing


def test_the_built_in_pyopenssl_target_names_its_own_line() -> None:
    # tlsleak's own targets are the code under test: a leak planted in the
    # built-in control names the control's line, not the oracle's.
    with Oracle(resolve_target("control-leaky"), ledgers=["openssl-objects"]) as oracle:
        (finding,) = oracle.check(_case()).findings
    assert finding.caller is not None
    assert finding.caller.startswith("tlsleak/targets/control.py:")
    assert finding.stack[0] == finding.caller  # the control calls the binding itself


def _case() -> Any:
    from tlsleak.cases.files import load_case

    return load_case(REJECTED_CASE)


# -- the cost: stacks only in the attribution replay --------------------------------


def test_stacks_are_walked_only_while_recorded(monkeypatch: pytest.MonkeyPatch) -> None:
    walks: list[int] = []
    real = objects.python_stack
    monkeypatch.setattr(objects, "python_stack", lambda f: walks.append(1) or real(f))
    from OpenSSL import SSL

    ledger = OpenSSLObjectLedger()
    ledger.start()
    try:
        SSL.Context(SSL.TLS_METHOD)  # an ordinary attempt: the counting constructor only
        assert walks == []
        mark = ledger.begin_stacks()
        kept = SSL.Context(SSL.TLS_METHOD)
        SSL.Context(SSL.TLS_METHOD)  # freed before the end: not lost
        import gc

        gc.collect()
        lost = ledger.end_stacks(mark)
        assert len(walks) == 2
        (stack,) = lost
        assert stack.blocks == 1
        assert stack.caller is not None
        assert stack.caller.function == "test_stacks_are_walked_only_while_recorded"
        SSL.Context(SSL.TLS_METHOD)  # recording is over: no walk again
        assert len(walks) == 2
        del kept
    finally:
        ledger.stop()


def test_a_lost_object_is_the_root_before_a_heap_block() -> None:
    user = symbols.Frame(0, "mylib.tls", None, 0, "init", "mylib/tls.py", 7, True)
    c_user = symbols.Frame(2, "/tmp/lib.so", "init", 3, "init", "/src/lib.c", 12)
    heap = symbols.LostStack(1, 10, 1, (c_user,))
    typed = symbols.LostStack(1, 0, 5, (user,))
    # The two ledgers number their stacks apart: the typed object wins, not the order.
    assert symbols.root_stack([heap, typed]) is typed
    assert symbols.root_stack([heap]) is heap
