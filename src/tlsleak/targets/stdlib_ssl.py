"""The ``ssl`` target: a TLS init path on the standard ``ssl`` module, as a library does it.

Steps, in order: create the context for the mode (``PROTOCOL_TLS_CLIENT`` or
``PROTOCOL_TLS_SERVER``); load the CA with ``load_verify_locations(cadata=...)``
(a server given a CA then requires client certificates); load certificate,
chain and key with ``load_cert_chain``; create the connection object with
``wrap_bio`` over memory BIOs, passing the server name in client mode.
Teardown is CPython's normal one: dropping the last reference frees each object.

Python's ``ssl`` runs on the system's libssl/libcrypto, so the system
libcrypto's error queue is the one checked, and both heap ledgers see the
allocations (``openssl-heap`` with OpenSSL's file:line sites).

What the path decides, and why:

* ``cadata`` takes PEM as an ASCII ``str`` and DER as ``bytes``.  A blob with
  PEM armor is given as text, anything else as DER.  PEM armor with non-ASCII
  bytes (say, an accented comment before the block) can't be passed at all:
  CPython raises ``TypeError("cadata should be an ASCII string or a
  bytes-like object")``.  We refuse it ourselves, at step ``ca``, instead of
  catching a ``TypeError`` that could just as well be a bug.
* ``load_cert_chain`` reads files, and PEM only, so DER certificates and keys
  are rejected (OpenSSL's "PEM lib").  The blobs go into a private temporary
  folder (0700, files 0600) that is removed after each input, whatever
  happens.  A process killed meanwhile (a worker that crashed or hung) cannot
  remove its folder, so each folder's name carries its owner's process id,
  and making the target sweeps the folders whose owner is gone.
* A certificate without a key: ``load_cert_chain(certfile)`` takes the key
  from the certificate file, as CPython documents, so a combined PEM works and
  a bare certificate is rejected at step ``key``.  A key without a
  certificate: ``load_cert_chain`` can't take one, and a library that
  silently dropped a configured key would hide a configuration error, so it
  is rejected at step ``check-key``, where the other targets reject it too.
* The password always goes through a callable.  With ``password=None``,
  OpenSSL's default callback would prompt on the terminal (or read stdin) for
  an encrypted key.  An empty answer makes an encrypted key fail instead.
* The server name (client mode only) is cut at the first NUL, as a C string
  is, and decoded as UTF-8.  ``ssl`` then encodes it with the ``idna`` codec.
"""

from __future__ import annotations

import os
import re
import shutil
import ssl
import stat
import tempfile
import time
from collections.abc import Callable
from typing import Final

from tlsleak.cases.blobs import is_pem, pem_blocks
from tlsleak.cases.case import InitCase, Mode
from tlsleak.ledgers import heap_available
from tlsleak.openssl.errors import ErrorQueue, OpenSSLError, system_error_queue
from tlsleak.targets.base import Outcome, Probe, Rejected, Status, Step, server_name_text

__all__ = ["TEMP_PREFIX", "StdlibSSLTarget", "sweep_scratch"]

#: Prefix of the private folders that hold the cert and key files for one input;
#: the owner's process id and a random part follow.
TEMP_PREFIX: Final = "tlsleak-ssl-"
_OWNED: Final = re.compile(re.escape(TEMP_PREFIX) + r"(\d+)-")
# A folder of an older tlsleak names no owner.  It lives for one
# load_cert_chain call: one this old was left by a killed process.
_ORPHAN_AGE: Final = 3600.0

# CPython ends every message it makes from the OpenSSL error queue with the
# _ssl.c line that raised it.
_SSL_LINE: Final = re.compile(r"\(_ssl\.c:(\d+)\)\s*$")
_LIBRARY_PREFIX: Final = re.compile(r"^\[[^\]]*\]\s*")

# OpenSSL 3.0's ERR_GET_REASON(ERR_R_MALLOC_FAILURE), which CPython puts in
# SSLError.errno.  SSL_new reports every failure this way, and on a valid
# context it fails only when memory runs out.
_ERR_R_MALLOC_FAILURE: Final = 0xC0100

# Reasons that mean "key and certificate don't match", whichever call raised
# them.  OpenSSL 3.0 already checks the pair in SSL_CTX_use_PrivateKey.
_MISMATCH_REASONS: Final = frozenset({"KEY_VALUES_MISMATCH", "KEY_TYPE_MISMATCH"})

