"""Minimisation down into the DER: elements a failure doesn't need are dropped."""

from __future__ import annotations

from cryptography import x509

from tlsleak.cases.case import InitCase
from tlsleak.cases.material import Encoding, KeyType, cert_bytes, identity
from tlsleak.check.minimize import minimize


def _loads_with_subject(blob: bytes, encoding: Encoding) -> bool:
    try:
        if encoding is Encoding.DER:
            cert = x509.load_der_x509_certificate(blob)
        else:
            cert = x509.load_pem_x509_certificate(blob)
        return bool(cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME))
    except ValueError:
        return False


def test_der_elements_the_predicate_does_not_need_are_dropped() -> None:
    leaf = identity(KeyType.EC_P256).leaf
    for encoding in (Encoding.DER, Encoding.PEM):
        blob = cert_bytes(leaf, encoding)
        case = InitCase(cert=blob)

        # "It still parses as a certificate with a CN": truncation can't keep
        # that, dropping the extensions (and more) can.
        def fails(c: InitCase, encoding: Encoding = encoding) -> bool:
            return _loads_with_subject(c.cert, encoding)

        small = minimize(case, fails, budget=300)
        assert fails(small)
        assert len(small.cert) < len(blob) * 0.85, (encoding, len(small.cert), len(blob))
        dropped = (
            x509.load_der_x509_certificate(small.cert)
            if encoding is Encoding.DER
            else x509.load_pem_x509_certificate(small.cert)
        )
        assert len(list(dropped.extensions)) < len(list(leaf.extensions))


def test_nothing_is_dropped_when_every_byte_matters() -> None:
    blob = cert_bytes(identity(KeyType.EC_P256).leaf, Encoding.DER)
    case = InitCase(cert=blob)
    assert minimize(case, lambda c: c.cert == blob, budget=300) == case
