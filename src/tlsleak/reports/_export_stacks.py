"""The init paths of the real stacks' targets, as standalone reproducer text.

One template per built-in stack target (``mbedtls``, ``grpc``, ``mongoose``),
each the target module's init path written out against the stack's own
public API, call for call, with no tlsleak import: what an upstream
maintainer reads and runs.  They are filled into
:data:`tlsleak.reports._export_templates.PY_SCRIPT`, whose helpers they use
(``Mode``, ``Rejected``, ``is_pem``, ``cert_blocks``, ``server_name_text``)
and whose ``STACK`` (printed first) and ``SETTLE_SECONDS`` (a wait before each
measurement) they set.  When a target module changes what it calls, its
template here changes with it; ``tests/reports/test_export_stacks.py`` runs
each script without tlsleak next to the target on the same cases.

None of them reaches beyond 127.0.0.1: the gRPC server binds there and its
client connects to a loopback port bound and never listened on; Mongoose's
listener and client are on loopback, and it is told the time so that it never
starts its SNTP query.
"""

from __future__ import annotations

from typing import Final

__all__ = ["STACK_INIT", "STACK_PACKAGES"]

#: The package each stack target needs (what ``pip install`` takes), by target name.
STACK_PACKAGES: Final = {
    "mbedtls": "python-mbedtls",
    "grpc": "grpcio",
    "mongoose": "cymongoose",
}

_MBEDTLS: Final = """
# python-mbedtls, with the Mbed TLS 2.28 its wheels bundle.  In order: every
# CA certificate into a TrustStore; the leaf certificate, then the rest of the
# bundle as its chain (CRT.from_PEM per PEM block, the binding's own idiom, or
# CRT.from_DER); the key with RSA.from_buffer(key, password) whatever its type
# (mbedtls_pk_parse_key keeps the key's own type); the pair checked with
# pk.check_pair (mbedtls_ssl_conf_own_cert does not check it, and
# TLSConfiguration silently drops a lone certificate or key); TLSConfiguration
# (a client always verifies, a server when given a CA), then ServerContext or
# ClientContext (mbedtls_ssl_config); wrap_buffers (mbedtls_ssl_setup, and the
# server name in client mode).  Teardown, whatever happened: shutdown() on the
# buffers, then the last reference to each object frees its Mbed TLS context.
import binascii

import mbedtls
import mbedtls.version
from mbedtls import pk, tls, x509
from mbedtls.exceptions import TLSError

STACK = f"python-mbedtls {mbedtls.__version__}, {mbedtls.version.version}"


def _load_cert(block, step):
    try:
        if not is_pem(block):
            return x509.CRT.from_DER(block)
        try:
            text = block.decode("utf-8")
        except UnicodeDecodeError:
            raise Rejected(f"{step}: PEM block is not UTF-8 text (CRT.from_PEM takes str)")
        return x509.CRT.from_PEM(text)
    except (TLSError, binascii.Error, UnicodeEncodeError) as exc:
        # from_PEM decodes the base64 in Python: its refusals are Python's.
        raise Rejected(f"{step}: {exc}") from None
    except ValueError as exc:  # an empty body, refused before Mbed TLS sees it
        if not str(exc).startswith("Cannot create CRT from an empty buffer"):
            raise
        raise Rejected(f"{step}: {exc}") from None


class Made:
    # What one attempt made, held until the teardown drops it.
    store = key = context = buffers = None
    chain = ()


def _init(made, case):
    client = case.mode is Mode.CLIENT
    if case.ca:
        made.store = tls.TrustStore()
        for block in cert_blocks(case.ca):
            made.store.add(_load_cert(block, "ca"))
    if case.cert:
        leaf, *rest = cert_blocks(case.cert)
        made.chain = [_load_cert(leaf, "certificate")]
        made.chain += [_load_cert(block, "chain") for block in rest]
    if case.key:
        try:
            made.key = pk.RSA.from_buffer(case.key, case.password or None)
        except TLSError as exc:
            raise Rejected(f"key: {exc}") from None
    if case.cert or case.key:
        if not made.chain or made.key is None:
            raise Rejected("check-key: a certificate without a key, or a key without one")
        try:
            public = made.chain[0].subject_public_key
        except (TLSError, NotImplementedError) as exc:  # the binding wraps RSA and EC only
            raise Rejected(f"check-key: the binding can't read the certificate's key: {exc}")
        if not pk.check_pair(public, made.key):
            raise Rejected("check-key: key does not match the certificate")
    config = tls.TLSConfiguration(
        validate_certificates=client or bool(case.ca),
        certificate_chain=(tuple(made.chain), made.key) if made.chain else None,
        trust_store=made.store,
    )
    try:
        made.context = tls.ClientContext(config) if client else tls.ServerContext(config)
    except TLSError as exc:
        raise Rejected(f"context: {exc}") from None
    hostname = server_name_text(case) if client else None
    try:
        if client:
            made.buffers = made.context.wrap_buffers(hostname)
        else:
            made.buffers = made.context.wrap_buffers()
    except TLSError as exc:
        raise Rejected(f"connection: {exc}") from None


def init(case):
    made = Made()
    try:
        _init(made, case)
    finally:
        if made.buffers is not None:
            made.buffers.shutdown()  # close_notify: a no-op before any handshake
        made.buffers = made.context = made.key = made.store = None
        made.chain = ()
"""

