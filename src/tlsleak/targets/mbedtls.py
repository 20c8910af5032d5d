"""The ``mbedtls`` target: a TLS init path on python-mbedtls, as a server or client sets one up.

python-mbedtls (package ``mbedtls``) wraps Mbed TLS 2.28, which its wheels
bundle.  Steps, in order: parse every CA certificate and add it to a
``TrustStore``; parse the leaf certificate, then the rest of the bundle as its
chain; parse the private key (with the password); check that key and
certificate match; build the ``TLSConfiguration`` and from it the
``ServerContext`` or ``ClientContext`` (this is where Mbed TLS's
``mbedtls_ssl_config`` is made and given the certificate, key and CA chain);
wrap a socket-less TLS object with ``wrap_buffers`` (``mbedtls_ssl_setup``),
with the server name in client mode.  Teardown is the binding's normal one:
``shutdown()`` on the wrapped buffers, then dropping the last reference to
each object frees its Mbed TLS context.

Mbed TLS allocates with the C library's ``calloc``, so the process heap
ledger (``heap``) sees it; it has no OpenSSL, so there is no error queue to
read and no OpenSSL ledger can see it.

What the path decides, and why:

* Certificates are parsed one PEM block at a time with ``CRT.from_PEM``, or
  as one DER certificate with ``CRT.from_DER``: the binding's own idiom
  (``TrustStore.from_pem_file`` does the same).  ``from_PEM`` takes text and
  decodes it in Python: it drops every line that starts with ``-----``
  (whatever the label) and base64-decodes the rest.  So its refusals are
  Python's, not Mbed TLS's: ``binascii.Error`` for bad base64,
  ``UnicodeEncodeError`` for a non-ASCII line, ``ValueError`` for an empty
  body.  They are rejections at the step that parsed the block.  A block
  that is not UTF-8 text can't be handed to ``from_PEM`` at all and is
  rejected by us at that step.
* ``CRT.from_buffer`` is not used: it calls ``mbedtls_x509_crt_parse``, which
  needs PEM to end with a NUL byte and reads anything else as DER.
* The key is read with ``RSA.from_buffer(blob, password)`` whatever its type:
  ``RSA`` and ``ECC`` both parse with the generic ``mbedtls_pk_parse_key``,
  and the key keeps its own type (the class only picks Python-side helpers
  this path never calls).  When that fails, the binding retries the blob as
  a *public* key (``mbedtls_pk_parse_public_key``), so the error shown is
  that second parser's, and a public key loads as a "private" one; the pair
  check then refuses it.
* Passwords: the binding passes the case's password to Mbed TLS, which
  never prompts (there is no callback to fall back on); no password reads
  as "none".  Mbed TLS 2.28 decrypts legacy PEM encryption (``Proc-Type:
  4,ENCRYPTED``) and PKCS#8 with PKCS#12 PBE or PBES2 on DES/3DES with
  HMAC-SHA1, but not PBES2 with AES or HMAC-SHA256 (what OpenSSL writes
  today, and tlsleak's own encrypted keys): such keys are refused even with
  the right password.
* Key and certificate: ``TLSConfiguration`` silently drops a certificate
  chain without a key (and a key without certificates), and
  ``mbedtls_ssl_conf_own_cert`` does not check that they match.  An
  application must check the pair itself (``pk.check_pair`` is
  ``mbedtls_pk_check_pair``), so this path does, and rejects a lone
  certificate or key at step ``check-key``, as the other targets do.
* A client always verifies the server (PEP 543's default); a server
  verifies clients when it is given a CA.
* The server name (client mode only) is cut at the first NUL, as a C string
  is, and decoded as UTF-8.  ``mbedtls_ssl_set_hostname`` refuses one over
  255 bytes with ``MBEDTLS_ERR_SSL_BAD_INPUT_DATA``; any other error from
  ``wrap_buffers`` is ``mbedtls_ssl_setup`` failing (out of memory), at
  step ``connection``.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import Any, Final

import mbedtls
import mbedtls.version
from mbedtls import pk, tls, x509
from mbedtls.exceptions import TLSError

from tlsleak.cases.blobs import is_pem, pem_blocks
from tlsleak.cases.case import InitCase, Mode
from tlsleak.ledgers import heap_available
from tlsleak.openssl.errors import ErrorQueue
from tlsleak.targets.base import Outcome, Probe, Rejected, Status, Step, server_name_text

__all__ = ["MbedTLSTarget"]

#: MBEDTLS_ERR_SSL_BAD_INPUT_DATA, as TLSError.err gives it (positive).
_SSL_BAD_INPUT_DATA: Final = 0x7100

# A self-signed P-256 certificate (public test data; its key was thrown
# away): what the probe parses.  Mbed TLS 2.28 parses no Ed25519 certificate.
_PROBE_CERT: Final = base64.b64decode(
    "MIIBdDCCARqgAwIBAgIBATAKBggqhkjOPQQDAjAYMRYwFAYDVQQDDA10bHNsZWFr"
    "IHByb2JlMCAXDTI2MTIwNTA0MzY1N1oYDzIxMjYxMTExMDQzNjU3WjAYMRYwFAYD"
    "VQQDDA10bHNsZWFrIHByb2JlMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAETqsC"
    "RoxR8RzBa6ZSnArHQXS4a4CU/xI1RrewQTuCGH1K2vI1baJtt5V52b2VJ/VADpm+"
    "wP5VXqcbkcvXMYafqKNTMFEwHQYDVR0OBBYEFEtlQ2qyMaCr9cBAfVYk9NP+Djfi"
    "MB8GA1UdIwQYMBaAFEtlQ2qyMaCr9cBAfVYk9NP+DjfiMA8GA1UdEwEB/wQFMAMB"
    "Af8wCgYIKoZIzj0EAwIDSAAwRQIgOsalRLwO/I9pEtvZWzSe9ja7KPGZFtTqXa8r"
    "c9iDIPYCIQCxNK8t3tkDc5L9lk7ZWu84oK9rlrOp7QiLAg7uvMsUQg=="
)


def _tls_error(step: str, exc: TLSError) -> Rejected:
    # str(exc) is "TLSError([0x2180] 'X509 - ...')"; keep the code and text.
    code = getattr(exc, "err", None)
    text = getattr(exc, "msg", "") or str(exc)
    return Rejected(step, f"[0x{code:04X}] {text}" if isinstance(code, int) else text)


def _load_cert(block: bytes, step: str) -> x509.CRT:
    """One certificate, the binding's way: ``from_PEM`` for armored text, else ``from_DER``."""
    try:
        if not is_pem(block):
            return x509.CRT.from_DER(block)
        try:
            text = block.decode("utf-8")
        except UnicodeDecodeError:
            raise Rejected(step, "PEM block is not UTF-8 text (CRT.from_PEM takes str)") from None
        return x509.CRT.from_PEM(text)
    except TLSError as exc:
        raise _tls_error(step, exc) from None
    except binascii.Error as exc:  # from_PEM's own decoding, in Python
        raise Rejected(step, f"PEM body is not base64: {exc}") from None
    except UnicodeEncodeError as exc:  # from_PEM encodes each line as ASCII
        raise Rejected(step, f"PEM line is not ASCII: {exc}") from None
    except ValueError as exc:
        # from_DER (and so from_PEM) refuses an empty body before Mbed TLS sees it.
        if not str(exc).startswith("Cannot create CRT from an empty buffer"):
            raise
        raise Rejected(step, str(exc)) from None


