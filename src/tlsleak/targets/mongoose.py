"""The ``mongoose`` target: Mongoose's built-in TLS through ``cymongoose``, as a service sets it up.

Mongoose calls ``mg_tls_init(c, &opts)`` on a connection: a server on
``MG_EV_ACCEPT``, a client on ``MG_EV_CONNECT``.  So each attempt opens a
loopback pair on one long-lived manager (a listener on 127.0.0.1 and a plain
client connection to it), calls ``Connection.tls_init(TlsOpts(ca, cert, key,
name))`` on the accepted side (server mode) or on the client (client mode,
``name`` = the case's server name), polls a few more times so that the
handshake starts (a client writes its ClientHello, a server waits for one),
then closes both ends the documented way: ``drain()``, poll until each gets
``MG_EV_CLOSE`` (which runs ``mg_tls_free``).  Nothing but 127.0.0.1 is
reached.

What the path decides, and why:

* **One manager for the target, not one per attempt.**  cymongoose 0.2.5's
  ``Manager`` takes a reference to itself in ``__cinit__`` and drops it only in
  ``__dealloc__``, which that reference keeps from ever running: every
  ``Manager`` lives for ever (its ``threading.Lock`` is a 40-byte ``malloc``
  the ``heap`` ledger shows on each attempt; ``mg_mgr_free`` does run, in
  ``close()``).  That is a leak of the binding, the same on every input, and
  it would hide the TLS stack's own leaks under one signature; an application
  has one manager anyway.  See docs/mongoose.md.
* **No SNTP.**  ``mg_tls_init`` starts an SNTP query to time.google.com
  (``mg_sntp_connect``: a DNS query to 8.8.8.8 first) when a CA is given,
  verification is not skipped and ``mg_boot_timestamp_ms`` is 0, i.e. the
  wall-clock time is not known.  cymongoose sets that timestamp from the OS
  clock at import; the target checks it before every ``tls_init`` and sets it
  the same way (``time() - mg_millis()``, as Mongoose's desktop examples do)
  if it is 0, so the query is never started.  Verification itself stays on.
* **Where Mongoose says what it refused.**  Some refusals are
  ``mg_error(c, ...)``: an ``MG_EV_ERROR`` event with a message, after which
  the connection closes.  Others are only a log line, and ``mg_tls_init``
  returns early with no event at all: "Failed to load CA certificate" (the rest
  of init, certificate and key, is skipped) and "Failed to load certificate"
  (the key is skipped).  So the target installs its own log function
  (``mg_log_set_fn``) at level ERROR, which also keeps Mongoose off stdout, and
  maps both to steps.  Which step: see :data:`_EVENT_STEPS` and
  :data:`_LOG_STEPS`.  Indistinguishable: a failed allocation while decoding
  PEM logs the same line as a malformed blob; a bad certificate in the chain
  is reported as the certificate (``certificate``, never ``chain``); and every
  key format error is ``key``.
* **What Mongoose does not check at init.**  It does not parse certificates
  beyond PEM and base64 (a non-PEM blob is taken as DER as is), never checks
  that key and certificate match, takes no password (an encrypted key is
  refused as a key of no known label), and ignores a key given without a
  certificate.  Those cases are accepted here, as Mongoose accepts them.

Mongoose allocates with ``calloc``/``free`` (``mg_calloc``), so the ``heap``
ledger sees it, tried by :meth:`MongooseTarget.probe` with one ``mg_calloc``.
No OpenSSL ledger can: there is no OpenSSL.
"""

from __future__ import annotations

import ctypes
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import cymongoose

from tlsleak.cases.case import InitCase, Mode
from tlsleak.openssl.errors import ErrorQueue
from tlsleak.targets.base import Outcome, Probe, Rejected, Status, Step

__all__ = ["MongooseTarget"]

#: Polls that may pass before TLS init has run (a loopback connect and accept
#: take two or three).
MAX_INIT_POLLS: Final = 100
#: Polls after TLS init: the handshake starts, and an ``mg_error`` closes.
AFTER_INIT_POLLS: Final = 3
#: Polls that may pass until both ends have closed.
MAX_CLOSE_POLLS: Final = 100
#: Milliseconds one poll may wait for loopback I/O.
_POLL_MS: Final = 1