_GRPC: Final = """
# gRPC's TLS setup (grpcio: its C core, with BoringSSL linked in).
# Server: ssl_server_credentials([(key, chain)], root_certificates=ca,
# require_client_auth=bool(ca)), a server on a one-thread pool,
# add_secure_port("127.0.0.1:0") (where the TSI layer builds the SSL_CTX: the
# chain, the key, the CA; "Failed to bind" if any is refused), start(), then
# stop(None) waited for, and the pool shut down.  Client:
# ssl_channel_credentials(ca, key, chain), a secure_channel to a loopback port
# that is bound but never listened on (the connection is refused and never
# leaves 127.0.0.1), grpc.ssl_target_name_override = the server name, one call
# without wait_for_ready (connecting makes the security connector and the
# handshaker before the connect fails), and the channel closed.
# gRPC says what it refused only in its error log: the script reads it.
# Half a key pair is refused before gRPC sees it: a client would abort.
import concurrent.futures
import contextlib
import socket

# Before grpc is imported: its C core reads the level once.
if os.environ.get("GRPC_VERBOSITY", "").upper() not in ("DEBUG", "INFO"):
    os.environ["GRPC_VERBOSITY"] = "ERROR"

import grpc

STACK = f"grpcio {grpc.__version__}"
# gRPC frees a closed channel on its own threads, a few ms after close().
SETTLE_SECONDS = 0.2

# What gRPC logs when it refuses the material.
REFUSALS = (
    "Invalid cert chain file", "Invalid private key", "Invalid certificate",
    "Could not load any root certificate", "Invalid verification certs",
    "Cannot load server root certificates", "Invalid server name indication",
    "Handshaker factory creation failed", "Handshaker creation failed",
    "Unable to create secure server",
)

# Bound, never listened on: every connect to it is refused, on loopback.
CLOSED_PORT = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
CLOSED_PORT.bind(("127.0.0.1", 0))
CLOSED_ADDRESS = f"127.0.0.1:{CLOSED_PORT.getsockname()[1]}"


@contextlib.contextmanager
def logged():
    # Descriptor 2 into a memory file for the block; yields the lines written.
    lines = []
    memory = os.memfd_create("grpc-log", os.MFD_CLOEXEC)
    sys.stderr.flush()
    saved = os.dup(2)
    os.dup2(memory, 2)
    try:
        yield lines
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        data = os.pread(memory, os.lseek(memory, 0, os.SEEK_END), 0)
        os.close(memory)
        lines += data.decode("utf-8", "replace").splitlines()


def refusal(lines):
    # The first refusal gRPC logged ("E1205 ... file.cc:123] text"); other lines go on.
    found = None
    for line in lines:
        text = line.partition("] ")[2].strip()
        if text.startswith(REFUSALS):
            found = found or text
        else:
            print(line, file=sys.stderr)
    return found


def _whole_pair(case, server):
    if case.key and not case.cert:
        raise Rejected("check-key: private key without a certificate")
    if case.cert and not case.key:
        raise Rejected("key: certificate without a private key")
    if server and not case.cert:
        raise Rejected("certificate: a gRPC server needs a certificate and a private key")


def _server(case):
    _whole_pair(case, server=True)
    ca = case.ca or None
    creds = grpc.ssl_server_credentials(
        [(case.key, case.cert)], root_certificates=ca, require_client_auth=ca is not None
    )
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    server = grpc.server(pool)
    try:
        with logged() as lines:
            try:
                server.add_secure_port("127.0.0.1:0", creds)
                bound = True
            except RuntimeError:
                bound = False
        said = refusal(lines)
        if not bound:
            raise Rejected(f"add_secure_port refused the credentials: {said}")
        server.start()
    finally:
        server.stop(None).wait()
        pool.shutdown(wait=True)
    if said:
        raise Rejected(said)


def _connect(case, options):
    creds = grpc.ssl_channel_credentials(
        root_certificates=case.ca or None,
        private_key=case.key or None,
        certificate_chain=case.cert or None,
    )
    channel = grpc.secure_channel(CLOSED_ADDRESS, creds, options=options)
    try:
        channel.unary_unary("/tlsleak.Init/Connect")(b"", timeout=10.0)
    except grpc.RpcError:
        pass  # refused: what matters is what gRPC made on the way
    finally:
        channel.close()


def _client(case):
    _whole_pair(case, server=False)
    hostname = server_name_text(case)
    options = [("grpc.ssl_target_name_override", hostname)] if hostname else []
    with logged() as lines:
        _connect(case, options)
    said = refusal(lines)
    if said:
        raise Rejected(said)


def init(case):
    if case.mode is Mode.CLIENT:
        _client(case)
    else:
        _server(case)
"""