# The labels OpenSSL's PEM_read_bio_X509 reads (any other block is skipped).
_CERT_LABELS: Final = (
    b"-----BEGIN CERTIFICATE-----",
    b"-----BEGIN X509 CERTIFICATE-----",
    b"-----BEGIN TRUSTED CERTIFICATE-----",
)

# Throwaway material (an Ed25519 self-signed certificate and an unrelated
# Ed448 key, public test data) for finding which _ssl.c line each stage of
# load_cert_chain raises from.  See _calibrate_stages.
_PROBE_CERT: Final = b"""\
-----BEGIN CERTIFICATE-----
MIHeMIGRoAMCAQICAQEwBQYDK2VwMBgxFjAUBgNVBAMMDXRsc2xlYWsgcHJvYmUw
IBcNMjQwMTAxMDAwMDAwWhgPMjEyMzEyMDgwMDAwMDBaMBgxFjAUBgNVBAMMDXRs
c2xlYWsgcHJvYmUwKjAFBgMrZXADIQA0NkVAye7lDsEUOwq3MX66u1Y581Tv1ZHq
NBTL6uIP9zAFBgMrZXADQQB/WTSC8XoN8Gj1R/Bs1h3Nk1YmPKzcKYZ8K4xcsYPG
n3j7N3OSlQbsiijw7Oviy4hIzVPNWRGAk6+wxyjwqNEH
-----END CERTIFICATE-----
"""
_PROBE_OTHER_KEY: Final = b"""\
-----BEGIN PRIVATE KEY-----
MEcCAQAwBQYDK2VxBDsEOe20U8DaWOwLQtBOiLIlr1+FtU0WtYqd4Kwbe3t1TF+f
VkdcQzRx+xU+ot3nEsBaOUvdAxD/8z4yTQ==
-----END PRIVATE KEY-----
"""


class _Unsafe(Exception):
    """The input would make the path under test block or prompt: it is not run."""

    def __init__(self, step: str, message: str) -> None:
        super().__init__(message)
        self.step = step
        self.message = message


class _Password:
    """The password callback: answers with the case's password (empty if none).

    It records that OpenSSL asked.  After that, the only ``ValueError`` that
    ``load_cert_chain`` raises is CPython's "password cannot be longer than
    N bytes" (N is OpenSSL's buffer, 1024 bytes).  That is the path refusing
    the password, so it is a rejection.
    """

    __slots__ = ("asked", "password")

    def __init__(self, password: bytes) -> None:
        self.password = password
        self.asked = False

    def __call__(self) -> bytes:
        self.asked = True
        return self.password


def _ssl_line(exc: ssl.SSLError) -> int | None:
    match = _SSL_LINE.search(str(exc))
    return int(match.group(1)) if match else None


def _reason_text(exc: ssl.SSLError) -> str:
    # "[SSL] PEM lib (_ssl.c:3905)" -> "PEM lib": CPython has no mnemonic for
    # OpenSSL's common reasons, only this text.
    return _SSL_LINE.sub("", _LIBRARY_PREFIX.sub("", str(exc))).strip() or "unknown reason"


def ssl_error_entries(exc: ssl.SSLError) -> tuple[OpenSSLError, ...]:
    # CPython keeps only the newest queue entry (then clears the queue), as
    # mnemonics: library "PEM", reason "NO_START_LINE".  Errors CPython makes
    # up itself ("cadata does not contain a certificate") have neither, and
    # one raised when OpenSSL ran out of memory may lack the attributes.
    library: str | None = getattr(exc, "library", None)
    reason: str | None = getattr(exc, "reason", None)
    if library is None and reason is None:
        return ()
    return (OpenSSLError(library or "unknown library", reason or _reason_text(exc)),)


def _rejected(step: str, exc: ssl.SSLError) -> Rejected:
    return Rejected(step, str(exc), ssl_error_entries(exc))


def _write_private(folder: str, name: str, data: bytes) -> str:
    """Write ``data`` to a new file only we can read (never an existing file or a link)."""
    path = os.path.join(folder, name)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(path, flags, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)
    return path


def _no_password() -> bytes:
    return b""


def _scratch() -> str:
    """A new private folder (0700, as ``mkdtemp`` makes it) named after this process."""
    return tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{os.getpid()}-")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists, as someone else's
        return True
    return True


