"""Control targets: the same init path with raw OpenSSL calls, once leaky and once fixed.

They prove the oracle on every test run.  Both follow the shape of an embedded
networking library's OpenSSL backend (Mongoose's before and after its fix):
make the ``SSL_CTX`` and the ``SSL`` first, then load the CA, the certificate
and chain, and the key from the user's buffers, and check that key and
certificate match.  (They load into the context, where OpenSSL can check the
pair; the binding has no ``SSL_check_private_key``.)

* ``control-leaky`` handles a failure the way that backend did before the fix:
  it jumps out freeing only its own bookkeeping and the temporaries of the
  step that failed; the ``SSL_CTX`` and ``SSL`` it made are lost, on every
  failed attempt.
* ``control-fixed`` routes every failure through its full teardown, as the
  library's other backend already did.

Calls go through the module global ``_lib`` (cryptography's binding), exactly
as pyOpenSSL's do, so the typed object ledger sees them.
"""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.bindings.openssl.binding import Binding

from tlsleak.cases.blobs import c_string, is_pem, pem_blocks
from tlsleak.cases.case import InitCase, Mode
from tlsleak.openssl.errors import ErrorQueue, binding_error_queue
from tlsleak.targets._binding import binding_ledgers, binding_probe
from tlsleak.targets.base import Outcome, Probe, Rejected, Status, Step

__all__ = ["ControlTarget"]

_lib: Any = Binding.lib
_ffi: Any = Binding.ffi
_NO_PASSWORD: Any = _ffi.new("char[]", b"")


class _Tls:
    """The library's own per-connection struct: all that the leaky path frees."""

    __slots__ = ("ctx", "ssl")

    def __init__(self) -> None:
        self.ctx: Any = _ffi.NULL
        self.ssl: Any = _ffi.NULL


def _fail(step: Step, message: str) -> Rejected:
    return Rejected(step, message, binding_error_queue().drain())


def _read(blob: bytes, pem: Any, der: Any, *pem_args: Any) -> Any:
    """Parse one object from ``blob`` through a memory BIO that is always freed."""
    buf = _ffi.from_buffer(blob)
    bio = _lib.BIO_new_mem_buf(buf, len(blob))
    if not bio:
        return _ffi.NULL
    try:
        if is_pem(blob):
            return pem(bio, _ffi.NULL, *pem_args)
        return der(bio, _ffi.NULL)
    finally:
        _lib.BIO_free(bio)


def _read_x509(block: bytes) -> Any:
    # An empty password, not NULL: for a block with an "ENCRYPTED" PEM header
    # OpenSSL's default callback would otherwise prompt on the terminal.
    return _read(block, _lib.PEM_read_bio_X509, _lib.d2i_X509_bio, _ffi.NULL, _NO_PASSWORD)


def _certs(blob: bytes) -> list[bytes]:
    return pem_blocks(blob) if is_pem(blob) else [blob]


def _load_ca(tls: _Tls, blob: bytes) -> None:
    store = _lib.SSL_CTX_get_cert_store(tls.ctx)
    for block in _certs(blob):
        x509 = _read_x509(block)
        if not x509:
            raise _fail(Step.CA, "cannot parse CA certificate")
        added = _lib.X509_STORE_add_cert(store, x509)
        _lib.X509_free(x509)  # the store took its own reference
        if added != 1:
            raise _fail(Step.CA, "cannot add CA certificate")


def _load_cert(tls: _Tls, blob: bytes) -> None:
    leaf, *chain = _certs(blob)
    x509 = _read_x509(leaf)
    if not x509:
        raise _fail(Step.CERTIFICATE, "cannot parse certificate")
    used = _lib.SSL_CTX_use_certificate(tls.ctx, x509)
    _lib.X509_free(x509)
    if used != 1:
        raise _fail(Step.CERTIFICATE, "certificate refused")
    for block in chain:
        extra = _read_x509(block)
        if not extra:
            raise _fail(Step.CHAIN, "cannot parse chain certificate")
        if _lib.SSL_CTX_add_extra_chain_cert(tls.ctx, extra) != 1:
            _lib.X509_free(extra)  # ownership only passes on success
            raise _fail(Step.CHAIN, "chain certificate refused")