_MONGOOSE: Final = """
# Mongoose's built-in TLS (MG_TLS_BUILTIN), through cymongoose.  Mongoose
# calls mg_tls_init(c, &opts) per connection: a server on MG_EV_ACCEPT, a
# client on MG_EV_CONNECT.  So each attempt opens a loopback pair on one
# manager (a listener on 127.0.0.1 and a plain client connection to it), calls
# Connection.tls_init(TlsOpts(ca, cert, key, name)) on the accepted side
# (server mode) or on the client (client mode, name = the server name), polls
# three more times (the handshake starts; an mg_error closes), then closes both
# ends: drain(), and poll until each has had MG_EV_CLOSE (mg_tls_free).
# - One manager: cymongoose 0.2.5's Manager is never freed (__cinit__ keeps a
#   reference to itself), and an application has one anyway.
# - Mongoose must know the time: given a CA, with verification on and
#   mg_boot_timestamp_ms == 0, mg_tls_init would ask time.google.com over SNTP.
#   The script sets it from the clock first, as Mongoose's examples do.
# - Two refusals are only logged ("Failed to load CA certificate", "Failed to
#   load certificate"): the script reads Mongoose's log (level ERROR), which
#   also keeps it off stdout; the others arrive as MG_EV_ERROR.
import ctypes
import time

import cymongoose

STACK = f"cymongoose {getattr(cymongoose, '__version__', '?')}"
MONGOOSE = ctypes.CDLL(cymongoose._mongoose.__file__)
BOOT = ctypes.c_uint64.in_dll(MONGOOSE, "mg_boot_timestamp_ms")
LOGGED_ONLY = ("Failed to load CA certificate", "Failed to load certificate")


def know_the_time():
    if BOOT.value == 0:
        BOOT.value = int(time.time() * 1000) - cymongoose.millis()


class Log:
    # Mongoose's log output, one character at a time, as lines.
    LogFn = ctypes.CFUNCTYPE(None, ctypes.c_char, ctypes.c_void_p)

    def __init__(self):
        self.lines, self.line = [], bytearray()
        self.function = self.LogFn(self.put)  # alive as long as Mongoose may call it

    def put(self, char, _param):
        if char == b"\\n":
            self.lines.append(self.line.decode("utf-8", "replace").rstrip("\\r"))
            self.line.clear()
        else:
            self.line += char


class Attempt:
    def __init__(self, case):
        self.case = case
        self.ends = {}  # connection id -> connection (a closed one forgets its id)
        self.tls_id = None
        self.errors = {}
        self.closed = set()
        self.exception = None


current = None


def tls_init(conn):
    case = current.case
    client = case.mode is Mode.CLIENT
    opts = cymongoose.TlsOpts(
        ca=case.ca, cert=case.cert, key=case.key, name=case.server_name if client else b""
    )
    know_the_time()
    LOG.lines.clear()
    current.tls_id = conn.id
    conn.tls_init(opts)


def on_event(conn, event, data):
    if current is None:
        return
    if event == cymongoose.MG_EV_ACCEPT:
        current.ends[conn.id] = conn
        if current.case.mode is Mode.SERVER:
            tls_init(conn)
    elif event == cymongoose.MG_EV_CONNECT and conn.is_client:
        if current.case.mode is Mode.CLIENT:
            tls_init(conn)
    elif event == cymongoose.MG_EV_ERROR:
        current.errors.setdefault(conn.id, str(data))
    elif event == cymongoose.MG_EV_CLOSE:
        current.closed.add(conn.id)


def on_exception(exc):
    if current is not None and current.exception is None:
        current.exception = exc


know_the_time()
LOG = Log()
MONGOOSE.mg_log_set_fn.argtypes = [Log.LogFn, ctypes.c_void_p]
MONGOOSE.mg_log_set_fn.restype = None
MONGOOSE.mg_log_set_fn(LOG.function, None)
cymongoose.log_set(cymongoose.MG_LL_ERROR)
MANAGER = cymongoose.Manager(on_event, error_handler=on_exception)
URL = f"tcp://127.0.0.1:{MANAGER.listen('tcp://127.0.0.1:0', http=False).local_addr[1]}"


def connect(attempt):
    client = MANAGER.connect(URL, http=False)
    attempt.ends[client.id] = client
    for _ in range(100):  # until TLS init has run (connect and accept take 2 or 3)
        if attempt.tls_id is not None or attempt.exception or attempt.errors:
            break
        MANAGER.poll(1)
    for _ in range(3):  # the handshake starts; an mg_error closes
        if attempt.tls_id is None or attempt.tls_id in attempt.closed:
            break
        MANAGER.poll(0)


def close(attempt):
    def still_open():
        return [end for key, end in attempt.ends.items() if key not in attempt.closed]

    for end in still_open():
        end.drain()
    for _ in range(100):
        if not still_open():
            return
        MANAGER.poll(1)
    for end in still_open():  # not closed in time: close at once (mg_close_conn)
        end.close()


def outcome(attempt):
    if attempt.exception is not None:
        raise attempt.exception
    if attempt.tls_id is None:
        detail = "; ".join(attempt.errors.values()) or "no connection within the polls"
        raise Rejected(f"connection: TLS init did not run: {detail}")
    if attempt.tls_id in attempt.errors:
        raise Rejected(attempt.errors[attempt.tls_id])
    for line in LOG.lines:
        if line.endswith(LOGGED_ONLY):
            raise Rejected(f"{line} (logged only: Mongoose sends no error event)")


def init(case):
    global current
    current = attempt = Attempt(case)
    LOG.lines.clear()
    try:
        connect(attempt)
        outcome(attempt)
    finally:
        close(attempt)
        current = None
        LOG.lines.clear()
"""

#: The init path of each stack target, by target name.
STACK_INIT: Final = {
    "mbedtls": _MBEDTLS,
    "grpc": _GRPC,
    "mongoose": _MONGOOSE,
}