def sweep_scratch(folder: str | None = None) -> list[str]:
    """Remove this user's scratch folders whose owner is gone from ``folder`` (default: temp).

    They hold private keys, and were left by a process killed mid-input.  A
    folder is removed when the process its name gives no longer exists (a
    reused process id keeps it until a later sweep), or, for a folder that
    names no owner, when it is over an hour old.  Returns the paths removed.
    """
    where = folder if folder is not None else tempfile.gettempdir()
    removed = []
    try:
        entries = list(os.scandir(where))
    except OSError:
        return []
    for entry in entries:
        if not entry.name.startswith(TEMP_PREFIX):
            continue
        try:
            info = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
            continue
        owner = _OWNED.match(entry.name)
        if owner is not None:
            gone = not _alive(int(owner.group(1)))
        else:
            gone = time.time() - info.st_mtime > _ORPHAN_AGE
        if gone:
            shutil.rmtree(entry.path, ignore_errors=True)
            removed.append(entry.path)
    return removed


def _calibrate_stages() -> dict[int, str]:
    """The _ssl.c line that each stage of ``load_cert_chain`` raises from, in this build.

    ``load_cert_chain`` loads the certificate chain, then the key, then checks
    the pair. For a PEM parse failure, the certificate and the key stages both
    raise the same "[SSL] PEM lib": only the _ssl.c line in the message says
    which stage failed.  Line numbers change from build to build, so we make
    each stage fail once, outside any measured run, and remember its line.  If
    this build does not show three distinct lines, we get an empty map, and
    every failure is reported at ``certificate``.
    """
    probes = (
        ("empty", "empty", Step.CERTIFICATE),
        ("cert", "empty", Step.KEY),
        ("cert", "other", Step.CHECK_KEY),
    )
    stages: dict[int, str] = {}
    try:
        folder = _scratch()
    except OSError:
        return {}
    try:
        files = {
            "empty": _write_private(folder, "empty.pem", b""),
            "cert": _write_private(folder, "cert.pem", _PROBE_CERT),
            "other": _write_private(folder, "other.pem", _PROBE_OTHER_KEY),
        }
        for certfile, keyfile, step in probes:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            try:
                ctx.load_cert_chain(files[certfile], files[keyfile], _no_password)
            except ssl.SSLError as exc:
                line = _ssl_line(exc)
                if line is not None:
                    stages[line] = step
    except OSError:
        return {}
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return stages if len(stages) == len(probes) else {}


def _asks_for_password(blob: bytes) -> bool:
    # _add_ca_certs reads cadata with the context's default password callback,
    # which is OpenSSL's own: a certificate block with "Proc-Type: 4,ENCRYPTED"
    # headers makes it print "Enter PEM pass phrase:" and read the terminal,
    # or stdin when there is no terminal (blocking while stdin stays open).
    # No public API sets that callback, so such input is not run at all.
    return any(
        block.startswith(_CERT_LABELS) and b"Proc-Type:" in block for block in pem_blocks(blob)
    )


class _Progress:
    __slots__ = ("step",)

    def __init__(self) -> None:
        self.step: str = Step.CONTEXT


