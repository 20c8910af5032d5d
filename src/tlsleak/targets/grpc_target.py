"""The ``grpc`` target: gRPC's TLS setup (grpcio, C core, its own BoringSSL), as a service does it.

Server mode: ``ssl_server_credentials([(key, chain)], root_certificates=ca,
require_client_auth=bool(ca))``, a server on a one-thread pool,
``add_secure_port("127.0.0.1:0")`` (where gRPC's TSI layer builds the
``SSL_CTX``: it loads the chain, then the key, then the CA, and refuses the
port if any fails), ``start()``, then ``stop(None)`` waited for.  Client mode:
``ssl_channel_credentials(ca, key, chain)``, a ``secure_channel`` to a loopback
port that is bound but not listening (held by the target, so the connection is
refused and never leaves 127.0.0.1), with ``grpc.ssl_target_name_override``
set to the server name, then one call without ``wait_for_ready``: connecting
makes the security connector (the ``SSL_CTX`` from the material) and the
handshaker (the ``SSL`` and its SNI name) before the TCP connect fails, and the
call then fails at once.  The channel is closed.

What the path decides, and why:

* gRPC's Python API reports a refused material only as ``add_secure_port``'s
  "Failed to bind" (server) or not at all (client: the channel just fails to
  connect).  The one place where gRPC says what it refused is its error log
  ("Invalid private key.", "Could not load any root certificate.", ...).  So
  the target sets ``GRPC_VERBOSITY=ERROR`` before importing grpc (unless the
  environment asks for more, DEBUG or INFO), sends descriptor 2 to a memory
  file while gRPC reads the material, and maps the lines it recognises to
  steps; other lines are passed on to stderr.  A process that gRPC aborts
  meanwhile loses the lines it logged; the crash itself is the finding.
* Half a key pair: in client mode gRPC aborts the process (``CHECK`` failure in
  grpc_tls_certificate_distributor.cc) when given a key without a certificate
  or the reverse, and a server needs both.  Such cases are rejected before
  gRPC is called: a key without a certificate at ``check-key`` (as the other
  targets do), a certificate without a key at ``key``, a server with neither at
  ``certificate``.
* gRPC takes no password: an encrypted key is refused as an invalid key
  (BoringSSL's default callback gives no password, it never prompts), and the
  case's password is not used.
* The server name is cut at the first NUL and decoded as UTF-8 (a channel
  option is text); invalid UTF-8 is rejected at ``server-name``.

A case takes about a millisecond on its own (a rejected server, a client
channel) to a few (a server started and stopped), more under ``check``, where
the target waits for gRPC's threads to finish each teardown (:class:`_Teardown`).
gRPC allocates with malloc, from its own threads too, so the ``heap`` ledger
(process-wide, slope verdict) sees it; the OpenSSL ledgers cannot (its
BoringSSL is linked into the extension, with no hooks).

Known findings (grpcio 1.85.3), see docs/grpc.md: every server-mode case leaks
the ``grpc_ssl_pem_key_cert_pair`` array that ``ssl_server_credentials``
allocates (grpcio's ``ServerCredentials`` never frees it), and every server
whose ``add_secure_port`` refused the material leaks the never-started
server (grpc/grpc#31509).
"""

from __future__ import annotations

import concurrent.futures
import os
import re
import socket
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Final

# Before grpc is imported: its C core reads the level once, when it starts.
if os.environ.get("GRPC_VERBOSITY", "").upper() not in {"DEBUG", "INFO"}:
    os.environ["GRPC_VERBOSITY"] = "ERROR"

import grpc  # type: ignore[import-untyped]

from tlsleak.cases.case import InitCase, Mode
from tlsleak.cases.material import KeyType, cert_bytes, identity, key_bytes
from tlsleak.ledgers import heap_available
from tlsleak.ledgers.interposer import Interposer, interposer
from tlsleak.openssl.errors import ErrorQueue
from tlsleak.targets.base import Outcome, Probe, Rejected, Status, Step, server_name_text

__all__ = ["GrpcTarget"]

#: Seconds the client's one call may take (it fails at once on a refused connect).
_CALL_TIMEOUT: Final = 10.0

# Waiting for gRPC's threads to finish a teardown (see _Teardown).
_SLACK: Final = 4  # blocks above the start that count as back (the interpreter's own)
_QUIET: Final = 0.05  # seconds without a change: the teardown is over
_SETTLE_MAX: Final = 2.0  # seconds at most
_POLL: Final = 0.0005