def _load_key(tls: _Tls, blob: bytes, password: bytes) -> None:
    # With no callback, OpenSSL takes the last argument as the password (a C
    # string); an empty one makes an encrypted key fail instead of prompting.
    secret = _ffi.new("char[]", c_string(password))
    pkey = _read(blob, _lib.PEM_read_bio_PrivateKey, _lib.d2i_PrivateKey_bio, _ffi.NULL, secret)
    if not pkey:
        raise _fail(Step.KEY, "cannot parse private key")
    used = _lib.SSL_CTX_use_PrivateKey(tls.ctx, pkey)
    _lib.EVP_PKEY_free(pkey)
    if used != 1:
        raise _fail(Step.KEY, "private key refused")


def _teardown(tls: _Tls) -> None:
    if tls.ssl:
        _lib.SSL_free(tls.ssl)
        tls.ssl = _ffi.NULL
    if tls.ctx:
        _lib.SSL_CTX_free(tls.ctx)
        tls.ctx = _ffi.NULL


def _init(tls: _Tls, case: InitCase) -> None:
    client = case.mode is Mode.CLIENT
    method = _lib.TLS_client_method() if client else _lib.TLS_server_method()
    tls.ctx = _lib.SSL_CTX_new(method)
    if not tls.ctx:
        raise _fail(Step.CONTEXT, "SSL_CTX_new failed")
    tls.ssl = _lib.SSL_new(tls.ctx)
    if not tls.ssl:
        raise _fail(Step.CONNECTION, "SSL_new failed")
    if case.ca:
        _load_ca(tls, case.ca)
    if case.cert:
        _load_cert(tls, case.cert)
    if case.key:
        _load_key(tls, case.key, case.password)
    if (case.cert or case.key) and _lib.SSL_CTX_check_private_key(tls.ctx) != 1:
        raise _fail(Step.CHECK_KEY, "key does not match the certificate")
    name = c_string(case.server_name)
    if client and name:
        # Errors OpenSSL left behind calls that succeeded are not the name's
        # (careful code clears them; the pyopenssl target sets them aside).
        _lib.ERR_clear_error()
        # The binding declares SSL_set_tlsext_host_name void (the C macro
        # returns 1 or 0); a refusal shows as an entry on the error queue.
        _lib.SSL_set_tlsext_host_name(tls.ssl, name)
        if _lib.ERR_peek_error():
            raise _fail(Step.SERVER_NAME, "server name refused")


class ControlTarget:
    """Raw-binding init path; ``leaky`` picks the buggy failure branch."""

    @property
    def ledgers(self) -> tuple[str, ...]:
        return binding_ledgers()

    def __init__(self, *, leaky: bool) -> None:
        self.leaky = leaky
        if leaky:
            self.name = "control-leaky"
            self.description = "control: on failure frees only its own struct (SSL_CTX, SSL lost)"
        else:
            self.name = "control-fixed"
            self.description = "control: every failure goes through the full teardown"

    def error_queue(self) -> ErrorQueue:
        return binding_error_queue()

    def probe(self) -> Probe:
        """A BIO through cryptography's binding, the ``_lib`` this path calls."""
        return binding_probe()

    def run(self, case: InitCase) -> Outcome:
        tls = _Tls()
        try:
            _init(tls, case)
        except Rejected as exc:
            if not self.leaky:
                _teardown(tls)
            # The leaky branch: `free(tls)` and return - the handles are lost.
            return Outcome(Status.REJECTED, exc.step, exc.errors, exc.message)
        # OpenSSL can leave errors queued even when every call succeeded
        # (X509_STORE_add_cert on a certificate with a malformed extension
        # queues "invalid certificate" and returns 1): careful code clears
        # them.  (Not before the server name: the pyopenssl target reads the
        # queue there too, and the two must agree on what is refused.)
        _lib.ERR_clear_error()
        _teardown(tls)
        return Outcome.accepted()
