"""The source text of standalone Python reproducers, one template per kind of target.

``tlsleak export`` (:mod:`tlsleak.reports.export`) fills these in.  They are
*not* tlsleak's own target modules copied at run time: an upstream maintainer
reads the script, so each template is the init path written out plainly
against the stack's public API, with no tlsleak import.  Each Python init
path must do what its tlsleak target does (the same calls, in the same order,
freeing the same things on the same paths); ``tests/cli/test_export_cli.py``
runs the exported scripts without tlsleak and checks that the leaky control
still leaks and the fixed one does not.  The real stacks' init paths are in
:mod:`._export_stacks`, the C driver in :mod:`._export_c`.

Placeholders are ``@@NAME@@`` (C and Python are full of braces, so
``str.format`` won't do); :func:`fill` refuses to leave one unfilled.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["PY_INIT", "PY_SCRIPT", "fill"]

_PLACEHOLDER: Final = re.compile(r"@@([A-Z_]+)@@")


def fill(template: str, **values: str) -> str:
    """``template`` with every ``@@NAME@@`` replaced by ``values[NAME.lower()]``."""
    missing = {m.lower() for m in _PLACEHOLDER.findall(template)} - values.keys()
    if missing:
        raise KeyError(f"template placeholders without a value: {', '.join(sorted(missing))}")
    return _PLACEHOLDER.sub(lambda m: values[m.group(1).lower()], template)


# --- Python: the script around the init path ---------------------------------

PY_SCRIPT: Final = '''\
#!/usr/bin/env python3
"""Standalone reproducer: @@TITLE@@.

Exported by tlsleak @@VERSION@@ from finding @@FINDING@@.  It does not need
tlsleak: it runs the init path below on the blobs in this folder, ATTEMPTS
times per round, and prints how much the process has grown since a warm-up:
RSS (/proc/self/statm), glibc's heap in use (mallinfo2, with glibc's
tcache off: see TCACHE_OFF) and open file descriptors (/proc/self/fd).  A
leak grows every round; correct code stays flat after the warm-up.  Exit
status 1 when the heap grew steadily (at least 16 bytes an attempt after
round 1, not dying out) or the fds grew in every round (a leak), 0
otherwise.  Linux and glibc only.

    python3 reproduce.py [--rounds 5] [--attempts 1000] [--warmup 200]
"""

from __future__ import annotations

import argparse
import ctypes
import enum
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

HERE = Path(__file__).resolve().parent
TCACHE_OFF = "glibc.malloc.tcache_count=0"

# glibc's mallinfo2 counts the chunks held in its per-thread caches (tcache:
# up to 7 freed chunks per size class and thread) as in use.  They fill and
# empty as the mix of sizes changes: a few KB of noise a round, more with a
# stack's own threads, and slow growth while rarely used sizes fill up.  So
# the script runs itself again with the tcache off, before any init path code
# runs (a GLIBC_TUNABLES that already says anything of the tcache is kept).
if __name__ == "__main__" and "tcache" not in os.environ.get("GLIBC_TUNABLES", ""):
    os.environ["GLIBC_TUNABLES"] = ":".join(
        filter(None, [os.environ.get("GLIBC_TUNABLES"), TCACHE_OFF])
    )
    argv = getattr(sys, "orig_argv", [sys.executable, *sys.argv])  # with -S, -I...
    os.execv(sys.executable, [sys.executable, *argv[1:]])


class Mode(enum.Enum):
    SERVER = "server"
    CLIENT = "client"


@dataclass(frozen=True)
class InitCase:
    """What the init path is given (the attributes of tlsleak's InitCase)."""

    mode: Mode = Mode.SERVER
    ca: bytes = b""
    cert: bytes = b""
    key: bytes = b""
    password: bytes = b""
    server_name: bytes = b""
    labels: Tuple[str, ...] = ()
    fail_alloc: Optional[int] = None


def _blob(name: str) -> bytes:
    return (HERE / name).read_bytes() if name else b""


CASE = InitCase(
    mode=Mode.@@MODE@@,
    ca=_blob(@@CA@@),
    cert=_blob(@@CERT@@),
    key=_blob(@@KEY@@),
    password=_blob(@@PASSWORD@@),
    server_name=_blob(@@SERVER_NAME@@),
    labels=@@LABELS@@,
)


class Rejected(Exception):
    """The init path refused the input (a step failed and was handled)."""


# --- blob helpers: PEM if armored anywhere, cut before each BEGIN line ------

_BEGIN = b"-----BEGIN"


def is_pem(blob: bytes) -> bool:
    return _BEGIN in blob


def pem_blocks(blob: bytes) -> list:
    starts = []
    pos = blob.find(_BEGIN)
    while pos != -1:
        starts.append(pos)
        pos = blob.find(_BEGIN, pos + len(_BEGIN))
    return [blob[a:b] for a, b in zip(starts, starts[1:] + [len(blob)])]


def c_string(value: bytes) -> bytes:
    return value.split(b"\\0", 1)[0]


def cert_blocks(blob: bytes) -> list:
    """The certificates of a blob: each PEM block, or the whole blob as one DER."""
    return pem_blocks(blob) if is_pem(blob) else [blob]


def server_name_text(case: InitCase) -> Optional[str]:
    """The server name up to its first NUL, as text (None when empty)."""
    name = c_string(case.server_name)
    if not name:
        return None
    try:
        return name.decode("utf-8")
    except UnicodeDecodeError:
        raise Rejected("server-name: server name is not UTF-8 text") from None


#: The stack and its version, printed first (set by the init path below).
STACK = ""
#: Seconds to wait before each measurement, for a stack that frees on its own threads.
SETTLE_SECONDS = 0.0

# --- the init path ------------------------------------------------------------
@@INIT@@

# --- measuring ----------------------------------------------------------------


class _Mallinfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd",
            "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost",
        )
    ]