# gRPC's log lines: "E1205 04:32:35.153792   30060 ssl_transport_security.cc:1569] text".
_LOG_LINE: Final = re.compile(rb"^[EWIF]\d{4} \S+\s+\d+ (?P<where>[^\]\s]+)\] (?P<text>.*)$")

# What gRPC's TSI layer logs when it refuses the material, in the order it
# loads it, and the step each names.
_REFUSALS: Final = (
    (b"Invalid cert chain file", Step.CERTIFICATE),
    (b"Invalid private key", Step.KEY),
    # The server's leaf, read again for its names (SNI): a TRUSTED CERTIFICATE label.
    (b"Invalid certificate", Step.CERTIFICATE),
    (b"Could not load any root certificate", Step.CA),
    (b"Invalid verification certs", Step.CA),
    (b"Cannot load server root certificates", Step.CA),
    (b"Invalid server name indication", Step.SERVER_NAME),
    (b"Handshaker factory creation failed", Step.CONTEXT),
    (b"Handshaker creation failed", Step.CONNECTION),
    (b"Unable to create secure server", Step.CONTEXT),
)

# Lines that only repeat a refusal already named above (not passed on).
_ECHOES: Final = (b"Update handshaker factory failed",)


class _Log:
    """What gRPC logged while :func:`_captured` held descriptor 2."""

    __slots__ = ("data",)

    def __init__(self) -> None:
        self.data = b""

    def refusal(self) -> tuple[str, str] | None:
        """The first refusal logged (step, gRPC's words), or None; passes other lines on."""
        found: tuple[str, str] | None = None
        other = []
        for line in self.data.splitlines():
            match = _LOG_LINE.match(line)
            text = match.group("text").strip() if match else b""
            step = next((s for words, s in _REFUSALS if text.startswith(words)), None)
            if step is not None:
                if found is None:
                    found = (step, text.decode("utf-8", "replace"))
            elif not any(text.startswith(words) for words in _ECHOES):
                other.append(line + b"\n")
        if other:
            os.write(2, b"".join(other))
        return found


@contextmanager
def _captured() -> Iterator[_Log]:
    """Descriptor 2 goes to a memory file for the block; the log says what was written."""
    log = _Log()
    memory = os.memfd_create("tlsleak-grpc-log", os.MFD_CLOEXEC)
    try:
        sys.stderr.flush()
        saved = os.dup(2)
        try:
            os.dup2(memory, 2)
            try:
                yield log
            finally:
                os.dup2(saved, 2)
        finally:
            os.close(saved)
        size = os.lseek(memory, 0, os.SEEK_END)
        log.data = os.pread(memory, size, 0)
    finally:
        os.close(memory)


class _Teardown:
    """Waits until gRPC's own threads have finished tearing an attempt down.

    ``channel.close()`` returns before the C core has destroyed the channel:
    its subchannel, security connector and handshaker (about 200 heap blocks)
    are freed on gRPC's event engine threads, a few milliseconds after the
    channel object is gone.  A
    target must return with its teardown done, or every ledger snapshot taken
    right after it would count them.  Nothing in gRPC's API says when that is,
    so where the malloc interposer is loaded (the only ledger the delay could
    fool is the process heap) we watch its live block count: the teardown is
    over when the count is back near where the attempt started, or has not
    moved for ``_QUIET`` seconds (what a leaking attempt keeps stays put).
    """

    __slots__ = ("_heap",)

    def __init__(self) -> None:
        self._heap: Interposer | None = interposer() if heap_available() else None

    def mark(self) -> int:
        return self._heap.counts()[0] if self._heap is not None else 0

    def wait(self, start: int) -> None:
        if self._heap is None:
            return
        now = time.monotonic()
        deadline, still = now + _SETTLE_MAX, now + _QUIET
        last = self._heap.counts()[0]
        while last > start + _SLACK and now < min(deadline, still):
            time.sleep(_POLL)
            blocks = self._heap.counts()[0]
            now = time.monotonic()
            if blocks != last:
                last, still = blocks, now + _QUIET