# mg_error messages of the built-in TLS's mg_tls_init (Mongoose 7.23).
_EVENT_STEPS: Final = {
    "tls oom": Step.CONTEXT,
    "hostname too long": Step.SERVER_NAME,
    "Certificate provided without a private key": Step.KEY,
    "EC private key: invalid ASN.1": Step.KEY,
    "Invalid RSA private key format": Step.KEY,
    "Unsupported PKCS#8 private key format, algorithm, or curve": Step.KEY,
    "Expected EC PRIVATE KEY, RSA PRIVATE KEY, or PRIVATE KEY (PKCS#8)": Step.KEY,
}
# mg_error formats into 64 bytes: a longer message arrives cut to 63 characters.
_MG_ERROR_TEXT: Final = 63
# Lines mg_tls_init only logs (MG_ERROR) before returning early, without an event.
_LOG_STEPS: Final = {
    "Failed to load CA certificate": Step.CA,
    "Failed to load certificate": Step.CERTIFICATE,
}

_LogFn = ctypes.CFUNCTYPE(None, ctypes.c_char, ctypes.c_void_p)


class _Log:
    """Mongoose's log output, one line at a time, instead of stdout."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._line = bytearray()
        # Kept alive here for as long as Mongoose may call it (the process).
        self.function: Any = _LogFn(self._put)

    def _put(self, char: bytes, _param: object) -> None:
        if char == b"\n":
            self.lines.append(self._line.decode("utf-8", "replace").rstrip("\r"))
            self._line.clear()
        else:
            self._line += char

    def step(self) -> tuple[str, str] | None:
        """The step and line of the first logged refusal of mg_tls_init, if any."""
        for line in self.lines:
            for text, step in _LOG_STEPS.items():
                if line.endswith(" " + text):
                    return step, text
        return None


@dataclass
class _Attempt:
    """What one attempt's events showed."""

    case: InitCase
    #: The connections of this attempt, by id (read while they are open: a
    #: closed cymongoose Connection no longer knows its id).
    ends: dict[int, Any] = field(default_factory=dict)
    tls_id: int | None = None
    errors: dict[int, str] = field(default_factory=dict)
    closed: set[int] = field(default_factory=set)
    exception: BaseException | None = None