def _blocks(blob: bytes) -> list[bytes]:
    return pem_blocks(blob) if is_pem(blob) else [blob]


class _Attempt:
    """What one attempt made, held until its teardown (the last references)."""

    __slots__ = ("buffers", "chain", "context", "key", "step", "store")

    def __init__(self) -> None:
        self.step: str = Step.CONTEXT
        self.store: tls.TrustStore | None = None
        self.chain: list[x509.CRT] = []
        # A pk.RSA, which the binding's stubs don't take for their PrivateKey.
        self.key: Any = None
        self.context: tls.ClientContext | tls.ServerContext | None = None
        self.buffers: tls.TLSWrappedBuffer | None = None


class MbedTLSTarget:
    """Init path on python-mbedtls (Mbed TLS 2.28, bundled in its wheels)."""

    name = "mbedtls"
    description = (
        "python-mbedtls (Mbed TLS): CA store, cert+chain, key, pair check, context, buffers, SNI"
    )

    @property
    def ledgers(self) -> tuple[str, ...]:
        """The process heap where the interposer is preloaded, and descriptors."""
        return ("heap", "fds") if heap_available() else ("fds",)

    def error_queue(self) -> ErrorQueue | None:
        """None: Mbed TLS returns its errors, it keeps no queue."""
        return None

    def probe(self) -> Probe:
        """A certificate parsed by Mbed TLS through the binding, as the path's first object."""

        def allocate() -> Callable[[], None]:
            held = [x509.CRT.from_DER(_PROBE_CERT)]
            return held.clear  # the last reference goes: mbedtls_x509_crt_free

        return Probe(f"python-mbedtls {mbedtls.__version__}, {mbedtls.version.version}", allocate)

    def run(self, case: InitCase) -> Outcome:
        attempt = _Attempt()
        try:
            self._init(case, attempt)
            outcome = Outcome.accepted()
        except Rejected as exc:
            outcome = Outcome(Status.REJECTED, exc.step, (), exc.message)
        except Exception as exc:  # anything else is itself a finding
            outcome = Outcome(Status.ERROR, attempt.step, (), f"{type(exc).__name__}: {exc}")
        try:
            self._teardown(attempt, failed=outcome.status is not Status.ACCEPTED)
        except Exception as exc:  # a teardown that raises is a finding too
            return Outcome(Status.ERROR, Step.TEARDOWN, (), f"{type(exc).__name__}: {exc}")
        return outcome

    def _teardown(self, attempt: _Attempt, *, failed: bool) -> None:
        """The binding's normal teardown: shut the buffers, drop every reference.

        ``failed`` says whether the attempt was rejected (or raised); a
        variant of this target that mishandles failures overrides this.
        """
        buffers, attempt.buffers = attempt.buffers, None
        if buffers is not None:
            buffers.shutdown()  # close_notify: a no-op before any handshake
        attempt.context = attempt.key = attempt.store = None
        attempt.chain = []

    def _init(self, case: InitCase, attempt: _Attempt) -> None:
        client = case.mode is Mode.CLIENT
        if case.ca:
            attempt.step = Step.CA
            attempt.store = tls.TrustStore()
            for block in _blocks(case.ca):
                attempt.store.add(_load_cert(block, Step.CA))
        if case.cert:
            attempt.step = Step.CERTIFICATE
            leaf, *rest = _blocks(case.cert)
            attempt.chain.append(_load_cert(leaf, Step.CERTIFICATE))
            attempt.step = Step.CHAIN
            for block in rest:
                attempt.chain.append(_load_cert(block, Step.CHAIN))
        if case.key:
            attempt.step = Step.KEY
            try:
                attempt.key = pk.RSA.from_buffer(case.key, case.password or None)
            except TLSError as exc:
                raise _tls_error(Step.KEY, exc) from None
        if case.cert or case.key:
            attempt.step = Step.CHECK_KEY
            _check_pair(attempt.chain, attempt.key)
        attempt.step = Step.CONTEXT
        config = tls.TLSConfiguration(
            validate_certificates=client or bool(case.ca),
            certificate_chain=(tuple(attempt.chain), attempt.key) if attempt.chain else None,
            trust_store=attempt.store,
        )
        try:
            attempt.context = tls.ClientContext(config) if client else tls.ServerContext(config)
        except TLSError as exc:
            raise _tls_error(Step.CONTEXT, exc) from None
        attempt.step = Step.CONNECTION
        hostname = server_name_text(case) if client else None
        if hostname:
            attempt.step = Step.SERVER_NAME
        try:
            attempt.buffers = _wrap_buffers(attempt.context, hostname)
        except TLSError as exc:
            named = hostname is not None and getattr(exc, "err", None) == _SSL_BAD_INPUT_DATA
            raise _tls_error(Step.SERVER_NAME if named else Step.CONNECTION, exc) from None


def _wrap_buffers(
    context: tls.ClientContext | tls.ServerContext, hostname: str | None
) -> tls.TLSWrappedBuffer:
    """The socket-less TLS object: ``mbedtls_ssl_setup``, then the client's server name."""
    if isinstance(context, tls.ClientContext):
        return context.wrap_buffers(hostname)
    return context.wrap_buffers()


def _check_pair(chain: list[x509.CRT], key: Any) -> None:
    """Refuse a lone certificate or key, and a pair that doesn't match (the binding doesn't)."""
    if not chain:
        raise Rejected(Step.CHECK_KEY, "private key without a certificate")
    if key is None:
        raise Rejected(Step.CHECK_KEY, "certificate without a private key")
    try:
        public = chain[0].subject_public_key
    except TLSError as exc:
        raise _tls_error(Step.CHECK_KEY, exc) from None
    except NotImplementedError as exc:
        # The binding wraps RSA and EC keys only (not, say, an id-ecDH key).
        message = f"the binding can't read the certificate's key: {exc}"
        raise Rejected(Step.CHECK_KEY, message) from None
    if not pk.check_pair(public, key):
        raise Rejected(Step.CHECK_KEY, "key does not match the certificate")
