"""The typed OpenSSL object ledger, on planted bugs and on correct code.

Every model rule (constructor, free, up-ref, ownership transfer) is shown
twice: a program that breaks it is counted, one that follows it nets zero.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator
from typing import Any

import OpenSSL.SSL
import pytest
from cryptography.hazmat.bindings.openssl.binding import Binding

from tlsleak.cases.material import KeyType, cert_bytes, identity
from tlsleak.ledgers import FdLedger, OpenSSLObjectLedger, growth

lib: Any = Binding.lib  # rebound to the ledger's proxy while it runs, like pyOpenSSL's
ffi: Any = Binding.ffi
_this = sys.modules[__name__]


@pytest.fixture
def ledger() -> Iterator[OpenSSLObjectLedger]:
    led = OpenSSLObjectLedger()
    led.start()
    yield led
    led.stop()


def _x509() -> Any:
    pem = cert_bytes(identity(KeyType.EC_P256).leaf)
    buf = ffi.from_buffer(pem)
    bio = _this.lib.BIO_new_mem_buf(buf, len(pem))
    x509 = _this.lib.PEM_read_bio_X509(bio, ffi.NULL, ffi.NULL, ffi.NULL)
    _this.lib.BIO_free(bio)
    assert x509
    return x509


def test_module_globals_are_rebound_while_started(ledger: OpenSSLObjectLedger) -> None:
    assert _this.lib is not Binding.lib
    assert OpenSSL.SSL._lib is not Binding.lib  # type: ignore[attr-defined]
    ledger.stop()
    assert _this.lib is Binding.lib
    assert OpenSSL.SSL._lib is Binding.lib  # type: ignore[attr-defined]


def test_unfreed_object_is_counted(ledger: OpenSSLObjectLedger) -> None:
    before = ledger.snapshot()
    x509 = _x509()
    assert growth(before, ledger.snapshot()) == {"X509": 1}
    _this.lib.X509_free(x509)
    assert growth(before, ledger.snapshot()) == {}


def test_up_ref_needs_its_own_free(ledger: OpenSSLObjectLedger) -> None:
    before = ledger.snapshot()
    x509 = _x509()
    assert _this.lib.X509_up_ref(x509) == 1
    _this.lib.X509_free(x509)
    assert growth(before, ledger.snapshot()) == {"X509": 1}  # one reference still held
    _this.lib.X509_free(x509)
    assert growth(before, ledger.snapshot()) == {}


def test_ssl_set_bio_hands_both_bios_to_the_ssl(ledger: OpenSSLObjectLedger) -> None:
    before = ledger.snapshot()
    ctx = _this.lib.SSL_CTX_new(_this.lib.TLS_method())
    ssl = _this.lib.SSL_new(ctx)
    rbio = _this.lib.BIO_new(_this.lib.BIO_s_mem())
    wbio = _this.lib.BIO_new(_this.lib.BIO_s_mem())
    _this.lib.SSL_set_bio(ssl, rbio, wbio)
    assert growth(before, ledger.snapshot()) == {"SSL_CTX": 1, "SSL": 1, "BIO": 2}
    _this.lib.SSL_free(ssl)  # frees the BIOs it owns
    _this.lib.SSL_CTX_free(ctx)
    assert growth(before, ledger.snapshot()) == {}


def test_bios_never_handed_over_are_leaked(ledger: OpenSSLObjectLedger) -> None:
    before = ledger.snapshot()
    ctx = _this.lib.SSL_CTX_new(_this.lib.TLS_method())
    ssl = _this.lib.SSL_new(ctx)
    bios = [_this.lib.BIO_new(_this.lib.BIO_s_mem()) for _ in range(2)]
    _this.lib.SSL_free(ssl)
    _this.lib.SSL_CTX_free(ctx)
    assert growth(before, ledger.snapshot()) == {"BIO": 2}
    for bio in bios:
        _this.lib.BIO_free(bio)


def test_same_bio_for_both_directions_is_one_reference(ledger: OpenSSLObjectLedger) -> None:
    before = ledger.snapshot()
    ctx = _this.lib.SSL_CTX_new(_this.lib.TLS_method())
    ssl = _this.lib.SSL_new(ctx)
    bio = _this.lib.BIO_new(_this.lib.BIO_s_mem())
    _this.lib.SSL_set_bio(ssl, bio, bio)
    _this.lib.SSL_free(ssl)
    _this.lib.SSL_CTX_free(ctx)
    assert growth(before, ledger.snapshot()) == {}


def test_extra_chain_cert_belongs_to_the_context(ledger: OpenSSLObjectLedger) -> None:
    before = ledger.snapshot()
    ctx = _this.lib.SSL_CTX_new(_this.lib.TLS_method())
    assert _this.lib.SSL_CTX_add_extra_chain_cert(ctx, _x509()) == 1
    assert growth(before, ledger.snapshot()) == {"SSL_CTX": 1, "X509": 1}
    _this.lib.SSL_CTX_free(ctx)
    assert growth(before, ledger.snapshot()) == {}


def test_pyopenssl_objects_are_counted_and_freed(ledger: OpenSSLObjectLedger) -> None:
    before = ledger.snapshot()
    ctx = OpenSSL.SSL.Context(OpenSSL.SSL.TLS_METHOD)
    conn = OpenSSL.SSL.Connection(ctx, None)
    assert growth(before, ledger.snapshot()) == {"SSL_CTX": 1, "SSL": 1, "BIO": 2}
    del conn, ctx
    assert growth(before, ledger.snapshot()) == {}


def test_module_imported_after_start_is_rebound(ledger: OpenSSLObjectLedger) -> None:
    late = types.ModuleType("tlsleak_test_late_module")
    late.lib = Binding.lib  # type: ignore[attr-defined]
    sys.modules[late.__name__] = late
    try:
        ledger.snapshot()
        assert late.lib is not Binding.lib  # type: ignore[attr-defined]
    finally:
        del sys.modules[late.__name__]


def test_uncounted_attributes_are_the_real_ones(ledger: OpenSSLObjectLedger) -> None:
    assert _this.lib.SSL_CTX_set_mode is Binding.lib.SSL_CTX_set_mode
    assert _this.lib.SSL_VERIFY_PEER == Binding.lib.SSL_VERIFY_PEER


def test_snapshot_before_start_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="not started"):
        OpenSSLObjectLedger().snapshot()


@pytest.mark.parametrize("by_size", [True, False], ids=["stat-size", "listing"])
def test_fd_ledger_counts_descriptors(tmp_path: Any, by_size: bool) -> None:
    led = FdLedger()
    led.start()
    if by_size and not led._size_is_count:
        pytest.skip("this kernel does not report the descriptor count as the size")
    led._size_is_count = by_size
    before = led.snapshot()
    f = (tmp_path / "x").open("w")
    assert growth(before, led.snapshot()) == {"fd": 1}
    f.close()
    assert growth(before, led.snapshot()) == {}
    led.stop()


def test_injected_constructor_failure_returns_null(ledger: OpenSSLObjectLedger) -> None:
    before = ledger.snapshot()
    ledger.reset_allocations()
    _this.lib.BIO_free(_this.lib.BIO_new(_this.lib.BIO_s_mem()))
    assert ledger.allocations() == 1
    ledger.fail_at(2)
    first = _this.lib.BIO_new(_this.lib.BIO_s_mem())
    second = _this.lib.BIO_new(_this.lib.BIO_s_mem())
    ledger.fail_at(0)
    assert first
    assert second == ffi.NULL
    _this.lib.BIO_free(first)
    assert growth(before, ledger.snapshot()) == {}


def test_handing_objects_to_null_keeps_them_live(ledger: OpenSSLObjectLedger) -> None:
    # A caller that passes an unchecked NULL SSL to SSL_set_bio still owns
    # its BIOs (pyOpenSSL's Connection does this when SSL_new fails).
    before = ledger.snapshot()
    bio = _this.lib.BIO_new(_this.lib.BIO_s_mem())
    _this.lib.SSL_set_bio(ffi.NULL, bio, bio)
    assert growth(before, ledger.snapshot()) == {"BIO": 1}
    _this.lib.BIO_free(bio)
