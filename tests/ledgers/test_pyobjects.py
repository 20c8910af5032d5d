"""The ``pyobjects`` ledger: a leak of small Python objects, which no malloc count sees.

Positive control: a user's init path that keeps one small object per attempt
in a module-level list, found by ``pyobjects`` through the check worker, and
missed by the ``heap`` ledger alone (pymalloc's arenas hide it from malloc).
Negative controls: ``pyopenssl`` and ``control-fixed`` over the bundled
corpus, a cache that fills over a target's first three attempts, and the
oracle's own per-attempt objects (outcomes, tracebacks, counts), which must
net zero for a correct target.
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from tlsleak.cases.case import InitCase
from tlsleak.check.confirm import SLOPE_WARMUPS
from tlsleak.check.oracle import DEFAULT_REPLAYS, FindingKind, Oracle, root_counters
from tlsleak.check.worker import IsolatedOracle
from tlsleak.cli import main
from tlsleak.ledgers import LEDGERS, LedgerUnavailable
from tlsleak.ledgers.pyobjects import PyObjectsLedger
from tlsleak.targets import CallableTarget, Rejected, resolve_target

#: A user's init path that keeps a small object for every refused case.
PLANTED = """
from tlsleak import Rejected

kept = []

def init(case):
    if len(case.cert) < 100:  # too short to be a certificate
        kept.extend(object() for _ in range(8))  # the bug: a registry never cleared
        raise Rejected("certificate", "no certificate")
"""

_cache: list[object] = []
_kept: list[object] = []


def _leaky(case: InitCase) -> None:
    _kept.extend([case.mode] for _ in range(8))  # small lists kept per attempt, never freed
    raise Rejected("certificate", "refused")


def _caching(case: InitCase) -> None:
    if len(_cache) < 3:  # a cache filled over the first three attempts, then full
        _cache.append({"entry": len(_cache)})
    raise Rejected("certificate", "refused")


def _correct(case: InitCase) -> None:
    try:
        int("not a number")  # an exception, a traceback and a message each time
    except ValueError as exc:
        raise Rejected("certificate", f"refused: {exc}") from exc


def test_it_is_registered_and_counts_python_objects() -> None:
    ledger = LEDGERS["pyobjects"]()
    ledger.start()
    before = ledger.snapshot()["pyobjects.blocks"]
    held = [object() for _ in range(100)]
    assert ledger.snapshot()["pyobjects.blocks"] - before >= 100
    del held
    ledger.stop()


def test_it_refuses_an_interpreter_without_pymalloc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "getallocatedblocks", lambda: 0)
    with pytest.raises(LedgerUnavailable, match="pymalloc"):
        PyObjectsLedger().start()


def test_it_is_opt_in() -> None:
    """Every attempt grows it once (its outcome), so each costs one more run: ~2x."""
    for name in ("pyopenssl", "control-fixed", "ssl"):
        assert "pyobjects" not in resolve_target(name).ledgers


def test_a_small_object_kept_per_attempt_is_found(bad_cert_case: InitCase) -> None:
    with Oracle(CallableTarget(_leaky), ledgers=["pyobjects"]) as oracle:
        verdict = oracle.check(bad_cert_case)
    assert [f.kind for f in verdict.findings] == [FindingKind.LEAK]
    assert verdict.findings[0].delta["pyobjects.blocks"] >= 1


@pytest.mark.parametrize("fn", [_caching, _correct])
def test_correct_code_and_a_filling_cache_net_zero(fn: object, bad_cert_case: InitCase) -> None:
    with Oracle(CallableTarget(fn), ledgers=["pyobjects"]) as oracle:  # type: ignore[arg-type]
        verdicts = [oracle.check(bad_cert_case) for _ in range(5)]
    assert [v.findings for v in verdicts] == [()] * 5


#: Counts the runs a check of correct code costs, in a fresh interpreter: in
#: pytest's process, what earlier tests left behind (threads, garbage) moves
#: the interpreter's block count too, as it never does in a check worker.
COST_PROBE = """
import sys
from tlsleak.cases.case import InitCase
from tlsleak.check.oracle import Oracle
from tlsleak.targets import CallableTarget, Rejected

runs = []

def counted(case):
    runs.append(None)
    try:
        int("not a number")  # an exception, a traceback and a message each time
    except ValueError as exc:
        raise Rejected("certificate", f"refused: {exc}") from exc

case = InitCase(cert=b"not a certificate")
with Oracle(CallableTarget(counted), ledgers=["pyobjects"]) as oracle:
    oracle.check(case)  # fills what a first run fills
    runs.clear()
    clean = oracle.check(case).clean
print(clean, len(runs))
"""


def test_correct_code_costs_one_more_run_not_the_replays() -> None:
    done = subprocess.run(
        [sys.executable, "-c", COST_PROBE], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    clean, runs = done.stdout.split()
    assert clean == "True"
    # Usually 2 (the attempt, and the run between two collections that shows
    # it nets zero); now and then the interpreter's own block count moves in
    # that run too, and the slope's warm-ups and replays settle it.
    assert int(runs) <= 2 + SLOPE_WARMUPS + DEFAULT_REPLAYS


def test_the_worker_finds_it_and_heap_alone_does_not(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    bad_cert_case: InitCase,
    valid_case: InitCase,
) -> None:
    (tmp_path / "planted_pyobjects.py").write_text(PLANTED)
    monkeypatch.chdir(tmp_path)  # the worker imports the target from where it stands
    found: Counter[str] = Counter()
    for ledgers in (["pyobjects"], ["heap"]):
        with IsolatedOracle("planted_pyobjects:init", ledgers=ledgers) as oracle:
            bad = oracle.check(bad_cert_case)
            good = oracle.check(valid_case)
        assert good.clean
        found[ledgers[0]] = sum(f.kind is FindingKind.LEAK for f in bad.findings)
    assert found == Counter({"pyobjects": 1, "heap": 0})


def test_a_python_object_leak_is_one_finding_with_the_heap_on_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The list that keeps the objects grows by realloc now and then: heap.bytes
    # comes along in some cases' deltas, and must not make them another bug.
    assert root_counters({"heap.bytes": 42, "pyobjects.blocks": 1}) == ["pyobjects.blocks"]
    assert root_counters({"heap.blocks": 2, "heap.bytes": 42}) == ["heap.blocks", "heap.bytes"]
    (tmp_path / "planted_pyobjects.py").write_text(PLANTED)
    monkeypatch.chdir(tmp_path)
    args = ["check", "planted_pyobjects:init", "--ledger", "heap", "--ledger", "pyobjects", "-q"]
    assert main(args) == 1
    assert "findings, 1 distinct" in capsys.readouterr().out


@pytest.mark.parametrize("target", ["pyopenssl", "control-fixed"])
def test_clean_targets_stay_clean_on_the_bundled_corpus(
    target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check", target, "--ledger", "pyobjects", "-q"]) == 0
    assert "no findings" in capsys.readouterr().out
