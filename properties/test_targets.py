"""The invariant itself, over generated cases: every live count back at its baseline.

pyopenssl and control-fixed keep it for every case, valid or damaged (up to two
stacked defects); control-leaky, the planted bug, is caught on every case it
rejects and on no case it accepts.
"""

from __future__ import annotations

from pathlib import Path

from hypothesis import given

from tlsleak import FindingKind, InitCase, Oracle, Status, assert_no_leaks
from tlsleak.cases.hooks import note_outcome
from tlsleak.sharing import corpus_examples, keep_failures
from tlsleak.strategies import init_cases, malformed_cases
from tlsleak.targets import resolve_target

# Fuzz campaigns' minimised reproducers, tried first on every run; and a
# failing example is kept as a case file for `tlsleak corpus import
# --from-hypothesis` (see tlsleak.sharing).
EXAMPLES = Path(__file__).parent / "examples"

PYOPENSSL = resolve_target("pyopenssl")
CONTROL_FIXED = resolve_target("control-fixed")
CONTROL_LEAKY = resolve_target("control-leaky")


@corpus_examples(EXAMPLES)
@given(init_cases(max_defects=2))
@keep_failures()
def test_pyopenssl_keeps_every_count_at_baseline(case: InitCase) -> None:
    assert_no_leaks(PYOPENSSL, case)


@corpus_examples(EXAMPLES)
@given(init_cases(max_defects=2))
@keep_failures()
def test_control_fixed_keeps_every_count_at_baseline(case: InitCase) -> None:
    assert_no_leaks(CONTROL_FIXED, case)


@corpus_examples(EXAMPLES)
@given(init_cases())
@keep_failures()
def test_control_leaky_is_caught_exactly_when_it_fails(case: InitCase) -> None:
    with Oracle(CONTROL_LEAKY) as oracle:
        verdict = oracle.check(case)
    # assert_no_leaks records these itself; --hypothesis-show-statistics shows them.
    note_outcome(verdict.outcome.status, verdict.outcome.step)
    if verdict.outcome.status is Status.REJECTED:
        [finding] = verdict.findings
        assert finding.kind is FindingKind.LEAK
        # The context and connection are lost every time; a context that had
        # taken chain certificates over loses those with it.
        assert finding.delta["SSL_CTX"] == 1
        assert finding.delta["SSL"] == 1
        assert set(finding.delta) <= {"SSL_CTX", "SSL", "X509"}
    else:
        assert verdict.outcome.status is Status.ACCEPTED
        assert verdict.clean


@given(malformed_cases())
def test_targets_agree_on_accept_or_reject_where_both_load_the_same_way(case: InitCase) -> None:
    # The controls load cert and key into the SSL, pyOpenSSL into the context,
    # and the controls check "cert without key" themselves: the verdicts agree
    # except for the step names.  A disagreement means one of them reads a
    # blob differently, which would make the controls prove the wrong thing.
    fixed, leaky, ours = (t.run(case).status for t in (CONTROL_FIXED, CONTROL_LEAKY, PYOPENSSL))
    assert fixed is leaky
    assert (fixed is Status.ACCEPTED) == (ours is Status.ACCEPTED)