_LIBC = ctypes.CDLL(None)
_MALLINFO2 = getattr(_LIBC, "mallinfo2", None)
if _MALLINFO2 is not None:
    _MALLINFO2.restype = _Mallinfo2
    _MALLINFO2.argtypes = []


def heap_in_use() -> int:
    """Bytes glibc has handed out and not got back (-1 without mallinfo2, glibc < 2.33)."""
    if _MALLINFO2 is None:
        return -1
    info = _MALLINFO2()
    return int(info.uordblks + info.hblkhd)


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd")) - 1  # less listdir's own


def measure() -> Tuple[int, int, int]:
    if SETTLE_SECONDS:
        time.sleep(SETTLE_SECONDS)
    return rss_bytes(), heap_in_use(), fd_count()


def attempt(case: InitCase) -> str:
    """One run of the init path; what became of it, in a few words."""
    try:
        init(case)
    except Rejected as exc:
        return f"rejected: {exc}"
    except Exception as exc:  # what the stack raised: rejected, or a bug
        return f"raised {type(exc).__name__}: {exc}"
    return "accepted"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--attempts", type=int, default=1000, help="per round")
    parser.add_argument("--warmup", type=int, default=200, help="attempts before measuring")
    args = parser.parse_args()
    outcomes = Counter([attempt(CASE)])
    print(f"target: @@TARGET@@ ({CASE.mode.value} mode)")
    if STACK:
        print(f"stack: {STACK}")
    print(f"outcome: {next(iter(outcomes))}")
    for _ in range(args.warmup):
        outcomes[attempt(CASE)] += 1
    base = measure()
    print("growth since the warm-up (rss and heap in bytes; heap = mallinfo2 in use):")
    print(f"{'round':>5} {'attempts':>9} {'rss':>12} {'heap':>12} {'fds':>5}"
          f" {'heap/1000':>12} {'rss/1000':>12} {'fds/1000':>9}")
    done = 0
    heaps, fdss = [0], [0]
    for round_ in range(1, args.rounds + 1):
        for _ in range(args.attempts):
            outcomes[attempt(CASE)] += 1
        done += args.attempts
        now = measure()
        rss, heap, fds = (n - b for n, b in zip(now, base))
        heaps.append(heap)
        fdss.append(fds)
        per = 1000 / done
        print(f"{round_:>5} {done:>9} {rss:>+12} {heap:>+12} {fds:>+5}"
              f" {round(heap * per):>+12} {round(rss * per):>+12} {fds * per:>+9.1f}",
              flush=True)
    if len(outcomes) > 1:
        print("outcomes: " + "; ".join(f"{n} x {o}" for o, n in outcomes.most_common()))
    if args.rounds < 1 or args.attempts < 1:
        print("verdict: nothing measured (no rounds): exit status 0")
        return 0
    grew = []
    slope, dying = heap_growth(heaps[1:], args.attempts)
    if slope >= 16 and not dying:
        grew.append(f"heap in use +{slope:.0f} bytes")
    elif slope >= 16:
        print(f"heap in use grew +{slope:.0f} bytes per attempt, but less in the later rounds "
              "than in the earlier ones (a cache filling up?): run more --rounds or a longer "
              "--warmup to tell")
    if all(b > a for a, b in zip(fdss, fdss[1:])):
        grew.append(f"fds +{fdss[-1] / done:.2f}")
    if grew:
        print(f"verdict: grows steadily ({', '.join(grew)} per attempt): exit status 1")
        return 1
    print("verdict: no steady growth: exit status 0")
    return 0


