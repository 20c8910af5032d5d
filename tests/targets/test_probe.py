"""Blind ledgers are refused: which ledgers see a target is tried, never assumed.

Positive controls: a ledger that cannot see the target's allocator (the heap
shim under the wheel's OpenSSL, the pyOpenSSL object ledger under a C
library) is refused with one line, or dropped and named when another ledger
covers the target.  Negative controls: ledgers that do see the target start
and find its planted leak.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path

import pytest

from tlsleak._netns import ENV as NETWORK_ENV
from tlsleak._netns import Network
from tlsleak.cases.case import InitCase
from tlsleak.check.oracle import FindingKind, Oracle
from tlsleak.check.worker import IsolatedOracle, WorkerError
from tlsleak.cli import main
from tlsleak.ledgers import FdLedger, LedgerBlind, OpenSSLObjectLedger
from tlsleak.targets import TARGETS, resolve_target
from tlsleak.targets.base import Outcome, Probe
from tlsleak.targets.probe import TargetSurvey, sift, sight, survey


@cache
def _survey() -> dict[str, TargetSurvey]:
    """The built-in targets probed in one preloaded worker (as `tlsleak targets` does)."""
    return {t.name: t for t in survey(list(TARGETS)).targets}


def _heap_sees(name: str) -> bool:
    return "openssl-heap" in _survey()[name].seen_by()


# -- the rule, on fakes --------------------------------------------------------------


class _Counter:
    """A ledger bound to one stack that counts what ``_Counter.made`` says."""

    stack_bound = True
    scope = "the fake stack's objects"

    def __init__(self, name: str) -> None:
        self.name = name
        self.live = 0

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def snapshot(self) -> dict[str, int]:
        return {f"{self.name}.live": self.live}


class _Target:
    name = "fake"
    description = "a fake target"
    ledgers = ("fds",)

    def __init__(self, allocate: Callable[[], Callable[[], None]] | None) -> None:
        self._probe = Probe("the fake stack", allocate)

    def probe(self) -> Probe:
        return self._probe

    def run(self, case: InitCase) -> Outcome:
        return Outcome.accepted()

    def error_queue(self) -> None:
        return None


def _allocating_on(ledger: _Counter) -> Callable[[], Callable[[], None]]:
    def allocate() -> Callable[[], None]:
        ledger.live += 1

        def free() -> None:
            ledger.live -= 1

        return free

    return allocate


def test_a_ledger_that_counts_the_probe_sees_and_one_that_does_not_is_blind() -> None:
    seeing, blind = _Counter("seeing"), _Counter("blind")
    target = _Target(_allocating_on(seeing))
    assert sight(target, seeing).sees is True
    verdict = sight(target, blind)
    assert verdict.sees is False
    assert verdict.why == (
        "ledger blind cannot see target fake: it counts the fake stack's objects; "
        "an object the target made through its own stack (the fake stack) did not show"
    )
    assert seeing.live == 0  # the probe's object was freed


def test_a_blind_ledger_is_refused_unless_another_covers_the_target() -> None:
    seeing, blind, fds = _Counter("seeing"), _Counter("blind"), FdLedger()
    target = _Target(_allocating_on(seeing))
    kept, dropped = sift(target, [blind, seeing, fds])
    assert kept == [seeing, fds]
    assert list(dropped) == ["blind"]
    # The descriptors count the whole process: they never cover a blind ledger.
    with pytest.raises(LedgerBlind, match=r"^ledger blind cannot see target fake: "):
        sift(target, [blind, fds])
    assert sift(target, [fds]) == ([fds], {})


def test_unprobed_ledgers_and_targets_are_kept() -> None:
    user_ledger = _Counter("user")
    user_ledger.stack_bound = False  # a ledger of the whole process, say
    assert sift(_Target(None), [user_ledger]) == ([user_ledger], {})
    callable_target = resolve_target("tlsleak.cases.case:decode")  # no probe: unprobed
    objects = OpenSSLObjectLedger()
    assert sight(callable_target, objects).sees is None


def test_a_stack_without_openssl_or_a_failing_probe_is_blind() -> None:
    ledger = _Counter("bound")
    assert "reaches no OpenSSL" in sight(_Target(None), ledger).why

    def broken() -> Callable[[], None]:
        raise MemoryError("no BIO")

    verdict = sight(_Target(broken), ledger)
    assert verdict.sees is False
    assert "could not be probed" in verdict.why
    assert "no BIO" in verdict.why


# -- built-in targets, in this process (no heap shim here) ---------------------------


@pytest.fixture
def objects() -> Iterator[OpenSSLObjectLedger]:
    ledger = OpenSSLObjectLedger()
    ledger.start()
    yield ledger
    ledger.stop()


@pytest.mark.parametrize("name", ["pyopenssl", "control-leaky", "control-fixed"])
def test_the_object_ledger_sees_the_binding_targets(
    name: str, objects: OpenSSLObjectLedger
) -> None:
    assert sight(resolve_target(name), objects).sees is True


def test_the_object_ledger_is_blind_to_ssl_and_to_c_libraries(
    objects: OpenSSLObjectLedger, c_controls: dict[str, Path]
) -> None:
    assert sight(resolve_target("ssl"), objects).sees is False
    verdict = sight(resolve_target(f"c:{c_controls['leaky']}"), objects)
    assert verdict.sees is False
    assert "libcrypto" in verdict.why  # the library's own stack, by the file it resolves to


def test_oracle_refuses_the_object_ledger_on_a_c_library(c_controls: dict[str, Path]) -> None:
    target = resolve_target(f"c:{c_controls['leaky']}")
    with pytest.raises(LedgerBlind) as info:
        Oracle(target, ledgers=["openssl-objects", "fds"]).start()
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"ledger openssl-objects cannot see target c:{c_controls['leaky']}")


def test_oracle_keeps_a_seeing_ledger_and_finds_the_leak(bad_cert_case: InitCase) -> None:
    with Oracle(resolve_target("control-leaky"), ledgers=["openssl-objects"]) as oracle:
        assert oracle.blind == {}
        [finding] = oracle.check(bad_cert_case).findings
    assert finding.kind is FindingKind.LEAK


# -- in the worker, where the heap shim is preloaded ---------------------------------


def test_the_survey_probes_every_builtin_target() -> None:
    found = _survey()
    assert list(found) == list(TARGETS)
    for name in ("pyopenssl", "control-leaky", "control-fixed"):
        assert found[name].seen_by()[0] == "openssl-objects"
    ssl = found["ssl"].seen_by()
    # Python's ssl runs on the system libcrypto; the process heap sees any stack.
    assert ssl == ["openssl-heap", "heap", "fds", "pyobjects"]
    blind = [s.ledger for s in found["ssl"].sights if s.sees is False]
    assert blind == ["openssl-objects"]


def test_check_refuses_the_heap_ledger_on_the_wheels_openssl(
    small_corpus: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if _heap_sees("control-leaky"):
        pytest.skip("cryptography runs on the system libcrypto here: the heap ledger sees it")
    args = ["check", "control-leaky", str(small_corpus), "--ledger", "openssl-heap"]
    assert main(args) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(
        "tlsleak: error: ledger openssl-heap cannot see target control-leaky: "
    )
    assert captured.err.count("\n") == 1
    assert "Traceback" not in captured.err


def test_a_covered_blind_ledger_is_named_in_the_report(
    small_corpus: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if _heap_sees("control-leaky"):
        pytest.skip("cryptography runs on the system libcrypto here: the heap ledger sees it")
    with IsolatedOracle("control-leaky", ledgers=["openssl-heap", "openssl-objects"]) as oracle:
        assert oracle.ledger_names == ["openssl-objects"]
        assert list(oracle.blind) == ["openssl-heap"]
    args = ["check", "control-leaky", str(small_corpus)]
    assert main([*args, "--ledger", "openssl-heap", "--ledger", "openssl-objects"]) == 1
    out = capsys.readouterr().out
    assert "SSL_CTX +1, SSL +1" in out  # the leak, seen by the object ledger
    assert "not counted: ledger openssl-heap cannot see target control-leaky" in out


def test_check_refuses_the_object_ledger_on_a_c_library(
    c_controls: dict[str, Path], small_corpus: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = f"c:{c_controls['leaky']}"
    assert main(["check", spec, str(small_corpus), "--ledger", "openssl-objects"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"tlsleak: error: ledger openssl-objects cannot see target {spec}: ")
    assert err.count("\n") == 1


def test_the_heap_ledger_sees_a_c_library_on_the_system_libcrypto(
    c_controls: dict[str, Path], bad_cert_case: InitCase
) -> None:
    with IsolatedOracle(f"c:{c_controls['leaky']}", ledgers=["openssl-heap"]) as oracle:
        assert oracle.blind == {}
        findings = oracle.check(bad_cert_case).findings
    assert [f.kind for f in findings] == [FindingKind.LEAK]


def test_setup_errors_from_blind_ledgers_are_worker_errors(c_controls: dict[str, Path]) -> None:
    with pytest.raises(WorkerError, match=r"^ledger openssl-objects cannot see target c:"):
        IsolatedOracle(f"c:{c_controls['fixed']}", ledgers=["openssl-objects"]).start()


def test_targets_lists_the_probed_ledgers(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["targets"]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line}
    assert "openssl-heap" in rows["ssl"]
    assert "openssl-objects" not in rows["ssl"]
    assert "openssl-objects" in rows["control-leaky"]
    assert ("openssl-heap" in rows["control-leaky"]) == _heap_sees("control-leaky")


@pytest.mark.parametrize("host", [False, True], ids=["isolated", "host-network"])
def test_the_survey_child_is_off_the_network_and_targets_says_when_not(
    host: bool, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Making a target runs its stack's init code: the probe child leaves the
    # network like every worker, and `tlsleak targets` says when it could not.
    if host:
        monkeypatch.setenv(NETWORK_ENV, "host")
    assert main(["targets"]) == 0
    out = capsys.readouterr().out
    network = survey(["control-fixed"]).network
    assert network is not None
    if host:
        assert network == Network(False, reason=f"{NETWORK_ENV}=host")
        assert f"network: not isolated ({NETWORK_ENV}=host)" in out
    else:
        assert network.isolated, network
        assert "network:" not in out