class StdlibSSLTarget:
    """Init path on the standard library's ``ssl`` module."""

    name = "ssl"
    description = "stdlib ssl: context, CA data, cert chain+key files, connection, SNI"

    def __init__(self) -> None:
        sweep_scratch()  # what killed workers left: this target's start is the next start
        self._stages = _calibrate_stages()

    @property
    def ledgers(self) -> tuple[str, ...]:
        """The OpenSSL heap (with its sites), the process heap where preloaded, descriptors."""
        return ("openssl-heap", "heap", "fds") if heap_available() else ("openssl-heap", "fds")

    def error_queue(self) -> ErrorQueue:
        return system_error_queue()

    def probe(self) -> Probe:
        """A context made by Python's ssl module, as the init path makes its first object."""

        def allocate() -> Callable[[], None]:
            held = [ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)]
            return held.clear

        return Probe(f"Python's ssl module, {ssl.OPENSSL_VERSION}", allocate)

    def run(self, case: InitCase) -> Outcome:
        progress = _Progress()
        try:
            self._init(case, progress)
        except Rejected as exc:
            return Outcome(Status.REJECTED, exc.step, exc.errors, exc.message)
        except _Unsafe as exc:
            return Outcome(Status.ERROR, exc.step, (), exc.message)
        except Exception as exc:
            return Outcome(Status.ERROR, progress.step, (), f"{type(exc).__name__}: {exc}")
        return Outcome.accepted()

    def _init(self, case: InitCase, progress: _Progress) -> None:
        client = case.mode is Mode.CLIENT
        try:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT if client else ssl.PROTOCOL_TLS_SERVER)
        except ssl.SSLError as exc:  # only when OpenSSL runs out of memory
            raise _rejected(Step.CONTEXT, exc) from None
        if case.ca:
            progress.step = Step.CA
            _load_ca(ctx, case.ca)
            if not client:
                # A server given a CA verifies its clients with it (a client
                # context already requires the server's certificate).
                ctx.verify_mode = ssl.CERT_REQUIRED
        if case.cert or case.key:
            progress.step = Step.CERTIFICATE
            self._load_cert_chain(ctx, case)
        progress.step = Step.CONNECTION
        hostname = server_name_text(case) if client else None
        if hostname:
            progress.step = Step.SERVER_NAME
        _connect(ctx, client, hostname)

    def _load_cert_chain(self, ctx: ssl.SSLContext, case: InitCase) -> None:
        if not case.cert:
            raise Rejected(
                Step.CHECK_KEY, "private key without a certificate (load_cert_chain needs one)"
            )
        password = _Password(case.password)
        folder = _scratch()
        try:
            certfile = _write_private(folder, "cert.pem", case.cert)
            keyfile = _write_private(folder, "key.pem", case.key) if case.key else None
            try:
                ctx.load_cert_chain(certfile, keyfile, password)
            except ssl.SSLError as exc:
                raise _rejected(self._stage(exc), exc) from None
            except ValueError as exc:
                if not password.asked:
                    raise
                raise Rejected(Step.KEY, f"password refused: {exc}") from None
            except OSError as exc:
                # CPython raises OSError, not SSLError, when errno is set after
                # OpenSSL fails to load a file.  Our files exist and are
                # readable, so OpenSSL's failed parse left errno set.  It is a
                # rejection that CPython reports as an I/O error.
                raise Rejected(Step.CERTIFICATE, f"OSError: {exc}") from None
        finally:
            # The files hold the case's private key: never leave them behind.
            shutil.rmtree(folder)

    def _stage(self, exc: ssl.SSLError) -> str:
        if getattr(exc, "reason", None) in _MISMATCH_REASONS:
            return Step.CHECK_KEY
        line = _ssl_line(exc)
        return self._stages.get(line, Step.CERTIFICATE) if line is not None else Step.CERTIFICATE


def _load_ca(ctx: ssl.SSLContext, blob: bytes) -> None:
    cadata: str | bytes
    if is_pem(blob):
        # CPython refuses a non-ASCII str before reading it, so this check
        # comes first: such data can't reach the prompt below.
        if not blob.isascii():
            raise Rejected(Step.CA, "PEM CA data is not ASCII (cadata takes PEM as ASCII text)")
        if _asks_for_password(blob):
            raise _Unsafe(
                Step.CA,
                "would prompt: an encrypted PEM certificate makes "
                "load_verify_locations(cadata=...) ask for a pass phrase on the terminal "
                "(or block reading stdin); not run",
            )
        cadata = blob.decode("ascii")
    else:
        cadata = blob
    try:
        ctx.load_verify_locations(cadata=cadata)
    except ssl.SSLError as exc:
        raise _rejected(Step.CA, exc) from None


def _connect(ctx: ssl.SSLContext, client: bool, hostname: str | None) -> None:
    try:
        ctx.wrap_bio(
            ssl.MemoryBIO(), ssl.MemoryBIO(), server_side=not client, server_hostname=hostname
        )
    except ValueError as exc:
        # The name is checked before SSL_new: the idna codec raises UnicodeError
        # (a ValueError) for an empty or over-long label or a character IDNA
        # forbids, and _ssl.c raises ValueError for an empty name or a leading dot.
        if hostname is None:
            raise
        raise Rejected(Step.SERVER_NAME, f"{type(exc).__name__}: {exc}") from None
    except ssl.SSLError as exc:
        # wrap_bio makes the SSL, then sets the name (SNI and the verified host
        # name).  The name step fails with a reason of its own, such as
        # SSL3_EXT_INVALID_SERVERNAME for a name over 255 bytes.  SSL_new fails
        # only with a malloc failure.
        named = hostname is not None and exc.errno != _ERR_R_MALLOC_FAILURE
        raise _rejected(Step.SERVER_NAME if named else Step.CONNECTION, exc) from None
