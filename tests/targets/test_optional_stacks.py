"""Built-in targets on optional stacks: a missing stack says how to install it, nothing else."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tlsleak.cli import main
from tlsleak.targets import TARGETS, Target, TargetUnavailable, _needs, resolve_target


def _missing(name: str) -> Target:
    raise ModuleNotFoundError(f"No module named {name!r}", name=name)


def test_a_missing_stack_says_which_extra_installs_it() -> None:
    make = _needs("mbedtls", "mbedtls", lambda: _missing("mbedtls.tls"))
    with pytest.raises(TargetUnavailable, match=r"not installed: pip install 'tlsleak\[mbedtls\]'"):
        make()


def test_any_other_missing_module_is_a_bug_and_is_not_hidden() -> None:
    make = _needs("mbedtls", "mbedtls", lambda: _missing("mbedtlsx"))
    with pytest.raises(ModuleNotFoundError):
        make()


# Registered in the worker processes too, which import sitecustomize at start.
REGISTER = """
from tlsleak.targets import TARGETS, _needs

def _missing():
    raise ModuleNotFoundError("No module named 'stackx'", name="stackx")

TARGETS["stack-x"] = _needs("x", "stackx", _missing)
"""


def test_check_on_a_missing_stack_is_one_line_and_status_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "sitecustomize.py").write_text(REGISTER)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), *sys.path]))
    monkeypatch.setitem(TARGETS, "stack-x", _needs("x", "stackx", lambda: _missing("stackx")))
    with pytest.raises(TargetUnavailable):
        resolve_target("stack-x")
    assert main(["check", "stack-x"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert "not installed: pip install 'tlsleak[x]'" in err