def heap_growth(ends: list, attempts: int) -> Tuple[float, bool]:
    """Bytes per attempt the heap grew by over the rounds, and whether that is dying out.

    ``ends`` is the growth after each round.  Round 1 takes the tail of the
    warm-up (one-off caches, the interpreter settling), so the rate is counted
    from its end, over all later rounds: one round's noise (a few KB of free
    lists) averages out.  A leak loses the same every attempt; a cache filling
    up grows less each round: the growth is dying out when the later half of
    the rounds grew less than half as fast as the earlier half.  A leak is
    then called at 16 bytes an attempt, half of glibc's smallest chunk (32):
    a lost block an attempt, whatever its size, is well above it.
    """
    rounds = len(ends)
    if rounds < 2:
        return (ends[0] / attempts if ends else 0.0), False
    slope = (ends[-1] - ends[0]) / (attempts * (rounds - 1))
    if rounds < 3:
        return slope, False
    mid = (rounds - 1) // 2  # the end of the earlier half, as an index into ends
    early = (ends[mid] - ends[0]) / mid
    late = (ends[-1] - ends[mid]) / (rounds - 1 - mid)
    return slope, late < early / 2


if __name__ == "__main__":
    sys.exit(main())
'''


# --- Python: one init path per kind of target -------------------------------

_CONTROL: Final = """
# The init path of tlsleak's control targets, on cryptography's OpenSSL
# binding: make the SSL_CTX and the SSL, then load the CA, the certificate
# (and chain) and the key, and check that they match.  LEAKY = True is the
# bug: a failure frees only the library's own struct, never the SSL_CTX and
# the SSL; LEAKY = False sends every failure through the full teardown.
from cryptography.hazmat.bindings.openssl.binding import Binding

LEAKY = @@LEAKY@@

lib = Binding.lib
ffi = Binding.ffi
NO_PASSWORD = ffi.new("char[]", b"")


class Tls:
    def __init__(self):
        self.ctx = ffi.NULL
        self.ssl = ffi.NULL


def _read(blob, pem, der, *pem_args):
    bio = lib.BIO_new_mem_buf(ffi.from_buffer(blob), len(blob))
    if not bio:
        return ffi.NULL
    try:
        return pem(bio, ffi.NULL, *pem_args) if is_pem(blob) else der(bio, ffi.NULL)
    finally:
        lib.BIO_free(bio)


def _read_x509(block):
    return _read(block, lib.PEM_read_bio_X509, lib.d2i_X509_bio, ffi.NULL, NO_PASSWORD)


def _load_ca(tls, blob):
    store = lib.SSL_CTX_get_cert_store(tls.ctx)
    for block in cert_blocks(blob):
        x509 = _read_x509(block)
        if not x509:
            raise Rejected("ca: cannot parse CA certificate")
        added = lib.X509_STORE_add_cert(store, x509)
        lib.X509_free(x509)
        if added != 1:
            raise Rejected("ca: cannot add CA certificate")


def _load_cert(tls, blob):
    leaf, *chain = cert_blocks(blob)
    x509 = _read_x509(leaf)
    if not x509:
        raise Rejected("certificate: cannot parse certificate")
    used = lib.SSL_CTX_use_certificate(tls.ctx, x509)
    lib.X509_free(x509)
    if used != 1:
        raise Rejected("certificate: certificate refused")
    for block in chain:
        extra = _read_x509(block)
        if not extra:
            raise Rejected("chain: cannot parse chain certificate")
        if lib.SSL_CTX_add_extra_chain_cert(tls.ctx, extra) != 1:
            lib.X509_free(extra)
            raise Rejected("chain: chain certificate refused")


def _load_key(tls, blob, password):
    secret = ffi.new("char[]", c_string(password))
    pkey = _read(blob, lib.PEM_read_bio_PrivateKey, lib.d2i_PrivateKey_bio, ffi.NULL, secret)
    if not pkey:
        raise Rejected("key: cannot parse private key")
    used = lib.SSL_CTX_use_PrivateKey(tls.ctx, pkey)
    lib.EVP_PKEY_free(pkey)
    if used != 1:
        raise Rejected("key: private key refused")


def _teardown(tls):
    if tls.ssl:
        lib.SSL_free(tls.ssl)
        tls.ssl = ffi.NULL
    if tls.ctx:
        lib.SSL_CTX_free(tls.ctx)
        tls.ctx = ffi.NULL


def _init(tls, case):
    client = case.mode is Mode.CLIENT
    tls.ctx = lib.SSL_CTX_new(lib.TLS_client_method() if client else lib.TLS_server_method())
    if not tls.ctx:
        raise Rejected("context: SSL_CTX_new failed")
    tls.ssl = lib.SSL_new(tls.ctx)
    if not tls.ssl:
        raise Rejected("connection: SSL_new failed")
    if case.ca:
        _load_ca(tls, case.ca)
    if case.cert:
        _load_cert(tls, case.cert)
    if case.key:
        _load_key(tls, case.key, case.password)
    if (case.cert or case.key) and lib.SSL_CTX_check_private_key(tls.ctx) != 1:
        raise Rejected("check-key: key does not match the certificate")
    name = c_string(case.server_name)
    if client and name:
        lib.ERR_clear_error()
        lib.SSL_set_tlsext_host_name(tls.ssl, name)
        if lib.ERR_peek_error():
            raise Rejected("server-name: server name refused")


def init(case):
    tls = Tls()
    try:
        _init(tls, case)
    except Rejected:
        lib.ERR_clear_error()
        if not LEAKY:
            _teardown(tls)
        raise  # LEAKY: the struct goes, the SSL_CTX and SSL it held are lost
    lib.ERR_clear_error()
    _teardown(tls)
"""

_PYOPENSSL: Final = """
# pyOpenSSL: context for the mode, every CA certificate into the verify
# store, the leaf certificate and the rest of the bundle as chain, the key
# (with the password), the key check, the connection, the server name.
# Teardown is pyOpenSSL's own: the last reference to each object frees it.
import warnings

from OpenSSL import SSL, crypto


def _no_password(_rwflag):
    return b""  # fail on an encrypted key instead of prompting


def _load_cert(block):
    kind = crypto.FILETYPE_PEM if is_pem(block) else crypto.FILETYPE_ASN1
    return crypto.load_certificate(kind, block)


def _load_key(blob, password):
    if is_pem(blob):
        return crypto.load_privatekey(crypto.FILETYPE_PEM, blob, password or _no_password)
    return crypto.load_privatekey(crypto.FILETYPE_ASN1, blob)


def init(case):
    client = case.mode is Mode.CLIENT
    ctx = SSL.Context(SSL.TLS_CLIENT_METHOD if client else SSL.TLS_SERVER_METHOD)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        if case.ca:
            store = ctx.get_cert_store()
            for block in cert_blocks(case.ca):
                store.add_cert(_load_cert(block))
            if client:
                ctx.set_verify(SSL.VERIFY_PEER)
        if case.cert:
            leaf, *chain = cert_blocks(case.cert)
            ctx.use_certificate(_load_cert(leaf))
            for block in chain:
                ctx.add_extra_chain_cert(_load_cert(block))
        if case.key:
            ctx.use_privatekey(_load_key(case.key, case.password))
    if case.cert or case.key:
        ctx.check_privatekey()
    conn = SSL.Connection(ctx, None)
    name = c_string(case.server_name)
    if client and name:
        conn.set_tlsext_host_name(name)
"""

_STDLIB_SSL: Final = """
# Python's ssl module: context for the mode, the CA as cadata (PEM as ASCII
# text, anything else as DER; a server given a CA then requires client
# certificates), certificate chain and key from the files in this folder with
# load_cert_chain, and a connection over memory BIOs with the server name.
import ssl

CERT_FILE = @@CERT@@
KEY_FILE = @@KEY@@


def init(case):
    client = case.mode is Mode.CLIENT
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT if client else ssl.PROTOCOL_TLS_SERVER)
    if case.ca:
        if is_pem(case.ca) and b"Proc-Type:" in case.ca:
            raise SystemExit("this CA blob would make OpenSSL prompt for a pass phrase")
        ctx.load_verify_locations(cadata=case.ca.decode("ascii") if is_pem(case.ca) else case.ca)
        if not client:
            ctx.verify_mode = ssl.CERT_REQUIRED
    if case.cert or case.key:
        if not case.cert:
            raise Rejected("check-key: private key without a certificate")
        keyfile = str(HERE / KEY_FILE) if KEY_FILE else None
        # Always a callable: with none, OpenSSL would prompt for an encrypted key.
        ctx.load_cert_chain(str(HERE / CERT_FILE), keyfile, lambda: case.password)
    hostname = server_name_text(case) if client else None
    ctx.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO(), server_side=not client,
                 server_hostname=hostname)
"""

_CALLABLE: Final = """
# Your own init path, imported as tlsleak ran it.  It is given an InitCase
# defined above (the same attributes as tlsleak's; ``mode`` is this script's
# Mode, whose .value is "server" or "client").  Run this script where the
# module can be imported (its folder, or with PYTHONPATH set).
import importlib

sys.path.insert(0, os.getcwd())
_target = importlib.import_module(@@MODULE@@)
for _part in @@ATTRS@@:
    _target = getattr(_target, _part)


def init(case):
    _target(case)
"""

#: The init path of each kind of Python target, by its kind name.
PY_INIT: Final = {
    "control": _CONTROL,
    "pyopenssl": _PYOPENSSL,
    "ssl": _STDLIB_SSL,
    "callable": _CALLABLE,
}