class GrpcTarget:
    """Init path on gRPC's SSL credentials (grpcio's C core, BoringSSL)."""

    name = "grpc"
    description = (
        f"gRPC {grpc.__version__} (C core, BoringSSL): ssl credentials, server "
        "add_secure_port+start / client channel connecting to a closed loopback port"
    )

    def __init__(self) -> None:
        # A port bound and never listened on: every connect to it is refused,
        # on loopback, and no other process can take it while we hold it.
        self._closed = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._closed.bind(("127.0.0.1", 0))
        self._address = f"127.0.0.1:{self._closed.getsockname()[1]}"
        self._teardown = _Teardown()

    @property
    def ledgers(self) -> tuple[str, ...]:
        """The process heap where preloaded (gRPC's BoringSSL has no hooks), and descriptors."""
        return ("heap", "fds") if heap_available() else ("fds",)

    def error_queue(self) -> ErrorQueue | None:
        return None  # BoringSSL's queue is inside grpcio's extension, out of reach

    def probe(self) -> Probe:
        """Server credentials from a valid key and certificate: the C core copies both.

        (Channel credentials would not do: grpcio keeps their PEM in Python
        objects until a channel is made.)
        """
        ident = identity(KeyType.ED25519)
        pair = [(key_bytes(ident.key), cert_bytes(ident.leaf))]

        def allocate() -> Callable[[], None]:
            held = [grpc.ssl_server_credentials(pair)]
            return held.clear

        return Probe(f"grpcio {grpc.__version__}'s C core", allocate)

    def run(self, case: InitCase) -> Outcome:
        try:
            if case.mode is Mode.CLIENT:
                self._client(case)
            else:
                _server(case)
        except Rejected as exc:
            return Outcome(Status.REJECTED, exc.step, exc.errors, exc.message)
        except Exception as exc:
            return Outcome(Status.ERROR, Step.INIT, (), f"{type(exc).__name__}: {exc}")
        return Outcome.accepted()

    def _client(self, case: InitCase) -> None:
        _whole_pair(case, server=False)
        options = []
        hostname = server_name_text(case)
        if hostname:
            options.append(("grpc.ssl_target_name_override", hostname))
        start = self._teardown.mark()
        with _captured() as log:
            _connect(self._address, case, options)
        # A server's stop(None).wait() returns with its teardown done; a
        # channel's close() does not, and the teardown starts only once the
        # channel object is gone (with _connect's frame).
        self._teardown.wait(start)
        _raise_refusal(log)


def _connect(address: str, case: InitCase, options: list[tuple[str, str]]) -> None:
    """Channel credentials, a channel, one call that fails to connect, and the channel closed."""
    creds = grpc.ssl_channel_credentials(
        root_certificates=case.ca or None,
        private_key=case.key or None,
        certificate_chain=case.cert or None,
    )
    channel = grpc.secure_channel(address, creds, options=options)
    try:
        channel.unary_unary("/tlsleak.Init/Connect")(b"", timeout=_CALL_TIMEOUT)
    except grpc.RpcError:
        pass  # refused: what matters is what gRPC made on the way
    finally:
        channel.close()


def _server(case: InitCase) -> None:
    _whole_pair(case, server=True)
    ca = case.ca or None
    creds = grpc.ssl_server_credentials(
        [(case.key, case.cert)], root_certificates=ca, require_client_auth=ca is not None
    )
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    server = grpc.server(pool)
    try:
        with _captured() as log:
            try:
                server.add_secure_port("127.0.0.1:0", creds)
                bound = True
            except RuntimeError:
                bound = False
        if not bound:
            _raise_refusal(log)
            raise Rejected(Step.CONTEXT, "add_secure_port refused the credentials")
        server.start()
    finally:
        server.stop(None).wait()
        pool.shutdown(wait=True)
    _raise_refusal(log)


def _whole_pair(case: InitCase, *, server: bool) -> None:
    """Refuse half a key pair before gRPC sees it (a client would abort, a server needs both)."""
    if case.key and not case.cert:
        raise Rejected(Step.CHECK_KEY, "private key without a certificate")
    if case.cert and not case.key:
        raise Rejected(Step.KEY, "certificate without a private key")
    if server and not case.cert:
        raise Rejected(Step.CERTIFICATE, "a gRPC server needs a certificate and a private key")


def _raise_refusal(log: _Log) -> None:
    refusal = log.refusal()
    if refusal is not None:
        step, words = refusal
        raise Rejected(step, words)