class MongooseTarget:
    """Init path on Mongoose's built-in TLS, through cymongoose."""

    name = "mongoose"
    description = "Mongoose built-in TLS (cymongoose): mg_tls_init on accept/connect, poll, close"

    def __init__(self) -> None:
        self._lib = ctypes.CDLL(cymongoose._mongoose.__file__)
        self._boot = ctypes.c_uint64.in_dll(self._lib, "mg_boot_timestamp_ms")
        self._know_the_time()
        self._log = _Log()
        self._lib.mg_log_set_fn.argtypes = [_LogFn, ctypes.c_void_p]
        self._lib.mg_log_set_fn.restype = None
        self._lib.mg_log_set_fn(self._log.function, None)
        cymongoose.log_set(cymongoose.MG_LL_ERROR)
        self._attempt: _Attempt | None = None
        self._manager = cymongoose.Manager(self._on_event, error_handler=self._on_exception)
        address = self._manager.listen("tcp://127.0.0.1:0", http=False).local_addr
        if address is None:
            raise OSError("Mongoose's loopback listener has no address")
        self._url = f"tcp://127.0.0.1:{address[1]}"

    @property
    def ledgers(self) -> tuple[str, ...]:
        """The process heap (Mongoose's calloc), descriptors: nothing else sees Mongoose."""
        return ("heap", "fds")

    def error_queue(self) -> ErrorQueue | None:
        return None  # no OpenSSL

    def probe(self) -> Probe:
        """One block through Mongoose's own allocator (``mg_calloc``), freed by ``mg_free``."""
        calloc, free = self._lib.mg_calloc, self._lib.mg_free
        calloc.argtypes, calloc.restype = [ctypes.c_size_t, ctypes.c_size_t], ctypes.c_void_p
        free.argtypes, free.restype = [ctypes.c_void_p], None

        def allocate() -> Callable[[], None]:
            block = calloc(1, 64)
            if not block:
                raise MemoryError("mg_calloc returned NULL")
            return lambda: free(block)

        return Probe(f"Mongoose's built-in TLS in cymongoose {_binding()}", allocate)

    def _know_the_time(self) -> None:
        # mg_tls_init asks time.google.com over SNTP while this is 0 (see above).
        if self._boot.value == 0:
            self._boot.value = int(time.time() * 1000) - cymongoose.millis()

    def run(self, case: InitCase) -> Outcome:
        attempt = self._attempt = _Attempt(case)
        self._log.lines.clear()  # what other attempts' connections logged
        try:
            outcome = self._init(attempt)
            try:
                self._close(attempt)
            except Exception as exc:
                return Outcome(Status.ERROR, Step.TEARDOWN, (), f"{type(exc).__name__}: {exc}")
            return outcome
        finally:
            self._attempt = None
            self._log.lines.clear()

    def _init(self, attempt: _Attempt) -> Outcome:
        try:
            self._connect(attempt)
        except RuntimeError as exc:
            # mg_connect returned NULL: on a loopback address, only when
            # memory ran out (its calloc, or the socket's).
            return _rejected(Rejected(Step.CONNECTION, str(exc)))
        except Exception as exc:
            return Outcome(Status.ERROR, Step.CONNECTION, (), f"{type(exc).__name__}: {exc}")
        return _outcome(attempt, self._log)

    def _connect(self, attempt: _Attempt) -> None:
        client = self._manager.connect(self._url, http=False)
        attempt.ends[client.id] = client
        for _ in range(MAX_INIT_POLLS):
            if attempt.tls_id is not None or attempt.exception or attempt.errors:
                break
            self._manager.poll(_POLL_MS)
        for _ in range(AFTER_INIT_POLLS):
            if attempt.tls_id is None or attempt.tls_id in attempt.closed:
                break
            self._manager.poll(0)

    def _close(self, attempt: _Attempt) -> None:
        def still_open() -> list[Any]:
            return [end for key, end in attempt.ends.items() if key not in attempt.closed]

        for end in still_open():
            end.drain()
        for _ in range(MAX_CLOSE_POLLS):
            if not still_open():
                return
            self._manager.poll(_POLL_MS)
        for end in still_open():  # not closed in time: close at once (mg_close_conn)
            end.close()

    def _on_event(self, conn: Any, event: int, data: Any) -> None:
        attempt = self._attempt
        if attempt is None:
            return
        if event == cymongoose.MG_EV_ACCEPT:
            attempt.ends[conn.id] = conn
            if attempt.case.mode is Mode.SERVER:
                self._tls_init(attempt, conn)
        elif event == cymongoose.MG_EV_CONNECT and conn.is_client:
            if attempt.case.mode is Mode.CLIENT:
                self._tls_init(attempt, conn)
        elif event == cymongoose.MG_EV_ERROR:
            attempt.errors.setdefault(conn.id, str(data))
        elif event == cymongoose.MG_EV_CLOSE:
            attempt.closed.add(conn.id)

    def _tls_init(self, attempt: _Attempt, conn: Any) -> None:
        case = attempt.case
        opts = cymongoose.TlsOpts(
            ca=case.ca,
            cert=case.cert,
            key=case.key,
            name=case.server_name if case.mode is Mode.CLIENT else b"",
        )
        self._know_the_time()
        self._log.lines.clear()
        attempt.tls_id = conn.id
        conn.tls_init(opts)

    def _on_exception(self, exc: Exception) -> None:
        if self._attempt is not None and self._attempt.exception is None:
            self._attempt.exception = exc


def _outcome(attempt: _Attempt, log: _Log) -> Outcome:
    if attempt.exception is not None:
        exc = attempt.exception
        return Outcome(Status.ERROR, Step.INIT, (), f"{type(exc).__name__}: {exc}")
    if attempt.tls_id is None:
        # Mongoose dropped the loopback connection before it could run TLS
        # init (it closes a socket it cannot allocate a connection for).
        detail = "; ".join(attempt.errors.values()) or "no connection within the polls"
        return _rejected(Rejected(Step.CONNECTION, f"TLS init did not run: {detail}"))
    message = attempt.errors.get(attempt.tls_id)
    if message is not None:
        return _rejected(Rejected(_event_step(message), message))
    logged = log.step()
    if logged is not None:
        step, text = logged
        return _rejected(Rejected(step, f"{text} (logged only: Mongoose sends no error event)"))
    return Outcome.accepted()


def _event_step(message: str) -> str:
    """The step of an ``MG_EV_ERROR`` text of mg_tls_init; any other error is the connection's."""
    for text, step in _EVENT_STEPS.items():
        if message == text or (len(message) == _MG_ERROR_TEXT and text.startswith(message)):
            return step
    return Step.CONNECTION


def _rejected(exc: Rejected) -> Outcome:
    return Outcome(Status.REJECTED, exc.step, exc.errors, exc.message)


def _binding() -> str:
    return str(getattr(cymongoose, "__version__", "?"))
