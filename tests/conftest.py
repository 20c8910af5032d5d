"""Shared fixtures: small cases built from tlsleak's cached material."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tlsleak.cases.case import InitCase, Mode
from tlsleak.cases.files import write_case
from tlsleak.cases.material import (
    Encoding,
    KeyFormat,
    KeyType,
    cert_bytes,
    identity,
    key_bytes,
)

#: A PEM block whose body is not a certificate: OpenSSL's parser rejects it.
GARBAGE_CERT = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"


def _valid(mode: Mode = Mode.SERVER, key_type: KeyType = KeyType.EC_P256) -> InitCase:
    ident = identity(key_type)
    chain = b"".join(cert_bytes(c) for c in ident.chain)
    return InitCase(
        mode=mode,
        ca=cert_bytes(ident.root),
        cert=cert_bytes(ident.leaf) + chain,
        key=key_bytes(ident.key),
        server_name=b"localhost" if mode is Mode.CLIENT else b"",
    )


@pytest.fixture
def valid_case() -> InitCase:
    return _valid()


@pytest.fixture
def valid_client_case() -> InitCase:
    return _valid(Mode.CLIENT)


@pytest.fixture
def bad_cert_case() -> InitCase:
    ident = identity(KeyType.EC_P256)
    return InitCase(ca=cert_bytes(ident.root), cert=GARBAGE_CERT, key=key_bytes(ident.key))


@pytest.fixture
def bad_key_case() -> InitCase:
    ident = identity(KeyType.EC_P256)
    return InitCase(
        ca=cert_bytes(ident.root), cert=cert_bytes(ident.leaf), key=key_bytes(ident.key)[:-40]
    )


@pytest.fixture
def small_corpus(
    tmp_path: Path, valid_case: InitCase, bad_cert_case: InitCase, bad_key_case: InitCase
) -> Path:
    """A corpus folder with one valid, one bad-certificate and one bad-key case."""
    folder = tmp_path / "corpus"
    for case in (valid_case, bad_cert_case, bad_key_case):
        write_case(folder, case)
    return folder


@pytest.fixture
def der_case() -> InitCase:
    ident = identity(KeyType.RSA2048, issued=False)
    return InitCase(
        cert=cert_bytes(ident.leaf, Encoding.DER), key=key_bytes(ident.key, encoding=Encoding.DER)
    )


# --- C libraries (the c: target) ---------------------------------------------

#: The C control libraries: sources in tests/c, ABI in docs/c-abi.md.
C_DIR = Path(__file__).parent / "c"
C_FLAGS = ("-shared", "-fPIC", "-Wall", "-Wextra", "-O1")

#: Fixture name -> (source in tests/c, extra compiler flags).
C_CONTROLS: dict[str, tuple[str, tuple[str, ...]]] = {
    "leaky": ("control_leaky.c", ()),
    "fixed": ("control_fixed.c", ()),
    "sslnew": ("control_sslnew.c", ()),
    # Crashes on the NULL of a failed BIO_new at the end of a refused input's run.
    "bionull": ("control_bionull.c", ()),
    # Never run in-process: it crashes or hangs on cue.
    "crash": ("control_crash.c", ()),
    # The fixed control that leaves OpenSSL's errors queued when it fails.
    "fixed-keep-errors": ("control_fixed.c", ("-DCONTROL_KEEP_ERRORS",)),
    # No leak; drops a bad CA bundle and never clears after success.
    "stale": ("control_stale.c", ()),
    # Reads the key with no password callback: OpenSSL prompts for a pass phrase.
    "prompt": ("control_prompt.c", ()),
    # Its fixed twin: a callback that gives no password, so nothing prompts.
    "prompt-fixed": ("control_prompt.c", ("-DCONTROL_NO_PROMPT",)),
    # Correct; clears the error queue and says only "failed" on every rejection (Mongoose).
    "opaque": ("control_opaque.c", ()),
}

CCompiler = Callable[..., Path]


@pytest.fixture
def encrypted_keys(tmp_path: Path) -> Path:
    """Two encrypted-key cases (two key types: one cause) and a plain one, in a folder."""
    folder = tmp_path / "keys"
    for key_type in (KeyType.EC_P256, KeyType.RSA2048):
        ident = identity(key_type, issued=False)
        cert = cert_bytes(ident.leaf)
        key = key_bytes(ident.key, KeyFormat.PKCS8_ENCRYPTED, password=b"secret")
        write_case(folder, InitCase(cert=cert, key=key))
    ident = identity(KeyType.EC_P256, issued=False)
    write_case(folder, InitCase(cert=cert_bytes(ident.leaf), key=key_bytes(ident.key)))
    return folder


@pytest.fixture(scope="session")
def c_compiler() -> CCompiler:
    """``build(source, output, *flags)``: a shared library linked with the system OpenSSL."""
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc is not installed, so the C library targets can't be built")

    def build(source: Path, output: Path, *flags: str) -> Path:
        command = [gcc, *C_FLAGS, *flags, "-o", str(output), str(source), "-lssl", "-lcrypto"]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            pytest.fail(f"cannot build {source.name}:\n{result.stderr}")
        return output

    return build


@pytest.fixture(scope="session")
def c_controls(tmp_path_factory: pytest.TempPathFactory, c_compiler: CCompiler) -> dict[str, Path]:
    """The C controls, built once per session: name -> path of the shared library."""
    folder = tmp_path_factory.mktemp("c-controls")
    return {
        name: c_compiler(C_DIR / source, folder / f"{name}.so", *flags)
        for name, (source, flags) in C_CONTROLS.items()
    }


#: A user target that crashes (SIGSEGV) on the case whose certificate is
#: b"CRASH", and from then on refuses to load: a worker that cannot restart.
BRITTLE = """
import os, signal
from pathlib import Path

MARK = Path(__file__).with_name("crashed-once")
if MARK.exists():
    raise SystemExit("will not start again after a crash")

def init(case):
    if case.cert == b"CRASH":
        MARK.touch()
        os.kill(os.getpid(), signal.SIGSEGV)
"""


@pytest.fixture
def brittle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The :data:`BRITTLE` target's spec, importable from the working directory (``tmp_path``)."""
    (tmp_path / "tlsleak_test_brittle.py").write_text(BRITTLE)
    monkeypatch.chdir(tmp_path)
    return "tlsleak_test_brittle:init"


#: A user init path with state: a case named ``arm*`` arms it, and from then on
#: every ``after*`` case loses a heap block (ctypes malloc), which an ``after``
#: case run alone never does; ``always*`` loses one whatever ran before
#: (tlsleak.check.alone).
STATEFUL = """
import ctypes

_libc = ctypes.CDLL(None)
_libc.malloc.restype = ctypes.c_void_p
_libc.malloc.argtypes = [ctypes.c_size_t]
ARMED = []


def init(case):
    name = case.server_name
    if name.startswith(b"arm"):
        ARMED.append(True)
    elif name.startswith(b"after") and ARMED:
        _libc.malloc(4096)  # lost on every attempt, once another case armed it
    elif name.startswith(b"always"):
        _libc.malloc(4096)  # lost on every attempt, whatever ran before
"""


@pytest.fixture
def stateful_init(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The :data:`STATEFUL` init path's spec, importable from ``tmp_path`` (the working dir)."""
    if not sys.platform.startswith("linux"):
        pytest.skip("the heap ledger's interposer is Linux-only")
    (tmp_path / "stateful_init_xyz.py").write_text(STATEFUL)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    return "stateful_init_xyz:init"
