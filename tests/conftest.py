"""Shared fixtures: small cases built from tlsleak's cached material."""

from __future__ import annotations

import pytest

from tlsleak.case import InitCase, Mode
from tlsleak.material import Encoding, KeyType, cert_bytes, identity, key_bytes

#: A PEM block whose body is not a certificate: OpenSSL's parser rejects it.
GARBAGE_CERT = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"


def _valid(mode: Mode = Mode.SERVER, key_type: KeyType = KeyType.EC_P256) -> InitCase:
    ident = identity(key_type)
    chain = b"".join(cert_bytes(c) for c in ident.chain)
    return InitCase(
        mode=mode,
        ca=cert_bytes(ident.root),
        cert=cert_bytes(ident.leaf) + chain,
        key=key_bytes(ident.key),
        server_name=b"localhost" if mode is Mode.CLIENT else b"",
    )


@pytest.fixture
def valid_case() -> InitCase:
    return _valid()


@pytest.fixture
def valid_client_case() -> InitCase:
    return _valid(Mode.CLIENT)


@pytest.fixture
def bad_cert_case() -> InitCase:
    ident = identity(KeyType.EC_P256)
    return InitCase(ca=cert_bytes(ident.root), cert=GARBAGE_CERT, key=key_bytes(ident.key))


@pytest.fixture
def bad_key_case() -> InitCase:
    ident = identity(KeyType.EC_P256)
    return InitCase(
        ca=cert_bytes(ident.root), cert=cert_bytes(ident.leaf), key=key_bytes(ident.key)[:-40]
    )


@pytest.fixture
def der_case() -> InitCase:
    ident = identity(KeyType.RSA2048, issued=False)
    return InitCase(
        cert=cert_bytes(ident.leaf, Encoding.DER), key=key_bytes(ident.key, encoding=Encoding.DER)
    )
