"""Properties of the defect catalogue and the strategies, checked on the pyopenssl target.

The ``expect`` and ``steps`` of every defect are claims about OpenSSL; these
tests are what keeps them true as OpenSSL, pyOpenSSL and the target change.
"""

from __future__ import annotations

import itertools
import random
from typing import Any

import pytest
from hypothesis import Phase, find, given, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from tlsleak import strategies
from tlsleak.cases.case import InitCase, Mode
from tlsleak.cases.defects import DEFECTS, Expect
from tlsleak.cases.material import Encoding, KeyFormat, KeyType, cert_bytes, identity, key_bytes
from tlsleak.strategies import generate, init_cases, malformed_cases, valid_cases
from tlsleak.targets.base import Status
from tlsleak.targets.pyopenssl import PyOpenSSLTarget

TARGET = PyOpenSSLTarget()

# Each (defect, key type) pair gets a share of the profile's examples: the
# key type is where OpenSSL's behaviour differs most, so every pair is run
# explicitly instead of trusting the strategy to reach it.
_PER_PAIR = settings(max_examples=max(10, settings.default.max_examples // 5))


# --- (a) labels -----------------------------------------------------------------------------------


@given(malformed_cases(max_defects=3))
def test_malformed_cases_are_labelled_with_catalogue_names(case: InitCase) -> None:
    assert 1 <= len(case.labels) <= 3
    assert all(label in DEFECTS for label in case.labels)
    # Stacked defects never damage the same blob twice.
    touched = [DEFECTS[label].touches for label in case.labels]
    for a, b in itertools.combinations(touched, 2):
        assert not a & b


@given(valid_cases())
def test_valid_cases_carry_no_labels(case: InitCase) -> None:
    assert case.labels == ()


# --- (b) expectations -----------------------------------------------------------------------------


_PAIRS = [
    pytest.param(name, kt, id=f"{name}-{kt.value}")
    for name, defect in DEFECTS.items()
    for kt in KeyType
    if defect.needs.key_types is None or kt in defect.needs.key_types
]


@pytest.mark.parametrize(("name", "key_type"), _PAIRS)
@_PER_PAIR
@given(data=st.data())
def test_defect_outcome_is_as_expected(name: str, key_type: KeyType, data: st.DataObject) -> None:
    defect = DEFECTS[name]
    case = data.draw(malformed_cases(defects=[name], key_types=[key_type]), label="case")
    assert case.labels == (name,)
    outcome = TARGET.run(case)
    assert outcome.status is not Status.ERROR, outcome.describe()
    if defect.expect is Expect.ACCEPTED:
        assert outcome.status is Status.ACCEPTED, outcome.describe()
    elif defect.expect is Expect.REJECTED:
        assert outcome.status is Status.REJECTED, outcome.describe()
    if outcome.status is Status.REJECTED and defect.steps is not None:
        assert str(outcome.step) in defect.steps, outcome.describe()


@settings(max_examples=max(10, settings.default.max_examples // 2))
@given(malformed_cases(max_defects=4))
def test_stacked_defects_never_raise_in_the_target(case: InitCase) -> None:
    # Stacked defects have no stated outcome, but an OpenSSL-based target
    # must still turn every one of them into accepted or rejected.
    assert TARGET.run(case).status is not Status.ERROR


# --- (c) valid cases ------------------------------------------------------------------------------


@given(valid_cases())
def test_valid_cases_are_accepted(case: InitCase) -> None:
    outcome = TARGET.run(case)
    assert outcome.status is Status.ACCEPTED, outcome.describe()


# --- (d) reachability -----------------------------------------------------------------------------


def _shape(case: InitCase) -> tuple[KeyType, bool, Encoding, KeyFormat, Encoding]:
    """What a valid case is made of: (key type, issued, cert enc, key format, key enc)."""
    for kt, issued, cert_enc in itertools.product(KeyType, (False, True), Encoding):
        ident = identity(kt, issued=issued)
        if not case.cert.startswith(cert_bytes(ident.leaf, cert_enc)):
            continue
        for fmt, key_enc in itertools.product(KeyFormat, Encoding):
            encrypted = fmt is KeyFormat.PKCS8_ENCRYPTED
            if not fmt.fits(kt) or (encrypted and key_enc is Encoding.DER):
                continue
            if case.key == key_bytes(ident.key, fmt, key_enc, case.password if encrypted else b""):
                return kt, issued, cert_enc, fmt, key_enc
    raise AssertionError(f"not made of tlsleak's valid material: {case!r}")


_FIND = settings(database=None, max_examples=1000, phases=[Phase.generate])
_SHRINK = settings(database=None, phases=[Phase.generate, Phase.shrink])

# (index in _shape's tuple, value) for every value of every dimension.
_DIMENSIONS = [
    *((0, kt) for kt in KeyType),
    (1, False),
    (1, True),
    *((2, enc) for enc in Encoding),
    *((3, fmt) for fmt in KeyFormat),
    *((4, enc) for enc in Encoding),
]


@pytest.mark.parametrize(
    ("index", "value"),
    _DIMENSIONS,
    ids=lambda v: str(getattr(v, "value", v)),
)
def test_every_material_choice_is_reachable(index: int, value: object) -> None:
    found = find(
        valid_cases(),
        lambda case: _shape(case)[index] == value,
        settings=_FIND,
        random=random.Random(index),
    )
    assert _shape(found)[index] == value


@pytest.mark.parametrize("mode", list(Mode), ids=lambda m: m.value)
def test_every_mode_is_reachable(mode: Mode) -> None:
    find(valid_cases(), lambda case: case.mode is mode, settings=_FIND, random=random.Random(0))


def test_client_cases_may_carry_a_server_name() -> None:
    find(valid_cases(), lambda case: case.server_name == b"localhost", settings=_FIND)


@given(
    st.data(),
    st.sampled_from(list(KeyType)),
    st.sampled_from(list(Encoding)),
    st.sampled_from([KeyFormat.PKCS8, KeyFormat.PKCS8_ENCRYPTED]),
)
def test_options_restrict_what_is_drawn(
    data: st.DataObject, kt: KeyType, cert_enc: Encoding, fmt: KeyFormat
) -> None:
    case = data.draw(
        valid_cases(key_types=[kt.value], cert_encodings=[cert_enc], key_formats=[fmt])
    )
    shape = _shape(case)
    assert (shape[0], shape[2], shape[3]) == (kt, cert_enc, fmt)


def test_shrinks_to_the_documented_simplest_case() -> None:
    simplest = find(valid_cases(), lambda _: True, settings=_SHRINK)
    assert _shape(simplest) == (KeyType.EC_P256, False, Encoding.PEM, KeyFormat.PKCS8, Encoding.PEM)
    assert simplest.mode is Mode.SERVER
    first = next(iter(DEFECTS))
    assert find(malformed_cases(), lambda _: True, settings=_SHRINK).labels == (first,)


# --- (e) option validation ------------------------------------------------------------------------

_BAD_OPTIONS: list[dict[str, Any]] = [
    {"key_types": ["rsa4096"]},
    {"key_types": []},
    {"key_types": "rsa2048"},
    {"key_types": [3]},
    {"modes": ["both"]},
    {"cert_encodings": ["base64"]},
    {"key_formats": ["pkcs12"]},
    {"key_encodings": ()},
    {"issued": "yes"},
    # Valid values that leave no key to write.
    {"key_types": ["ed25519"], "key_formats": ["pkcs1"]},
    {"key_formats": ["pkcs8-encrypted"], "key_encodings": ["der"]},
]


@pytest.mark.parametrize("options", _BAD_OPTIONS, ids=repr)
@pytest.mark.parametrize("make", [valid_cases, malformed_cases, init_cases])
def test_bad_options_raise_when_the_strategy_is_made(make: Any, options: dict[str, Any]) -> None:
    with pytest.raises(InvalidArgument):
        make(**options)


@pytest.mark.parametrize(
    "options",
    [
        {"defects": ["no-such-defect"]},
        {"defects": []},
        {"defects": "empty-cert"},
        {"max_defects": 0},
        {"max_defects": True},
        {"max_defects": 1.5},
        # Named defects that can't apply to any allowed base.
        {"defects": ["long-server-name"], "modes": ["server"]},
        {"defects": ["truncated-cert-der"], "cert_encodings": ["pem"]},
        {"defects": ["wrong-password"], "key_formats": ["pkcs8"]},
    ],
    ids=repr,
)
def test_bad_defect_options_raise_when_the_strategy_is_made(options: dict[str, Any]) -> None:
    with pytest.raises(InvalidArgument):
        malformed_cases(**options)


def test_unknown_defect_error_lists_the_valid_names() -> None:
    with pytest.raises(InvalidArgument, match="truncated-cert-pem"):
        malformed_cases(defects=["truncated-cert"])


@pytest.mark.parametrize("allowed", [[], ["rsa"], "ec-p256", [None]], ids=repr)
def test_key_types_validates_allowed(allowed: Any) -> None:
    with pytest.raises(InvalidArgument):
        strategies.key_types(allowed=allowed)


@given(strategies.key_types(allowed=["ed448", KeyType.RSA2048]))
def test_key_types_draws_only_allowed(kt: KeyType) -> None:
    assert kt in (KeyType.ED448, KeyType.RSA2048)


# --- generate -------------------------------------------------------------------------------------


def test_generate_is_deterministic_for_a_seed() -> None:
    first = generate(init_cases(max_defects=2), 30, seed=7)
    assert len(first) == 30
    assert generate(init_cases(max_defects=2), 30, seed=7) == first
    assert generate(init_cases(max_defects=2), 30, seed=8) != first


def test_generate_validates_n() -> None:
    assert generate(valid_cases(), 0, seed=0) == []
    with pytest.raises(InvalidArgument):
        generate(valid_cases(), -1, seed=0)
