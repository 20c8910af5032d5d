"""The defect catalogue's declarations: names, descriptions, fields, expectations."""

from __future__ import annotations

import itertools
import re
from typing import Any

import pytest

from tlsleak.cases.case import Mode
from tlsleak.cases.defects import DEFECTS, Base, Defect, Expect, Needs, defect
from tlsleak.cases.material import Encoding, KeyFormat, KeyType
from tlsleak.targets.base import Step

_NAME = re.compile(r"[a-z0-9]+(-[a-z0-9]+)*")
_FIELDS = {"ca", "cert", "key", "password", "server_name", "pair"}


def _all_bases() -> list[Base]:
    out = []
    for kt, fmt, key_enc, cert_enc, issued, mode in itertools.product(
        KeyType, KeyFormat, Encoding, Encoding, (False, True), Mode
    ):
        encrypted = fmt is KeyFormat.PKCS8_ENCRYPTED
        if not fmt.fits(kt) or (encrypted and key_enc is Encoding.DER):
            continue
        out.append(
            Base.build(
                kt,
                issued=issued,
                mode=mode,
                cert_encoding=cert_enc,
                key_format=fmt,
                key_encoding=key_enc,
                password=b"pw" if encrypted else b"",
            )
        )
    return out


def test_catalogue_has_at_least_28_defects() -> None:
    assert len(DEFECTS) >= 28


def test_names_are_lowercase_hyphenated_and_unique() -> None:
    names = [d.name for d in DEFECTS.values()]
    assert len(names) == len(set(names))
    for key, d in DEFECTS.items():
        assert key == d.name
        assert _NAME.fullmatch(d.name), d.name


@pytest.mark.parametrize("d", DEFECTS.values(), ids=lambda d: d.name)
def test_declaration_is_well_formed(d: Defect) -> None:
    assert d.description.strip() == d.description
    assert d.description
    assert "\n" not in d.description
    assert d.description[0].isupper()
    assert d.description.endswith(".")
    assert d.field in _FIELDS
    assert isinstance(d.expect, Expect)
    assert isinstance(d.needs, Needs)
    if d.steps is not None:
        assert d.steps, "an empty step set would make any rejection a failure"
        assert d.steps <= {str(s) for s in Step}
    if d.expect is Expect.ACCEPTED:
        assert d.steps is None, "an always-accepted defect has no rejection steps"
    assert callable(d.apply)


def test_every_defect_applies_to_some_base() -> None:
    bases = _all_bases()
    for d in DEFECTS.values():
        assert any(d.applies(b) for b in bases), d.name


def test_every_field_is_covered() -> None:
    assert {d.field for d in DEFECTS.values()} == _FIELDS


def test_apply_refuses_a_base_outside_the_needs() -> None:
    server = Base.build(KeyType.EC_P256, mode=Mode.SERVER)
    with pytest.raises(ValueError, match="does not apply"):
        DEFECTS["long-server-name"].apply(lambda strategy: None, server)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"key_type": KeyType.ED25519, "key_format": KeyFormat.PKCS1}, "can't be written"),
        ({"key_type": KeyType.EC_P256, "key_format": KeyFormat.PKCS8_ENCRYPTED}, "password"),
        (
            {
                "key_type": KeyType.EC_P256,
                "key_format": KeyFormat.PKCS8_ENCRYPTED,
                "key_encoding": Encoding.DER,
                "password": b"pw",
            },
            "must be PEM",
        ),
        ({"key_type": KeyType.EC_P256, "password": b"pw"}, "only an encrypted key"),
        ({"key_type": KeyType.EC_P256, "server_name": b"localhost"}, "only client mode"),
    ],
    ids=["pkcs1-ed25519", "no-password", "encrypted-der", "needless-password", "server-sni"],
)
def test_base_build_refuses_impossible_combinations(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Base.build(**options)


def test_decorator_refuses_undocumented_and_duplicate_defects() -> None:
    register = defect(field="cert", expect=Expect.REJECTED)

    def undocumented(draw, base):  # type: ignore[no-untyped-def]
        return base.case

    with pytest.raises(ValueError, match="docstring"):
        register(undocumented)

    def empty_cert(draw, base):  # type: ignore[no-untyped-def]
        """Already in the catalogue."""
        return base.case

    with pytest.raises(ValueError, match="twice"):
        register(empty_cert)
    with pytest.raises(ValueError, match="field"):
        defect(field="nonsense", expect=Expect.REJECTED)  # type: ignore[arg-type]
