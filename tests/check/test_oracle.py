"""The oracle, proven on planted bugs (positive controls) and correct code (negative)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import OpenSSL.SSL
import pytest
from cryptography.hazmat.bindings.openssl.binding import Binding

from tlsleak import (
    FindingKind,
    InitCase,
    LeakError,
    Mode,
    Oracle,
    Rejected,
    Status,
    Step,
    assert_no_leaks,
)
from tlsleak.check.oracle import PROMPTED, Finding
from tlsleak.targets import CallableTarget, Outcome, resolve_target

# --- the control targets -------------------------------------------------------


@pytest.mark.parametrize("case_name", ["bad_cert_case", "bad_key_case"])
def test_control_leaky_leaks_exactly_its_context_and_connection(
    case_name: str, request: pytest.FixtureRequest
) -> None:
    case = request.getfixturevalue(case_name)
    with Oracle(resolve_target("control-leaky")) as oracle:
        verdict = oracle.check(case)
    assert verdict.outcome.status is Status.REJECTED
    [finding] = verdict.findings
    assert finding.kind is FindingKind.LEAK
    assert dict(finding.delta) == {"SSL_CTX": 1, "SSL": 1}
    expected_step = Step.CERTIFICATE if case_name == "bad_cert_case" else Step.KEY
    assert finding.step == expected_step
    assert finding.outcome.errors  # OpenSSL said why
    assert finding.replays == 3
    assert "SSL_CTX +1, SSL +1" in finding.summary()


_CLEAN_PAIRS = [
    (target, case)
    for target in ("control-fixed", "pyopenssl", "control-leaky")
    for case in ("valid_case", "valid_client_case", "bad_cert_case", "bad_key_case", "der_case")
    # the leaky control leaks on bad input by design (see the test above)
    if not (target == "control-leaky" and case.startswith("bad"))
]


@pytest.mark.parametrize(("target", "case_name"), _CLEAN_PAIRS)
def test_no_findings_where_nothing_leaks(
    target: str, case_name: str, request: pytest.FixtureRequest
) -> None:
    case = request.getfixturevalue(case_name)
    with Oracle(resolve_target(target)) as oracle:
        verdict = oracle.check(case)
    assert verdict.clean, [f.summary() for f in verdict.findings]
    expected = Status.REJECTED if case_name.startswith("bad") else Status.ACCEPTED
    assert verdict.outcome.status is expected


def test_control_targets_reject_where_pyopenssl_does(
    bad_cert_case: InitCase, bad_key_case: InitCase
) -> None:
    for case, step in ((bad_cert_case, Step.CERTIFICATE), (bad_key_case, Step.KEY)):
        for name in ("pyopenssl", "control-fixed"):
            assert resolve_target(name).run(case).step == step


# --- user callables: leak, cycle, one-time cache, error queue, exception ---------

_kept: list[Any] = []
_cache: dict[str, Any] = {}


def leaks_a_context(case: InitCase) -> None:
    _kept.append(OpenSSL.SSL.Context(OpenSSL.SSL.TLS_METHOD))


def frees_its_context(case: InitCase) -> None:
    ctx = OpenSSL.SSL.Context(OpenSSL.SSL.TLS_METHOD)
    del ctx


class _Holder:
    def __init__(self) -> None:
        self.ctx = OpenSSL.SSL.Context(OpenSSL.SSL.TLS_METHOD)
        self.me = self  # a reference cycle: only the collector frees it


def cycles_a_context(case: InitCase) -> None:
    _Holder()


def caches_a_context_once(case: InitCase) -> None:
    if "ctx" not in _cache:
        _cache["ctx"] = OpenSSL.SSL.Context(OpenSSL.SSL.TLS_METHOD)


def leaves_an_error_queued(case: InitCase) -> None:
    lib: Any = Binding.lib
    lib.ERR_put_error(lib.ERR_LIB_SSL if hasattr(lib, "ERR_LIB_SSL") else 20, 0, 1, b"x", 1)


def drains_its_errors(case: InitCase) -> None:
    leaves_an_error_queued(case)
    Binding.lib.ERR_clear_error()


def raises_key_error(case: InitCase) -> None:
    raise KeyError("oops")


def rejects_politely(case: InitCase) -> None:
    raise Rejected("load", "bad input")


def _check(fn: Any) -> list[Any]:
    with Oracle(CallableTarget(fn)) as oracle:
        return list(oracle.check(InitCase()).findings)


def test_leak_is_reported_as_never_freed() -> None:
    [finding] = _check(leaks_a_context)
    assert finding.kind is FindingKind.LEAK
    assert dict(finding.delta) == {"SSL_CTX": 1}
    assert "never freed" in finding.summary()


def test_freeing_code_is_clean() -> None:
    assert _check(frees_its_context) == []


def test_cycle_is_reported_as_freed_only_by_the_collector() -> None:
    [finding] = _check(cycles_a_context)
    assert finding.kind is FindingKind.CYCLE
    assert dict(finding.delta) == {"SSL_CTX": 1}
    assert "garbage collector" in finding.summary()


def test_one_time_cache_is_not_a_leak() -> None:
    _cache.clear()
    assert _check(caches_a_context_once) == []


def test_error_left_on_queue_is_its_own_finding() -> None:
    if not hasattr(Binding.lib, "ERR_put_error"):
        pytest.skip("binding has no ERR_put_error")
    [finding] = _check(leaves_an_error_queued)
    assert finding.kind is FindingKind.ERROR_QUEUE
    assert finding.errors_left
    assert _check(drains_its_errors) == []


def test_unexpected_exception_is_a_finding_and_rejection_is_not() -> None:
    [finding] = _check(raises_key_error)
    assert finding.kind is FindingKind.EXCEPTION
    assert "KeyError" in finding.outcome.message
    assert _check(rejects_politely) == []


def test_assert_no_leaks_raises_with_the_findings() -> None:
    with pytest.raises(LeakError, match=r"SSL_CTX \+1") as info:
        assert_no_leaks(leaks_a_context, InitCase())
    assert info.value.findings[0].kind is FindingKind.LEAK
    verdicts = assert_no_leaks(frees_its_context, InitCase(), InitCase(cert=b"x"))
    assert len(verdicts) == 2


def test_assert_no_leaks_takes_custom_rejections() -> None:
    def strict(case: InitCase) -> None:
        raise ValueError("my library's own error")

    with pytest.raises(LeakError, match="ValueError"):
        assert_no_leaks(strict, InitCase())
    assert_no_leaks(strict, InitCase(), rejections=(ValueError,))


def test_findings_have_stable_signatures(bad_cert_case: InitCase, bad_key_case: InitCase) -> None:
    with Oracle(resolve_target("control-leaky")) as oracle:
        a = oracle.check(bad_cert_case).findings[0]
        b = oracle.check(bad_cert_case).findings[0]
        c = oracle.check(bad_key_case).findings[0]
    assert a.signature == b.signature
    # Another failing step, the same missing free: one bug, one signature,
    # named by the outermost leaked objects.
    assert a.step != c.step
    assert a.signature == c.signature
    assert "SSL, SSL_CTX" in a.signature
    report = a.to_json()
    assert report["delta"] == {"SSL_CTX": 1, "SSL": 1}
    assert bytes.fromhex(report["case_hex"]) == bad_cert_case.encode()


def test_replays_must_be_positive() -> None:
    with pytest.raises(ValueError, match="replays"):
        Oracle(resolve_target("pyopenssl"), replays=0)


def test_check_needs_a_started_oracle() -> None:
    with pytest.raises(RuntimeError, match="start"):
        Oracle(resolve_target("pyopenssl")).check(InitCase())


def test_pyopenssl_refusing_an_overlong_passphrase_is_a_rejection() -> None:
    # pyOpenSSL raises ValueError for a passphrase past OpenSSL's 1024-byte
    # buffer, by design: a rejection at the key step, and still measured.
    from tlsleak.cases.material import Encoding, KeyFormat, KeyType, cert_bytes, identity, key_bytes

    ident = identity(KeyType.EC_P256, issued=False)
    key = key_bytes(ident.key, KeyFormat.PKCS8_ENCRYPTED, Encoding.PEM, b"secret")
    case = InitCase(cert=cert_bytes(ident.leaf), key=key, password=b"x" * 1025)
    with Oracle(resolve_target("pyopenssl")) as oracle:
        verdict = oracle.check(case)
        assert verdict.outcome.status is Status.REJECTED
        assert verdict.outcome.step == "key"
        assert "too long" in verdict.outcome.message
        assert verdict.clean
        # Negative control: a password that fits is an ordinary wrong password.
        fits = oracle.check(replace(case, password=b"x" * 1024))
        assert fits.outcome.status is Status.REJECTED
        assert "too long" not in fits.outcome.message


def test_verdicts_are_the_same_with_the_collector_settled() -> None:
    # What the worker processes do (settle_collector, i.e. gc.freeze) must not
    # change a verdict: leak, cycle and clean code are told apart as before.
    import gc

    from tlsleak.check.oracle import settle_collector

    settle_collector()
    try:
        [leak] = _check(leaks_a_context)
        [cycle] = _check(cycles_a_context)
        assert leak.kind is FindingKind.LEAK
        assert cycle.kind is FindingKind.CYCLE
        assert _check(frees_its_context) == []
    finally:
        gc.unfreeze()


def _key_that_loads_with_an_error_left() -> tuple[InitCase, InitCase]:
    """A server case and its client twin whose RSA DER key (one bit flipped in
    the private exponent's bytes) loads while OpenSSL's decoders leave
    "DECODER routines: unsupported" queued."""
    from tlsleak.cases.material import Encoding, KeyFormat, KeyType, cert_bytes, identity, key_bytes

    ident = identity(KeyType.RSA2048)
    key = bytearray(key_bytes(ident.key, KeyFormat.PKCS8, Encoding.DER))
    key[303] ^= 0x01
    server = InitCase(cert=cert_bytes(ident.leaf), key=bytes(key))
    return server, replace(server, mode=Mode.CLIENT, server_name=b"localhost")


def test_errors_left_before_the_server_name_are_not_its_refusal() -> None:
    server, client = _key_that_loads_with_an_error_left()
    with Oracle(resolve_target("pyopenssl")) as oracle:
        for case in (server, client):
            verdict = oracle.check(case)
            # Accepted, with the stale error reported as left on the queue
            # (pyOpenSSL leaves it), in client mode as in server mode: the
            # server name does not take the blame for it.
            assert verdict.outcome.status is Status.ACCEPTED, verdict.outcome.describe()
            [finding] = verdict.findings
            assert finding.kind is FindingKind.ERROR_QUEUE
            assert {e.library for e in finding.errors_left} == {"DECODER routines"}
        # Negative control: a name the SNI call itself refuses still is.
        refused = oracle.check(replace(client, server_name=b"x" * 300))
        assert refused.outcome.step == "server-name"


class _Injector:
    """A ledger that 'fails' allocations by letting the target see a flag."""

    name = "fake-injector"
    armed = 0

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def snapshot(self) -> dict[str, int]:
        return {}

    def reset_allocations(self) -> None: ...

    def allocations(self) -> int:
        return 1

    def fail_at(self, k: int) -> None:
        _Injector.armed = k


def _runs_out_of_memory(case: Any) -> None:
    if _Injector.armed:
        raise MemoryError("failed to allocate BIO")
    raise ValueError("a bug of the target, not a reaction to the failure")


def test_memory_error_under_an_injected_failure_is_a_rejection() -> None:
    target = CallableTarget(_runs_out_of_memory, name="oom")
    with Oracle(target, ledgers=[_Injector()]) as oracle:
        injected = oracle.check(InitCase(), fail_at=1)
        # Negative control: without the injected failure an exception is a finding.
        plain = oracle.check(InitCase())
    assert injected.outcome.status is Status.REJECTED
    assert not injected.findings
    assert [f.kind for f in plain.findings] == [FindingKind.EXCEPTION]


# --- prompt findings -------------------------------------------------------------------


def _prompt(step: str, message: str, *, fail_at: int | None = None) -> Finding:
    outcome = Outcome(Status.REJECTED, step, (), message)
    return Finding(FindingKind.PROMPT, "c:lib.so", InitCase(key=b"k"), outcome, fail_at=fail_at)


def test_a_prompt_is_signed_by_its_step_whatever_the_library_said() -> None:
    a = _prompt("key", "key: cannot parse private key (PEM routines: bad password read)")
    b = _prompt("key", "bad decrypt")
    assert a.signature == b.signature == "c:lib.so | prompt | key"
    assert _prompt("ca", "ca: no").signature == "c:lib.so | prompt | ca"
    assert "allocation failure" in _prompt("key", "x", fail_at=3).signature
    assert a.what == PROMPTED
    assert a.what in a.summary()
    assert Finding.from_json(a.to_json()) == a
