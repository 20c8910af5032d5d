"""The ``pyopenssl`` target: a TLS init path written on pyOpenSSL, as an embedded library does it.

Steps, in order: create the context for the mode; load every CA certificate
into the verify store; use the leaf certificate and add the rest of the bundle
as chain; use the private key (with the password); check that key and
certificate match; create the connection object; in client mode, set the
server name.  Teardown is pyOpenSSL's normal one: dropping the last reference
to each object frees it.

Blobs are parsed with pyOpenSSL's own loaders, so a malformed blob is rejected
by OpenSSL's parser with OpenSSL's errors (library, reason) - which is what the
report shows.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, Final

from cryptography.hazmat.bindings.openssl.binding import Binding
from OpenSSL import SSL, crypto

from tlsleak.cases.blobs import c_string, is_pem, pem_blocks
from tlsleak.cases.case import InitCase, Mode
from tlsleak.openssl.errors import ErrorQueue, binding_error_queue, pyopenssl_error_entries
from tlsleak.targets._binding import binding_ledgers, binding_version
from tlsleak.targets.base import Outcome, Probe, Rejected, Status, Step

__all__ = ["PyOpenSSLTarget"]


def _no_password(_rwflag: int) -> bytes:
    # Without a callback OpenSSL falls back to prompting on the terminal for an
    # encrypted key: a fuzz run would hang on the first one.  An empty answer
    # makes OpenSSL fail the read instead, as a library with no password does.
    return b""


def _cert_blocks(blob: bytes) -> list[bytes]:
    return pem_blocks(blob) if is_pem(blob) else [blob]


def _load_cert(block: bytes) -> crypto.X509:
    kind = crypto.FILETYPE_PEM if is_pem(block) else crypto.FILETYPE_ASN1
    return crypto.load_certificate(kind, block)


def _load_key(blob: bytes, password: bytes) -> crypto.PKey:
    if is_pem(blob):
        return crypto.load_privatekey(crypto.FILETYPE_PEM, blob, password or _no_password)
    # pyOpenSSL refuses a passphrase for DER (it can't decrypt DER keys); an
    # encrypted DER key is simply rejected by the parser.
    return crypto.load_privatekey(crypto.FILETYPE_ASN1, blob)


class _Progress:
    __slots__ = ("step",)

    def __init__(self) -> None:
        self.step: str = Step.CONTEXT


# pyOpenSSL's own binding (cryptography's): the library whose queue it uses.
_LIB: Any = Binding.lib

_PASSPHRASE_TOO_LONG: Final = "passphrase returned by callback is too long"


class PyOpenSSLTarget:
    """Init path on pyOpenSSL (the default target)."""

    name = "pyopenssl"
    description = "pyOpenSSL: context, CA store, cert+chain, key, key check, connection, SNI"

    @property
    def ledgers(self) -> tuple[str, ...]:
        return binding_ledgers()

    def error_queue(self) -> ErrorQueue:
        return binding_error_queue()

    def probe(self) -> Probe:
        """A context made by pyOpenSSL itself, as the init path makes its first object."""

        def allocate() -> Callable[[], None]:
            held = [SSL.Context(SSL.TLS_METHOD)]
            return held.clear  # the last reference goes: pyOpenSSL frees the SSL_CTX

        return Probe(f"pyOpenSSL on cryptography's OpenSSL binding, {binding_version()}", allocate)

    def run(self, case: InitCase) -> Outcome:
        progress = _Progress()
        try:
            self._init(case, progress)
        except (SSL.Error, crypto.Error) as exc:
            return Outcome(Status.REJECTED, progress.step, pyopenssl_error_entries(exc))
        except Rejected as exc:
            return Outcome(Status.REJECTED, exc.step, exc.errors, exc.message)
        except ValueError as exc:
            if progress.step is Step.KEY and str(exc) == _PASSPHRASE_TOO_LONG:
                # pyOpenSSL's own refusal, by design: OpenSSL hands the
                # passphrase callback a PEM_BUFSIZE (1024-byte) buffer, and
                # pyOpenSSL raises rather than truncate.  A rejection of the
                # input, not a bug (leaks are still measured either way).
                return Outcome(Status.REJECTED, progress.step, (), str(exc))
            return Outcome(Status.ERROR, progress.step, (), f"{type(exc).__name__}: {exc}")
        except Exception as exc:  # anything else is itself a finding
            return Outcome(Status.ERROR, progress.step, (), f"{type(exc).__name__}: {exc}")
        return Outcome.accepted()

    def _init(self, case: InitCase, progress: _Progress) -> None:
        client = case.mode is Mode.CLIENT
        ctx = SSL.Context(SSL.TLS_CLIENT_METHOD if client else SSL.TLS_SERVER_METHOD)
        with warnings.catch_warnings():
            # Passing pyOpenSSL X509/PKey objects is deprecated in favour of
            # cryptography's, but cryptography's parsers raise ValueError, not
            # OpenSSL's errors; the init paths we model parse with OpenSSL.
            warnings.simplefilter("ignore", DeprecationWarning)
            if case.ca:
                progress.step = Step.CA
                store = ctx.get_cert_store()
                assert store is not None  # SSL_CTX_new always makes one
                for block in _cert_blocks(case.ca):
                    store.add_cert(_load_cert(block))
                if client:
                    ctx.set_verify(SSL.VERIFY_PEER)
            if case.cert:
                progress.step = Step.CERTIFICATE
                leaf, *chain = _cert_blocks(case.cert)
                ctx.use_certificate(_load_cert(leaf))
                progress.step = Step.CHAIN
                for block in chain:
                    ctx.add_extra_chain_cert(_load_cert(block))
            if case.key:
                progress.step = Step.KEY
                ctx.use_privatekey(_load_key(case.key, case.password))
        if case.cert or case.key:
            progress.step = Step.CHECK_KEY
            ctx.check_privatekey()
        progress.step = Step.CONNECTION
        conn = SSL.Connection(ctx, None)
        if client and case.server_name:
            progress.step = Step.SERVER_NAME
            _set_server_name(conn, c_string(case.server_name), self.error_queue())


def _set_server_name(conn: Any, name: bytes, queue: ErrorQueue) -> None:
    # pyOpenSSL drops SSL_set_tlsext_host_name's return value (a name over 255
    # bytes fails and leaves its error queued).  An init path that checks the
    # return value rejects the name; the queue is how we can see it here.
    # Errors queued before the call are not the name's: OpenSSL leaves some
    # behind calls that succeeded (a DER key that loads after its decoders
    # tried other formats leaves "DECODER routines: unsupported").  They are
    # set aside, the call is judged by what it adds, and they are put back,
    # as pyOpenSSL leaves them: still queued when the attempt ends.
    if not name:
        return
    stale = _pop_codes()
    try:
        conn.set_tlsext_host_name(name)
        errors = queue.drain()
    finally:
        _put_back(stale)
    if errors:
        raise Rejected(Step.SERVER_NAME, "server name refused", errors)


# OpenSSL 3 packs an error as library << 23 | reason, or a system error as
# ERR_SYSTEM_FLAG | errno (include/openssl/err.h.in).
_SYSTEM_FLAG: Final = 0x80000000
_ERR_LIB_SYS: Final = 2


def _pop_codes() -> list[int]:
    codes = []
    while code := _LIB.ERR_get_error():
        codes.append(int(code))
    return codes


def _put_back(codes: list[int]) -> None:
    for code in codes:
        if code & _SYSTEM_FLAG:
            lib, reason = _ERR_LIB_SYS, code & ~_SYSTEM_FLAG
        else:
            lib, reason = (code >> 23) & 0xFF, code & 0x7FFFFF
        _LIB.ERR_put_error(lib, 0, reason, b"tlsleak", 0)
